"""Sampling one replica with Langevin dynamics: equilibration, then checkpointed frames.

Units are OpenMM's: positions nm, forces kJ/mol/nm, energies kJ/mol, masses amu, temperature K,
time step fs, friction 1/ps, times ps. With the CPU platform and one thread a replica is
bitwise reproducible, also across a kill and resume.
"""

from __future__ import annotations

import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openmm
from openmm import unit

from forcematch.data.frames import Frames
from forcematch.errors import ForcematchError
from forcematch.io.h5md import write_h5md
from forcematch.io.provenance import provenance
from forcematch.progress import bar as progress_bar
from forcematch.reference.checkpoint import ReplicaCheckpoint
from forcematch.reference.progress import Progress, emit
from forcematch.reference.system import (
    KJ_MOL,
    KJ_MOL_NM,
    NM,
    OPENMM_MAX_SEED,
    LJSystem,
    build_system,
    lattice_positions_nm,
    lj_system_from_config,
    make_context,
    replica_seed,
)
from forcematch.reference.virial import virial_kJ_mol

EQUILIBRATION_CHUNK_STEPS = 1000  # the energy is checked after every chunk


class BlowUp(ForcematchError):
    """The trajectory blew up (NaN or infinite energy, forces or coordinates). It would blow up
    again from its checkpoint, so the checkpoint is discarded; every other failure keeps it."""


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _is_blow_up(exc: BaseException) -> bool:
    """An OpenMMException about NaN or infinite values (e.g. 'Particle coordinate is NaN')."""
    return re.search(r"\bnan\b|infinit", str(exc), flags=re.IGNORECASE) is not None


@dataclass(frozen=True)
class SamplingSettings:
    """How a replica is sampled: ``config['simulate']`` and ``system.temperature_K``."""

    n_frames: int
    stride: int  # MD steps between frames
    timestep_fs: float
    seed: int  # simulate.seed; each replica's OpenMM seed is replica_seed(seed, replica)
    temperature_K: float
    friction_per_ps: float
    equilibration_steps: int
    minimize: bool
    checkpoint_every: int  # frames

    @classmethod
    def from_config(cls, config: dict) -> SamplingSettings:
        """The settings of a validated config (every key present, schema defaults filled)."""
        try:
            sim = config["simulate"]
            settings = cls(n_frames=int(sim["frames_per_replica"]),
                           stride=int(sim["steps_between_frames"]),
                           timestep_fs=float(sim["timestep_fs"]), seed=int(sim["seed"]),
                           temperature_K=float(config["system"]["temperature_K"]),
                           friction_per_ps=float(sim["friction_per_ps"]),
                           equilibration_steps=int(sim["equilibration_steps"]),
                           minimize=bool(sim["minimize"]),
                           checkpoint_every=int(sim["checkpoint_every_frames"]))
        except KeyError as exc:
            raise ForcematchError(
                f"config: missing key {exc.args[0]!r} (simulate/system)") from exc
        if (settings.n_frames < 1 or settings.stride < 1 or settings.equilibration_steps < 0
                or settings.checkpoint_every < 1):
            raise ForcematchError(
                "config: simulate.frames_per_replica, steps_between_frames and "
                "checkpoint_every_frames must be >= 1, equilibration_steps >= 0"
            )
        for key, value in (("simulate.timestep_fs", settings.timestep_fs),
                           ("system.temperature_K", settings.temperature_K),
                           ("simulate.friction_per_ps", settings.friction_per_ps)):
            if not (math.isfinite(value) and value > 0):
                raise ForcematchError(f"config: {key} = {value} must be a finite number > 0")
        if not 0 <= settings.seed <= OPENMM_MAX_SEED:
            raise ForcematchError(
                f"config: simulate.seed = {settings.seed} is outside 0..{OPENMM_MAX_SEED}: "
                "OpenMM seeds are 32-bit signed integers")
        return settings

    def md_step(self, frames: int) -> int:
        """MD step count once `frames` frames are sampled (equilibration included)."""
        return self.equilibration_steps + frames * self.stride


