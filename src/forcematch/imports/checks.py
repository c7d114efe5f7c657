"""Checks of imported frames that catch wrong unit declarations, before anything is written.

Energies and forces must agree (`check_work`): between consecutive frames the energy change
equals the work of the forces, ΔU = −½ Σ (F_t + F_t+1)·Δx (trapezoid rule, minimum-image Δx).
The slope of ΔU on that work is 1 when the declared energy and force units agree, and a unit
factor (4.184, 23.06, 96.49, 10 ...) when one of them is wrong.

A whole unit system off by one factor (lammps_metal declared for a `units real` dump: energies
and forces both 23.06 times too large) keeps that slope at 1; no energy or force can tell, but
the temperature can (`check_temperature`). For displacements much shorter than a vibration,
Δx ≈ v τ with Maxwellian v, and with the configurational identity <|∇U|²> = kT <∇²U>:
    τ² = −<Σ ΔF·Δx> / <Σ |F|²/m>          (the time between frames, ps)
    kT = <Σ m |Δx|²> / (3N τ²)            (the temperature, kJ/mol)
in project units (1 kJ/mol = 1 u nm²/ps²). Energies and forces k times too large give k times
the temperature; a wrong length unit (positions and forces alike) cancels. It is compared with
system.temperature_K, the temperature the later stages (MD, validation) work at, and the frame
interval with the file's frame times where it has them (`check_frame_times`).

Positions in Å declared as nm put atoms 10 times too far apart (`check_positions`): the number
density and the closest pair distance must be those of condensed matter.

The energy check needs frames close in time: when consecutive frames' forces no longer
correlate (frames far apart, or not a trajectory) it says so in the log, and the temperature
estimate, biased high there but within the same bound, decides alone; data that give no
estimate are refused unless import.trust_units (`check_temperature`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from forcematch.data.frames import Frames
from forcematch.errors import ForcematchError
from forcematch.units import (
    BOLTZMANN_KJ_MOL_K,
    ENERGY_KJ_MOL,
    UNIT_SYSTEMS,
    SourceUnits,
    closest_confusion,
)

# Frames close enough to tell: at least MIN_PAIRS consecutive pairs whose forces still correlate
# (<F_t . F_t+1> / <|F|²> at least MIN_FORCE_CORRELATION). R² of ΔU on the work is no such
# gate: far frames bias the slope long before they spoil R². Measured on the test data (64-atom
# argon-like LJ liquids, 400 frames, every k-th frame), slope / R² / force correlation /
# temperature:
#   ASE VelocityVerlet 5 fs steps (kinetic T 141 K):
#     k = 1 (5 fs): 0.9993 1.0000 0.997 140.5 K | 4: 0.988 0.9998 0.958 141.4 K
#     8 (40 fs): 0.951 0.997 0.840 144.1 K | 12 (60 fs): 0.883 0.987 0.670 147.4 K
#     16 (80 fs): 0.789 0.970 0.481 153.1 K | 24 (120 fs): 0.587 0.899 0.100 170.6 K
#   LAMMPS Nosé-Hoover at 100 K, 5 fs steps, dumped every 2 steps:
#     k = 1 (10 fs): 0.9982 1.0000 0.991 95.9 K | 4: 0.972 0.9988 0.864 97.4 K
#     8 (80 fs): 0.887 0.985 0.539 102.1 K | 12 (120 fs): 0.718 0.916 0.181 110.0 K
#     16 (160 fs): 0.616 0.861 -0.119 120.4 K
# So past the gate (correlation >= 0.5) the slope stays within 12 % of 1 and the temperature
# within 7 % of its close-frame value, where an R² >= 0.9 gate would let slopes of 0.59 through.
MIN_PAIRS = 10
MIN_FORCE_CORRELATION = 0.5
# Close frames whose ΔU follows the work this loosely (R² below MIN_R2) get a warning in the
# log, not a check of the slope: no unit factor changes R², but energies rounded coarser than
# their frame-to-frame change, or energies that are not these frames' potential energies (total
# energies, an energy file shifted by a row), lower it.
MIN_R2 = 0.9
# Refuse a slope outside [1/SLOPE_LIMIT, SLOPE_LIMIT]: the trapezoid bias past the gate is 12 %
# (above); the smallest unit confusion is 1.89 (angstrom per bohr), the next 4.184 (kcal/kJ).
SLOPE_LIMIT = 1.5
# Refuse a temperature estimate outside [1/TEMPERATURE_LIMIT, TEMPERATURE_LIMIT] x
# system.temperature_K: the estimate is within 7 % past the gate (above); the smallest energy
# confusion is 4.184. The frame interval estimate: 5.01-5.09 fs for 5 fs, 10.06 fs for 10 fs, 40.2
# fs for 40 fs (the frame-times check uses the same limit on the force scale it implies).
TEMPERATURE_LIMIT = 2.0
# Condensed matter: number density (atoms/nm³) and closest pair (nm). Liquid argon at 100 K has
# 19.8 atoms/nm³ and a closest pair of about 0.30 nm (the test data: 19.8/nm³, 0.31-0.33 nm);
# liquid caesium 8.5, water 100, diamond 176 atoms/nm³; H2 is 0.074 nm long. Å declared as nm
# gives 0.02 atoms/nm³ and 3 nm, nm declared as Å 2e4 atoms/nm³ and 0.03 nm.
DENSITY_RANGE = (1.0, 300.0)
CLOSEST_PAIR_RANGE = (0.05, 0.6)


@dataclass(frozen=True)
class PairStatistics:
    """What consecutive frames tell (see the module docstring): the pairs used, the slope and R²
    of ΔU on the work, the temperature (K) and the time between frames (ps) they imply."""

    n_pairs: int
    step_interval: int
    force_correlation: float
    slope: float
    r2: float
    temperature_K: float
    interval_ps: float

    @property
    def close(self) -> bool:
        """Frames close enough in time for the checks to tell."""
        return self.n_pairs >= MIN_PAIRS and self.force_correlation >= MIN_FORCE_CORRELATION

    def describe(self) -> str:
        return (f"{self.n_pairs} consecutive pairs {self.step_interval} steps apart, force "
                f"correlation {self.force_correlation:.3f}: slope of dU on the work "
                f"{self.slope:.4f}, R² {self.r2:.4f}; temperature {self.temperature_K:.1f} K, "
                f"frames {1e3 * self.interval_ps:.3g} fs apart")

    def as_dict(self) -> dict:
        return {"pairs": self.n_pairs, "step_interval": self.step_interval,
                "force_correlation": self.force_correlation, "slope": self.slope,
                "r2": self.r2, "temperature_K": self.temperature_K,
                "interval_ps": self.interval_ps, "close": self.close}


def minimum_image(delta: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Displacements [.., N, 3] folded into the orthorhombic box [.., 3]."""
    box = box[..., None, :]
    return delta - box * np.round(delta / box)


