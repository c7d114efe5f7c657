"""Checks of one replica's frames that the file format cannot make, run by the dataset stage.

Each refuses data that would train or test a model silently wrong, naming the file and the
frame and giving the numbers:

    check_labels        all-zero forces, one energy for every frame, net force per frame above
                        NET_FORCE_LIMIT × √N × the force RMS (not the gradient of a
                        translation-invariant energy: thermostat or external forces mixed in)
    check_resolution    positions rounded so coarsely that the labels sit more than
                        LABEL_ERROR_LIMIT_PERCENT of the force std off them: float16 values,
                        decimals of a text format (0.001 nm), float32 far from the origin
    wrap_into_box       coordinates outside [0, L) wrapped into the box (minimum image: energies
                        and forces are unchanged), with a note giving how far they were

Near-identical frames within and across replicas are `forcematch.data.repeats`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from forcematch.data.frames import Frames
from forcematch.errors import ForcematchError

# |sum_i F_i| of a frame, relative to sqrt(N) x the replica's force RMS (what N independent
# forces of that RMS would sum to). OpenMM's CPU platform (single-precision forces) gives
# ~5e-7 on the default data (2e-4 kJ/mol/nm against sqrt(100) x 41 kJ/mol/nm); a thermostat's
# random forces give ~0.1-1.
NET_FORCE_LIMIT = 1e-3
# Force labels belong to the positions they were computed at: positions rounded by an RMS of
# d nm (the labels kept) move the labels off them by about LABEL_SHIFT_PER_NM x d of the force
# std. Measured on the LJ liquid of the tiny config with OpenMM: 1e-3 nm grid (RMS 2.9e-4 nm)
# 2.6 %, float16 values (1.4e-4 nm) 1.24 %, float32 2,000 boxes out (7.1e-5 nm) 0.62 %, 1e-4 nm
# grid (2.9e-5 nm) 0.25 %: 86-91 per nm.
LABEL_SHIFT_PER_NM = 88.0
# Refuse positions whose rounding moves the labels by more than this (% of the force std):
# about half the pipeline's accuracy floor (0.18 %, the pair model on exact data).
LABEL_ERROR_LIMIT_PERCENT = 0.1


def check_not_empty(frames: Frames, where: str) -> None:
    if frames.n_frames == 0 or frames.n_atoms == 0:
        raise ForcematchError(f"{where}: holds {frames.n_frames} frames of {frames.n_atoms} "
                              "atoms: nothing to train or test on")


def check_labels(frames: Frames, where: str) -> None:
    """Refuse forces that are all zero in a frame, one energy for every frame, and net forces
    far above round-off (see NET_FORCE_LIMIT)."""
    forces, energy = frames.forces_kJ_mol_nm, frames.potential_energy_kJ_mol
    t, n = frames.n_frames, frames.n_atoms
    zero = ~forces.reshape(t, -1).any(axis=1)
    if zero.any():
        raise ForcematchError(
            f"{where}: forces of frame {int(np.argmax(zero))} are all zero ({int(zero.sum())} "
            f"of {t} frames): no liquid has that; were forces written at all?")
    if t >= 2 and np.all(energy == energy[0]):
        raise ForcematchError(
            f"{where}: potential energy is {float(energy[0])!r} kJ/mol in all {t} frames: not "
            "the energy of these positions (a placeholder?)")
    rms = float(np.sqrt(np.mean(forces**2)))
    net = np.linalg.norm(forces.sum(axis=1), axis=1)  # [T]
    limit = NET_FORCE_LIMIT * np.sqrt(n) * rms
    bad = net > limit
    if bad.any():
        i, worst = int(np.argmax(bad)), int(np.argmax(net))
        raise ForcematchError(
            f"{where}: net force {net[i]:.3g} kJ/mol/nm in frame {i} ({int(bad.sum())} of {t} "
            f"frames above {limit:.3g} = {NET_FORCE_LIMIT:g} x sqrt(N) x force RMS "
            f"{rms:.3g}; largest {net[worst]:.3g} in frame {worst}): forces of a "
            "translation-invariant energy sum to zero up to round-off (thermostat or external "
            "forces in the labels?)")


def _rms_spacing(values: np.ndarray, dtype: type) -> float:
    """RMS rounding error (nm) of values stored as `dtype`: spacing / sqrt(12) per value."""
    spacing = np.spacing(np.abs(values).astype(dtype)).astype(np.float64)
    return float(np.sqrt(np.mean(spacing**2) / 12))


def position_rounding(positions_nm: np.ndarray) -> tuple[str, float, float] | None:
    """(what the values are, the largest and the RMS rounding error in nm) when every
    coordinate lies on a grid coarser than float64: float16 values, multiples of 0.5, 0.2,
    0.1 .. 0.0001 nm (text formats), float32 values. None for float64 values, or fewer than
    16 coordinates (cannot tell)."""
    x = np.asarray(positions_nm, np.float64).ravel()
    if x.size < 16:
        return None
    big = float(np.abs(x).max())
    with np.errstate(over="ignore"):
        if np.array_equal(x.astype(np.float16).astype(np.float64), x):
            return ("float16 values", float(np.spacing(np.float16(big))) / 2,
                    _rms_spacing(x, np.float16))
    f32 = float(np.spacing(np.float32(big))) / 2
    for grid in (m * 10.0**-d for d in range(1, 5) for m in (5, 2, 1)):  # coarse to fine
        if grid < 8 * f32:  # float32 storage cannot hold this grid: nothing to detect
            break
        q = x / grid
        tolerance = (2.0**-24 * np.abs(x) / grid) * 1.01 + 1e-12 * np.abs(q) + 1e-12
        if np.all(np.abs(q - np.rint(q)) <= tolerance):
            return f"multiples of {grid:g} nm", grid / 2, grid / np.sqrt(12)
    if np.array_equal(x.astype(np.float32).astype(np.float64), x):
        return "float32 values", f32, _rms_spacing(x, np.float32)
    return None


def label_error_percent(rms_rounding_nm: float) -> float:
    """How far (% of the force std) positions rounded by an RMS of `rms_rounding_nm` move the
    force labels off them, on this project's LJ liquid (see LABEL_SHIFT_PER_NM)."""
    return 100 * LABEL_SHIFT_PER_NM * rms_rounding_nm


