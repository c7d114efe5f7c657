"""The MD checks' runs of the reference Lennard-Jones system, through OpenMM.

`OpenMMEngine` implements the `Engine` protocol of `record.py` (NVE velocity Verlet, NVT
Langevin), so a trained model's runs and the reference's are recorded and judged alike;
`strain_derivative_kJ_mol` and `tail_correction_pressure_bar` give the reference's pressure.

Units: nm, ps, kJ/mol, kJ/mol/nm, amu, K; time steps in fs, friction in 1/ps.

Why OpenMM: the reference *is* the OpenMM system of `forcematch.reference.system` (its switched
LJ, its dispersion correction, its integrators); the training data were sampled with it, so
the reference's MD is run by the same code rather than a re-implementation. No JAX here.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import openmm
from openmm import unit

from forcematch.errors import ForcematchError
from forcematch.md.record import Segment, StabilityLimits, find_failure, remove_net_momentum
from forcematch.reference.system import (
    KJ_MOL,
    KJ_MOL_NM,
    NM,
    OPENMM_MAX_SEED,
    LJSystem,
    build_system,
    energy_and_forces,
    lattice_positions_nm,
    make_context,
    platform_and_properties,
)
from forcematch.units import KJ_MOL_NM3_TO_BAR

ENSEMBLES = ("nve", "nvt")
CHECK_EVERY_RECORDS = 50  # find_failure runs on blocks of this many records
NM_PS = unit.nanometer / unit.picosecond


class _Records:
    """The records of one run, appended one at a time (lists of per-record arrays)."""

    def __init__(self, masses_amu: np.ndarray) -> None:
        self.masses = masses_amu
        self.pos: list[np.ndarray] = []
        self.vel: list[np.ndarray] = []
        self.frc: list[np.ndarray] = []
        self.pot: list[float] = []
        self.kin: list[float] = []
        self.time: list[float] = []

    def __len__(self) -> int:
        return len(self.pos)

    def append(self, context: openmm.Context, time_ps: float) -> None:
        """The context's current state; raises OpenMMException when OpenMM cannot compute it."""
        state = context.getState(getPositions=True, getVelocities=True, getForces=True,
                                 getEnergy=True, enforcePeriodicBox=False)
        self.pos.append(state.getPositions(asNumpy=True).value_in_unit(NM))
        self.vel.append(state.getVelocities(asNumpy=True).value_in_unit(NM_PS))
        self.frc.append(state.getForces(asNumpy=True).value_in_unit(KJ_MOL_NM))
        self.pot.append(state.getPotentialEnergy().value_in_unit(KJ_MOL))
        self.kin.append(state.getKineticEnergy().value_in_unit(KJ_MOL))
        self.time.append(time_ps)

    def append_broken(self, context: openmm.Context, time_ps: float) -> None:
        """The failure record after an OpenMMException: positions and velocities as OpenMM
        has them (NaN where it cannot give them), forces and energies NaN."""
        nan = np.full((self.masses.shape[0], 3), np.nan)
        try:
            state = context.getState(getPositions=True, getVelocities=True,
                                     enforcePeriodicBox=False)
            pos = state.getPositions(asNumpy=True).value_in_unit(NM)
            vel = state.getVelocities(asNumpy=True).value_in_unit(NM_PS)
        except openmm.OpenMMException:
            pos, vel = nan, nan
        self.pos.append(np.asarray(pos, np.float64))
        self.vel.append(np.asarray(vel, np.float64))
        self.frc.append(nan)
        self.pot.append(np.nan)
        self.kin.append(np.nan)
        self.time.append(time_ps)

    def truncate(self, n: int) -> None:
        for field in (self.pos, self.vel, self.frc, self.pot, self.kin, self.time):
            del field[n:]

    def first_failure(self, start: int, box_nm: np.ndarray, target_K: float,
                      limits: StabilityLimits, ensemble: str) -> str | None:
        """Check records start.. with `find_failure`; on a failure keep records up to it."""
        if start >= len(self):
            return None
        found = find_failure(np.asarray(self.pos[start:]), np.asarray(self.vel[start:]),
                             np.asarray(self.pot[start:]), np.asarray(self.kin[start:]),
                             box_nm, target_K=target_K, limits=limits, ensemble=ensemble)
        if found is None:
            return None
        self.truncate(start + found[0] + 1)
        return found[1]

    def arrays(self) -> dict[str, np.ndarray]:
        vel = np.asarray(self.vel, np.float64).reshape(-1, self.masses.shape[0], 3)
        return {
            "time_ps": np.asarray(self.time, np.float64),
            "positions_nm": np.asarray(self.pos, np.float64).reshape(vel.shape),
            "velocities_nm_ps": vel,
            "forces_kJ_mol_nm": np.asarray(self.frc, np.float64).reshape(vel.shape),
            "potential_kJ_mol": np.asarray(self.pot, np.float64),
            "kinetic_kJ_mol": np.asarray(self.kin, np.float64),
            "momentum_amu_nm_ps": np.einsum("n,snk->sk", self.masses, vel),
        }