def _work_fit(du: np.ndarray, work: np.ndarray) -> tuple[float, float]:
    """(slope, R²) of ΔU on the work, the line through the origin."""
    ww = float(work @ work)
    slope = float(du @ work) / ww if ww > 0 else math.nan
    spread = float(np.sum((du - du.mean()) ** 2))
    r2 = 1 - float(np.sum((du - slope * work) ** 2)) / spread if spread > 0 else math.nan
    return slope, r2


def _dynamics(f0: np.ndarray, f1: np.ndarray, dx: np.ndarray,
              masses: np.ndarray) -> tuple[float, float]:
    """(temperature K, time between frames ps) from forces at both ends of displacements dx
    (see the module docstring); NaN where the forces do not oppose the displacements."""
    inv_m = 1 / masses
    df_dx = -float(np.einsum("tnk,tnk->", f1 - f0, dx)) / dx.shape[0]
    f2_m = 0.5 * float(np.einsum("tnk,n->", f0**2 + f1**2, inv_m)) / dx.shape[0]
    tau2 = df_dx / f2_m if f2_m > 0 else math.nan
    if not tau2 > 0:
        return math.nan, math.nan
    kt = float(np.einsum("tnk,n->", dx**2, masses)) / dx.shape[0] / (3 * masses.size * tau2)
    return kt / BOLTZMANN_KJ_MOL_K, math.sqrt(tau2)