def check_resolution(frames: Frames, where: str) -> None:
    """Refuse positions rounded so coarsely that their force labels sit more than
    LABEL_ERROR_LIMIT_PERCENT of the force std off them."""
    found = position_rounding(frames.positions_nm)
    if found is None or label_error_percent(found[2]) <= LABEL_ERROR_LIMIT_PERCENT:
        return
    what, largest, rms = found
    boxes = _boxes_from_origin(frames)
    far = f"lie up to {_boxes(boxes)} from the origin and " if boxes >= 2 else ""
    fix = ("store float64 (far coordinates are then wrapped into the box)" if far
           else "store float64 or float32 at full precision")
    raise ForcematchError(
        f"{where}: positions {far}hold only {what}: rounded by up to {largest:.2g} nm (RMS "
        f"{rms:.2g} nm), which moves the force labels off them by about "
        f"{label_error_percent(rms):.2g} % of the force std (limit "
        f"{LABEL_ERROR_LIMIT_PERCENT:g} %; the pipeline's accuracy floor is 0.18 %); {fix}")


def _boxes(n: int) -> str:
    return f"{n} box{'es' if n != 1 else ''}"


def _boxes_from_origin(frames: Frames) -> int:
    """How many box lengths the farthest coordinate lies outside [0, L)."""
    shifts = np.floor(frames.positions_nm / frames.box_nm[:, None, :])
    return int(np.abs(shifts).max()) if shifts.size else 0


def wrap_into_box(frames: Frames, where: str) -> tuple[Frames, str | None]:
    """`frames` with every coordinate outside [0, L) wrapped into the box, and a note saying
    how many and how far (None when all were inside: those frames are returned unchanged).

    Coordinates already inside keep their bits. The model sees only minimum-image
    displacements, so energies and forces are unchanged; far coordinates would cost float32
    precision in every displacement the model computes.
    """
    pos, box = frames.positions_nm, frames.box_nm[:, None, :]
    outside = (pos < 0) | (pos >= box)
    if not outside.any():
        return frames, None
    boxes = _boxes_from_origin(frames)
    wrapped = pos - np.floor(pos / box) * box
    wrapped = np.where(wrapped >= box, wrapped - box, wrapped)  # -1e-17 + L rounds to L
    wrapped = np.where(wrapped < 0, 0.0, wrapped)
    frames_hit = np.flatnonzero(outside.reshape(frames.n_frames, -1).any(axis=1))
    note = (f"{where}: wrapped {int(outside.sum())} coordinates in {frames_hit.size} frames "
            f"(first frame {int(frames_hit[0])}), up to {_boxes(boxes)} from the origin, into the "
            "box (minimum image: energies and forces are unchanged)")
    return dataclasses.replace(frames, positions_nm=np.where(outside, wrapped, pos)), note