class OpenMMEngine:
    """MD of the reference LJ system with OpenMM (`Engine` protocol of `record.py`).

    "nve": openmm.VerletIntegrator (leapfrog); "nvt": openmm.LangevinMiddleIntegrator. The
    recorded velocities are OpenMM's, half a step behind the positions for both integrators
    (so a Segment's final state continues the run exactly); the kinetic energy is OpenMM's
    on-step estimate. One Context per `run`; no CMMotionRemover (momentum is a check).
    """

    name = "openmm"

    def __init__(self, lj: LJSystem, platform: str = "CPU", threads: int = 1) -> None:
        self.lj = lj
        self.platform = platform
        self.threads = int(threads)
        self.masses_amu = lj.masses_amu  # [N] amu, per atom (a mixture's species)
        self.box_nm = np.full(3, float(lj.box_nm))
        self._system = build_system(lj)
        platform_and_properties(platform, self.threads)  # refuse an unknown platform now

    def run(self, ensemble: str, positions_nm: np.ndarray, velocities_nm_ps: np.ndarray | None,
            temperature_K: float, timestep_fs: float, n_steps: int, record_every: int,
            seed: int, friction_per_ps: float, limits: StabilityLimits) -> Segment:
        """Run `n_steps` of `ensemble` from the given state, recording every `record_every`
        steps (record 0: the start); velocities None draws them from Maxwell–Boltzmann at
        `temperature_K` with `seed` and removes the net momentum, as NVE does from given
        ones. `seed` (0..2**31-1) also seeds the Langevin noise; 0 there means a random seed
        (OpenMM's convention), so use a seed >= 1 to reproduce a run. Stops at the first
        record failing `limits` (Segment.failure says why; an OpenMMException is such a
        failure); never raises on a failed run, only on bad arguments (ForcematchError)."""
        pos, vel = self._check(ensemble, positions_nm, velocities_nm_ps, temperature_K,
                               timestep_fs, n_steps, record_every, seed, friction_per_ps)
        context = self._context(ensemble, temperature_K, timestep_fs, friction_per_ps, seed)
        context.setPositions(pos)
        if vel is None:
            context.setVelocitiesToTemperature(temperature_K * unit.kelvin, int(seed))
            vel = context.getState(getVelocities=True).getVelocities(asNumpy=True)
            vel = np.asarray(vel.value_in_unit(NM_PS), np.float64)
            vel = remove_net_momentum(vel, self.masses_amu)
        elif ensemble == "nve":  # NVE conserves the total momentum: it starts at zero
            vel = remove_net_momentum(vel, self.masses_amu)
        context.setVelocities(vel)
        records = _Records(self.masses_amu)
        failure = _integrate(context, records, n_steps, record_every, timestep_fs * 1e-3,
                             self.box_nm, temperature_K, limits, ensemble)
        return Segment(ensemble=ensemble, temperature_K=float(temperature_K),
                       timestep_fs=float(timestep_fs), record_every=int(record_every),
                       box_nm=self.box_nm.copy(), masses_amu=self.masses_amu.copy(),
                       planned_steps=int(n_steps), failure=failure, **records.arrays())

    def _check(self, ensemble, positions_nm, velocities_nm_ps, temperature_K, timestep_fs,
               n_steps, record_every, seed, friction_per_ps):
        """Positions [N,3] and velocities [N,3] or None as float64, the rest checked."""
        if ensemble not in ENSEMBLES:
            raise ForcematchError(f"ensemble {ensemble!r} is not one of {list(ENSEMBLES)}")
        n = self.lj.n_atoms
        pos = np.asarray(positions_nm, np.float64)
        vel = None if velocities_nm_ps is None else np.asarray(velocities_nm_ps, np.float64)
        for what, array in (("positions", pos), ("velocities", vel)):
            if array is not None and array.shape != (n, 3):
                raise ForcematchError(f"OpenMM run: {what} of shape {array.shape}, "
                                      f"expected [{n}, 3]")
        for what, value in (("temperature_K", temperature_K), ("timestep_fs", timestep_fs),
                            ("friction_per_ps", friction_per_ps)):
            if not (np.isfinite(value) and value > 0):
                raise ForcematchError(f"OpenMM run: {what} = {value} must be finite and > 0")
        if not (record_every >= 1 and n_steps >= 0 and n_steps % record_every == 0):
            raise ForcematchError(
                f"OpenMM run: n_steps = {n_steps} must be a non-negative multiple of "
                f"record_every = {record_every} (>= 1)")
        if not 0 <= int(seed) <= OPENMM_MAX_SEED or int(seed) != seed:
            raise ForcematchError(f"OpenMM seed {seed} is outside 0..{OPENMM_MAX_SEED} "
                                  "(OpenMM seeds are 32-bit signed integers)")
        return pos, vel

    def _context(self, ensemble: str, temperature_K: float, timestep_fs: float,
                 friction_per_ps: float, seed: int) -> openmm.Context:
        if ensemble == "nvt":
            return make_context(self._system, temperature_K, timestep_fs, friction_per_ps,
                                int(seed), self.platform, self.threads)
        plat, props = platform_and_properties(self.platform, self.threads)
        integrator = openmm.VerletIntegrator(timestep_fs * unit.femtosecond)
        try:
            return openmm.Context(self._system, integrator, plat, props)
        except openmm.OpenMMException as exc:
            message = " ".join(str(exc).split())
            raise ForcematchError(f"OpenMM could not create a context on platform "
                                  f"{self.platform}: {message}") from exc