def _step_count(context: openmm.Context, fallback: int) -> int:
    """The context's MD step, or `fallback` when a failed context cannot say."""
    try:
        return int(context.getStepCount())
    except openmm.OpenMMException:
        return fallback


def _finite_energy(energy: float, replica: int, md_step: int, what: str) -> float:
    if not math.isfinite(energy):
        raise BlowUp(
            f"replica {replica}: potential energy is {energy} at MD step {md_step} ({what})"
        )
    return energy


def _check_energy(context: openmm.Context, replica: int, md_step: int, what: str) -> float:
    energy = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(KJ_MOL)
    return _finite_energy(energy, replica, md_step, what)


def equilibrate(context: openmm.Context, lj: LJSystem, replica: int,
                settings: SamplingSettings, rseed: int, progress: Progress) -> None:
    """fcc start, energy minimisation, velocities at the temperature, equilibration."""
    context.setPositions(lattice_positions_nm(lj, np.random.default_rng(rseed)))
    if settings.minimize:
        try:
            openmm.LocalEnergyMinimizer.minimize(context)
        except openmm.OpenMMException as exc:
            raise BlowUp(f"replica {replica}: energy minimisation failed at MD step 0: "
                         f"{_one_line(exc)}") from exc
        energy = _check_energy(context, replica, 0, "after minimisation")
        emit(progress, f"replica {replica}: minimised, U = {energy:.4f} kJ/mol")
    context.setVelocitiesToTemperature(settings.temperature_K * unit.kelvin, rseed)
    t0 = time.perf_counter()
    done = 0
    integrator = context.getIntegrator()
    try:
        while done < settings.equilibration_steps:
            n = min(EQUILIBRATION_CHUNK_STEPS, settings.equilibration_steps - done)
            integrator.step(n)
            done += n
            _check_energy(context, replica, done, "equilibration")
    except openmm.OpenMMException as exc:
        kind = BlowUp if _is_blow_up(exc) else ForcematchError
        raise kind(f"replica {replica}: OpenMM failed at MD step "
                   f"{_step_count(context, done)} (equilibration): {_one_line(exc)}") from exc
    if settings.equilibration_steps:
        elapsed = time.perf_counter() - t0
        emit(progress, f"replica {replica}: equilibrated {settings.equilibration_steps} steps "
                       f"in {elapsed:.1f} s")


