"""Files of a training run: the resumable checkpoint, the per-epoch metrics, the final model.

    out_dir/checkpoint/   config.json (the run's description) + state.msgpack (params,
                          optimiser state, step, timers) + metrics.csv (one row per epoch,
                          flushed): what a killed run resumes from
    out_dir/model/        config.json + state.msgpack (params): read by `potential.load_model`

No pickle: arrays through `flax.serialization` (msgpack), metadata through JSON; every file
written to a temporary name and renamed.
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

from forcematch.atomic import atomic_directory, atomic_write_bytes, write_json
from forcematch.errors import ForcematchError

# Training settings that do not change the trained parameters: a checkpoint may be resumed
# across them.
RESUME_IGNORED = ("checkpoint_every_steps",)
# What must match for a checkpoint to be resumed, besides the training settings.
_RESUME_KEYS = ("format", "model", "model_config", "cutoff_nm", "capacity", "n_atoms",
                "species", "stats", "norm", "batch_size", "data")

METRICS_COLUMNS = (
    "epoch", "step", "learning_rate", "train_loss", "train_energy_loss", "train_force_loss",
    "val_force_rmse_kJ_mol_nm", "val_force_rmse_rel", "val_energy_mae_per_atom_kJ_mol",
    "val_force_std_ratio", "val_force_corr", "wall_s",
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
    (float seconds), epoch_sums [4] (float64)."""
    state = dict(state, params=_to_numpy(state["params"]),
                 opt_state=_to_numpy(state["opt_state"]))
    atomic_write_bytes(ckpt / "state.msgpack", flax.serialization.to_bytes(state))


def config_differences(old: dict, new: dict) -> list[str]:
    """What differs between two runs' config.json, as readable items (empty: same run)."""
    diffs = [k for k in _RESUME_KEYS if old.get(k) != new.get(k)]
    old_tc, new_tc = dict(old.get("train_config", {})), dict(new["train_config"])
    for key in sorted(set(old_tc) | set(new_tc)):
        if key not in RESUME_IGNORED and old_tc.get(key) != new_tc.get(key):
            diffs.append(f"train_config.{key} ({old_tc.get(key)!r} -> {new_tc.get(key)!r})")
    return diffs


def restore(ckpt: Path, info: dict, target: dict, restart_stale: bool,
            progress: Callable[[str], object]) -> dict | None:
    """The saved state if `ckpt` holds a checkpoint of the run `info`; None if none.

    A checkpoint of another run raises, or with `restart_stale` is moved aside.
    """
    config_path = ckpt / "config.json"
    if not config_path.exists():
        return None
    try:
        old = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise ForcematchError(f"cannot read checkpoint {config_path}: {exc}") from exc
    diffs = config_differences(old, info)
    if diffs and restart_stale:
        stale = ckpt.with_name(ckpt.name + ".stale")
        shutil.rmtree(stale, ignore_errors=True)
        ckpt.rename(stale)
        progress(f"{ckpt} belonged to another run (differs in {', '.join(diffs)}): moved to "
                 f"{stale}; starting afresh")
        return None
    if diffs:
        raise ForcematchError(f"{ckpt} belongs to another run (differs in {', '.join(diffs)}); "
                              "use another output directory or remove it")
    state_path = ckpt / "state.msgpack"
    if not state_path.exists():
        return None
    try:
        return flax.serialization.from_bytes(target, state_path.read_bytes())
    except Exception as exc:  # msgpack/structure errors have no common base class
        raise ForcematchError(f"cannot restore checkpoint {state_path}: {exc}") from exc


def start_afresh(out: Path, info: dict) -> None:
    """An empty checkpoint of the run `info`; stale outputs of an earlier run removed."""
    ckpt = out / "checkpoint"
    ckpt.mkdir(exist_ok=True)
    (ckpt / "state.msgpack").unlink(missing_ok=True)
    write_json(ckpt / "config.json", info)
    for stale in (ckpt / "metrics.csv", out / "metrics.csv", out / "final_metrics.json"):
        stale.unlink(missing_ok=True)
    shutil.rmtree(out / "model", ignore_errors=True)


def truncate_metrics(path: Path, completed_epochs: int) -> None:
    """Keep only rows of epochs <= completed_epochs (a resumed run rewrites the rest)."""
    if not path.exists():
        return
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    keep = [r for r in rows if int(r["epoch"]) <= completed_epochs]
    buf = ",".join(METRICS_COLUMNS) + "\n"
    buf += "".join(",".join(r[c] for c in METRICS_COLUMNS) + "\n" for r in keep)
    atomic_write_bytes(path, buf.encode())


def append_metrics(path: Path, row: dict) -> None:
    """Append one epoch's row (METRICS_COLUMNS) to the CSV at `path`, flushed to disk."""
    new = not path.exists()
    with open(path, "a", newline="") as fh:
        if new:
            fh.write(",".join(METRICS_COLUMNS) + "\n")
        fh.write(",".join(repr(float(row[c])) if c not in ("epoch", "step") else str(row[c])
                          for c in METRICS_COLUMNS) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