def _integrate(context: openmm.Context, records: _Records, n_steps: int, record_every: int,
               dt_ps: float, box_nm: np.ndarray, target_K: float,
               limits: StabilityLimits, ensemble: str) -> str | None:
    """Record the start, then every `record_every` steps; check blocks of records with
    `find_failure`. Returns the failure (records end at the failed one) or None."""
    integrator = context.getIntegrator()
    checked = 0
    for k in range(n_steps // record_every + 1):
        time_ps = k * record_every * dt_ps
        try:
            if k > 0:
                integrator.step(record_every)
            records.append(context, time_ps)
        except openmm.OpenMMException as exc:
            earlier = records.first_failure(checked, box_nm, target_K, limits, ensemble)
            if earlier is not None:
                return earlier
            records.append_broken(context, time_ps)
            return "OpenMM: " + " ".join(str(exc).split())
        if len(records) - checked >= CHECK_EVERY_RECORDS:
            failure = records.first_failure(checked, box_nm, target_K, limits, ensemble)
            if failure is not None:
                return failure
            checked = len(records)
    return records.first_failure(checked, box_nm, target_K, limits, ensemble)


def _strain_fd(lj: LJSystem, positions_nm: np.ndarray, box_nm: np.ndarray,
               step: float) -> np.ndarray:
    """dU/dλ [F] at λ = 1 of U(λ·positions, λ·box) under `lj` as it is (central difference)."""
    pos = np.asarray(positions_nm, np.float64)
    if pos.ndim != 3:
        raise ForcematchError(f"strain derivative: positions of shape {pos.shape}, "
                              "expected [F, N, 3]")
    if not 0 < step < 1e-2:
        raise ForcematchError(f"strain derivative: step = {step} must lie in (0, 0.01)")
    n_frames = pos.shape[0]
    box = np.broadcast_to(np.asarray(box_nm, np.float64), (n_frames, 3))
    scales = (1.0 + step, 1.0 - step)
    energies, _ = energy_and_forces(lj, np.concatenate([s * pos for s in scales]),
                                    np.concatenate([s * box for s in scales]),
                                    platform="Reference")
    return (energies[:n_frames] - energies[n_frames:]) / (2.0 * step)


def strain_derivative_kJ_mol(lj: LJSystem, positions_nm: np.ndarray, box_nm: np.ndarray,
                             step: float = 1e-5) -> np.ndarray:
    """dU/dλ (kJ/mol) [F] at λ = 1 of U(λ·positions, λ·box), frames positions [F,N,3] nm in a
    box [3] (or [F,3]) nm: the virial term of the pressure, P = (2K/3 − dU/dλ/3)/V.

    Central finite differences with relative `step` on OpenMM's Reference platform (double
    precision). U is that of the pair forces within the cutoff: the dispersion (long-range
    tail) correction is switched off, since a model trained at one density learns no
    volume-dependent tail; `tail_correction_pressure_bar` gives what it would add. A mixture
    is the same: U is its CustomNonbondedForce's, per-pair σ and ε, correction off.
    """
    return _strain_fd(dataclasses.replace(lj, dispersion_correction=False),
                      positions_nm, box_nm, step)


def tail_correction_pressure_bar(lj: LJSystem, step: float = 1e-5) -> float:
    """Pressure (bar) of OpenMM's dispersion correction at the box of `lj` (negative).

    The finite-difference dU/dλ of (energy with the correction − without) on one lattice
    frame (the correction does not depend on positions), as −dU/dλ / (3V) in bar. The
    correction is OpenMM's own, E = C/V: one species, NonbondedForce's; a mixture, that of
    its CustomNonbondedForce, C = 2πN² Σ_{a≤b} n_ab I_ab / (N(N+1)/2) with n_aa =
    N_a(N_a+1)/2, n_ab = N_a N_b and I_ab = ∫ r² φ_ab (1 − S) dr beyond the switch
    (numerically integrated by OpenMM to ~1e-5 relative); as N grows this tends to the
    textbook 2πN² Σ_ab x_a x_b I_ab. Since E ∝ 1/V, the result is E/V.
    """
    frame = lattice_positions_nm(lj, np.random.default_rng(0))[None]
    box = np.full(3, float(lj.box_nm))
    with_tail = _strain_fd(dataclasses.replace(lj, dispersion_correction=True), frame, box,
                           step)
    without = _strain_fd(dataclasses.replace(lj, dispersion_correction=False), frame, box,
                         step)
    du_dlambda = float(with_tail[0] - without[0])
    return -du_dlambda / (3.0 * lj.box_nm**3) * KJ_MOL_NM3_TO_BAR
