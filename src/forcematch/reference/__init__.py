"""Reference data with OpenMM: a Lennard-Jones box (argon, or a mixture of several species)
sampled with Langevin dynamics.

Units are OpenMM's (nm, ps, kJ/mol, kJ/mol/nm, amu, K; time steps in fs). One replica is one
independent trajectory with its own seed; with the CPU platform and one thread a replica is
bitwise reproducible, also across a kill and resume. No JAX here.

Modules:
    system      LJSystem and its OpenMM System, fcc start, seeds, Contexts, energy_and_forces
    mixture     Mixture: several species, their σ/ε tables, the CustomNonbondedForce for them
    sampler     run_replica: equilibration, then checkpointed frames, written as H5MD
    checkpoint  ReplicaCheckpoint: the resumable state of a replica
    progress    status lines
"""

from forcematch.reference.checkpoint import ReplicaCheckpoint
from forcematch.reference.mixture import Mixture, mixture_from_config
from forcematch.reference.sampler import SamplingSettings, equilibrate, run_replica
from forcematch.reference.system import (
    LJSystem,
    build_system,
    energy_and_forces,
    lattice_positions_nm,
    lj_system_from_config,
    make_context,
    platform_and_properties,
    replica_seed,
)

__all__ = [
    "LJSystem",
    "Mixture",
    "ReplicaCheckpoint",
    "SamplingSettings",
    "build_system",
    "energy_and_forces",
    "equilibrate",
    "lattice_positions_nm",
    "lj_system_from_config",
    "make_context",
    "mixture_from_config",
    "platform_and_properties",
    "replica_seed",
    "run_replica",
]