class _ReplicaRun:
    """One replica being sampled: its OpenMM system, current Context, frames and checkpoint.

    The run continues from every checkpoint in a new Context, as a resumed run does: OpenMM's
    CPU platform orders its force sums by its own neighbour-list history, which a checkpoint
    does not hold, so only a fresh Context keeps a killed-and-resumed replica bitwise equal to
    an uninterrupted one (otherwise positions drift apart by ~1e-11 nm within 10 steps).
    """

    def __init__(self, settings: SamplingSettings, lj: LJSystem, replica: int, rseed: int,
                 platform: str, threads: int, checkpoint: ReplicaCheckpoint,
                 progress: Progress):
        self.settings, self.lj, self.replica, self.rseed = settings, lj, replica, rseed
        self.platform, self.threads = platform, threads
        self.checkpoint, self.progress = checkpoint, progress
        self.system = build_system(lj)
        self.context: openmm.Context | None = None
        self.integrator: openmm.Integrator | None = None
        n = settings.n_frames
        self.positions = np.empty((n, lj.n_atoms, 3))
        self.forces = np.empty((n, lj.n_atoms, 3))
        self.energies = np.empty(n)

    def new_context(self, saved: bytes | None = None) -> openmm.Context:
        """A fresh Context (from the OpenMM checkpoint `saved`, if given) for the run to use."""
        s = self.settings
        context = make_context(self.system, s.temperature_K, s.timestep_fs, s.friction_per_ps,
                               self.rseed, self.platform, self.threads)
        if saved is not None:
            context.loadCheckpoint(saved)
        self.context, self.integrator = context, context.getIntegrator()
        return context

    def start(self) -> int:
        """Resume from the checkpoint, or equilibrate afresh; returns the frames already done."""
        saved = self.checkpoint.load(self.progress)
        if saved is not None:
            try:
                context = self.new_context(saved)
            except openmm.OpenMMException as exc:
                raise ForcematchError(
                    f"replica {self.replica}: OpenMM cannot load the checkpoint in "
                    f"{self.checkpoint.dir} ({_one_line(exc)}); delete it to start the replica "
                    "afresh") from exc
            done = self.checkpoint.state["frames_done"]
            self.checkpoint.state["resumes"].append(done)
            emit(self.progress, f"replica {self.replica}: resuming from {self.checkpoint.dir} "
                                f"at frame {done}/{self.settings.n_frames} "
                                f"(MD step {context.getStepCount()})")
        else:
            context = self.new_context()
            try:  # nothing committed yet: whatever fails, the partial directory goes
                equilibrate(context, self.lj, self.replica, self.settings, self.rseed,
                            self.progress)
                saved = self.checkpoint.commit(context, None, None, None, 0)
            except ForcematchError:
                self.checkpoint.remove()
                raise
            self.new_context(saved)
        start = self.checkpoint.state["frames_done"]
        if start > self.settings.n_frames:
            raise ForcematchError(
                f"replica {self.replica}: the checkpoint in {self.checkpoint.dir} holds {start} "
                f"frames, more than simulate.frames_per_replica = {self.settings.n_frames}; "
                "delete it to start the replica afresh")
        if start:
            self.positions[:start], self.forces[:start], self.energies[:start] = (
                self.checkpoint.frames(self.lj.n_atoms))
        return start

    def sample(self, start: int, stop_after_frames: int | None) -> bool:
        """Sample frames `start`.. to the end; False if stopped after `stop_after_frames`.

        A blow-up (`BlowUp`: NaN or infinite values, which would recur from the checkpoint)
        removes the checkpoint; every other failure (a transient GPU error, a full disk) keeps
        it, and the message says where it is.
        """
        n_frames, t0, i = self.settings.n_frames, time.perf_counter(), start
        bar = progress_bar(n_frames - start, f"replica {self.replica}", "frame")
        try:
            for i in range(start, n_frames):
                self._sample_frame(i)
                bar.update(1)
                if (i + 1) % self.settings.checkpoint_every == 0 and i + 1 < n_frames:
                    self.new_context(self.checkpoint.commit(
                        self.context, self.positions, self.forces, self.energies, i + 1))
                    if stop_after_frames is not None and i + 1 >= stop_after_frames:
                        return False
                self._report(i + 1, start, t0)
        except openmm.OpenMMException as exc:
            kind = BlowUp if _is_blow_up(exc) else ForcematchError
            step = _step_count(self.context, self.settings.md_step(i + 1))
            raise self._failed(kind(f"replica {self.replica}: OpenMM failed at MD step {step} "
                                    f"(frame {i}): {_one_line(exc)}")) from exc
        except BlowUp:
            self.checkpoint.remove()
            raise
        except ForcematchError as exc:
            raise self._failed(exc) from exc
        finally:
            bar.close()
        return True

    def _failed(self, error: ForcematchError) -> ForcematchError:
        """`error` as raised: a blow-up after removing the checkpoint, anything else with the
        checkpoint kept and named."""
        if isinstance(error, BlowUp):
            self.checkpoint.remove()
            return error
        text = str(error)
        if not text.startswith(f"replica {self.replica}"):
            text = f"replica {self.replica}: {text}"
        return ForcematchError(f"{text}; kept the checkpoint {self.checkpoint.describe()}: "
                               "rerun to continue from it")

    def _sample_frame(self, i: int) -> None:
        """Advance `stride` steps and record frame `i` (positions wrapped into the box)."""
        self.integrator.step(self.settings.stride)
        state = self.context.getState(
            getPositions=True, getForces=True, getEnergy=True, enforcePeriodicBox=True
        )
        md_step = self.settings.md_step(i + 1)
        energy = state.getPotentialEnergy().value_in_unit(KJ_MOL)
        self.energies[i] = _finite_energy(energy, self.replica, md_step, f"frame {i}")
        self.positions[i] = state.getPositions(asNumpy=True).value_in_unit(NM)
        self.forces[i] = state.getForces(asNumpy=True).value_in_unit(KJ_MOL_NM)
        for name, values in (("coordinates", self.positions[i]), ("forces", self.forces[i])):
            if not np.isfinite(values).all():
                raise BlowUp(f"replica {self.replica}: non-finite {name} at MD step {md_step} "
                             f"(frame {i})")

    def _report(self, done: int, start: int, t0: float) -> None:
        """A status line at every tenth of the frames: rate since `start` and time left."""
        n_frames, stride = self.settings.n_frames, self.settings.stride
        if done % max(1, n_frames // 10) != 0 and done != n_frames:
            return
        elapsed = time.perf_counter() - t0
        rate = (done - start) * stride / elapsed if elapsed > 0 else float("inf")
        eta = (n_frames - done) * stride / rate if rate > 0 else float("nan")
        emit(self.progress, f"replica {self.replica}: frame {done}/{n_frames}, {rate:.0f} "
                            f"steps/s, ETA {eta:.0f} s")

    def sampled_frames(self) -> Frames:
        """The sampled frames with the box of the last state, steps, times and each frame's
        virial (`reference.virial`)."""
        s, n_frames = self.settings, self.settings.n_frames
        box_vectors = self.context.getState().getPeriodicBoxVectors(asNumpy=True)
        box = np.diagonal(box_vectors.value_in_unit(NM))
        steps = s.equilibration_steps + s.stride * np.arange(1, n_frames + 1, dtype=np.int64)
        boxes = np.tile(box, (n_frames, 1))
        return Frames(
            positions_nm=self.positions,
            forces_kJ_mol_nm=self.forces,
            potential_energy_kJ_mol=self.energies,
            box_nm=boxes,
            step=steps,
            time_ps=steps * (s.timestep_fs * 1e-3),
            species=self.lj.species,
            masses_amu=self.lj.masses_amu,
            virial_kJ_mol=virial_kJ_mol(self.lj, self.positions, boxes),
        )

    def parameters(self, config: dict, stage_hash: str) -> dict:
        """The `/parameters` record of the output file, provenance included."""
        seeds = {"simulate.seed": self.settings.seed, "openmm_seed": self.rseed}
        return {
            "config": config,
            "config_hash": stage_hash,
            "replica": self.replica,
            "seed": self.rseed,
            "platform": self.platform,
            "threads": self.threads,
            "lj": self.lj.record(),
            "resumed_at_frames": self.checkpoint.state["resumes"],
            "provenance": provenance("simulate", stage_hash, seeds=seeds),
        }


def run_replica(
    config: dict,
    replica: int,
    out_path: str | os.PathLike,
    *,
    threads: int = 1,
    platform: str = "CPU",
    progress: Progress = print,
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

    settings = SamplingSettings.from_config(config)
    out_path = Path(out_path)
    if not out_path.parent.is_dir():
        raise ForcematchError(f"output directory does not exist: {out_path.parent}")
    lj = lj_system_from_config(config)
    rseed = replica_seed(settings.seed, replica)
    stage_hash = config_hash(stage_config(config, "simulate"))
    checkpoint = ReplicaCheckpoint(out_path, {"config_hash": stage_hash, "replica": replica,
                                              "platform": platform})
    run = _ReplicaRun(settings, lj, replica, rseed, platform, threads, checkpoint, progress)
    composition = "" if lj.mixture is None else " (" + ", ".join(
        f"{c} {n}" for n, c in zip(lj.mixture.names, lj.mixture.counts, strict=True)) + ")"
    emit(progress, f"replica {replica}: N={lj.n_atoms}{composition}, box {lj.box_nm:.6f} nm, "
                   f"T={settings.temperature_K} K, dt={settings.timestep_fs} fs, seed {rseed}, "
                   f"platform {platform}, threads {threads}")
    if not run.sample(run.start(), stop_after_frames):
        return
    try:
        write_h5md(out_path, run.sampled_frames(), run.parameters(config, stage_hash))
    except ForcematchError as exc:
        raise ForcematchError(
            f"replica {replica}: {exc}; kept the checkpoint {checkpoint.describe()}: a rerun "
            "samples only the frames after it") from exc
    checkpoint.remove()
    emit(progress, f"replica {replica}: wrote {settings.n_frames} frames to {out_path}")
