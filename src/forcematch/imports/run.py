"""`forcematch import`: read, convert, check, cut into parts, write the parts whole.

Every file is read and checked before anything is written; the parts go to `out_dir` as
`part_<k>.h5` in the layout the simulate stage writes (`forcematch.io.h5md`), the directory
replaced whole (`forcematch.io.atomic.atomic_directory`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from forcematch.data.checks import check_labels, check_not_empty
from forcematch.data.frames import Frames
from forcematch.errors import ForcematchError
from forcematch.imports.checks import (
    check_frame_times,
    check_positions,
    check_temperature,
    check_time_order,
    check_work,
    pair_statistics,
)
from forcematch.imports.common import ImportSettings, RawTrajectory, match_energies, to_frames
from forcematch.imports.extxyz import read_extxyz
from forcematch.imports.mda import read_lammps_dump, read_mdanalysis
from forcematch.io.atomic import atomic_directory, check_replaceable
from forcematch.io.h5md import write_h5md
from forcematch.progress import bar as progress_bar

Progress = Callable[[str], None]
PART_NAME = re.compile(r"part_\d+\.h5")


def part_name(k: int) -> str:
    return f"part_{k}.h5"


def _require_file(path: Path, key: str) -> None:
    if not path.exists():
        raise ForcematchError(f"{key}: {path} not found (relative paths are relative to "
                              f"{Path.cwd()})")
    if not path.is_file():
        raise ForcematchError(f"{key}: {path} is not a file")


def require_inputs(settings: ImportSettings) -> None:
    """Every file the settings name exists, before any is read."""
    for k, path in enumerate(settings.files):
        _require_file(path, f"import.files[{k}]")
    for k, path in enumerate(settings.energy_files or ()):
        _require_file(path, f"import.energy_files[{k}]")
    if settings.topology is not None:
        _require_file(settings.topology, "import.topology")


def _read_raw(path: Path, settings: ImportSettings, side_file: bool) -> RawTrajectory:
    fmt = settings.file_format(path)
    if fmt == "extxyz":
        return read_extxyz(path, settings, energies=not side_file)
    if fmt == "lammpsdump":
        return read_lammps_dump(path, settings)
    return read_mdanalysis(path, settings)


def read_trajectory(settings: ImportSettings, k: int,
                    progress: Progress | None = print) -> tuple[Frames, dict]:
    """File `k` of `settings` in project units, with its energies (from the file or its side
    file), and its provenance record (path, format, units and factors, frames, species)."""
    path, t0 = settings.files[k], time.perf_counter()
    energy_file = settings.energy_files[k] if settings.energy_files else None
    raw = _read_raw(path, settings, energy_file is not None)
    if energy_file is not None:
        raw.energies = match_energies(raw, energy_file, f"import.energy_files[{k}]")
        raw.notes["energy_file"] = str(energy_file)
    notes: list[str] = []
    frames, record = to_frames(raw, settings, notes)
    if progress is not None:
        progress(f"read {path}: {frames.n_frames} frames of {frames.n_atoms} atoms "
                 f"({raw.format}, units {settings.units}) in {time.perf_counter() - t0:.1f} s")
        for note in notes:
            progress(note)
    return frames, record


def check_trajectory(frames: Frames, record: dict, settings: ImportSettings,
                     temperature_K: float | None, progress: Progress | None = print) -> None:
    """The import checks (see `forcematch.imports.checks`) and the dataset stage's label checks
    on one file's frames; adds what consecutive frames tell to `record["checks"]`."""
    where = record["path"]
    check_not_empty(frames, where)
    check_time_order(frames, where)
    lines = [check_positions(frames, where, settings.units)]
    check_labels(frames, where)
    stats = pair_statistics(frames)
    lines.append(check_work(stats, where, settings.units, settings.loose_energies))
    lines.append(check_temperature(stats, where, settings.units, temperature_K,
                                   settings.trust_units))
    lines.append(check_frame_times(stats, frames, where, settings.units))
    record["checks"] = None if stats is None else stats.as_dict()
    if progress is not None:
        for line in lines:
            if line:
                progress(line)


def check_same_atoms(trajectories: list[tuple[Frames, dict]]) -> None:
    """Every file holds the same atoms (count, species, masses) in the same order."""
    first, first_record = trajectories[0]
    first_names = np.array(first_record["species"])[first.species]
    for frames, record in trajectories[1:]:
        where = f"{record['path']} and {first_record['path']}"
        if frames.n_atoms != first.n_atoms:
            raise ForcematchError(f"{where} hold {frames.n_atoms} and {first.n_atoms} atoms: "
                                  "every file must hold the same atoms in the same order")
        names = np.array(record["species"])[frames.species]
        for what, a, b in (("species", names, first_names),
                           ("mass", frames.masses_amu, first.masses_amu)):
            differ = np.flatnonzero(a != b)
            if differ.size:
                i = int(differ[0])
                raise ForcematchError(
                    f"{where}: atom {i} has {what} {a[i]} and {b[i]} ({differ.size} atoms "
                    "differ): every file must hold the same atoms in the same order")
        if record["species"] != first_record["species"]:
            raise ForcematchError(f"{where}: species {record['species']} and "
                                  f"{first_record['species']} in index order: set "
                                  "import.species")


def check_same_labels(trajectories: list[tuple[Frames, dict]]) -> None:
    """Every file carries a virial, or none does: the parts are replicas of one dataset."""
    has = [frames.virial_kJ_mol is not None for frames, _ in trajectories]
    if any(has) and not all(has):
        with_virial, without = (trajectories[has.index(value)][1]["path"]
                                for value in (True, False))
        raise ForcematchError(
            f"{with_virial} holds a virial and {without} none: either every file carries a "
            "stress or virial in every frame, or none does")


