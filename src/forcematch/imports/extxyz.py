"""Extended XYZ through ASE: positions, the cell, chemical symbols, masses, energies, forces.

ASE returns the energies and forces it wrote in a SinglePointCalculator (its standard keys
`energy`, `forces`, `free_energy`, ...); other keys (`REF_energy`, `dft_forces`) stay in
`atoms.info` / `atoms.arrays`. Units are ASE's, Å and eV, unless `import.units` says otherwise.
ASE MD writes unwrapped positions; they are kept. A gzipped file is decompressed into memory
once: ASE rewinds a gzip stream for every frame it reads (minutes for a thousand frames).

The virial W = −∂U/∂ε [3,3] (`Frames.virial_kJ_mol`) comes from either of two per-frame keys:
    stress   σ in energy/length³ of `import.units` (ASE: eV/Å³), Voigt 6 (xx yy zz yz xz xy) or
             3x3 (ASE reads a 3x3 `stress` of the comment line into its calculator as Voigt 6).
             ASE's sign: σ = (1/V) ∂U/∂ε, positive under tension; so W = −σ V, V the cell
             volume in length³ (a compressed crystal: σ < 0, W > 0).
    virial   W itself in the energy unit, 3x3 (or Voigt 6), as libAtoms/QUIP, MACE
             (`virials`: −∂E/∂ε from the displacement gradient, its stress = −virials / V) and
             NequIP (`virial = −stress × volume`) write it: the same sign as ours, no volume.
The keys carry the prefix of `import.energy_key` (REF_energy: REF_stress, REF_virial,
REF_virials); with `energy`, `free_energy` or a key not ending in "energy", ASE's own: stress,
virial, virials. A frame with both gets them compared (a sign error shows). A virial must be in
every frame or in none.
"""

from __future__ import annotations

import bz2
import gzip
import io
from pathlib import Path

import numpy as np

from forcematch.errors import ForcematchError
from forcematch.imports.common import ImportSettings, RawTrajectory, orthorhombic_edges

# A frame's W from its virial and from its stress may differ by this much, relative to the
# larger |W| element (the writer's rounding), before it is refused (a sign or volume error).
VIRIAL_STRESS_RTOL = 1e-4


# Decompressed text held in memory at most (ASE's frames take about 1.6 times the text more:
# 21,000 frames of 32 atoms, 109 MB of text, 179 MB). A few MB of compressed repetition expand
# to gigabytes; an uncompressed file's size is in plain sight and is read as it is.
MAX_DECOMPRESSED_BYTES = 1 << 30
_CHUNK_BYTES = 1 << 24


def _text_source(path: Path) -> io.StringIO | str:
    """The file itself, or its decompressed text in memory (at most MAX_DECOMPRESSED_BYTES)."""
    opener = {".gz": gzip.open, ".bz2": bz2.open}.get(path.suffix.lower())
    if opener is None:
        return str(path)
    chunks, size = [], 0
    try:
        with opener(path, "rb") as handle:
            while chunk := handle.read(_CHUNK_BYTES):
                size += len(chunk)
                if size > MAX_DECOMPRESSED_BYTES:
                    raise ForcematchError(
                        f"{path}: decompresses to more than {MAX_DECOMPRESSED_BYTES >> 20} MiB "
                        f"({path.stat().st_size:,} bytes compressed): decompress it yourself "
                        "and import the plain file, or split it into several files")
                chunks.append(chunk)
        return io.StringIO(b"".join(chunks).decode("utf-8"))
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


