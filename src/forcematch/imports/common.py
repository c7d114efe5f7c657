"""What every reader shares: the import settings, a trajectory in its file's units, the energy
side files, and the conversion to `Frames` (species indices, masses, project units).

A reader returns a `RawTrajectory`: values as the file holds them, in the units `import.units`
declares. `to_frames` converts it once, so every check after it sees nm, kJ/mol, kJ/mol/nm.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from forcematch.data.frames import Frames
from forcematch.errors import ForcematchError
from forcematch.units import SourceUnits, source_units

FORMATS = ("extxyz", "lammpsdump", "mdanalysis")
_EXTXYZ_SUFFIXES = (".xyz", ".extxyz")
_DUMP_SUFFIXES = (".dump", ".lammpstrj", ".lammpsdump")
_COMPRESSED = (".gz", ".bz2")
# A mass from the file and one from import.masses_amu further apart than this are noted.
MASS_NOTE_RTOL = 1e-4


@dataclass(frozen=True)
class ImportSettings:
    """The `import` section of a validated config (schema defaults filled)."""

    files: tuple[Path, ...]
    format: str
    topology: Path | None
    units: SourceUnits
    energy_files: tuple[Path, ...] | None
    energy_key: str
    force_key: str
    species: tuple[str, ...] | None
    masses_amu: Mapping[str, float]
    blocks: int
    gap_frames: int
    loose_energies: bool = False
    trust_units: bool = False

    @classmethod
    def from_config(cls, section: Mapping) -> ImportSettings:
        """From the `import` section of a validated config (`config.load_config`: every key
        present, the schema's defaults filled in, one energy file per trajectory checked)."""
        try:
            units = source_units(section["units"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ForcematchError(f"config: import.units: {exc}") from exc
        energy_files, species = section["energy_files"], section["species"]
        return cls(files=tuple(Path(f) for f in section["files"]), format=section["format"],
                   topology=Path(section["topology"]) if section["topology"] else None,
                   units=units,
                   energy_files=None if energy_files is None else tuple(map(Path, energy_files)),
                   energy_key=section["energy_key"], force_key=section["force_key"],
                   species=None if species is None else tuple(str(s) for s in species),
                   masses_amu={str(k): float(v) for k, v in section["masses_amu"].items()},
                   blocks=int(section["blocks"]), gap_frames=int(section["gap_frames"]),
                   loose_energies=bool(section["loose_energies"]),
                   trust_units=bool(section["trust_units"]))

    def file_format(self, path: Path) -> str:
        """The reader for `path`: `format`, or from the file name when it is "auto"."""
        if self.format != "auto":
            return self.format
        suffixes = [s.lower() for s in path.suffixes]
        if suffixes and suffixes[-1] in _COMPRESSED:
            suffixes = suffixes[:-1]
        last = suffixes[-1] if suffixes else ""
        if last in _EXTXYZ_SUFFIXES:
            return "extxyz"
        if last in _DUMP_SUFFIXES:
            return "lammpsdump"
        return "mdanalysis"


@dataclass
class RawTrajectory:
    """T frames of N atoms as one file holds them, in the file's (declared) units.

    positions, forces [T,N,3]; energies [T] or None (from a side file then); box [T,3]
    (orthorhombic edges); step [T]; time_ps [T] (NaN where the file gives no times); names [N]
    (species names); masses_amu [N] (NaN where the file holds none); virial [T,3,3] or None:
    W = −∂U/∂ε in the file's energy unit (`Frames.virial_kJ_mol`; a reader converts a stress
    σ to W = −σV itself); notes: more provenance.
    """

    path: Path
    format: str
    positions: np.ndarray
    forces: np.ndarray
    energies: np.ndarray | None
    box: np.ndarray
    step: np.ndarray
    time_ps: np.ndarray
    names: list[str]
    masses_amu: np.ndarray
    virial: np.ndarray | None = None
    notes: dict = field(default_factory=dict)


def orthorhombic_edges(cell: np.ndarray, where: str) -> np.ndarray:
    """Edges of a 3x3 cell matrix (rows: cell vectors) that must be diagonal and non-zero."""
    cell = np.asarray(cell, np.float64)
    edges = np.diagonal(cell).copy()
    off = np.abs(cell - np.diag(edges)).max()
    if not np.all(edges > 0):
        raise ForcematchError(f"{where}: the cell has edges {edges.tolist()}: no periodic box "
                              "(forcematch needs a periodic orthorhombic box)")
    if off > 1e-8 * edges.max():
        raise ForcematchError(
            f"{where}: the cell is not orthorhombic (off-diagonal elements up to {off:.6g}); "
            "forcematch handles orthorhombic periodic boxes only")
    return edges


def box_from_dimensions(dimensions, where: str) -> np.ndarray:
    """Edges from MDAnalysis's [a, b, c, alpha, beta, gamma]; refuses no box or other angles."""
    if dimensions is None or not np.all(np.asarray(dimensions[:3]) > 0):
        raise ForcematchError(f"{where}: no periodic box (forcematch needs a periodic "
                              "orthorhombic box)")
    angles = np.asarray(dimensions[3:], np.float64)
    if np.abs(angles - 90.0).max() > 1e-4:
        raise ForcematchError(f"{where}: the box has angles {angles.tolist()} degrees; "
                              "forcematch handles orthorhombic periodic boxes only")
    return np.asarray(dimensions[:3], np.float64)


# -------------------------------------------------------------------------- energy side files


def read_energy_file(path: Path, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, energies) of a side file of two columns, step and energy ('#' lines and blank
    lines skipped); `key` names the config entry in messages."""
    steps, energies = [], []
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ForcematchError(f"{path} ({key}): cannot read it: {exc}") from exc
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        columns = text.split()
        if len(columns) != 2:
            what = ("has no energy column" if len(columns) == 1 else
                    f"has {len(columns)} columns")
            raise ForcematchError(
                f"{path} ({key}), line {number}: {what}; the energy file must have two "
                f"columns, step and potential energy (e.g. fix print N \"${{step}} ${{pe}}\"): "
                f"{text[:80]!r}")
        try:
            step, energy = float(columns[0]), float(columns[1])
        except ValueError as exc:
            raise ForcematchError(f"{path} ({key}), line {number}: not two numbers (step, "
                                  f"energy): {text[:80]!r}") from exc
        if not (math.isfinite(step) and step == int(step)):
            raise ForcematchError(f"{path} ({key}), line {number}: step {columns[0]} is not "
                                  "an integer")
        steps.append(int(step))
        energies.append(energy)
    if not steps:
        raise ForcematchError(f"{path} ({key}): holds no rows of step and energy")
    return np.asarray(steps, np.int64), np.asarray(energies, np.float64)


def match_energies(traj: RawTrajectory, path: Path, key: str) -> np.ndarray:
    """The energies of the side file `path` at the trajectory's steps (rows of other steps are
    ignored); refuses a step the file lacks, naming both counts and the first such step."""
    steps, energies = read_energy_file(path, key)
    order = np.argsort(steps, kind="stable")
    steps, energies = steps[order], energies[order]
    same = steps[1:] == steps[:-1]
    clash = same & (energies[1:] != energies[:-1])
    if clash.any():
        i = int(np.argmax(clash))
        raise ForcematchError(f"{path} ({key}): step {steps[i]} appears twice with energies "
                              f"{energies[i]!r} and {energies[i + 1]!r}")
    steps, energies = steps[np.r_[True, ~same]], energies[np.r_[True, ~same]]
    at = np.clip(np.searchsorted(steps, traj.step), 0, steps.size - 1)
    missing = steps[at] != traj.step
    if missing.any():
        k = int(np.argmax(missing))
        raise ForcematchError(
            f"{path} ({key}) has {steps.size} energy rows (steps {steps[0]}..{steps[-1]}) for "
            f"{traj.step.size} frames of {traj.path}: frame {k} (step {traj.step[k]}) has no "
            f"energy ({int(missing.sum())} frames unmatched); the energy file must hold a row "
            "for every step of the trajectory")
    return energies[at]


# ---------------------------------------------------------------------------------- conversion


def species_indices(names: Sequence[str], order: Sequence[str] | None,
                    where: str) -> tuple[np.ndarray, list[str]]:
    """(index of each atom's species, the species names in index order): the order of
    `import.species` when given, else of first appearance."""
    if order is None:
        order = list(dict.fromkeys(names))
    index = {name: i for i, name in enumerate(order)}
    unknown = [(i, n) for i, n in enumerate(names) if n not in index]
    if unknown:
        i, name = unknown[0]
        raise ForcematchError(
            f"{where}: atom {i} is of species {name!r}, which import.species {list(order)} does "
            f"not list: add it (names in the file: {sorted(set(names))})")
    return np.array([index[n] for n in names], np.int32), list(order)


def species_masses(raw: RawTrajectory, species: list[str], indices: np.ndarray,
                   configured: Mapping[str, float], notes: list[str]) -> np.ndarray:
    """Per-atom masses (amu): `import.masses_amu` where it names the species, else the file's
    (one mass per species); refuses a species with neither."""
    masses = np.empty(indices.size)
    for s, name in enumerate(species):
        atoms = indices == s
        if not atoms.any():
            continue
        from_file = raw.masses_amu[atoms]
        known = from_file[np.isfinite(from_file)]
        if name in configured:
            mass = configured[name]
            if known.size and np.abs(known - mass).max() > MASS_NOTE_RTOL * mass:
                notes.append(f"{raw.path}: species {name!r}: import.masses_amu gives {mass} u, "
                             f"the file {float(known[0])} u; using {mass} u")
        elif known.size == from_file.size:
            if np.ptp(known) > MASS_NOTE_RTOL * known.max():
                raise ForcematchError(
                    f"{raw.path}: atoms of species {name!r} have different masses "
                    f"({float(known.min())} .. {float(known.max())} u): give them different "
                    "species names")
            mass = float(known[0])
        else:
            topology = ("" if raw.format == "extxyz"
                        else " (or a topology with masses, import.topology)")
            raise ForcematchError(
                f"{raw.path}: no mass for species {name!r}: the file holds none; give it in "
                f"import.masses_amu{topology}, e.g. masses_amu: {{'{name}': <mass in u>}}")
        masses[atoms] = mass
    return masses


def _check_finite(raw: RawTrajectory, values: dict[str, np.ndarray | None]) -> None:
    for what, value in values.items():
        if value is None:
            continue
        bad = ~np.isfinite(value.reshape(value.shape[0], -1)).all(axis=1)
        if bad.any():
            k = int(np.argmax(bad))
            raise ForcematchError(f"{raw.path}: frame {k} (step {raw.step[k]}) has non-finite "
                                  f"{what} ({int(bad.sum())} frames)")


def to_frames(raw: RawTrajectory, settings: ImportSettings,
              notes: list[str]) -> tuple[Frames, dict]:
    """`raw` in project units as Frames, and its provenance record."""
    where = str(raw.path)
    if raw.energies is None:
        raise ForcematchError(
            f"{where}: the file holds no potential energies: give import.energy_files (one side "
            "file of step and energy per trajectory)")
    indices, species = species_indices(raw.names, settings.species, where)
    masses = species_masses(raw, species, indices, settings.masses_amu, notes)
    _check_finite(raw, {"positions": raw.positions, "forces": raw.forces,
                        "energies": raw.energies, "box": raw.box, "virial": raw.virial})
    units = settings.units
    virial = None if raw.virial is None else raw.virial * units.energy_kJ_mol
    frames = Frames(positions_nm=raw.positions * units.length_nm,
                    forces_kJ_mol_nm=raw.forces * units.force_kJ_mol_nm,
                    potential_energy_kJ_mol=raw.energies * units.energy_kJ_mol,
                    box_nm=raw.box * units.length_nm, species=indices, masses_amu=masses,
                    step=raw.step, time_ps=raw.time_ps, virial_kJ_mol=virial)
    notes.append(virial_note(raw))
    record = {"path": str(raw.path), "format": raw.format, "units": units.describe(),
              "frames_read": frames.n_frames, "atoms": frames.n_atoms, "species": species,
              "steps": [int(raw.step[0]), int(raw.step[-1])] if raw.step.size else [],
              "virial_from": None, **raw.notes}
    return frames, record


def virial_note(raw: RawTrajectory) -> str:
    """The log line on the virial: where it came from, or that the file holds none."""
    if raw.virial is None:
        return (f"no virial in {raw.path}: the stress loss (train.stress_weight) cannot be used "
                "with these data")
    return f"{raw.path}: virial W = −∂U/∂ε from {raw.notes.get('virial_from', 'the file')}"
