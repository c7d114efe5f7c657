"""`forcematch cg-mean-force`: the exact mean force on held-out CG frames, the ground truth that
splits every CG model's loss into the noise floor and its own error (`forcematch.cg.split`).

The CG test split (written by the dataset stage with `cg` set) holds the mapped frames; their
atomistic states are the test replicas' frames, read again here, mapped and checked against
the split before any sampling starts. For `cg_mean_force.frames` evenly spaced test frames the
mapped atoms are held fixed and the rest sampled (`forcematch.cg.mean_force`) in
`cg_mean_force.runs` independent runs, each with its own relaxation and seed (seed + k·runs + r
for run r of frame k), so the file depends only on the config and the data. The mean force is
the mean over all samples; its standard error comes from the spread of the runs' means, which
stays right however slowly the free atoms decorrelate (blocks within one run of 2 + 20 ps
undercounted the sampling variance 2.8×, BENCHMARKS.md); the pooled block standard error is
stored beside it.

The file (HDF5, written whole or not at all; units in each dataset's `unit` attribute):

    /frame_index     [F]       the frames of the CG test split that were sampled
    /mean_force      [F,S,3]   kJ mol-1 nm-1
    /standard_error  [F,S,3]   kJ mol-1 nm-1 (from the independent runs' means)
    /block_standard_error [F,S,3] kJ mol-1 nm-1 (from blocks within the runs, for comparison)
    /label_variance  [F]       kJ2 mol-2 nm-2 (spread of the mapped force about the mean)
    /parameters      attr json: config slice, its hash, the map, provenance
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from forcematch.cg.mapping import LinearMap, map_frames, mapping_from_config
from forcematch.cg.mean_force import MeanForceSettings, sample_mean_force
from forcematch.config import config_hash, stage_config
from forcematch.data.checks import wrap_into_box
from forcematch.data.frames import Frames
from forcematch.dataset import split_replicas
from forcematch.errors import ForcematchError
from forcematch.io.atomic import atomic_path
from forcematch.io.h5md import read_h5md, read_parameters
from forcematch.io.provenance import provenance
from forcematch.progress import bar as progress_bar

FORCE_UNIT = "kJ mol-1 nm-1"
POSITION_TOLERANCE_NM = 1e-5  # the CG split stores positions in float32 at most: ~1e-7 nm


@dataclass(frozen=True)
class MeanForceSet:
    """The sampled frames of a CG test split: frame_index [F], mean [F,S,3] and
    standard_error [F,S,3] kJ/mol/nm (from independent runs), label_variance [F]
    (kJ/mol/nm)², the file's parameters, block_standard_error [F,S,3] kJ/mol/nm."""

    frame_index: np.ndarray
    mean: np.ndarray
    standard_error: np.ndarray
    label_variance: np.ndarray
    parameters: dict
    block_standard_error: np.ndarray


def settings_from_config(config: dict, frame: int, run: int) -> MeanForceSettings:
    """The sampling settings of run `run` of test frame number `frame` (its own seed; the
    samples and sampling time of cg_mean_force split evenly among the runs)."""
    mf = config["cg_mean_force"]
    samples = mf["samples"] // mf["runs"]
    return MeanForceSettings(
        temperature_K=float(config["system"]["temperature_K"]), timestep_fs=mf["timestep_fs"],
        friction_per_ps=mf["friction_per_ps"],
        equilibration_steps=round(mf["equilibration_ps"] * 1e3 / mf["timestep_fs"]),
        samples=samples,
        steps_between_samples=max(1, round(mf["sample_ps"] * 1e3 / mf["timestep_fs"]
                                           / mf["samples"])),
        blocks=mf["blocks"], seed=mf["seed"] + frame * mf["runs"] + run)