def pair_statistics(frames: Frames) -> PairStatistics | None:
    """Statistics of the consecutive frame pairs at the most common step interval; None with
    fewer than two frames."""
    if frames.n_frames < 2:
        return None
    values, counts = np.unique(np.diff(frames.step), return_counts=True)
    interval = int(values[np.argmax(counts)])
    use = np.flatnonzero(np.diff(frames.step) == interval)
    x, f, u = frames.positions_nm, frames.forces_kJ_mol_nm, frames.potential_energy_kJ_mol
    f0, f1 = f[use], f[use + 1]
    dx = minimum_image(x[use + 1] - x[use], frames.box_nm[use])
    slope, r2 = _work_fit(u[use + 1] - u[use], -0.5 * np.einsum("tnk,tnk->t", f0 + f1, dx))
    norm = math.sqrt(float(np.sum(f0**2)) * float(np.sum(f1**2)))
    correlation = float(np.sum(f0 * f1)) / norm if norm > 0 else math.nan
    temperature, interval_ps = _dynamics(f0, f1, dx, frames.masses_amu)
    return PairStatistics(n_pairs=int(use.size), step_interval=interval,
                          force_correlation=correlation, slope=slope, r2=r2,
                          temperature_K=temperature, interval_ps=interval_ps)


def _too_far(stats: PairStatistics | None, what: str) -> str | None:
    """A log line when the frames cannot tell `what`; None when they can."""
    if stats is None:
        return f"one frame: cannot check {what}"
    if not stats.close:
        return (f"frames too far apart (or too few) to check {what}: {stats.describe()} (needs "
                f">= {MIN_PAIRS} pairs with force correlation >= {MIN_FORCE_CORRELATION})")
    return None


def _confusion_text(ratio: float, **kwargs) -> str:
    found = closest_confusion(ratio, **kwargs)
    return f", close to the factor {found[0]:.4g} ({found[1]})" if found else ""


def check_work(stats: PairStatistics | None, where: str, units: SourceUnits,
               loose_energies: bool = False) -> str:
    """Refuse energies and forces that disagree under the declared units, and energies whose
    changes follow the forces' work only loosely unless `loose_energies` (import.
    loose_energies); the log line."""
    skipped = _too_far(stats, "that energies and forces agree")
    if skipped:
        return f"{where}: {skipped}"
    if not stats.r2 >= MIN_R2:
        loose = (f"the energy changes between consecutive frames follow the work of the "
                 f"forces only loosely ({stats.describe()}; R² >= {MIN_R2} expected)")
        if not loose_energies:
            raise ForcematchError(
                f"{where}: {loose}: are these the potential energies of these frames (not "
                "total energies, not shifted by a row, not another run's)? Energies rounded "
                "coarser than their changes: set import.loose_energies: true")
        return f"{where}: WARNING: {loose} (import.loose_energies); the units are not checked"
    if not 1 / SLOPE_LIMIT <= stats.slope <= SLOPE_LIMIT:
        raise ForcematchError(
            f"{where}: the energy changes between consecutive frames are {stats.slope:.4g} "
            f"times the work of the forces{_confusion_text(stats.slope)} ({stats.describe()}); "
            f"under correct units they are equal: energies and forces are not in the units "
            f"import.units declares ({units}): fix import.units")
    return f"{where}: energies and forces agree: {stats.describe()}"


