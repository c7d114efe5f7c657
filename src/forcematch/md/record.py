"""What one MD run recorded (`Segment`), and when a run has failed (`find_failure`).

Every engine (the JAX MD engine for trained models, OpenMM for the reference) returns the same
Segment, so the checks in `checks.py` treat model and reference alike. Units are the project's:
nm, ps, kJ/mol, kJ/mol/nm, amu, K.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from forcematch.units import BOLTZMANN_KJ_MOL_K


@dataclass(frozen=True)
class StabilityLimits:
    """When a run counts as failed (checked at every record).

    min_distance_nm: a pair closer than this fails the run (the closest pair of the reference
        data shrunk by a stated margin; the reference's own MD must pass it too);
    runaway_factor: the instantaneous temperature above runaway_factor × the target fails it.
    A NaN or infinite energy, position or velocity always fails it.
    """

    min_distance_nm: float
    runaway_factor: float = 2.0


def degrees_of_freedom(ensemble: str, n_atoms: int) -> int:
    """Kinetic degrees of freedom of an `ensemble` run of `n_atoms` atoms.

    "nvt" (Langevin: JAX MD's BAOAB, OpenMM's LangevinMiddle, no motion remover): 3N, since
    the thermostat kicks every momentum, the total included, which it does not conserve.
    "nve": 3N − 3, since every NVE run starts with zero total momentum
    (`remove_net_momentum`) and conserves it.
    """
    return 3 * n_atoms if ensemble == "nvt" else 3 * n_atoms - 3


def instantaneous_temperature_K(kinetic_kJ_mol, ensemble: str, n_atoms: int) -> np.ndarray:
    """Instantaneous temperature (K) of kinetic energies (kJ/mol) [S] of an `ensemble` run."""
    dof = degrees_of_freedom(ensemble, n_atoms)
    return 2.0 * np.asarray(kinetic_kJ_mol) / (dof * BOLTZMANN_KJ_MOL_K)


def remove_net_momentum(velocities_nm_ps, masses_amu) -> np.ndarray:
    """Velocities [N,3] nm/ps less the centre-of-mass velocity (masses [N] amu): zero total
    momentum, as an NVE run starts."""
    v = np.asarray(velocities_nm_ps, np.float64)
    m = np.asarray(masses_amu, np.float64)
    return v - m @ v / m.sum()


@dataclass
class Segment:
    """One MD run, recorded every `record_every` steps; record 0 is the starting state.

    Arrays have S records (fewer than planned when the run failed: they stop at the first
    failed record). positions [S,N,3] nm (any image: every consumer uses the minimum image),
    velocities [S,N,3] nm/ps, forces [S,N,3] kJ/mol/nm, potential and kinetic [S] kJ/mol,
    momentum [S,3] amu nm/ps (total), time [S] ps from the start of this run.
    """

    ensemble: str  # "nve" or "nvt"
    temperature_K: float  # the thermostat's (nvt) or the initial velocities' (nve)
    timestep_fs: float
    record_every: int
    box_nm: np.ndarray  # [3]
    masses_amu: np.ndarray  # [N]
    time_ps: np.ndarray
    positions_nm: np.ndarray
    velocities_nm_ps: np.ndarray
    forces_kJ_mol_nm: np.ndarray
    potential_kJ_mol: np.ndarray
    kinetic_kJ_mol: np.ndarray
    momentum_amu_nm_ps: np.ndarray
    planned_steps: int
    failure: str | None = None  # None: stable for the whole run

    @property
    def n_atoms(self) -> int:
        return int(self.masses_amu.shape[0])

    @property
    def total_kJ_mol(self) -> np.ndarray:
        return self.potential_kJ_mol + self.kinetic_kJ_mol

    @property
    def temperature_inst_K(self) -> np.ndarray:
        """Instantaneous temperature [S] (K): 3N degrees of freedom under Langevin, 3N − 3 in
        NVE (`degrees_of_freedom`)."""
        return instantaneous_temperature_K(self.kinetic_kJ_mol, self.ensemble, self.n_atoms)

    @property
    def duration_ps(self) -> float:
        return self.planned_steps * self.timestep_fs * 1e-3

    @property
    def time_to_failure_ps(self) -> float | None:
        """Time of the first failed record (ps), None when the run was stable."""
        return None if self.failure is None else float(self.time_ps[-1])

    def final_state(self) -> tuple[np.ndarray, np.ndarray]:
        """(positions [N,3] nm, velocities [N,3] nm/ps) of the last record."""
        return self.positions_nm[-1], self.velocities_nm_ps[-1]


def min_pair_distance_nm(positions_nm: np.ndarray, box_nm: np.ndarray) -> np.ndarray:
    """Closest minimum-image pair distance (nm) of each frame: positions [S,N,3] -> [S].

    A periodic k-d tree (scipy's cKDTree with `boxsize`): O(N log N) per frame.
    """
    from scipy.spatial import cKDTree

    box = np.asarray(box_nm, np.float64).reshape(3)
    out = np.empty(len(positions_nm))
    for s, frame in enumerate(np.asarray(positions_nm, np.float64)):
        wrapped = np.mod(frame, box)
        wrapped[wrapped >= box] = 0.0  # mod can round up to the edge itself
        distances, _ = cKDTree(wrapped, boxsize=box).query(wrapped, k=2)
        out[s] = distances[:, 1].min()
    return out


def find_failure(positions_nm, velocities_nm_ps, potential_kJ_mol, kinetic_kJ_mol,
                 box_nm, target_K: float, limits: StabilityLimits, ensemble: str,
                 closest_nm=None) -> tuple[int, str] | None:
    """The first record [S] that fails `limits` and why, or None when all pass.

    Arrays as in `Segment` (S records) of an `ensemble` run (its degrees of freedom give the
    temperature); `closest_nm` [S], the closest pair of each record when the engine knows it
    (from its neighbour list), else computed here. The reason names the quantity and its value.
    """
    pos = np.asarray(positions_nm)
    n_atoms = pos.shape[1]
    finite = (np.isfinite(pos).all(axis=(1, 2))
              & np.isfinite(np.asarray(velocities_nm_ps)).all(axis=(1, 2))
              & np.isfinite(potential_kJ_mol) & np.isfinite(kinetic_kJ_mol))
    temperature = instantaneous_temperature_K(kinetic_kJ_mol, ensemble, n_atoms)
    if closest_nm is not None:
        closest = np.where(finite, np.asarray(closest_nm, np.float64), np.inf)
    else:
        closest = np.full(pos.shape[0], np.inf)
        closest[finite] = min_pair_distance_nm(pos[finite], box_nm)
    for s in range(pos.shape[0]):
        if not finite[s]:
            return s, "non-finite energy, position or velocity"
        if temperature[s] > limits.runaway_factor * target_K:
            return s, (f"temperature runaway: {temperature[s]:.1f} K > "
                       f"{limits.runaway_factor:g} x {target_K:g} K")
        if closest[s] < limits.min_distance_nm:
            return s, (f"pair at {closest[s] * 10:.3f} A, closer than the limit "
                       f"{limits.min_distance_nm * 10:.3f} A")
    return None


class Engine(Protocol):
    """What runs MD: the JAX MD engine for a trained model, or OpenMM for the reference."""

    name: str
    masses_amu: np.ndarray  # [N]
    box_nm: np.ndarray  # [3]

    def run(self, ensemble: str, positions_nm: np.ndarray, velocities_nm_ps: np.ndarray | None,
            temperature_K: float, timestep_fs: float, n_steps: int, record_every: int,
            seed: int, friction_per_ps: float, limits: StabilityLimits) -> Segment:
        """Run `n_steps` of `ensemble` ("nve" velocity Verlet, "nvt" Langevin at
        `temperature_K` with `friction_per_ps`) from the given state; velocities None draws
        them from Maxwell–Boltzmann at `temperature_K` with `seed`, net momentum removed.
        Stops at the first record failing `limits` (Segment.failure says why); never raises
        on a failed run."""
        ...
