"""The exact mean force on a CG frame, sampled with OpenMM: the ground truth of CG force matching.

For a CG configuration R the best possible CG force field is the mean force
F_mean(R) = ⟨F_map(r)⟩ over the atomistic states r that map to R (Noid et al. 2008). With
decimation the mapped degrees of freedom are the kept atoms' positions: they are held fixed by
giving them mass 0 (OpenMM's integrators leave massless particles in place), the other atoms
are sampled by Langevin dynamics at the run's temperature, and the kept atoms' forces averaged.
The standard error comes from `blocks` consecutive blocks of samples. The force-matching loss of
any model then splits exactly into the noise floor ⟨|F_map − F_mean|²⟩ and the model's own error
⟨|F_mean − F_model|²⟩ (`forcematch.cg.split`). Centre-of-mass maps need restraints instead of
massless particles (OpenMM refuses a constraint on a massless particle): not yet here.

Units are OpenMM's: nm, kJ/mol, kJ/mol/nm, K, fs, 1/ps. No JAX here.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import openmm
from openmm import unit

from forcematch.cg.mapping import LinearMap
from forcematch.errors import ForcematchError
from forcematch.reference.system import KJ_MOL_NM, OPENMM_MAX_SEED, platform_and_properties


@dataclass(frozen=True)
class MeanForceSettings:
    """How one frame's mean force is sampled: `samples` samples `steps_between_samples` apart
    after `equilibration_steps`, in `blocks` blocks for the standard error."""

    temperature_K: float
    timestep_fs: float = 5.0
    friction_per_ps: float = 5.0
    equilibration_steps: int = 400
    samples: int = 400
    steps_between_samples: int = 10
    blocks: int = 10
    seed: int = 1

    def __post_init__(self) -> None:
        if not (self.temperature_K > 0 and self.timestep_fs > 0 and self.friction_per_ps > 0):
            raise ForcematchError("mean force: temperature, time step and friction must be > 0")
        if self.blocks < 2 or self.samples < self.blocks or self.samples % self.blocks:
            raise ForcematchError(f"mean force: {self.samples} samples do not split into "
                                  f"{self.blocks} equal blocks (at least 2)")
        if not 0 < self.seed <= OPENMM_MAX_SEED:
            raise ForcematchError(f"mean force: seed {self.seed} must lie in 1..{OPENMM_MAX_SEED}")


@dataclass(frozen=True)
class MeanForce:
    """One frame's mean force [S,3] (kJ/mol/nm), its block standard error [S,3], and the
    samples' own spread about it, mean over components of Var(F_map) [(kJ/mol/nm)²]."""

    mean: np.ndarray
    standard_error: np.ndarray
    label_variance: float


def held_fixed(system: openmm.System, mapping: LinearMap) -> openmm.System:
    """A copy of `system` whose mapped atoms have mass 0 (held in place by the integrator).
    Decimation only: every site one atom."""
    if np.any((mapping.position_weights != 0).sum(axis=1) != 1):
        raise ForcematchError("mean force: only decimation maps (one atom per site) can be held "
                              "fixed by massless atoms; centre-of-mass maps need restraints")
    fixed = copy.deepcopy(system)
    for atom in mapping.mapped_atoms:
        fixed.setParticleMass(int(atom), 0.0)
    return fixed


def sample_mean_force(system: openmm.System, positions_nm: np.ndarray, box_nm: np.ndarray,
                      mapping: LinearMap, settings: MeanForceSettings, *,
                      platform: str = "CPU", threads: int = 1) -> MeanForce:
    """The mean mapped force on one frame: positions [N,3] nm in an orthorhombic box [3] nm,
    the mapped atoms held fixed (`held_fixed`), the others sampled (module docstring)."""
    s = settings
    integrator = openmm.LangevinMiddleIntegrator(s.temperature_K * unit.kelvin,
                                                 s.friction_per_ps / unit.picosecond,
                                                 s.timestep_fs * unit.femtosecond)
    integrator.setRandomNumberSeed(int(s.seed))
    plat, props = platform_and_properties(platform, threads)
    context = openmm.Context(held_fixed(system, mapping), integrator, plat, props)
    a, b, c = (float(x) for x in box_nm)
    context.setPeriodicBoxVectors(openmm.Vec3(a, 0, 0), openmm.Vec3(0, b, 0),
                                  openmm.Vec3(0, 0, c))
    context.setPositions(np.asarray(positions_nm, np.float64))
    context.setVelocitiesToTemperature(s.temperature_K * unit.kelvin, int(s.seed))
    integrator.step(s.equilibration_steps)
    mapped = np.empty((s.samples, mapping.n_sites, 3))
    for k in range(s.samples):
        integrator.step(s.steps_between_samples)
        forces = context.getState(getForces=True).getForces(asNumpy=True).value_in_unit(
            KJ_MOL_NM)
        mapped[k] = mapping.force_weights @ forces
    if not np.isfinite(mapped).all():
        raise ForcematchError("mean force: non-finite forces while sampling (a blow-up: a "
                              "smaller timestep_fs)")
    block_means = mapped.reshape(s.blocks, -1, mapping.n_sites, 3).mean(axis=1)
    return MeanForce(mean=mapped.mean(axis=0),
                     standard_error=block_means.std(axis=0, ddof=1) / math.sqrt(s.blocks),
                     label_variance=float(mapped.var(axis=0).mean()))