def _alternatives(stats: PairStatistics, units: SourceUnits, temperature_K: float) -> str:
    """Named unit systems whose energies would put the data at `temperature_K`."""
    fits = []
    for name, (_, energy, _) in UNIT_SYSTEMS.items():
        t = stats.temperature_K * ENERGY_KJ_MOL[energy] / units.energy_kJ_mol
        if name != units.name and 1 / TEMPERATURE_LIMIT <= t / temperature_K <= TEMPERATURE_LIMIT:
            fits.append(f"{name} would give {t:.0f} K")
    return f" ({'; '.join(fits)})" if fits else ""


def check_temperature(stats: PairStatistics | None, where: str, units: SourceUnits,
                      temperature_K: float | None, trust_units: bool = False) -> str:
    """Refuse data whose temperature estimate is far from `temperature_K` (energies and forces
    in other units than declared, or system.temperature_K not the data's); the log line.

    Frames too far apart for the work check still give an estimate (biased high: +25 % at
    160 fs in the table above), which decides within the same ×/÷ TEMPERATURE_LIMIT; data
    that give none are refused unless `trust_units` (import.trust_units): no unit check ran."""
    far = _too_far(stats, "the units")
    if stats is None or not math.isfinite(stats.temperature_K):
        if trust_units:
            return f"{where}: {far or 'no temperature estimate'}: import.trust_units"
        why = far or (f"the forces do not oppose the displacements ({stats.describe()})")
        raise ForcematchError(
            f"{where}: no unit check can run on these data: {why}, and no temperature "
            "estimate: give frames closer in time, or set import.trust_units: true to take "
            f"import.units ({units}) as given")
    if temperature_K is None:
        return f"{where}: temperature {stats.temperature_K:.1f} K from forces and displacements"
    if far and trust_units:
        return f"{where}: {far}: import.trust_units"
    ratio = stats.temperature_K / temperature_K
    if not 1 / TEMPERATURE_LIMIT <= ratio <= TEMPERATURE_LIMIT:
        raise ForcematchError(
            f"{where}: forces and displacements of consecutive frames put the data at "
            f"{stats.temperature_K:.0f} K, {ratio:.3g} times system.temperature_K = "
            f"{temperature_K:g} K{_confusion_text(ratio, tolerance=0.25, energy_only=True)} "
            f"({stats.describe()}). Energies and forces k times too large give k times the "
            f"temperature: check import.units "
            f"({units}){_alternatives(stats, units, temperature_K)}; or set "
            "system.temperature_K to the data's temperature")
    return (f"{where}: temperature {stats.temperature_K:.1f} K from forces and displacements "
            f"(system.temperature_K {temperature_K:g} K)")


def check_frame_times(stats: PairStatistics | None, frames: Frames, where: str,
                      units: SourceUnits) -> str | None:
    """Where the file gives frame times: refuse a frame interval far from the one the forces'
    dynamics imply (forces k times too large shorten it by sqrt(k)); the log line, or None."""
    times = frames.time_ps
    if (stats is None or not stats.close or not math.isfinite(stats.interval_ps)
            or not np.isfinite(times).all()):
        return None
    steps = np.diff(frames.step)
    dt = np.diff(times)[steps == stats.step_interval]
    if dt.size == 0 or not np.allclose(dt, dt[0], rtol=1e-4) or not dt[0] > 0:  # float32
        return None
    force_ratio = (float(dt[0]) / stats.interval_ps) ** 2
    if not 1 / TEMPERATURE_LIMIT <= force_ratio <= TEMPERATURE_LIMIT:
        raise ForcematchError(
            f"{where}: the frames are {float(dt[0]):g} ps apart, but masses, forces and "
            f"displacements imply {stats.interval_ps:.4g} ps: the forces look {force_ratio:.3g} "
            f"times too large{_confusion_text(force_ratio)}; check import.units ({units})")
    return (f"{where}: frames {float(dt[0]):g} ps apart; the forces' dynamics imply "
            f"{stats.interval_ps:.4g} ps")


