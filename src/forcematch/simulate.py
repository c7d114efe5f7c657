"""Reference data with OpenMM: a Lennard-Jones (argon) box sampled with Langevin dynamics.

Units are OpenMM's (nm, ps, kJ/mol, amu, K). One replica is one independent trajectory with its
own seed; with the CPU platform and one thread a replica is bitwise reproducible. No JAX here.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import openmm
from openmm import unit

from forcematch.errors import ForcematchError
from forcematch.h5md import Trajectory, write_h5md
from forcematch.units import (
    ARGON_EPSILON_KJ_MOL,
    ARGON_MASS_AMU,
    ARGON_SIGMA_NM,
    cubic_box_length_nm,
)

_NM = unit.nanometer
_KJ_MOL = unit.kilojoule_per_mole
_KJ_MOL_NM = unit.kilojoule_per_mole / unit.nanometer


@dataclass(frozen=True)
class LJSystem:
    """N identical Lennard-Jones particles in a cubic periodic box (OpenMM units)."""

    n_atoms: int
    box_nm: float  # cubic box edge
    cutoff_nm: float
    switch_nm: float  # switching function starts here, ends at cutoff_nm
    sigma_nm: float
    epsilon_kJ_mol: float
    mass_amu: float
    dispersion_correction: bool = True

    def __post_init__(self) -> None:
        if self.n_atoms < 1:
            raise ForcematchError(f"system.n_atoms must be >= 1, got {self.n_atoms}")
        if not 0 < self.switch_nm < self.cutoff_nm:
            raise ForcematchError(
                f"system.switch_nm ({self.switch_nm}) must lie in (0, cutoff_nm={self.cutoff_nm})"
            )
        if self.cutoff_nm > 0.5 * self.box_nm:
            raise ForcematchError(
                f"system.cutoff_nm ({self.cutoff_nm}) exceeds half the box edge "
                f"({self.box_nm:.6g} nm / 2)"
            )


def lj_system_from_config(config: dict) -> LJSystem:
    """LJSystem from ``config['system']`` (argon σ, ε, m and dispersion correction by default)."""
    try:
        sysc = config["system"]
        n_atoms = int(sysc["n_atoms"])
        density = float(sysc["density_g_cm3"])
        cutoff = float(sysc["cutoff_nm"])
        switch = float(sysc["switch_nm"])
    except KeyError as exc:
        raise ForcematchError(f"config: missing key system.{exc.args[0]}") from exc
    mass = float(sysc.get("mass_amu", ARGON_MASS_AMU))
    return LJSystem(
        n_atoms=n_atoms,
        box_nm=cubic_box_length_nm(n_atoms, density, mass),
        cutoff_nm=cutoff,
        switch_nm=switch,
        sigma_nm=float(sysc.get("sigma_nm", ARGON_SIGMA_NM)),
        epsilon_kJ_mol=float(sysc.get("epsilon_kJ_mol", ARGON_EPSILON_KJ_MOL)),
        mass_amu=mass,
        dispersion_correction=bool(sysc.get("dispersion_correction", True)),
    )


def build_system(lj: LJSystem) -> openmm.System:
    """OpenMM System: NonbondedForce (CutoffPeriodic, switched, uncharged) in a cubic box."""
    system = openmm.System()
    L = lj.box_nm
    system.setDefaultPeriodicBoxVectors(
        openmm.Vec3(L, 0, 0) * _NM, openmm.Vec3(0, L, 0) * _NM, openmm.Vec3(0, 0, L) * _NM
    )
    nb = openmm.NonbondedForce()
    nb.setNonbondedMethod(openmm.NonbondedForce.CutoffPeriodic)
    nb.setCutoffDistance(lj.cutoff_nm * _NM)
    nb.setUseSwitchingFunction(True)
    nb.setSwitchingDistance(lj.switch_nm * _NM)
    nb.setUseDispersionCorrection(lj.dispersion_correction)
    for _ in range(lj.n_atoms):
        system.addParticle(lj.mass_amu)
        nb.addParticle(0.0, lj.sigma_nm, lj.epsilon_kJ_mol)
    system.addForce(nb)
    return system


def lattice_positions_nm(lj: LJSystem, rng: np.random.Generator) -> np.ndarray:
    """[N, 3] positions (nm) on an fcc lattice filling the box, with 0.005 nm Gaussian jitter.

    The smallest fcc lattice with at least N sites is used; when it has more sites than atoms,
    the occupied sites are drawn with `rng`.
    """
    n_cells = math.ceil((lj.n_atoms / 4) ** (1 / 3) - 1e-9)
    a = lj.box_nm / n_cells
    basis = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    cells = np.stack(np.meshgrid(*[np.arange(n_cells)] * 3, indexing="ij"), -1).reshape(-1, 3)
    sites = ((cells[:, None, :] + basis[None, :, :]).reshape(-1, 3) + 0.25) * a
    if len(sites) > lj.n_atoms:
        sites = sites[np.sort(rng.choice(len(sites), lj.n_atoms, replace=False))]
    positions = sites + rng.normal(scale=0.005, size=sites.shape)
    return np.mod(positions, lj.box_nm)


def replica_seed(seed: int, replica: int) -> int:
    """Deterministic OpenMM seed in [1, 2**31 - 1) for (`seed`, `replica`); never 0 (= random)."""
    if seed < 0 or replica < 0:
        raise ForcematchError(f"seed and replica must be >= 0, got seed={seed}, replica={replica}")
    word = int(np.random.SeedSequence([seed, replica]).generate_state(1, dtype=np.uint32)[0])
    return 1 + word % (2**31 - 2)


def _platform_and_properties(platform: str, threads: int) -> tuple[openmm.Platform, dict]:
    try:
        plat = openmm.Platform.getPlatformByName(platform)
    except Exception as exc:  # OpenMMException
        names = [
            openmm.Platform.getPlatform(i).getName()
            for i in range(openmm.Platform.getNumPlatforms())
        ]
        raise ForcematchError(f"OpenMM platform {platform!r} not available; have {names}") from exc
    props = {"Threads": str(int(threads))} if platform == "CPU" else {}
    return plat, props


def make_context(
    system: openmm.System,
    temperature_K: float,
    timestep_fs: float,
    friction_per_ps: float,
    seed: int,
    platform: str = "CPU",
    threads: int = 1,
) -> openmm.Context:
    """Context with a LangevinMiddleIntegrator seeded with `seed` (CPU: `threads` threads)."""
    integrator = openmm.LangevinMiddleIntegrator(
        temperature_K * unit.kelvin,
        friction_per_ps / unit.picosecond,
        timestep_fs * unit.femtosecond,
    )
    integrator.setRandomNumberSeed(int(seed))
    plat, props = _platform_and_properties(platform, threads)
    return openmm.Context(system, integrator, plat, props)


def energy_and_forces(
    lj: LJSystem,
    positions_nm: np.ndarray,
    box_nm: np.ndarray | float,
    platform: str = "Reference",
) -> tuple[np.ndarray, np.ndarray]:
    """Potential energies (kJ/mol) and forces (kJ/mol/nm) of frames under `lj`.

    positions_nm: [T, N, 3] (or one frame [N, 3]); box_nm: edge (cubic), [3] or [T, 3] edges.
    Returns energies [T] and forces [T, N, 3] (or a float and [N, 3] for one frame).
    One Context is reused across frames; the Reference platform computes in double precision.
    """
    pos = np.asarray(positions_nm, dtype=np.float64)
    single = pos.ndim == 2
    if single:
        pos = pos[None]
    if pos.ndim != 3 or pos.shape[1:] != (lj.n_atoms, 3):
        raise ForcematchError(
            f"energy_and_forces: positions of shape {np.shape(positions_nm)}, "
            f"expected [T, {lj.n_atoms}, 3] or [{lj.n_atoms}, 3]"
        )
    t = pos.shape[0]
    box = np.broadcast_to(np.asarray(box_nm, dtype=np.float64), (3,) if single else (t, 3))
    box = np.broadcast_to(box, (t, 3))
    if np.any(box < 2 * lj.cutoff_nm):
        frame = int(np.flatnonzero((box < 2 * lj.cutoff_nm).any(axis=1))[0])
        raise ForcematchError(
            f"energy_and_forces: box {box[frame].tolist()} nm at frame {frame} is smaller than "
            f"twice the cutoff {lj.cutoff_nm} nm"
        )
    plat, props = _platform_and_properties(platform, 1)
    context = openmm.Context(build_system(lj), openmm.VerletIntegrator(1e-3), plat, props)
    energies = np.empty(t)
    forces = np.empty((t, lj.n_atoms, 3))
    current_box = None
    for i in range(t):
        if current_box is None or not np.array_equal(box[i], current_box):
            current_box = box[i]
            a, b, c = (float(x) for x in current_box)
            context.setPeriodicBoxVectors(
                openmm.Vec3(a, 0, 0), openmm.Vec3(0, b, 0), openmm.Vec3(0, 0, c)
            )
        context.setPositions(pos[i])
        state = context.getState(getEnergy=True, getForces=True)
        energies[i] = state.getPotentialEnergy().value_in_unit(_KJ_MOL)
        forces[i] = state.getForces(asNumpy=True).value_in_unit(_KJ_MOL_NM)
    if single:
        return float(energies[0]), forces[0]
    return energies, forces


def _emit(progress: Callable[[str], object] | None, message: str) -> None:
    if progress is None:
        return
    if progress is print:
        print(message, flush=True)
    else:
        progress(message)


def _check_energy(context: openmm.Context, replica: int, md_step: int, what: str) -> float:
    energy = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(_KJ_MOL)
    if not math.isfinite(energy):
        raise ForcematchError(
            f"replica {replica}: potential energy is {energy} at MD step {md_step} ({what})"
        )
    return energy


def run_replica(
    config: dict,
    replica: int,
    out_path: str | os.PathLike,
    *,
    threads: int = 1,
    platform: str = "CPU",
    progress: Callable[[str], object] | None = print,
) -> None:
    """Sample one replica of ``config`` with OpenMM and write it to the H5MD file `out_path`.

    fcc lattice start → energy minimisation → velocities at T → equilibration → frames every
    ``simulate.steps_between_frames`` steps (positions wrapped into the box, forces, total
    potential energy). Bitwise reproducible on the CPU platform with one thread.
    `progress` receives about ten status lines (None: silent).
    """
    from forcematch import __version__

    sim = config.get("simulate", {})
    try:
        n_frames = int(sim["frames_per_replica"])
        stride = int(sim["steps_between_frames"])
        timestep_fs = float(sim["timestep_fs"])
        seed = int(sim["seed"])
        temperature_K = float(config["system"]["temperature_K"])
    except KeyError as exc:
        raise ForcematchError(f"config: missing key {exc.args[0]!r} (simulate/system)") from exc
    friction = float(sim.get("friction_per_ps", 1.0))
    equilibration_steps = int(sim.get("equilibration_steps", 10000))
    minimize = bool(sim.get("minimize", True))
    if n_frames < 1 or stride < 1 or equilibration_steps < 0:
        raise ForcematchError(
            "config: simulate.frames_per_replica and steps_between_frames must be >= 1, "
            "equilibration_steps >= 0"
        )

    lj = lj_system_from_config(config)
    rseed = replica_seed(seed, replica)
    rng = np.random.default_rng(rseed)
    context = make_context(
        build_system(lj), temperature_K, timestep_fs, friction, rseed, platform, threads
    )
    integrator = context.getIntegrator()
    context.setPositions(lattice_positions_nm(lj, rng))
    _emit(
        progress,
        f"replica {replica}: N={lj.n_atoms}, box {lj.box_nm:.6f} nm, T={temperature_K} K, "
        f"dt={timestep_fs} fs, seed {rseed}, platform {platform}, threads {threads}",
    )
    if minimize:
        openmm.LocalEnergyMinimizer.minimize(context)
        energy = _check_energy(context, replica, 0, "after minimisation")
        _emit(progress, f"replica {replica}: minimised, U = {energy:.4f} kJ/mol")
    context.setVelocitiesToTemperature(temperature_K * unit.kelvin, rseed)

    t0 = time.perf_counter()
    done = 0
    chunk = 1000
    try:
        while done < equilibration_steps:
            n = min(chunk, equilibration_steps - done)
            integrator.step(n)
            done += n
            _check_energy(context, replica, done, "equilibration")
    except openmm.OpenMMException as exc:
        raise ForcematchError(
            f"replica {replica}: OpenMM failed at MD step {context.getStepCount()} "
            f"(equilibration): {exc}"
        ) from exc
    if equilibration_steps:
        elapsed = time.perf_counter() - t0
        _emit(
            progress,
            f"replica {replica}: equilibrated {equilibration_steps} steps in {elapsed:.1f} s",
        )

    positions = np.empty((n_frames, lj.n_atoms, 3))
    forces = np.empty((n_frames, lj.n_atoms, 3))
    energies = np.empty(n_frames)
    report_every = max(1, n_frames // 10)
    t0 = time.perf_counter()
    i = 0
    try:
        for i in range(n_frames):
            integrator.step(stride)
            state = context.getState(
                getPositions=True, getForces=True, getEnergy=True, enforcePeriodicBox=True
            )
            energy = state.getPotentialEnergy().value_in_unit(_KJ_MOL)
            if not math.isfinite(energy):
                raise ForcematchError(
                    f"replica {replica}: potential energy is {energy} at MD step "
                    f"{equilibration_steps + (i + 1) * stride} (frame {i})"
                )
            energies[i] = energy
            positions[i] = state.getPositions(asNumpy=True).value_in_unit(_NM)
            forces[i] = state.getForces(asNumpy=True).value_in_unit(_KJ_MOL_NM)
            if (i + 1) % report_every == 0 or i + 1 == n_frames:
                elapsed = time.perf_counter() - t0
                rate = (i + 1) * stride / elapsed if elapsed > 0 else float("inf")
                eta = (n_frames - i - 1) * stride / rate if rate > 0 else float("nan")
                _emit(
                    progress,
                    f"replica {replica}: frame {i + 1}/{n_frames}, {rate:.0f} steps/s, "
                    f"ETA {eta:.0f} s",
                )
    except openmm.OpenMMException as exc:
        raise ForcematchError(
            f"replica {replica}: OpenMM failed at MD step {context.getStepCount()} "
            f"(frame {i}): {exc}"
        ) from exc

    bad = ~np.isfinite(forces).reshape(n_frames, -1).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ForcematchError(
            f"replica {replica}: non-finite forces at MD step "
            f"{equilibration_steps + (i + 1) * stride} (frame {i})"
        )
    box_vectors = context.getState().getPeriodicBoxVectors(asNumpy=True).value_in_unit(_NM)
    steps = equilibration_steps + stride * np.arange(1, n_frames + 1, dtype=np.int64)
    traj = Trajectory(
        positions_nm=positions,
        forces_kJ_mol_nm=forces,
        potential_energy_kJ_mol=energies,
        box_nm=np.tile(np.diagonal(box_vectors), (n_frames, 1)),
        step=steps,
        time_ps=steps * (timestep_fs * 1e-3),
        species=np.zeros(lj.n_atoms, dtype=np.int32),
        masses_amu=np.full(lj.n_atoms, lj.mass_amu),
    )
    parameters = {
        "config": config,
        "replica": replica,
        "seed": rseed,
        "openmm_version": openmm.__version__,
        "forcematch_version": __version__,
        "platform": platform,
        "threads": threads,
        "lj": asdict(lj),
    }
    write_h5md(out_path, traj, parameters)
    _emit(progress, f"replica {replica}: wrote {n_frames} frames to {out_path}")
