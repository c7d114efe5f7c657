"""Extended XYZ through ASE: positions, the cell, chemical symbols, masses, energies, forces.

ASE returns the energies and forces it wrote in a SinglePointCalculator (its standard keys
`energy`, `forces`, `free_energy`, ...); other keys (`REF_energy`, `dft_forces`) stay in
`atoms.info` / `atoms.arrays`. Units are ASE's, Å and eV, unless `import.units` says otherwise.
ASE MD writes unwrapped positions; they are kept. A gzipped file is decompressed into memory
once: ASE rewinds a gzip stream for every frame it reads (minutes for a thousand frames).
"""

from __future__ import annotations

import bz2
import gzip
import io
from pathlib import Path

import numpy as np

from forcematch.errors import ForcematchError
from forcematch.imports.common import ImportSettings, RawTrajectory, orthorhombic_edges


def _text_source(path: Path) -> io.StringIO | str:
    """The file itself, or its decompressed text in memory."""
    opener = {".gz": gzip.open, ".bz2": bz2.open}.get(path.suffix.lower())
    if opener is None:
        return str(path)
    try:
        with opener(path, "rt") as handle:
            return io.StringIO(handle.read())
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise ForcematchError(f"{path}: cannot decompress it: {exc}") from exc


def _read_images(path: Path) -> list:
    import ase.io

    try:
        images = ase.io.read(_text_source(path), index=":", format="extxyz")
    except ForcematchError:
        raise
    except Exception as exc:  # ASE's parser raises many kinds (ValueError, KeyError, ...)
        raise ForcematchError(f"{path}: not readable as extended XYZ: "
                              f"{type(exc).__name__}: {exc}") from exc
    images = images if isinstance(images, list) else [images]
    if not images:
        raise ForcematchError(f"{path}: holds no frames")
    return images


def _result(atoms, key: str, table: dict):
    """`key` from the calculator's results, else from `table` (info or arrays); None if absent."""
    if atoms.calc is not None and key in getattr(atoms.calc, "results", {}):
        return atoms.calc.results[key]
    return table.get(key)


def _frame_energy(atoms, key: str, where: str) -> float:
    value = _result(atoms, key, atoms.info)
    if value is None:
        found = sorted(set(atoms.info) | set(getattr(atoms.calc, "results", {}) or {}))
        raise ForcematchError(
            f"{where} holds no energy: {key!r} is neither a calculator result nor in the "
            f"comment line (found: {', '.join(found) or 'nothing'}); set import.energy_key to "
            "the file's key, or give import.energy_files")
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise ForcematchError(f"{where}: energy {key!r} is not a number: {value!r}") from exc


def _frame_forces(atoms, key: str, where: str) -> np.ndarray:
    value = _result(atoms, key, atoms.arrays)
    if value is None:
        found = sorted(set(atoms.arrays) | set(getattr(atoms.calc, "results", {}) or {}))
        raise ForcematchError(
            f"{where} holds no forces: {key!r} is neither a calculator result nor a per-atom "
            f"property (found: {', '.join(found)}); set import.force_key to the file's key")
    value = np.asarray(value, np.float64)
    if value.shape != (len(atoms), 3):
        raise ForcematchError(f"{where}: forces {key!r} have shape {value.shape}, expected "
                              f"({len(atoms)}, 3)")
    return value


def _frame_box(atoms, where: str) -> np.ndarray:
    if not np.all(atoms.pbc):
        raise ForcematchError(f"{where} is not periodic (pbc = {atoms.pbc.tolist()}); "
                              "forcematch needs a periodic orthorhombic box")
    return orthorhombic_edges(atoms.cell.array, where)


def _frame_step(atoms, k: int) -> int:
    step = atoms.info.get("step")
    if isinstance(step, int | np.integer) and not isinstance(step, bool):
        return int(step)
    return k


def read_extxyz(path: Path, settings: ImportSettings, *, energies: bool = True) -> RawTrajectory:
    """Every frame of the extended XYZ file `path`; `energies=False`: leave them to a side
    file."""
    images = _read_images(path)
    first = images[0]
    symbols = first.get_chemical_symbols()
    t, n = len(images), len(first)
    positions, forces, box = np.empty((t, n, 3)), np.empty((t, n, 3)), np.empty((t, 3))
    energy = np.empty(t) if energies else None
    step = np.empty(t, np.int64)
    for k, atoms in enumerate(images):
        where = f"{path}: frame {k}"
        if len(atoms) != n or atoms.get_chemical_symbols() != symbols:
            raise ForcematchError(f"{where} has {len(atoms)} atoms or other species than frame "
                                  f"0 ({n} atoms): every frame must hold the same atoms in the "
                                  "same order")
        positions[k] = atoms.positions
        forces[k] = _frame_forces(atoms, settings.force_key, where)
        box[k] = _frame_box(atoms, where)
        step[k] = _frame_step(atoms, k)
        if energy is not None:
            energy[k] = _frame_energy(atoms, settings.energy_key, where)
    return RawTrajectory(path=path, format="extxyz", positions=positions, forces=forces,
                         energies=energy, box=box, step=step, time_ps=np.full(t, np.nan),
                         names=symbols, masses_amu=np.asarray(first.get_masses(), np.float64),
                         notes={"masses_from": "ASE (chemical symbols or the file's masses)"})