def check_time_order(frames: Frames, where: str) -> None:
    """Refuse frames whose steps (as the file gives them) do not increase: runs appended to
    one file, or a restart that went back, would put near-copies of frames into other blocks
    and spoil the consecutive-frame checks."""
    back = np.flatnonzero(np.diff(frames.step) <= 0)
    if back.size:
        k = int(back[0]) + 1
        raise ForcematchError(
            f"{where}: frame {k} has step {int(frames.step[k])}, not after frame {k - 1}'s "
            f"{int(frames.step[k - 1])} ({back.size} such frames): frames must be in time order "
            "(runs appended to one file, or a restart written over it?); give each run as its "
            "own file in import.files")


def closest_pair_per_frame(frames: Frames) -> tuple[np.ndarray, np.ndarray]:
    """(closest pair distance [T] nm, minimum image; the pair's atoms [T, 2]) of every frame."""
    from scipy.spatial import cKDTree

    from forcematch.data.pairs import wrap

    distance, atoms = np.empty(frames.n_frames), np.empty((frames.n_frames, 2), np.int64)
    for k in range(frames.n_frames):
        box = frames.box_nm[k]
        wrapped = wrap(frames.positions_nm[k], box)
        d, j = cKDTree(wrapped, boxsize=box).query(wrapped, k=2)
        i = int(np.argmin(d[:, 1]))
        distance[k], atoms[k] = d[i, 1], (i, j[i, 1])
    return distance, atoms


def check_positions(frames: Frames, where: str, units: SourceUnits) -> str:
    """Refuse a number density or a closest pair no condensed matter has (a wrong length unit),
    looking at every frame, and name a frame whose atoms overlap where the others' do not; the
    log line."""
    density = frames.n_atoms / np.prod(frames.box_nm, axis=1)
    k = int(np.argmax((density < DENSITY_RANGE[0]) | (density > DENSITY_RANGE[1])))
    lo, hi = DENSITY_RANGE
    if not lo <= density[k] <= hi:
        raise ForcematchError(
            f"{where}: frame {k}: {frames.n_atoms} atoms in {np.prod(frames.box_nm[k]):.4g} nm³ "
            f"are {density[k]:.4g} atoms/nm³, outside {lo:g}..{hi:g} (condensed matter; "
            f"lengths 10 times too large give 1000 times too low a density): are the lengths "
            f"in {units.length}? Fix import.units ({units})")
    if frames.n_atoms < 2:
        return f"{where}: number density {density[0]:.4g} atoms/nm³"
    closest, atoms = closest_pair_per_frame(frames)
    lo, hi = CLOSEST_PAIR_RANGE
    bad = (closest < lo) | (closest > hi)
    if bad.any():
        k = int(np.argmax(bad))
        i, j = atoms[k]
        if bad.sum() > bad.size / 2:  # most frames: a length unit, not a frame
            raise ForcematchError(
                f"{where}: frame {k}: the closest pair is {closest[k]:.4g} nm apart, outside "
                f"{lo:g}..{hi:g} nm (condensed matter): are the lengths in {units.length}? "
                f"Fix import.units ({units})")
        good = closest[~bad]
        raise ForcematchError(
            f"{where}: frame {k}: atoms {i} and {j} are {closest[k]:.4g} nm apart, outside "
            f"{lo:g}..{hi:g} nm ({int(bad.sum())} of {bad.size} frames), where the other "
            f"frames' closest pairs lie in {good.min():.4g}..{good.max():.4g} nm: overlapping "
            "or misplaced atoms; remove the frame")
    return (f"{where}: number density {np.median(density):.4g} atoms/nm³, closest pair "
            f"{closest.min():.4g}..{closest.max():.4g} nm")