def sample_frame(system, positions_nm, box_nm, mapping: LinearMap, config: dict, frame: int,
                 threads: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """One frame's mean force over cg_mean_force.runs independent runs: (mean [S,3], its
    standard error from the runs' means [S,3], the pooled block standard error [S,3], the
    samples' variance about the mean, mean over components)."""
    runs = [sample_mean_force(system, positions_nm, box_nm, mapping,
                              settings_from_config(config, frame, r), threads=threads)
            for r in range(config["cg_mean_force"]["runs"])]
    means = np.stack([run.mean for run in runs])
    n = len(runs)
    block_se = np.sqrt(np.mean([run.standard_error ** 2 for run in runs], axis=0) / n)
    between = means.var(axis=0).mean()  # the runs' own spread about their common mean
    label_variance = float(np.mean([run.label_variance for run in runs]) + between)
    return (means.mean(axis=0), means.std(axis=0, ddof=1) / np.sqrt(n), block_se,
            label_variance)


def atomistic_test_frames(config: dict, replica_paths: Sequence[str | Path]) -> Frames:
    """The test split's atomistic frames: the test replicas of `replica_paths` (every replica,
    in order), concatenated and wrapped into the box as the dataset stage does."""
    split = config["split"]
    members = split_replicas(len(replica_paths), split["val_replicas"],
                             split["test_replicas"])["test"]
    frames = [wrap_into_box(read_h5md(replica_paths[k]), str(replica_paths[k]))[0]
              for k in members]
    return Frames.concatenate(frames)


def check_same_frames(mapping: LinearMap, atomistic: Frames, test: Frames, test_path) -> None:
    """The mapped atomistic frames are the CG test split's (minimum image, nm)."""
    if atomistic.n_frames != test.n_frames:
        raise ForcematchError(f"{test_path}: {test.n_frames} frames, but the test replicas hold "
                              f"{atomistic.n_frames}: the dataset was made from other data")
    mapped = map_frames(mapping, atomistic)
    if mapped.n_atoms != test.n_atoms:
        raise ForcematchError(f"{test_path}: {test.n_atoms} sites, but cg maps "
                              f"{atomistic.n_atoms} atoms to {mapped.n_atoms}")
    delta = mapped.positions_nm - test.positions_nm
    box = test.box_nm[:, None, :]
    delta -= box * np.round(delta / box)
    worst = np.abs(delta).max(axis=(1, 2))
    if worst.max() > POSITION_TOLERANCE_NM:
        k = int(np.argmax(worst))
        raise ForcematchError(
            f"{test_path}: frame {k}'s sites lie {worst[k]:.3g} nm from the mapped test "
            "replicas' atoms: the dataset was made with another map or other data")


def sample_test_mean_force(config: dict, replica_paths: Sequence[str | Path], test_path,
                           out_path, *, threads: int = 1,
                           progress: Callable[[str], object] = print) -> MeanForceSet:
    """Sample the mean force on `cg_mean_force.frames` frames of the CG test split at
    `test_path` and write them to `out_path` (module docstring)."""
    from forcematch.reference.system import build_system, lj_system_from_config

    if config["cg"] is None:
        raise ForcematchError("cg-mean-force needs a config with a cg section")
    test = read_h5md(test_path)
    atomistic = atomistic_test_frames(config, replica_paths)
    mapping = mapping_from_config(config["cg"], atomistic.n_atoms, atomistic.species)
    check_same_frames(mapping, atomistic, test, test_path)
    n_frames = config["cg_mean_force"]["frames"]
    if n_frames > test.n_frames:
        raise ForcematchError(f"cg_mean_force.frames = {n_frames} exceeds the {test.n_frames} "
                              f"frames of {test_path}")
    index = np.linspace(0, test.n_frames - 1, n_frames).round().astype(np.int64)
    system = build_system(lj_system_from_config(config))
    means, errors, block_errors, variances = [], [], [], []
    bar, start = progress_bar(n_frames, "mean force", "frame"), time.perf_counter()
    for k, frame in enumerate(index):
        mean, error, block_error, variance = sample_frame(
            system, atomistic.positions_nm[frame], atomistic.box_nm[frame], mapping, config, k,
            threads)
        means.append(mean)
        errors.append(error)
        block_errors.append(block_error)
        variances.append(variance)
        bar.update(1)
    bar.close()
    runs_var, blocks_var = np.mean(np.square(errors)), np.mean(np.square(block_errors))
    progress(f"sampled the mean force on {n_frames} test frames in "
             f"{time.perf_counter() - start:.0f} s; squared standard error from the runs "
             f"{runs_var:.4g}, from blocks {blocks_var:.4g} (kJ/mol/nm)^2")
    sliced = stage_config(config, "cg_mean_force")
    record = {"config": sliced, "config_hash": config_hash(sliced),
              "cg_map": mapping.record(), "test_file": str(test_path),
              "test_parameters_hash": read_parameters(test_path).get("config_hash"),
              "provenance": provenance("cg_mean_force", config_hash(sliced),
                                       {"mean_force": config["cg_mean_force"]["seed"]})}
    result = MeanForceSet(index, np.stack(means), np.stack(errors), np.asarray(variances),
                          record, np.stack(block_errors))
    write_mean_force(out_path, result)
    return result


def write_mean_force(path, result: MeanForceSet) -> None:
    """Write `result` to the HDF5 file `path`, whole or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("frame_index", data=result.frame_index)
        for name, values, unit in (("mean_force", result.mean, FORCE_UNIT),
                                   ("standard_error", result.standard_error, FORCE_UNIT),
                                   ("block_standard_error", result.block_standard_error,
                                    FORCE_UNIT),
                                   ("label_variance", result.label_variance,
                                    "kJ2 mol-2 nm-2")):
            f.create_dataset(name, data=np.asarray(values, np.float64)).attrs["unit"] = unit
        f.create_group("parameters").attrs["json"] = json.dumps(result.parameters,
                                                                sort_keys=True)


def read_mean_force(path, n_sites: int, n_test_frames: int) -> MeanForceSet:
    """The mean-force file `path` for a CG test split of `n_test_frames` frames of `n_sites`
    sites, checked: every dataset present with its unit, shapes that agree, finite values,
    frame indices within the split."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            missing = [name for name in ("frame_index", "mean_force", "standard_error",
                                         "block_standard_error", "label_variance",
                                         "parameters") if name not in f]
            if missing:
                raise ForcematchError(f"{path}: not a mean-force file (missing "
                                      f"{', '.join(missing)})")
            for name in ("mean_force", "standard_error", "block_standard_error"):
                if f[name].attrs.get("unit") != FORCE_UNIT:
                    raise ForcematchError(f"{path}: {name} must be in {FORCE_UNIT}, got "
                                          f"{f[name].attrs.get('unit')!r}")
            result = MeanForceSet(f["frame_index"][()], f["mean_force"][()],
                                  f["standard_error"][()], f["label_variance"][()],
                                  json.loads(f["parameters"].attrs["json"]),
                                  f["block_standard_error"][()])
    except OSError as exc:
        raise ForcematchError(f"cannot read the mean-force file {path}: {exc}") from exc
    n = result.frame_index.shape[0]
    for name, values, shape in (("mean_force", result.mean, (n, n_sites, 3)),
                                ("standard_error", result.standard_error, (n, n_sites, 3)),
                                ("block_standard_error", result.block_standard_error,
                                 (n, n_sites, 3)),
                                ("label_variance", result.label_variance, (n,))):
        if values.shape != shape:
            raise ForcematchError(f"{path}: {name} has shape {values.shape}, expected {shape} "
                                  f"for {n} frames of {n_sites} sites")
        if not np.isfinite(values).all():
            raise ForcematchError(f"{path}: {name} holds non-finite values")
    if n == 0 or result.frame_index.min() < 0 or result.frame_index.max() >= n_test_frames:
        raise ForcematchError(f"{path}: frame indices outside the test split's "
                              f"{n_test_frames} frames")
    return result
