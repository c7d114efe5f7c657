"""Files of a training run: the resumable checkpoint, the per-epoch metrics, the final model.

    out_dir/checkpoint/   config.json (the run's description) + state.msgpack (params,
                          optimiser state, step, timers) + metrics.csv (one row per evaluated
                          epoch, flushed): what a killed run resumes from; `lock` names the live
                          process that trains here (`training.lock`)
    out_dir/model/        config.json + state.msgpack (params): read by `potential.load_model`

No pickle: arrays through `flax.serialization` (msgpack), metadata through JSON; every file
written to a temporary name and renamed. A checkpoint is read as untrusted input
(`forcematch.io.model_files`): a damaged one is refused, naming the file, never half-restored.

metrics.csv: a row per evaluated epoch, keyed by `epoch` (every epoch, or every k-th of a run
of over 50 epochs and the last: `evaluate.evaluation_interval`). Columns: `learning_rate` is the
rate the epoch's last optimiser step used (`schedule(step - 1)`: Optax evaluates the schedule at
the count of steps taken before); `train_*` are means over the steps since the previous row,
`val_*` the `forcematch.metrics` keys on the per-epoch validation frames, `wall_s` seconds since
the run started (summed over resumes).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import flax.serialization
import jax
import numpy as np

from forcematch.errors import ForcematchError
from forcematch.io.atomic import atomic_directory, atomic_write_bytes, output_errors, write_json
from forcematch.io.model_files import (
    read_json_object,
    read_regular_file,
    restore_msgpack,
    shape_mismatch,
    state_size_limit,
)
from forcematch.training.lock import LOCK_NAME

MAX_METRICS_BYTES = 256 * 2**20  # one row per epoch: far less

# Training settings that do not change the trained parameters: a checkpoint may be resumed
# across them.
RESUME_IGNORED = ("checkpoint_every_steps",)
# What must match for a checkpoint to be resumed, besides the training settings.
_RESUME_KEYS = ("format", "model", "model_config", "cutoff_nm", "capacity", "n_atoms",
                "species", "stats", "norm", "batch_size", "data")

METRICS_COLUMNS = (
    "epoch", "step", "learning_rate", "train_loss", "train_energy_loss", "train_force_loss",
    "train_stress_loss", "val_force_rmse_kJ_mol_nm", "val_force_rmse_rel",
    "val_energy_mae_per_atom_kJ_mol", "val_force_std_ratio", "val_force_corr", "wall_s",
)


def _to_numpy(tree):
    return jax.tree.map(np.asarray, tree)


def write_model_dir(path: Path, info: dict, params) -> None:
    """Write a complete model directory (config.json + state.msgpack) atomically."""
    with atomic_directory(path) as tmp:
        (tmp / "config.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        (tmp / "state.msgpack").write_bytes(
            flax.serialization.to_bytes({"params": _to_numpy(params)}))


def save_state(ckpt: Path, state: dict) -> None:
    """Write the training state: params, opt_state (arrays), step (int), wall_s, train_s
    (float seconds), epoch_sums [5] (float64)."""
    state = dict(state, params=_to_numpy(state["params"]),
                 opt_state=_to_numpy(state["opt_state"]))
    atomic_write_bytes(ckpt / "state.msgpack", flax.serialization.to_bytes(state))


def config_differences(old: dict, new: dict) -> list[str]:
    """What differs between two runs' config.json, as readable items (empty: same run)."""
    diffs = [k for k in _RESUME_KEYS if old.get(k) != new.get(k)]
    old_tc = old.get("train_config") if isinstance(old.get("train_config"), dict) else {}
    new_tc = dict(new["train_config"])
    for key in sorted(set(old_tc) | set(new_tc)):
        if key not in RESUME_IGNORED and old_tc.get(key) != new_tc.get(key):
            diffs.append(f"train_config.{key} ({old_tc.get(key)!r} -> {new_tc.get(key)!r})")
    return diffs


