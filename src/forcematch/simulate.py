"""Reference data with OpenMM: a Lennard-Jones (argon) box sampled with Langevin dynamics.

Units are OpenMM's (nm, ps, kJ/mol, amu, K). One replica is one independent trajectory with its
own seed; with the CPU platform and one thread a replica is bitwise reproducible. No JAX here.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import openmm
from openmm import unit

from forcematch.errors import ForcematchError
from forcematch.h5md import Trajectory, write_h5md
from forcematch.provenance import atomic_write_bytes, provenance, write_json
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


class ReplicaCheckpoint:
    """Resumable state of one replica: `.<out>.partial/` beside the output file.

    Holds the frames sampled so far in chunk files (`frames_<a>_<b>.npz`, plain arrays, read
    with allow_pickle=False), OpenMM's own checkpoint of the context (positions, velocities,
    step count and the integrator's random-number state: `openmm_<frames>.chk`) and
    `state.json`, the commit record naming both; it is written last, so a kill at any moment
    leaves the previous consistent state. A resumed replica on the CPU platform continues the
    same trajectory bit for bit. Removed once the output file is complete.
    """

    def __init__(self, out_path: Path, identity: dict):
        self.dir = out_path.with_name(f".{out_path.name}.partial")
        self.identity = identity  # config hash, replica, platform: must match to resume
        self.state: dict = {"identity": identity, "frames_done": 0, "chunks": [],
                            "openmm_checkpoint": None, "resumes": []}

    def load(self, progress) -> bytes | None:
        """OpenMM checkpoint bytes of a matching partial replica (frames in `self.state`), or
        None (and a fresh directory) when there is none or it belongs to another config."""
        state_path = self.dir / "state.json"
        if state_path.is_file():
            try:
                state = json.loads(state_path.read_text())
                chk = (self.dir / state["openmm_checkpoint"]).read_bytes()
                ok = state["identity"] == self.identity
            except (OSError, ValueError, KeyError, TypeError) as exc:
                _emit(progress, f"ignoring unreadable partial replica {self.dir}: {exc}")
                ok = False
            if ok:
                self.state = state
                return chk
            _emit(progress, f"discarding {self.dir}: written under another config or platform")
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        return None

    def frames(self, n_atoms: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Positions [F,N,3], forces [F,N,3] and energies [F] of the committed chunks."""
        parts = []
        for name in self.state["chunks"]:
            try:
                with np.load(self.dir / name, allow_pickle=False) as chunk:
                    parts.append((chunk["positions_nm"], chunk["forces_kJ_mol_nm"],
                                  chunk["energy_kJ_mol"]))
            except (OSError, ValueError, KeyError) as exc:
                raise ForcematchError(f"{self.dir / name}: unreadable checkpoint chunk ({exc}); "
                                      f"delete {self.dir} to start the replica afresh") from exc
        if not parts:
            return np.empty((0, n_atoms, 3)), np.empty((0, n_atoms, 3)), np.empty(0)
        return tuple(np.concatenate(p) for p in zip(*parts, strict=True))  # type: ignore

    def commit(self, context: openmm.Context, positions, forces, energies,
               frames_done: int) -> bytes:
        """Save the frames since the last commit and the context after frame `frames_done`;
        returns the OpenMM checkpoint."""
        start = self.state["frames_done"]
        chunks = list(self.state["chunks"])
        if frames_done > start:
            name = f"frames_{start:08d}_{frames_done:08d}.npz"
            buf = io.BytesIO()
            np.savez(buf, positions_nm=positions[start:frames_done],
                     forces_kJ_mol_nm=forces[start:frames_done],
                     energy_kJ_mol=energies[start:frames_done])
            atomic_write_bytes(self.dir / name, buf.getvalue())
            chunks.append(name)
        chk_name = f"openmm_{frames_done:08d}.chk"
        saved = context.createCheckpoint()
        atomic_write_bytes(self.dir / chk_name, saved)
        old_chk = self.state["openmm_checkpoint"]
        self.state = dict(self.state, frames_done=frames_done, chunks=chunks,
                          openmm_checkpoint=chk_name)
        write_json(self.dir / "state.json", self.state)  # the commit point
        if old_chk and old_chk != chk_name:
            (self.dir / old_chk).unlink(missing_ok=True)
        return saved

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def run_replica(
    config: dict,
    replica: int,
    out_path: str | os.PathLike,
    *,
    threads: int = 1,
    platform: str = "CPU",
    progress: Callable[[str], object] | None = print,
    stop_after_frames: int | None = None,
) -> None:
    """Sample one replica of ``config`` with OpenMM and write it to the H5MD file `out_path`.

    fcc lattice start → energy minimisation → velocities at T → equilibration → frames every
    ``simulate.steps_between_frames`` steps (positions wrapped into the box, forces, total
    potential energy). Bitwise reproducible on the CPU platform with one thread, also across a
    kill and resume: every ``simulate.checkpoint_every_frames`` frames the replica is
    checkpointed (see `ReplicaCheckpoint`) and a rerun continues from there.
    `progress` receives about ten status lines (None: silent). `stop_after_frames` (tests)
    returns after committing that many frames, as a kill would, without writing the output.
    """
    from forcematch.config import config_hash, stage_config

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
    checkpoint_every = int(sim.get("checkpoint_every_frames", 500))
    if n_frames < 1 or stride < 1 or equilibration_steps < 0 or checkpoint_every < 1:
        raise ForcematchError(
            "config: simulate.frames_per_replica, steps_between_frames and "
            "checkpoint_every_frames must be >= 1, equilibration_steps >= 0"
        )

    out_path = Path(out_path)
    if not out_path.parent.is_dir():
        raise ForcematchError(f"output directory does not exist: {out_path.parent}")
    lj = lj_system_from_config(config)
    rseed = replica_seed(seed, replica)
    stage_hash = config_hash(stage_config(config, "simulate"))
    checkpoint = ReplicaCheckpoint(out_path, {"config_hash": stage_hash, "replica": replica,
                                              "platform": platform})
    system = build_system(lj)

    def fresh_context(saved: bytes | None = None) -> openmm.Context:
        context = make_context(system, temperature_K, timestep_fs, friction, rseed, platform,
                               threads)
        if saved is not None:
            context.loadCheckpoint(saved)
        return context

    _emit(
        progress,
        f"replica {replica}: N={lj.n_atoms}, box {lj.box_nm:.6f} nm, T={temperature_K} K, "
        f"dt={timestep_fs} fs, seed {rseed}, platform {platform}, threads {threads}",
    )
    # The run continues from every checkpoint in a new Context, as a resumed run does: OpenMM's
    # CPU platform orders its force sums by its own neighbour-list history, which a checkpoint
    # does not hold, so only a fresh Context keeps a killed-and-resumed replica bitwise equal
    # to an uninterrupted one (otherwise positions drift apart by ~1e-11 nm within 10 steps).
    saved = checkpoint.load(progress)
    if saved is not None:
        context = fresh_context(saved)
        done_frames = checkpoint.state["frames_done"]
        checkpoint.state["resumes"].append(done_frames)
        _emit(progress, f"replica {replica}: resuming from {checkpoint.dir} at frame "
                        f"{done_frames}/{n_frames} (MD step {context.getStepCount()})")
    else:
        context = fresh_context()
        try:
            _equilibrate(context, lj, replica, temperature_K, rseed, minimize,
                         equilibration_steps, progress)
        except ForcematchError:
            checkpoint.remove()
            raise
        context = fresh_context(checkpoint.commit(context, None, None, None, 0))
    integrator = context.getIntegrator()

    positions = np.empty((n_frames, lj.n_atoms, 3))
    forces = np.empty((n_frames, lj.n_atoms, 3))
    energies = np.empty(n_frames)
    start = checkpoint.state["frames_done"]
    if start:
        positions[:start], forces[:start], energies[:start] = checkpoint.frames(lj.n_atoms)
    report_every = max(1, n_frames // 10)
    t0 = time.perf_counter()
    i = start
    try:
        for i in range(start, n_frames):
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
            if not np.isfinite(forces[i]).all():
                raise ForcematchError(
                    f"replica {replica}: non-finite forces at MD step "
                    f"{equilibration_steps + (i + 1) * stride} (frame {i})"
                )
            if (i + 1) % checkpoint_every == 0 and i + 1 < n_frames:
                context = fresh_context(
                    checkpoint.commit(context, positions, forces, energies, i + 1))
                integrator = context.getIntegrator()
                if stop_after_frames is not None and i + 1 >= stop_after_frames:
                    return
            if (i + 1) % report_every == 0 or i + 1 == n_frames:
                elapsed = time.perf_counter() - t0
                rate = (i + 1 - start) * stride / elapsed if elapsed > 0 else float("inf")
                eta = (n_frames - i - 1) * stride / rate if rate > 0 else float("nan")
                _emit(
                    progress,
                    f"replica {replica}: frame {i + 1}/{n_frames}, {rate:.0f} steps/s, "
                    f"ETA {eta:.0f} s",
                )
    except openmm.OpenMMException as exc:
        checkpoint.remove()
        raise ForcematchError(
            f"replica {replica}: OpenMM failed at MD step {context.getStepCount()} "
            f"(frame {i}): {exc}"
        ) from exc
    except ForcematchError:
        checkpoint.remove()  # a blown-up trajectory would blow up again from its checkpoint
        raise

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
        "config_hash": stage_hash,
        "replica": replica,
        "seed": rseed,
        "platform": platform,
        "threads": threads,
        "lj": asdict(lj),
        "resumed_at_frames": checkpoint.state["resumes"],
        "provenance": provenance("simulate", stage_hash,
                                 seeds={"simulate.seed": seed, "openmm_seed": rseed}),
    }
    write_h5md(out_path, traj, parameters)
    checkpoint.remove()
    _emit(progress, f"replica {replica}: wrote {n_frames} frames to {out_path}")


def _equilibrate(context, lj: LJSystem, replica: int, temperature_K: float, rseed: int,
                 minimize: bool, equilibration_steps: int, progress) -> None:
    """fcc start, energy minimisation, velocities at `temperature_K`, equilibration."""
    context.setPositions(lattice_positions_nm(lj, np.random.default_rng(rseed)))
    if minimize:
        openmm.LocalEnergyMinimizer.minimize(context)
        energy = _check_energy(context, replica, 0, "after minimisation")
        _emit(progress, f"replica {replica}: minimised, U = {energy:.4f} kJ/mol")
    context.setVelocitiesToTemperature(temperature_K * unit.kelvin, rseed)
    t0 = time.perf_counter()
    done = 0
    chunk = 1000
    integrator = context.getIntegrator()
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
