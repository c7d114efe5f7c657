"""Bounds of `forcematch export`'s table options, checked before any table is built: the
points of one table (--lammps-points, cutoff / --dr-nm) and --r-min-nm against the cutoff."""

from __future__ import annotations

import math

from forcematch.errors import ForcematchError

# Points of one table (OpenMM: cutoff / dr; LAMMPS: --lammps-points). Measured on the tiny argon
# model, LAMMPS linear: max force error 62 % of the force RMS at 10 points, 3.8 % at 100, 0.03 %
# at 300. --dr-nm 1e-8 (5.5e7 points) took 144 s and 4.6 GB; at 1e6 points for both engines the
# export takes 20 s and 0.7 GB (one species pair; a 63 MB LAMMPS file), above the automatic
# grids' finest (64,000 points per nm of cutoff).
MIN_TABLE_POINTS = 100
MAX_TABLE_POINTS = 1_000_000
# No two atoms come closer than the shortest bond (H-H, 0.074 nm): a wall joined to the model
# below MIN_R_MIN_NM continues it where it means nothing (at 1e-6 nm: non-finite forces).
MIN_R_MIN_NM = 0.05  # nm
MAX_R_MIN_FRACTION = 0.9  # of the cutoff: the model must keep the last 10 % of its range


def _points_bound(points: float) -> str | None:
    """Why a table of `points` points (one species pair) is refused; None within bounds (up to
    round-off: cutoff / dr of a bound's dr)."""
    if points < MIN_TABLE_POINTS * (1 - 1e-9):
        return (f"fewer than the {MIN_TABLE_POINTS} points a table needs (fewer interpolate the "
                "force with errors of tens of % of its RMS)")
    if points > MAX_TABLE_POINTS * (1 + 1e-9):
        return (f"more than the {MAX_TABLE_POINTS} points a table may hold (memory and time "
                "grow with them)")
    return None


def _three_digits(x: float, up: bool) -> str:
    """`x` > 0 to 3 significant digits, rounded up or down (a bound that stays inside)."""
    unit = 10.0 ** (math.floor(math.log10(x)) - 2)
    digits = math.ceil(x / unit - 1e-6) if up else math.floor(x / unit + 1e-6)
    return f"{digits * unit:.3g}"


def check_export_options(cutoff_nm: float, dr_nm: float | None = None,
                         lammps_points: int | None = None, r_min_nm: float | None = None) -> None:
    """ForcematchError naming the option unless the ones given (None: automatic) are within
    bounds for a model of cutoff `cutoff_nm` (nm), checked before any table is built:
    `lammps_points` and cutoff / `dr_nm` (nm) in MIN_TABLE_POINTS..MAX_TABLE_POINTS points,
    `r_min_nm` in MIN_R_MIN_NM..MAX_R_MIN_FRACTION × cutoff (nm)."""
    span = f"{MIN_TABLE_POINTS}..{MAX_TABLE_POINTS}"
    if lammps_points is not None and (why := _points_bound(lammps_points)):
        raise ForcematchError(f"--lammps-points {lammps_points} is {why}: choose --lammps-points "
                              f"in {span}")
    if dr_nm is not None and (why := _points_bound(cutoff_nm / dr_nm)):
        raise ForcematchError(
            f"--dr-nm {dr_nm:g} gives {cutoff_nm / dr_nm:.3g} points up to the cutoff "
            f"({cutoff_nm:g} nm), {why}: choose --dr-nm in "
            f"{_three_digits(cutoff_nm / MAX_TABLE_POINTS, up=True)}.."
            f"{_three_digits(cutoff_nm / MIN_TABLE_POINTS, up=False)} nm")
    if r_min_nm is not None:
        _check_r_min(cutoff_nm, r_min_nm)


def _check_r_min(cutoff_nm: float, r_min_nm: float) -> None:
    """ForcematchError unless --r-min-nm lies in MIN_R_MIN_NM..MAX_R_MIN_FRACTION × cutoff (nm)."""
    r_max = MAX_R_MIN_FRACTION * cutoff_nm
    choose = (f"choose --r-min-nm in {MIN_R_MIN_NM}..{_three_digits(r_max, up=False)} nm, or "
              "omit it (the training data's closest pair)")
    if r_min_nm < MIN_R_MIN_NM:
        raise ForcematchError(f"--r-min-nm {r_min_nm:g} is below {MIN_R_MIN_NM} nm, closer than "
                              f"any two atoms come (the shortest bond, H-H, is 0.074 nm): {choose}")
    if r_min_nm > r_max:
        raise ForcematchError(f"--r-min-nm {r_min_nm:g} is above {MAX_R_MIN_FRACTION:g} x the "
                              f"cutoff ({cutoff_nm:g} nm): the wall would replace the model over "
                              f"most of its range; {choose}")