def restore(ckpt: Path, info: dict, target: dict, restart_stale: bool,
            progress: Callable[[str], object]) -> dict | None:
    """The saved state if `ckpt` holds a checkpoint of the run `info`; None if none.

    A checkpoint of another run raises, or with `restart_stale` is moved aside; a damaged one
    (unreadable, of other shapes than `target`) raises naming the file.
    """
    config_path = ckpt / "config.json"
    if not os.path.lexists(config_path):
        return None
    try:
        old = read_json_object(config_path)
    except ForcematchError as err:
        raise ForcematchError(f"cannot read checkpoint: {err}; remove {ckpt} to start "
                              "afresh") from None
    diffs = config_differences(old, info)
    if diffs and restart_stale:
        stale = _move_aside(ckpt)
        progress(f"{ckpt} belonged to another run (differs in {', '.join(diffs)}): moved to "
                 f"{stale}; starting afresh")
        return None
    if diffs:
        raise ForcematchError(f"{ckpt} belongs to another run (differs in {', '.join(diffs)}); "
                              "use another output directory or remove it")
    state_path = ckpt / "state.msgpack"
    if not os.path.lexists(state_path):
        return None
    state = _restore_state(state_path, target)
    if not 0 <= int(state["step"]) <= info["total_steps"]:
        raise ForcematchError(f"cannot restore checkpoint {state_path}: step {state['step']} "
                              f"is outside 0..{info['total_steps']}; remove {ckpt} to start "
                              "afresh")
    return state


def _restore_state(state_path: Path, target: dict) -> dict:
    """`target` with the values of the state file, refused unless every array has its shape."""
    data = read_regular_file(state_path, state_size_limit(target["params"], 4))
    try:
        state = flax.serialization.from_state_dict(target, restore_msgpack(data, state_path))
    except ForcematchError:
        raise
    except Exception as exc:  # noqa: BLE001 - flax's structure errors share no base class
        raise ForcematchError(f"cannot restore checkpoint {state_path}: {exc}") from None
    mismatch = shape_mismatch(state, target)
    if mismatch:
        raise ForcematchError(f"cannot restore checkpoint {state_path}: {mismatch}; remove "
                              f"{state_path.parent} to start afresh")
    return state


def _move_aside(ckpt: Path) -> Path:
    """Move the checkpoint's files (not its lock, which this process holds) to
    `<ckpt>.stale/`, replacing an older one; returns that directory."""
    stale = ckpt.with_name(ckpt.name + ".stale")
    with output_errors(stale):
        shutil.rmtree(stale, ignore_errors=True)
        stale.mkdir()
        for entry in ckpt.iterdir():
            if entry.name != LOCK_NAME:
                entry.rename(stale / entry.name)
    return stale


def start_afresh(out: Path, info: dict) -> None:
    """An empty checkpoint of the run `info`; stale outputs of an earlier run removed."""
    ckpt = out / "checkpoint"
    with output_errors(ckpt):
        ckpt.mkdir(exist_ok=True)
        (ckpt / "state.msgpack").unlink(missing_ok=True)
        write_json(ckpt / "config.json", info)
        for stale in (ckpt / "metrics.csv", out / "metrics.csv", out / "final_metrics.json"):
            stale.unlink(missing_ok=True)
        shutil.rmtree(out / "model", ignore_errors=True)


def truncate_metrics(path: Path, completed_epochs: int) -> None:
    """Keep only rows of epochs <= completed_epochs (a resumed run rewrites the rest; rows
    are keyed by epoch, so sparse rows are kept or dropped alike)."""
    if not os.path.lexists(path):
        return
    text = read_regular_file(path, MAX_METRICS_BYTES).decode("utf-8", errors="replace")
    try:
        rows = list(csv.DictReader(text.splitlines()))
        keep = [r for r in rows if int(r["epoch"]) <= completed_epochs]
        body = "".join(",".join(r[c] for c in METRICS_COLUMNS) + "\n" for r in keep)
    except (KeyError, TypeError, ValueError) as exc:
        raise ForcematchError(f"{path}: damaged metrics file ({type(exc).__name__}: {exc}); "
                              f"remove {path.parent} to start afresh") from None
    atomic_write_bytes(path, (",".join(METRICS_COLUMNS) + "\n" + body).encode())


def append_metrics(path: Path, row: dict) -> None:
    """Append an evaluated epoch's row (METRICS_COLUMNS) to the CSV at `path`, flushed to disk."""
    new = not path.exists()
    line = ",".join(repr(float(row[c])) if c not in ("epoch", "step") else str(row[c])
                    for c in METRICS_COLUMNS) + "\n"
    with output_errors(path), open(path, "a", newline="") as fh:
        if new:
            fh.write(",".join(METRICS_COLUMNS) + "\n")
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())
