"""Check replica trajectories, split them by replica and record normalisation statistics.

Consecutive frames of one trajectory are correlated, so a random split by frame would leak the
test set into training: whole replicas go to validation and test instead. Before anything is
written every replica is checked (`forcematch.data.checks`: labels, position rounding,
coordinates wrapped into the box) and so are all of them together (`forcematch.data.repeats`:
frames repeated within or across replicas, a leak first; stale force labels). The output
directory is replaced whole, so it holds either the previous complete dataset or the new one.
With `cg` set, every split is written as coarse-grained frames (`forcematch.cg.mapping`): the
checks run on the atomistic replicas, the map is applied as each split is written, and each
file's parameters and stats.json record it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from forcematch.cg.mapping import LinearMap, map_frames, mapping_from_config
from forcematch.config import box_length_nm, config_hash, data_parts, source_stage, stage_config
from forcematch.data.checks import (
    check_labels,
    check_not_empty,
    check_resolution,
    wrap_into_box,
)
from forcematch.data.frames import Frames
from forcematch.data.pairs import closest_by_species_pair
from forcematch.data.repeats import check_repeated_forces, check_repeats
from forcematch.data.sources import as_source
from forcematch.data.stats import statistics
from forcematch.errors import ForcematchError
from forcematch.io.atomic import atomic_directory, check_replaceable, write_json
from forcematch.io.h5md import read_h5md, read_parameters, write_h5md
from forcematch.io.provenance import provenance, require_same_origin
from forcematch.progress import bar as progress_bar

SPLITS = ("train", "val", "test")
OUTPUTS = tuple(f"{name}.h5" for name in SPLITS) + ("stats.json",)


def split_replicas(n_replicas: int, val_replicas: int, test_replicas: int) -> dict[str, list[int]]:
    """Replica indices per split: the last `test_replicas` test, the `val_replicas` before them
    validate, the rest train."""
    n_train = n_replicas - val_replicas - test_replicas
    if n_train < 1:
        raise ForcematchError(
            f"{n_replicas} replicas are too few for {val_replicas} validation and "
            f"{test_replicas} test replicas plus at least one for training"
        )
    indices = list(range(n_replicas))
    return {
        "train": indices[:n_train],
        "val": indices[n_train : n_train + val_replicas],
        "test": indices[n_train + val_replicas :],
    }


def check_replica(path: str | Path, config: dict[str, Any],
                  progress: Callable[[str], None] = print) -> Frames:
    """Read one replica file and check it against the config and physics; its frames, with
    coordinates outside the box wrapped into it (`forcematch.data.checks.wrap_into_box`).

    `read_h5md` already checks the layout, units, storage types and finiteness; this adds the
    atom count and box the config gives, and what the data must satisfy to be labels
    (`forcematch.data.checks`): forces not all zero, energies not constant, net force at
    round-off, positions stored at full precision.
    """
    traj = read_h5md(path)
    check_not_empty(traj, str(path))
    if config["import"] is None:
        _check_simulated_system(traj, config, path)
    _check_box_holds_cutoff(traj, config["system"]["cutoff_nm"], path)
    check_labels(traj, str(path))
    check_resolution(traj, str(path))
    traj, note = wrap_into_box(traj, str(path))
    if note:
        progress(note)
    return traj


def _check_simulated_system(traj: Frames, config: dict[str, Any], path) -> None:
    """The atom count and box of a simulated replica are the config's."""
    n_atoms = config["system"]["n_atoms"]
    if traj.n_atoms != n_atoms:
        raise ForcematchError(
            f"{path}: holds {traj.n_atoms} atoms but system.n_atoms is {n_atoms}"
        )
    box_nm = box_length_nm(config)
    bad = np.flatnonzero(np.any(np.abs(traj.box_nm - box_nm) > 1e-6 * box_nm, axis=1))
    if bad.size:
        raise ForcematchError(
            f"{path}: frame {bad[0]} has box {traj.box_nm[bad[0]].tolist()} nm, but the config "
            f"gives a cubic box of {box_nm:.6f} nm"
        )


def _check_box_holds_cutoff(traj: Frames, cutoff_nm: float, path) -> None:
    """Every box edge exceeds twice the cutoff (the minimum image the models rely on)."""
    small = np.flatnonzero(traj.box_nm.min(axis=1) <= 2 * cutoff_nm)
    if small.size:
        i = int(small[0])
        raise ForcematchError(
            f"{path}: frame {i} has box {traj.box_nm[i].tolist()} nm, not more than twice "
            f"system.cutoff_nm = {cutoff_nm} nm ({small.size} frames); lower system.cutoff_nm "
            "(and system.switch_nm) below half the smallest box edge")