def block_slices(n_frames: int, blocks: int, gap_frames: int, where: str) -> list[slice]:
    """`blocks` contiguous blocks of equal length with `gap_frames` dropped between them; the
    frames left over go at the end."""
    length = (n_frames - (blocks - 1) * gap_frames) // blocks
    if length < 1:
        raise ForcematchError(
            f"{where}: {n_frames} frames cannot make import.blocks = {blocks} blocks with "
            f"import.gap_frames = {gap_frames} frames dropped between them: lower either, or "
            "give several files (one part each)")
    return [slice(k * (length + gap_frames), k * (length + gap_frames) + length)
            for k in range(blocks)]


def _gap_text(frames: Frames, record: dict, blocks: list[slice]) -> str:
    """The gap between the first two blocks, in steps and ps (from the frame times, else from
    the interval the forces' dynamics imply)."""
    end, start = blocks[0].stop - 1, blocks[1].start
    steps = int(frames.step[start] - frames.step[end])
    ps = float(frames.time_ps[start] - frames.time_ps[end])
    if np.isfinite(ps):
        return f"{steps} steps, {ps:.4g} ps between blocks"
    checks = record.get("checks") or {}
    if checks.get("close"):
        ps = steps / checks["step_interval"] * checks["interval_ps"]
        return (f"{steps} steps, about {ps:.3g} ps between blocks, from the forces' dynamics: "
                "the file gives no times")
    return f"{steps} steps between blocks, ps unknown: the file gives no times"


def make_parts(trajectories: list[tuple[Frames, dict]], settings: ImportSettings,
               progress: Progress | None = print) -> list[tuple[Frames, dict]]:
    """One part per file; or `import.blocks` blocks of the one file. Each with its source."""
    if len(trajectories) > 1:
        return [(frames, {**record, "frame_range": [0, frames.n_frames], "block": None})
                for frames, record in trajectories]
    frames, record = trajectories[0]
    blocks = block_slices(frames.n_frames, settings.blocks, settings.gap_frames, record["path"])
    left = frames.n_frames - blocks[-1].stop
    if progress is not None:
        progress(f"{record['path']}: {len(blocks)} blocks of {blocks[0].stop} frames, "
                 f"{left} frames left over at the end; {settings.gap_frames} frames dropped "
                 f"between blocks: {_gap_text(frames, record, blocks)}")
    return [(frames.select(s), {**record, "frame_range": [s.start, s.stop], "block": b})
            for b, s in enumerate(blocks)]


def _check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ForcematchError(f"output directory {out_dir} exists and is not a directory")
    existing = [p.name for p in out_dir.iterdir()] if out_dir.is_dir() else []
    check_replaceable(out_dir, [n for n in existing if PART_NAME.fullmatch(n)], "--out-dir")


def write_parts(parts: list[tuple[Frames, dict]], out_dir: Path, config: dict,
                progress: Progress | None = print) -> list[Path]:
    """`out_dir`/part_<k>.h5 for every part, the directory replaced whole."""
    from forcematch.config import config_hash, stage_config
    from forcematch.io.provenance import provenance

    section = stage_config(config, "import")
    stage_hash = config_hash(section)
    record = provenance("import", stage_hash, inputs={"files": [str(f) for f in
                                                                 config["import"]["files"]]})
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with atomic_directory(out_dir) as tmp:
        for k, (frames, source) in enumerate(parts):
            write_h5md(tmp / part_name(k), frames, {
                "config": section, "config_hash": stage_hash, "replica": k, "part": k,
                "source": source, "provenance": record})
    paths = [out_dir / part_name(k) for k in range(len(parts))]
    if progress is not None:
        for k, ((frames, source), path) in enumerate(zip(parts, paths, strict=True)):
            block = "" if source["block"] is None else f" block {source['block']}"
            progress(f"part {k}: {path}: {frames.n_frames} frames (steps {frames.step[0]}.."
                     f"{frames.step[-1]}) from {source['path']}{block} (frames "
                     f"{source['frame_range'][0]}..{source['frame_range'][1] - 1})")
    return paths


def read_parts(config: dict, progress: Progress | None = print) -> list[tuple[Frames, dict]]:
    """The parts of `config["import"]`, read, converted and checked (nothing written)."""
    if config.get("import") is None:
        raise ForcematchError("the config has no import section (import.files, import.units)")
    settings = ImportSettings.from_config(config["import"])
    require_inputs(settings)
    temperature_K = config.get("system", {}).get("temperature_K")
    trajectories = []
    with progress_bar(len(settings.files), "import", "file") as files:
        for k in range(len(settings.files)):
            frames, record = read_trajectory(settings, k, progress)
            check_trajectory(frames, record, settings, temperature_K, progress)
            trajectories.append((frames, record))
            files.update(1)
    check_same_atoms(trajectories)
    check_same_labels(trajectories)
    return make_parts(trajectories, settings, progress)


def import_trajectories(config: dict, out_dir: str | Path,
                        progress: Progress | None = print) -> list[Path]:
    """`forcematch import`: the parts of `config["import"]` written to `out_dir`/part_<k>.h5
    (one line per part to `progress`); returns their paths."""
    out_dir = Path(out_dir)
    _check_out_dir(out_dir)
    parts = read_parts(config, progress)
    return write_parts(parts, out_dir, config, progress)