def virial_keys(energy_key: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(virial keys, stress keys) of the labels that go with `import.energy_key` (module
    docstring): REF_energy -> (REF_virial, REF_virials), (REF_stress)."""
    prefix = energy_key.removesuffix("energy")
    if energy_key in ("energy", "free_energy") or prefix == energy_key:
        prefix = ""
    return (f"{prefix}virial", f"{prefix}virials"), (f"{prefix}stress",)


def _as_3x3(value, key: str, where: str) -> np.ndarray:
    """A 3x3 tensor from 9 values or Voigt 6 (xx, yy, zz, yz, xz, xy)."""
    try:
        value = np.asarray(value, np.float64)
    except (TypeError, ValueError) as exc:
        raise ForcematchError(f"{where}: {key!r} is not numbers: {value!r}") from exc
    if value.shape == (6,):
        xx, yy, zz, yz, xz, xy = value
        return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    if value.size == 9:
        return value.reshape(3, 3)
    raise ForcematchError(f"{where}: {key!r} has shape {value.shape}: expected 3x3 values or "
                          "Voigt 6 (xx yy zz yz xz xy)")


def _first(atoms, keys: tuple[str, ...]) -> tuple[str | None, object]:
    """(key, value) of the first of `keys` the frame holds (calculator results or info)."""
    for key in keys:
        value = _result(atoms, key, atoms.info)
        if value is not None:
            return key, value
    return None, None


def _frame_virial(atoms, keys: tuple[tuple[str, ...], tuple[str, ...]], volume: float,
                  where: str) -> tuple[np.ndarray | None, str | None]:
    """(W [3,3] in the file's energy unit, its source) of one frame from its virial or stress
    (`volume` in the file's length unit cubed); (None, None) when it holds neither."""
    virial_key, virial = _first(atoms, keys[0])
    stress_key, stress = _first(atoms, keys[1])
    from_stress = None if stress is None else -_as_3x3(stress, stress_key, where) * volume
    if virial is None:
        return from_stress, None if stress is None else f"−σV from {stress_key!r}"
    w = _as_3x3(virial, virial_key, where)
    if from_stress is not None:
        scale = max(np.abs(w).max(), np.abs(from_stress).max())
        off = np.abs(w - from_stress).max()
        if off > VIRIAL_STRESS_RTOL * scale:
            raise ForcematchError(
                f"{where}: {virial_key!r} (trace {np.trace(w):.6g}) and −σV from "
                f"{stress_key!r} (trace {np.trace(from_stress):.6g}) differ by up to "
                f"{off:.4g}: one of them has another sign convention (W = −∂U/∂ε = −σV, σ "
                "positive under tension) or unit")
    return w, repr(virial_key)


def _all_or_none(path: Path, virials: list,
                 keys: tuple[tuple[str, ...], tuple[str, ...]]) -> np.ndarray | None:
    """The frames' W [T,3,3], None when no frame has one; refuses some frames without."""
    missing = [k for k, w in enumerate(virials) if w is None]
    if len(missing) == len(virials):
        return None
    if missing:
        having = next(k for k, w in enumerate(virials) if w is not None)
        raise ForcematchError(
            f"{path}: frame {missing[0]} holds no stress or virial (none of "
            f"{', '.join(map(repr, keys[1] + keys[0]))}) but frame {having} does "
            f"({len(virials) - len(missing)} of {len(virials)} frames have one): a virial "
            "must be in every frame or in none (remove the stress from all frames to import "
            "without it)")
    return np.stack(virials)


def read_extxyz(path: Path, settings: ImportSettings, *, energies: bool = True) -> RawTrajectory:
    """Every frame of the extended XYZ file `path`, with the virial where the frames carry a
    stress or virial (module docstring); `energies=False`: leave them to a side file."""
    images = _read_images(path)
    first = images[0]
    symbols = first.get_chemical_symbols()
    t, n = len(images), len(first)
    positions, forces, box = np.empty((t, n, 3)), np.empty((t, n, 3)), np.empty((t, 3))
    energy = np.empty(t) if energies else None
    step = np.empty(t, np.int64)
    keys, virials, sources = virial_keys(settings.energy_key), [], set()
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
        w, source = _frame_virial(atoms, keys, float(np.prod(box[k])), where)
        virials.append(w)
        sources.add(source)
    notes = {"masses_from": "ASE (chemical symbols or the file's masses)"}
    virial = _all_or_none(path, virials, keys)
    if virial is not None:
        notes["virial_from"] = " and ".join(sorted(sources))
    return RawTrajectory(path=path, format="extxyz", positions=positions, forces=forces,
                         energies=energy, box=box, step=step, time_ps=np.full(t, np.nan),
                         names=symbols, masses_amu=np.asarray(first.get_masses(), np.float64),
                         virial=virial, notes=notes)
