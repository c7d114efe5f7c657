"""Quantities over all frames of a dataset: normalisation statistics, fingerprint, densest frame.

`statistics` is computed once, by the dataset stage (`stats.json`), and passed to training as a
named input (as NequIP does): training never recomputes it, so streamed and in-memory training
see the same numbers. `scan` reads a frame source once in blocks for what training needs from
every frame before its first step: the sha256 fingerprint (equal to `Frames.fingerprint`), the
check that every value is finite and every box positive, and the densest frame.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np

from forcematch.data.frames import Frames
from forcematch.data.pairs import estimate_capacity, pair_counts_and_closest
from forcematch.data.sources import FrameSource, blocks
from forcematch.errors import ForcematchError

# The keys training needs from `statistics` (the normalisation of models and loss terms).
NORMALISATION_KEYS = ("energy_per_atom_mean_kJ_mol", "energy_per_atom_std_kJ_mol",
                      "force_std_kJ_mol_nm", "force_rms_kJ_mol_nm")


def statistics(frames: Frames) -> dict[str, float | int]:
    """Energy per atom (kJ/mol) and force spread (kJ/mol/nm) of `frames`, float64.

    force_std is the std of all force components about their mean (≈ 0), force_rms their root
    mean square; with a virial, virial_per_atom_std is the RMS over its nine components of
    each one's std over frames of W/N (kJ/mol): the scale of the stress loss.
    """
    energy_per_atom = frames.potential_energy_kJ_mol / frames.n_atoms
    forces = frames.forces_kJ_mol_nm
    return {
        "n_frames": int(frames.n_frames),
        "n_atoms": int(frames.n_atoms),
        "energy_per_atom_mean_kJ_mol": float(energy_per_atom.mean()),
        "energy_per_atom_std_kJ_mol": float(energy_per_atom.std()),
        "force_mean_kJ_mol_nm": float(forces.mean()),
        "force_std_kJ_mol_nm": float(forces.std()),
        "force_rms_kJ_mol_nm": float(np.sqrt(np.mean(forces**2))),
        "virial_per_atom_std_kJ_mol": (
            None if frames.virial_kJ_mol is None
            else float(np.sqrt(np.mean((frames.virial_kJ_mol / frames.n_atoms).var(axis=0))))),
    }


def _first_bad(name: str, label: str, values: np.ndarray, frame_ids: np.ndarray) -> None:
    bad = ~np.isfinite(values.reshape(values.shape[0], -1)).all(axis=1)
    if bad.any():
        raise ForcematchError(
            f"{name} data: non-finite {label} in frame {int(frame_ids[int(np.argmax(bad))])}")


def scan(source: FrameSource, name: str, *,
         on_positions: Callable[[np.ndarray, np.ndarray], object] | None = None) -> str:
    """One read of `source` in blocks; returns its sha256 fingerprint (= `Frames.fingerprint`).

    Raises ForcematchError naming `name` and the frame at the first non-finite value or
    non-positive box. `on_positions(positions [B,N,3] nm, box [B,3] nm)` sees every block.
    """
    t, n = source.n_frames, source.n_atoms
    chunks = blocks(t, n)
    h = hashlib.sha256()
    h.update(str((t, n, 3)).encode())
    for b in chunks:
        pos = source.read_field("positions_nm", b)
        _first_bad(name, "positions", pos, source.frame_ids[b])
        h.update(np.ascontiguousarray(pos).tobytes())
        if on_positions is not None:
            on_positions(pos, source.box_nm[b])
    _first_bad(name, "box", source.box_nm, source.frame_ids)
    bad = (source.box_nm <= 0).any(axis=1)
    if bad.any():
        raise ForcematchError(
            f"{name} data: non-positive box in frame {int(source.frame_ids[np.argmax(bad)])}")
    h.update(str(source.box_nm.shape).encode())
    h.update(np.ascontiguousarray(source.box_nm).tobytes())
    h.update(str((t, n, 3)).encode())
    for b in chunks:
        f = source.read_field("forces_kJ_mol_nm", b)
        _first_bad(name, "forces", f, source.frame_ids[b])
        h.update(np.ascontiguousarray(f).tobytes())
    _first_bad(name, "energy", source.potential_energy_kJ_mol[:, None], source.frame_ids)
    virial = source.virial_kJ_mol
    if virial is not None:
        _first_bad(name, "virial", virial, source.frame_ids)
    for arr in (source.potential_energy_kJ_mol, source.species,
                *(() if virial is None else (virial,))):
        h.update(str(arr.shape).encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


class DensestFrame:
    """Follows the frame with the most pairs within the cutoff over blocks of frames; its
    `capacity()` is `data.pairs.estimate_capacity` of all frames seen (a function of that max).
    `closest_nm`: the closest pair (any species) of all frames seen, nm (inf: none)."""

    def __init__(self, cutoff_nm: float):
        self.cutoff_nm, self.pairs, self.frame = cutoff_nm, -1, None
        self.closest_nm = float("inf")

    def __call__(self, positions_nm: np.ndarray, box_nm: np.ndarray) -> None:
        """positions [B,N,3] (nm), box [B,3] (nm)."""
        if positions_nm.shape[0] == 0:
            return
        counts, closest = pair_counts_and_closest(positions_nm, box_nm, self.cutoff_nm)
        self.closest_nm = min(self.closest_nm, float(closest.min()))
        i = int(np.argmax(counts))
        if counts[i] > self.pairs:
            self.pairs = int(counts[i])
            self.frame = (np.array(positions_nm[i : i + 1]), np.array(box_nm[i : i + 1]))

    def capacity(self) -> int:
        return estimate_capacity(*self.frame, self.cutoff_nm)


def check_normalisation(stats: dict, where: str) -> dict:
    """`stats` (a `statistics` dict) if it has every finite normalisation key; else raise."""
    for key in NORMALISATION_KEYS:
        value = stats.get(key) if isinstance(stats, dict) else None
        if not isinstance(value, int | float) or not np.isfinite(value):
            raise ForcematchError(f"{where}: normalisation statistics lack a finite {key}")
    return dict(stats)


def stress_scale(stats: dict, settings, sources) -> float | None:
    """The virial-per-atom scale (kJ/mol) of the stress term (`statistics`'
    virial_per_atom_std), None when `settings["stress_weight"]` is 0; refuses the term with the
    raw eV loss, on frame `sources` without virials, or without the statistic."""
    weight = settings["stress_weight"]
    if not weight > 0:
        return None
    if settings["loss_form"] == "raw_eV_angstrom":
        raise ForcematchError("train.stress_weight > 0 needs train.loss_form 'normalised' "
                              "(the raw eV/Å loss has no stress term)")
    for src, what in zip(sources, ("training", "validation"), strict=False):
        if src.virial_kJ_mol is None:
            raise ForcematchError(
                f"train.stress_weight = {weight} but the {what} data ({src.name}) hold no "
                "virial (observables/virial): set train.stress_weight 0, or give data with a "
                "virial or stress")
    scale = stats.get("virial_per_atom_std_kJ_mol")
    if not (isinstance(scale, int | float) and np.isfinite(scale)):
        raise ForcematchError("train.stress_weight > 0 but the dataset statistics lack a "
                              "finite virial_per_atom_std_kJ_mol: rebuild the dataset")
    return float(scale) or 1.0