def _read_replicas(config: dict[str, Any], replica_paths: Sequence[str | Path],
                   progress: Callable[[str], None]) -> tuple[list[Frames], list[dict]]:
    """Every replica checked against the config and its recorded origin: (frames, sources)."""
    n_expected = data_parts(config)
    if len(replica_paths) != n_expected:
        what = ("the import section makes" if config["import"] is not None
                else "simulate.replicas is")
        raise ForcematchError(
            f"got {len(replica_paths)} replica files but {what} {n_expected}")
    source_hash = config_hash(stage_config(config, source_stage(config)))
    replicas, sources = [], []
    files = progress_bar(len(replica_paths), "dataset", "file")
    for k, path in enumerate(replica_paths):
        files.update(1)
        frames = check_replica(path, config, progress)
        recorded = read_parameters(path)
        if recorded.get("replica") is not None and recorded["replica"] != k:
            raise ForcematchError(
                f"{path}: holds replica {recorded['replica']}, expected replica {k}")
        # Files from outside the pipeline carry no hash; pipeline replicas must match.
        require_same_origin([(str(path), recorded)], expected=source_hash)
        progress(f"checked {path}: {frames.n_frames} frames, {frames.n_atoms} atoms")
        replicas.append(frames)
        sources.append({"path": str(path), "replica": k, "n_frames": int(frames.n_frames),
                        "config_hash": recorded.get("config_hash"),
                        "openmm_seed": recorded.get("seed")})
    files.close()
    for path, frames in zip(replica_paths, replicas, strict=True):
        if not np.array_equal(frames.species, replicas[0].species):
            raise ForcematchError(f"{path}: species differ from {replica_paths[0]}")
    return replicas, sources


def _check_across(replicas: list[Frames], paths: Sequence[str | Path],
                  assignment: dict[str, list[int]]) -> None:
    """Refuse frames repeated within or across replicas (a leak first) and stale forces."""
    split_of = {k: name for name, members in assignment.items() for k in members}
    names = [str(p) for p in paths]
    check_repeats(replicas, names, [split_of[k] for k in range(len(replicas))])
    check_repeated_forces(replicas, names)


def _write_outputs(out_dir: Path, replicas: list[Frames], assignment: dict[str, list[int]],
                   stats: dict, parameters: dict[str, dict], mapping: LinearMap | None,
                   progress: Callable[[str], None]) -> None:
    """Each split's file (its statistics into `stats`) and stats.json, written into a new
    directory that replaces `out_dir` whole once complete; a failure leaves `out_dir` as it
    was. With a `mapping`, each split's frames are mapped to CG sites first."""
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        with atomic_directory(out_dir) as tmp:
            try:
                for name, members in assignment.items():
                    frames = Frames.concatenate([replicas[k] for k in members])
                    if mapping is not None:
                        frames = map_frames(mapping, frames)
                    write_h5md(tmp / f"{name}.h5", frames, parameters[name])
                    stats[name] = statistics(frames) | {
                        "replicas": members,
                        "closest_pair_nm": closest_by_species_pair(as_source(frames))}
                    progress(f"{name}.h5: replicas {members}, {frames.n_frames} frames")
                write_json(tmp / "stats.json", stats)
            except ForcematchError as exc:  # name the output, not the temporary directory
                raise ForcematchError(f"{str(exc).replace(str(tmp), str(out_dir))}; "
                                      f"{out_dir} was left as it was") from exc
    except OSError as exc:
        raise ForcematchError(f"cannot write the dataset into {out_dir}: "
                              f"{exc.strerror or exc}; {out_dir} was left as it was") from exc
    progress(f"wrote {out_dir}: {', '.join(OUTPUTS)}")


def build_dataset(
    config: dict[str, Any],
    replica_paths: Sequence[str | Path],
    out_dir: str | Path,
    *,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Check every replica, write `{train,val,test}.h5` and `stats.json` into `out_dir`.

    `replica_paths[k]` must hold replica k. All files are checked before anything is written,
    and `out_dir` is replaced whole (`forcematch.io.atomic.atomic_directory`): a failure leaves
    the previous complete dataset or none, never a mix. An `out_dir` holding other files is
    refused. Returns the statistics written to `stats.json`: per split, those of
    `forcematch.data.stats.statistics` (what training normalises by) and the replicas.
    """
    out_dir = Path(out_dir)
    check_replaceable(out_dir, OUTPUTS, "--out-dir")
    replicas, sources = _read_replicas(config, replica_paths, progress)
    split = config["split"]
    assignment = split_replicas(len(replicas), split["val_replicas"], split["test_replicas"])
    _check_across(replicas, replica_paths, assignment)
    dataset_hash = config_hash(stage_config(config, "dataset"))
    record = provenance("dataset", dataset_hash, inputs={
        f"{source_stage(config)}_config_hash": config_hash(
            stage_config(config, source_stage(config)))})
    stats: dict[str, Any] = {"config_hash": dataset_hash, "provenance": record}
    parameters = {
        name: {"config": stage_config(config, "dataset"), "config_hash": dataset_hash,
               "split": name, "replicas": members,
               "sources": [sources[k] for k in members], "provenance": record}
        for name, members in assignment.items()}
    mapping = None
    if config["cg"] is not None:
        mapping = mapping_from_config(config["cg"], replicas[0].n_atoms, replicas[0].species)
        stats["cg"] = {"map": config["cg"]["map"], "n_atoms": replicas[0].n_atoms,
                       "n_sites": mapping.n_sites,
                       "force_map": "each site's atoms' forces, summed with the force weights"}
        for name in parameters:
            parameters[name]["cg_map"] = mapping.record()
        progress(f"coarse-graining: {config['cg']['map']} of {replicas[0].n_atoms} atoms to "
                 f"{mapping.n_sites} sites")
    _write_outputs(out_dir, replicas, assignment, stats, parameters, mapping, progress)
    return stats
