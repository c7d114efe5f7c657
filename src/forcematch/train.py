"""Force matching: train an energy model on reference forces and/or energies, resumably.

Arrays in, files out: `train()` gets frames as arrays (`TrainData`, nm, kJ/mol, kJ/mol/nm) and
writes only inside the `out_dir` it is given:

    out_dir/checkpoint/          config.json + state.msgpack (params, optimiser, step) and
                                 metrics.csv (one row per epoch, flushed): resumable
    out_dir/metrics.csv          the per-epoch rows, copied when training completes
    out_dir/model/               the final model: config.json + state.msgpack (params)
    out_dir/final_metrics.json   metrics of the final model on all validation frames

No pickle anywhere: arrays go through `flax.serialization` (msgpack), metadata through JSON,
every file written to a temporary name and renamed. The whole training step (energies, forces
as -∇E, the loss, its parameter gradient through the forces, the optax update) is one jitted
function compiled once, with static shapes (the last incomplete batch of an epoch is dropped).

Training configuration (`train_config`; missing keys take these defaults, unknown keys raise).
The defaults reach a test force RMSE of about 0.2 % of the force std on 100-atom LJ argon
(6,000 frames, pair model) in 1-2 minutes on 2 CPU cores:

    model                       "pair"    model family (see `forcematch.models.MODELS`)
    epochs                      8         passes over the training frames
    batch_size                  8         frames per optimiser step (8 is also the fastest
                                          per frame on CPU: intermediates stay in cache)
    energy_weight               0.01      weight of the energy-per-atom term (0: force only)
    force_weight                1.0       weight of mean((ΔF / std(F))²) (0: energy only)
    energy_loss                 "centred" "centred": mean over the batch of
                                          ((ΔE/N − batch mean of ΔE/N) / std(E/N))², i.e.
                                          energy differences between frames; the constant
                                          per-atom energy is refitted by least squares on the
                                          training energies at the end (as after force-only
                                          training). "absolute": no centring; ~10x worse
                                          forces in trials (Adam's ~lr-sized steps on the
                                          energy constant swamp a loss scaled by std(E/N)).
    seed                        0         parameter init, n_train subset, batch order, val subset
    learning_rate               1e-2      peak learning rate (Adam)
    final_learning_rate_factor  0.01      the schedule ends at learning_rate × this factor
    schedule                    "cosine"  decay over all steps: "cosine" or "exponential"
    warmup_steps                0         linear warm-up from 0 to the peak (steps)
    grad_clip_norm              10.0      optax.clip_by_global_norm threshold (None: off)
    checkpoint_every_steps      200       also checkpointed at the end of every epoch
    val_frames                  256       fixed seeded subset of validation frames evaluated
                                          every epoch (None: all); the final metrics use all
    n_train                     None      None: all training frames; n: a seeded random subset
    devices                     None      data-parallel over this many local JAX devices
                                          (None: all): each batch is split across them
                                          (batch_size a multiple of it), parameters and
                                          optimiser state replicated
    stream_from_hdf5            False     read by `forcematch train`: pass `train()` H5MD
                                          frame sources (`batches.H5MDSource`) instead of
                                          TrainData; `train()` streams whatever it is given

Data: `train` and `val` are TrainData (in memory) or frame sources (`forcematch.batches`:
mini-batches read from HDF5 by a background thread, memory flat in the number of frames). Both
paths train the same parameters bit for bit: the same batches (a pure function of seed and
epoch), the same float32 values, the same statistics (computed in chunks by `batches.scan`).
When streaming, per-epoch validation holds its `val_frames` frames in memory and the final
metrics over all validation frames are running sums (equal to the in-memory ones to ~1e-12).

Devices: one `jax.sharding.Mesh` over the devices with one axis "batch"; every batch is placed
split along it, parameters and optimiser state replicated, and the one jitted step does the
rest (gradients summed across devices by XLA). With one device nothing is split. Several
devices reach the same losses as one to float32 round-off (sums in another order), not bitwise.

Resuming: a later `train()` with the same data, model and configuration (all keys except
`checkpoint_every_steps`, `devices`, `stream_from_hdf5`) continues from `out_dir/checkpoint/`
at the saved step with the same batch order (batches are a pure function of seed and epoch), so
an interrupted run ends with the same parameters as an uninterrupted one; any other checkpoint
makes `train()` refuse. A run may resume in the other data mode (streamed or in memory: same
fingerprints and statistics) or on another device count (the same run, but then not bitwise
the uninterrupted one).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from forcematch import __version__, batches, losses, space
from forcematch.config import schema
from forcematch.errors import ForcematchError
from forcematch.models import (
    EnergyModel,
    Normalisation,
    build_model,
    energy_fn,
    forces_fn,
    predict_fn,
)
from forcematch.provenance import atomic_write_bytes, write_json
from forcematch.units import KJ_MOL_NM_TO_MEV_A, KJ_MOL_TO_MEV

# The defaults are the config schema's (one place): the `train` section's defaults.
TRAIN_DEFAULTS: dict = {
    key: spec["default"] for key, spec in schema()["properties"]["train"]["properties"].items()
}
# Keys that do not change the trained parameters: a checkpoint may be resumed across them.
_RESUME_IGNORED = ("checkpoint_every_steps", "devices", "stream_from_hdf5")
_SCHEDULES = ("cosine", "exponential")
_ENERGY_LOSSES = ("centred", "absolute")
_EVAL_CHUNK = 64  # frames per jitted prediction call in evaluation
_PREFETCH_BATCHES = 3  # batches read ahead by the background thread

METRICS_COLUMNS = (
    "epoch",
    "step",
    "learning_rate",
    "train_loss",
    "train_energy_loss",
    "train_force_loss",
    "val_force_rmse_kJ_mol_nm",
    "val_force_rmse_rel",
    "val_energy_mae_per_atom_kJ_mol",
    "val_force_std_ratio",
    "val_force_corr",
    "wall_s",
)
CHECKPOINT_FORMAT = "forcematch-checkpoint"


# --------------------------------------------------------------------------------------------
# Data


@dataclass
class TrainData:
    """Frames of one system (same atoms in every frame). float64 numpy after construction.

    positions_nm [T,N,3], box_nm [T,3] (or [3], broadcast), forces_kJ_mol_nm [T,N,3],
    energy_kJ_mol [T] (total potential energy per frame), species [N] int.
    """

    positions_nm: np.ndarray
    box_nm: np.ndarray
    forces_kJ_mol_nm: np.ndarray
    energy_kJ_mol: np.ndarray
    species: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self):
        self.positions_nm = np.asarray(self.positions_nm, dtype=np.float64)
        if self.positions_nm.ndim != 3 or self.positions_nm.shape[2] != 3:
            raise ForcematchError(f"positions must be [T, N, 3], got {self.positions_nm.shape}")
        t, n, _ = self.positions_nm.shape
        box = np.asarray(self.box_nm, dtype=np.float64)
        if box.shape not in ((3,), (t, 3)):
            raise ForcematchError(f"box must be [3] or [T, 3] = [{t}, 3], got {box.shape}")
        self.box_nm = np.array(np.broadcast_to(box, (t, 3)))
        self.forces_kJ_mol_nm = np.asarray(self.forces_kJ_mol_nm, dtype=np.float64)
        if self.forces_kJ_mol_nm.shape != (t, n, 3):
            raise ForcematchError(
                f"forces must be [T, N, 3] = [{t}, {n}, 3], got {self.forces_kJ_mol_nm.shape}"
            )
        self.energy_kJ_mol = np.asarray(self.energy_kJ_mol, dtype=np.float64)
        if self.energy_kJ_mol.shape != (t,):
            raise ForcematchError(f"energy must be [T] = [{t}], got {self.energy_kJ_mol.shape}")
        species = np.zeros(n, np.int32) if self.species is None else self.species
        self.species = np.asarray(species, dtype=np.int32)
        if self.species.shape != (n,):
            raise ForcematchError(f"species must be [N] = [{n}], got {self.species.shape}")

    @property
    def n_frames(self) -> int:
        return self.positions_nm.shape[0]

    @property
    def n_atoms(self) -> int:
        return self.positions_nm.shape[1]

    def subset(self, frames) -> TrainData:
        """The frames `frames` (indices or slice) as a new TrainData (copies, never views)."""
        return TrainData(
            np.array(self.positions_nm[frames]),
            np.array(self.box_nm[frames]),
            np.array(self.forces_kJ_mol_nm[frames]),
            np.array(self.energy_kJ_mol[frames]),
            np.array(self.species),
        )

    def check_finite(self, name: str) -> None:
        """Raise ForcematchError naming the first frame with a NaN/inf value or a bad box."""
        for label, arr in (
            ("positions", self.positions_nm),
            ("box", self.box_nm),
            ("forces", self.forces_kJ_mol_nm),
            ("energy", self.energy_kJ_mol),
        ):
            bad = ~np.isfinite(arr.reshape(arr.shape[0], -1)).all(axis=1)
            if bad.any():
                raise ForcematchError(
                    f"{name} data: non-finite {label} in frame {int(np.argmax(bad))}"
                )
        bad = (self.box_nm <= 0).any(axis=1)
        if bad.any():
            raise ForcematchError(f"{name} data: non-positive box in frame {int(np.argmax(bad))}")

    def fingerprint(self) -> str:
        """sha256 of all arrays (identifies the data a checkpoint was trained on)."""
        h = hashlib.sha256()
        for arr in (
            self.positions_nm,
            self.box_nm,
            self.forces_kJ_mol_nm,
            self.energy_kJ_mol,
            self.species,
        ):
            h.update(str(arr.shape).encode())
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()


def dataset_stats(data: TrainData) -> dict:
    """Normalisation statistics of a dataset (float64).

    Returns energy_per_atom_mean_kJ_mol, energy_per_atom_std_kJ_mol (of E/N over frames),
    force_std_kJ_mol_nm (std of all force components about their mean, which is ≈ 0),
    force_rms_kJ_mol_nm (root mean square of all components), n_frames, n_atoms.
    """
    e_per_atom = data.energy_kJ_mol / data.n_atoms
    f = data.forces_kJ_mol_nm
    return {
        "energy_per_atom_mean_kJ_mol": float(np.mean(e_per_atom)),
        "energy_per_atom_std_kJ_mol": float(np.std(e_per_atom)),
        "force_std_kJ_mol_nm": float(np.std(f)),
        "force_rms_kJ_mol_nm": float(np.sqrt(np.mean(f * f))),
        "n_frames": int(data.n_frames),
        "n_atoms": int(data.n_atoms),
    }


def force_energy_metrics(pred_E, pred_F, E, F, n_atoms: int) -> dict:
    """Accuracy of predictions: energies [T] (kJ/mol), forces [T,N,3] (kJ/mol/nm).

    force_rmse_rel divides by the std of the reference force components of the same frames;
    force_std_ratio = std(pred F) / std(ref F); force_corr is Pearson's r over components.
    """
    pred_E, E = np.asarray(pred_E, np.float64), np.asarray(E, np.float64)
    pred_F, F = np.asarray(pred_F, np.float64), np.asarray(F, np.float64)
    rmse = float(np.sqrt(np.mean((pred_F - F) ** 2)))
    f_std = float(np.std(F))
    pf, rf = pred_F.ravel() - pred_F.mean(), F.ravel() - F.mean()
    denom = math.sqrt(float(np.dot(pf, pf)) * float(np.dot(rf, rf)))
    mae = float(np.mean(np.abs(pred_E - E))) / n_atoms
    return {
        "force_rmse_kJ_mol_nm": rmse,
        "force_rmse_rel": rmse / f_std if f_std > 0 else math.nan,
        "energy_mae_per_atom_kJ_mol": mae,
        "force_std_ratio": float(np.std(pred_F)) / f_std if f_std > 0 else math.nan,
        "force_corr": float(np.dot(pf, rf)) / denom if denom > 0 else math.nan,
        "force_rmse_meV_A": rmse * KJ_MOL_NM_TO_MEV_A,
        "energy_mae_per_atom_meV": mae * KJ_MOL_TO_MEV,
    }


# --------------------------------------------------------------------------------------------
# Configuration


def resolve_train_config(train_config: dict | None) -> dict:
    """`train_config` over TRAIN_DEFAULTS, checked; raises ForcematchError on a bad value."""
    given = dict(train_config or {})
    unknown = sorted(set(given) - set(TRAIN_DEFAULTS))
    if unknown:
        raise ForcematchError(
            f"unknown train option(s) {unknown}; known: {', '.join(sorted(TRAIN_DEFAULTS))}"
        )
    cfg = {**TRAIN_DEFAULTS, **given}

    def need(ok: bool, key: str, what: str):
        if not ok:
            raise ForcematchError(f"train option {key} must be {what}, got {cfg[key]!r}")

    def is_int(x):
        return isinstance(x, int | np.integer) and not isinstance(x, bool)

    def is_num(x):
        return isinstance(x, int | float | np.number) and not isinstance(x, bool)

    for key in ("epochs", "batch_size", "checkpoint_every_steps"):
        need(is_int(cfg[key]) and cfg[key] >= 1, key, "an integer >= 1")
        cfg[key] = int(cfg[key])
    need(is_int(cfg["seed"]) and cfg["seed"] >= 0, "seed", "an integer >= 0")
    need(is_int(cfg["warmup_steps"]) and cfg["warmup_steps"] >= 0, "warmup_steps", "an int >= 0")
    for key in ("val_frames", "n_train"):
        need(cfg[key] is None or (is_int(cfg[key]) and cfg[key] >= 1), key, "None or an int >= 1")
    for key in ("energy_weight", "force_weight"):
        need(is_num(cfg[key]) and math.isfinite(cfg[key]) and cfg[key] >= 0, key, "a number >= 0")
        cfg[key] = float(cfg[key])
    if cfg["energy_weight"] == 0 and cfg["force_weight"] == 0:
        raise ForcematchError("train options energy_weight and force_weight are both 0")
    need(is_num(cfg["learning_rate"]) and cfg["learning_rate"] > 0, "learning_rate", "> 0")
    need(
        is_num(cfg["final_learning_rate_factor"]) and 0 < cfg["final_learning_rate_factor"] <= 1,
        "final_learning_rate_factor",
        "in (0, 1]",
    )
    clip = cfg["grad_clip_norm"]
    need(clip is None or (is_num(clip) and clip > 0), "grad_clip_norm", "None or > 0")
    need(cfg["schedule"] in _SCHEDULES, "schedule", f"one of {_SCHEDULES}")
    need(cfg["energy_loss"] in _ENERGY_LOSSES, "energy_loss", f"one of {_ENERGY_LOSSES}")
    for key in ("learning_rate", "final_learning_rate_factor"):
        cfg[key] = float(cfg[key])
    if cfg["grad_clip_norm"] is not None:
        cfg["grad_clip_norm"] = float(cfg["grad_clip_norm"])
    need(isinstance(cfg["model"], str), "model", "a model name")
    need(cfg["devices"] is None or (is_int(cfg["devices"]) and cfg["devices"] >= 1), "devices",
         "None or an integer >= 1")
    need(isinstance(cfg["stream_from_hdf5"], bool), "stream_from_hdf5", "true or false")
    return cfg


def make_schedule(cfg: dict, total_steps: int) -> optax.Schedule:
    """Learning rate per step: optional linear warm-up, then cosine/exponential decay from
    `learning_rate` to `learning_rate × final_learning_rate_factor` at the last step."""
    peak, factor = cfg["learning_rate"], cfg["final_learning_rate_factor"]
    warmup = min(cfg["warmup_steps"], max(total_steps - 1, 0))
    decay_steps = max(total_steps - warmup, 1)
    if cfg["schedule"] == "cosine":
        decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=factor)
    else:
        decay = optax.exponential_decay(peak, decay_steps, decay_rate=factor)
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def make_optimizer(cfg: dict, total_steps: int) -> optax.GradientTransformation:
    """Adam with the schedule of `make_schedule`, after global-norm gradient clipping."""
    adam = optax.adam(make_schedule(cfg, total_steps))
    if cfg["grad_clip_norm"] is None:
        return adam
    return optax.chain(optax.clip_by_global_norm(cfg["grad_clip_norm"]), adam)


def _json_roundtrip(obj):
    return json.loads(json.dumps(obj))


def _frames_rng(seed: int, *tags: int) -> np.random.Generator:
    return np.random.default_rng([seed, *tags])


def _epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """Batch order of epoch `epoch` (0-based): a pure function of (seed, epoch)."""
    return _frames_rng(seed, 2, epoch).permutation(n)


# --------------------------------------------------------------------------------------------
# Files


def _to_numpy_tree(tree):
    return jax.tree.map(np.asarray, tree)


def _write_model_dir(path: Path, info: dict, params) -> None:
    """Write a complete model directory (config.json + state.msgpack) atomically."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write_json(tmp / "config.json", info)
    state = {"params": _to_numpy_tree(params)}
    atomic_write_bytes(tmp / "state.msgpack", flax.serialization.to_bytes(state))
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def _truncate_metrics(path: Path, completed_epochs: int) -> None:
    """Keep only rows of epochs <= completed_epochs (a resumed run rewrites the rest)."""
    if not path.exists():
        return
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    keep = [r for r in rows if int(r["epoch"]) <= completed_epochs]
    buf = ",".join(METRICS_COLUMNS) + "\n"
    buf += "".join(",".join(r[c] for c in METRICS_COLUMNS) + "\n" for r in keep)
    atomic_write_bytes(path, buf.encode())


def _append_metrics(path: Path, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as fh:
        if new:
            fh.write(",".join(METRICS_COLUMNS) + "\n")
        fh.write(",".join(repr(float(row[c])) if c not in ("epoch", "step") else str(row[c])
                          for c in METRICS_COLUMNS) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


# --------------------------------------------------------------------------------------------
# Prediction in fixed-size chunks


def _batched(fn, params, positions, box, species, chunk: int) -> tuple[np.ndarray, ...]:
    """Run a jitted batched `fn` (returning an array or a tuple of arrays with leading axis B)
    over [T] frames in chunks of `chunk` frames (the last chunk padded: one compiled shape)."""
    t = positions.shape[0]
    parts = []
    for start in range(0, t, chunk):
        pos, bx = positions[start : start + chunk], box[start : start + chunk]
        k = pos.shape[0]
        if k < chunk:
            pos = np.concatenate([pos, np.repeat(pos[-1:], chunk - k, axis=0)])
            bx = np.concatenate([bx, np.repeat(bx[-1:], chunk - k, axis=0)])
        res = fn(params, pos, bx, species)
        res = res if isinstance(res, tuple) else (res,)
        parts.append([np.asarray(r, np.float64)[:k] for r in res])
    return tuple(np.concatenate(p) for p in zip(*parts, strict=True))


def _predict_chunks(fn, params, source: batches.FrameSource, species, chunk: int):
    """(frames, outputs as float64 numpy) of a jitted batched `fn` over `source` in chunks of
    `chunk` frames, the last one padded as in `_batched` (one compiled shape)."""
    f32 = np.float32
    for _, frames in batches.chunked(source, chunk):
        pos, bx = frames.positions_nm.astype(f32), frames.box_nm.astype(f32)
        k = pos.shape[0]
        if k < chunk:
            pos = np.concatenate([pos, np.repeat(pos[-1:], chunk - k, axis=0)])
            bx = np.concatenate([bx, np.repeat(bx[-1:], chunk - k, axis=0)])
        res = fn(params, pos, bx, species)
        res = res if isinstance(res, tuple) else (res,)
        yield frames, [np.asarray(r, np.float64)[:k] for r in res]


class _MetricSums:
    """Running sums over chunks of frames for `force_energy_metrics` of streamed frames."""

    def __init__(self):
        self.s = dict.fromkeys(("frames", "values", "sq_err", "f", "f2", "p", "p2", "pf",
                                "abs_e_err"), 0.0)

    def add(self, pred_E, pred_F, E, F) -> None:
        """Energies [B] (kJ/mol), forces [B,N,3] (kJ/mol/nm), float64."""
        s = self.s
        s["frames"] += len(E)
        s["values"] += F.size
        s["sq_err"] += float(np.sum((pred_F - F) ** 2))
        s["f"] += float(np.sum(F))
        s["f2"] += float(np.sum(F * F))
        s["p"] += float(np.sum(pred_F))
        s["p2"] += float(np.sum(pred_F * pred_F))
        s["pf"] += float(np.sum(pred_F * F))
        s["abs_e_err"] += float(np.sum(np.abs(pred_E - E)))

    def metrics(self, n_atoms: int) -> dict:
        """As `force_energy_metrics` of all frames added (equal to ~1e-12 relative)."""
        s, m = self.s, self.s["values"]
        rmse = math.sqrt(s["sq_err"] / m)
        f_std = math.sqrt(max(s["f2"] / m - (s["f"] / m) ** 2, 0.0))
        p_std = math.sqrt(max(s["p2"] / m - (s["p"] / m) ** 2, 0.0))
        cov = s["pf"] / m - (s["p"] / m) * (s["f"] / m)
        mae = s["abs_e_err"] / s["frames"] / n_atoms
        return {
            "force_rmse_kJ_mol_nm": rmse,
            "force_rmse_rel": rmse / f_std if f_std > 0 else math.nan,
            "energy_mae_per_atom_kJ_mol": mae,
            "force_std_ratio": p_std / f_std if f_std > 0 else math.nan,
            "force_corr": cov / (p_std * f_std) if p_std * f_std > 0 else math.nan,
            "force_rmse_meV_A": rmse * KJ_MOL_NM_TO_MEV_A,
            "energy_mae_per_atom_meV": mae * KJ_MOL_TO_MEV,
        }


# --------------------------------------------------------------------------------------------
# Data sources and devices


def _as_source(data: TrainData | batches.FrameSource) -> batches.FrameSource:
    """A frame source over `data` (TrainData: its arrays, no copy)."""
    if isinstance(data, TrainData):
        return batches.ArraySource(data.positions_nm, data.box_nm, data.energy_kJ_mol,
                                   data.forces_kJ_mol_nm, data.species)
    return data


def _in_memory(source: batches.FrameSource) -> TrainData:
    """All frames of `source` as TrainData."""
    frames = source.read(np.arange(source.n_frames))
    return TrainData(frames.positions_nm, frames.box_nm, frames.forces_kJ_mol_nm,
                     frames.energy_kJ_mol, source.species)


class _DensestFrame:
    """Follows the frame with the most pairs within the cutoff over blocks of frames; its
    `capacity()` is `space.estimate_capacity` of all frames seen (a function of that max)."""

    def __init__(self, cutoff_nm: float):
        self.cutoff_nm, self.pairs, self.frame = cutoff_nm, -1, None

    def __call__(self, positions_nm: np.ndarray, box_nm: np.ndarray) -> None:
        """positions [B,N,3] (nm), box [B,3] (nm)."""
        if positions_nm.shape[0] == 0:
            return
        counts = space.count_pairs(positions_nm, box_nm, self.cutoff_nm)
        i = int(np.argmax(counts))
        if counts[i] > self.pairs:
            self.pairs = int(counts[i])
            self.frame = (np.array(positions_nm[i : i + 1]), np.array(box_nm[i : i + 1]))

    def capacity(self) -> int:
        return space.estimate_capacity(*self.frame, self.cutoff_nm)


def device_mesh(devices: int | None) -> Mesh:
    """A one-axis ("batch") mesh over the first `devices` local JAX devices (None: all)."""
    available = jax.local_devices()
    if devices is not None and devices > len(available):
        raise ForcematchError(
            f"train.devices = {devices} but only {len(available)} local JAX device(s) are "
            f"available ({', '.join(str(d) for d in available)})")
    return Mesh(np.array(available[:devices]), ("batch",))


def _batch_indices(seed: int, n_frames: int, batch_size: int, start_step: int,
                   total_steps: int):
    """Frame indices [batch_size] of every step from `start_step`: epoch permutations cut in
    batches of `batch_size` (the last incomplete batch of an epoch dropped)."""
    steps_per_epoch = n_frames // batch_size
    perm, perm_epoch = None, -1
    for step in range(start_step, total_steps):
        epoch, b = divmod(step, steps_per_epoch)
        if epoch != perm_epoch:
            perm, perm_epoch = _epoch_permutation(seed, epoch, n_frames), epoch
        yield perm[b * batch_size : (b + 1) * batch_size].astype(np.int32)


# --------------------------------------------------------------------------------------------
# Training


def train(
    train: TrainData | batches.FrameSource,
    val: TrainData | batches.FrameSource,
    train_config: dict | None,
    model_config: dict | None,
    cutoff_nm: float,
    out_dir,
    *,
    stats: dict | None = None,
    restart_stale: bool = False,
    provenance: dict | None = None,
    progress: Callable[[str], object] = print,
) -> dict:
    """Train (or resume training) a model; returns the final metrics (also in final_metrics.json).

    Args:
        train, val: training and validation frames (same atoms): TrainData (in memory) or frame
            sources (`forcematch.batches`, e.g. `H5MDSource`: read in chunks and batches).
        train_config: see the module docstring for keys and defaults.
        model_config: hyper-parameters of the model family `train_config["model"]`.
        cutoff_nm: model cutoff (nm).
        out_dir: directory for checkpoint/, model/, metrics.csv, final_metrics.json.
        stats: normalisation statistics (`dataset_stats` keys); default: of the training frames
            actually used (after the n_train subset).
        restart_stale: a checkpoint in out_dir from another run (different config or data) is
            moved to checkpoint.stale and training starts afresh, instead of raising.
        provenance: record of where the run came from (`forcematch.provenance.provenance`),
            stored in the checkpoint, the model and final_metrics.json; it does not take part
            in the resume check (the configuration and data fingerprints do).
        progress: called with one human-readable line per event (start, epoch, end).
    """
    cfg = resolve_train_config(train_config)
    mesh = device_mesh(cfg["devices"])
    n_devices = int(mesh.devices.size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(train, TrainData):
        train.check_finite("training")
    if isinstance(val, TrainData):
        val.check_finite("validation")
    if val.n_atoms != train.n_atoms or not np.array_equal(val.species, train.species):
        raise ForcematchError("validation frames hold different atoms from the training frames")
    if val.n_frames == 0:
        raise ForcematchError("validation data has no frames")
    streamed = not isinstance(train, TrainData)

    # Frames: seeded subsets of train (n_train) and val (val_frames).
    train_frames = np.arange(train.n_frames)  # indices into the given training data
    if cfg["n_train"] is not None:
        if cfg["n_train"] > train.n_frames:
            raise ForcematchError(
                f"n_train = {cfg['n_train']} but the training data has {train.n_frames} frames"
            )
        train_frames = np.sort(_frames_rng(cfg["seed"], 0).choice(
            train.n_frames, cfg["n_train"], replace=False))
        train = train.subset(train_frames)
    if cfg["val_frames"] is not None and cfg["val_frames"] < val.n_frames:
        val_epoch = val.subset(np.sort(_frames_rng(cfg["seed"], 1).choice(
            val.n_frames, cfg["val_frames"], replace=False)))
        val_epoch = val_epoch if isinstance(val_epoch, TrainData) else _in_memory(val_epoch)
    else:
        val_epoch = val
    n_train, n_atoms = train.n_frames, train.n_atoms
    batch_size = min(cfg["batch_size"], n_train)
    if batch_size % n_devices:
        capped = ("" if batch_size == cfg["batch_size"] else
                  f" (train.batch_size = {cfg['batch_size']} capped at the {n_train} frames)")
        raise ForcematchError(
            f"train.batch_size: a batch of {batch_size} frames{capped} cannot be split evenly "
            f"over {n_devices} devices for data-parallel training; use a multiple of "
            f"{n_devices} or set train.devices")
    if cfg["energy_loss"] == "centred" and cfg["energy_weight"] > 0 and batch_size < 2:
        raise ForcematchError("energy_loss 'centred' needs batches of at least 2 frames")
    steps_per_epoch = n_train // batch_size
    total_steps = steps_per_epoch * cfg["epochs"]

    # All-frame quantities: from the arrays, or from one chunked read of a frame source (the
    # same values bit for bit). The neighbour capacity covers the frames trained and
    # validated on every epoch.
    cutoff_nm = float(cutoff_nm)
    densest = _DensestFrame(cutoff_nm)
    if isinstance(train, TrainData):
        train_sha256 = train.fingerprint()
        stats = dict(stats) if stats is not None else dataset_stats(train)
        densest(train.positions_nm, train.box_nm)
    else:
        train_sha256, scanned = batches.scan(train, "training", stats=stats is None,
                                             on_positions=densest)
        stats = dict(stats) if stats is not None else scanned
    if isinstance(val, TrainData):
        val_sha256 = val.fingerprint()
    else:
        val_sha256, _ = batches.scan(val, "validation",
                                     on_positions=densest if val_epoch is val else None)
    if isinstance(val_epoch, TrainData):
        densest(val_epoch.positions_nm, val_epoch.box_nm)
    capacity = densest.capacity()

    for key in ("energy_per_atom_mean_kJ_mol", "energy_per_atom_std_kJ_mol",
                "force_std_kJ_mol_nm", "force_rms_kJ_mol_nm"):
        if key not in stats or not math.isfinite(float(stats[key])):
            raise ForcematchError(f"normalisation statistics lack a finite {key}")
    norm = Normalisation.from_stats(stats)
    e_scale = float(stats["energy_per_atom_std_kJ_mol"])
    e_scale = e_scale if e_scale > 0 else 1.0  # one frame, or constant energies
    f_scale = float(stats["force_std_kJ_mol_nm"])
    f_scale = f_scale if f_scale > 0 else 1.0

    model = build_model(cfg["model"], model_config, cutoff_nm, capacity)
    info = {
        "format": CHECKPOINT_FORMAT,
        "format_version": 1,
        "forcematch_version": __version__,
        "model": model.name,
        "model_config": model.config,
        "train_config": cfg,
        "cutoff_nm": cutoff_nm,
        "capacity": capacity,
        "n_atoms": n_atoms,
        "species": np.asarray(train.species).tolist(),
        "stats": stats,
        "norm": norm.to_dict(),
        "energy_scale_per_atom_kJ_mol": e_scale,
        "force_scale_kJ_mol_nm": f_scale,
        "batch_size": batch_size,
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total_steps,
        "data": {"train_sha256": train_sha256, "val_sha256": val_sha256},
        "provenance": provenance,
    }
    info = _json_roundtrip(info)

    # Optimiser, parameters, jitted step.
    train_source = _as_source(train)
    optimizer = make_optimizer(cfg, total_steps)
    schedule = make_schedule(cfg, total_steps)
    species = jnp.asarray(train.species)
    first = train_source.read([0])
    params = model.init(jax.random.PRNGKey(cfg["seed"]), jnp.asarray(first.positions_nm[0],
                        jnp.float32), jnp.asarray(first.box_nm[0], jnp.float32), species)
    opt_state = optimizer.init(params)
    state = {"params": params, "opt_state": opt_state, "step": 0, "wall_s": 0.0,
             "train_s": 0.0,  # seconds inside training steps (throughput)
             "epoch_sums": np.zeros(4)}  # sums of loss, energy loss, force loss; n steps

    ckpt = out / "checkpoint"
    # Rows accumulate beside the checkpoint (which Snakemake leaves alone when it cleans up an
    # incomplete job) and are copied to out/metrics.csv when training completes.
    metrics_path = ckpt / "metrics.csv"
    resumed = _resume(ckpt, info, state, restart_stale, progress)
    if resumed is not None:
        state = resumed
        progress(f"resuming from {ckpt} at step {state['step']}/{total_steps}")
    else:
        ckpt.mkdir(exist_ok=True)
        (ckpt / "state.msgpack").unlink(missing_ok=True)
        write_json(ckpt / "config.json", info)
        for stale in (metrics_path, out / "metrics.csv", out / "final_metrics.json"):
            stale.unlink(missing_ok=True)
        shutil.rmtree(out / "model", ignore_errors=True)
    step = int(state["step"])
    _truncate_metrics(metrics_path, step // steps_per_epoch)

    predict = predict_fn(model, norm)

    def loss_of(params, pos, box, energy, forces):
        pred_e, pred_f = predict(params, pos, box, species)
        return losses.loss(pred_e, pred_f, energy, forces, n_atoms, cfg["energy_weight"],
                           cfg["force_weight"], e_scale, f_scale,
                           center_energy=cfg["energy_loss"] == "centred")

    def train_step(params, opt_state, pos, box, energy, forces):
        (total, parts), grads = jax.value_and_grad(loss_of, has_aux=True)(
            params, pos, box, energy, forces)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, total, parts["energy"], \
            parts["force"]

    # Data parallel: batches split along the mesh's "batch" axis, the rest replicated.
    f32 = np.float32
    replicated, by_frame = NamedSharding(mesh, P()), NamedSharding(mesh, P("batch"))
    params = jax.device_put(state["params"], replicated)
    opt_state = jax.device_put(state["opt_state"], replicated)
    batch_shapes = [jax.ShapeDtypeStruct(shape, f32, sharding=by_frame) for shape in (
        (batch_size, n_atoms, 3), (batch_size, 3), (batch_size,), (batch_size, n_atoms, 3))]
    t0 = time.perf_counter()
    step_fn = jax.jit(train_step, in_shardings=(replicated, replicated) + (by_frame,) * 4,
                      out_shardings=replicated).lower(params, opt_state, *batch_shapes).compile()
    predict_jit = jax.jit(predict)
    energies_jit = jax.jit(jax.vmap(energy_fn(model, norm), in_axes=(None, 0, 0, None)))
    device_kind = mesh.devices.flat[0].platform
    data_line = (f"streamed from {train_source.name}" if streamed else "in memory")
    progress(
        f"training {model.name} model {json.dumps(model.config)} on {n_train} frames of "
        f"{n_atoms} atoms ({data_line}): batch {batch_size} over {n_devices} {device_kind} "
        f"device{'s' if n_devices > 1 else ''}, {steps_per_epoch} steps/epoch x "
        f"{cfg['epochs']} epochs, neighbour capacity {capacity}; compiled in "
        f"{time.perf_counter() - t0:.1f} s"
    )

    def load_batch(idx: np.ndarray):
        """Frames `idx` as float32 arrays placed split over the devices (background thread)."""
        frames = train_source.read(idx)
        arrays = (frames.positions_nm.astype(f32), frames.box_nm.astype(f32),
                  frames.energy_kJ_mol.astype(f32), frames.forces_kJ_mol_nm.astype(f32))
        return idx, jax.device_put(arrays, by_frame)

    def fitted_shift(params, data) -> float:
        """Least-squares energy per atom (kJ/mol): shift + mean((E − Ê)/N) over `data`."""
        source = _as_source(data)
        pe = np.concatenate([res[0] for _, res in _predict_chunks(
            energies_jit, params, source, species, min(_EVAL_CHUNK, source.n_frames))])
        return norm.energy_shift_per_atom + float(np.mean((source.energy_kJ_mol - pe)
                                                          / n_atoms))

    def evaluate(params, data, shift: float) -> dict:
        """Metrics of `data`: in memory as `force_energy_metrics`, streamed as running sums."""
        correction = n_atoms * (shift - norm.energy_shift_per_atom)
        if isinstance(data, TrainData):
            pe, pf = _batched(predict_jit, params, data.positions_nm.astype(f32),
                              data.box_nm.astype(f32), species, min(_EVAL_CHUNK, data.n_frames))
            return force_energy_metrics(pe + correction, pf, data.energy_kJ_mol,
                                        data.forces_kJ_mol_nm, n_atoms)
        sums = _MetricSums()
        for frames, (pe, pf) in _predict_chunks(predict_jit, params, data, species,
                                                min(_EVAL_CHUNK, data.n_frames)):
            sums.add(pe + correction, pf, frames.energy_kJ_mol, frames.forces_kJ_mol_nm)
        return sums.metrics(n_atoms)

    # Energies per epoch are reported with the per-atom constant refitted on a fixed subset
    # of training frames (the centred energy loss leaves it free until the final refit).
    n_fit = min(n_train, cfg["val_frames"] or n_train)
    train_fit = train.subset(np.sort(_frames_rng(cfg["seed"], 3).choice(n_train, n_fit,
                                                                         replace=False)))
    if not isinstance(train_fit, TrainData) and n_fit < n_train:
        train_fit = _in_memory(train_fit)

    sums = np.asarray(state["epoch_sums"], np.float64).copy()
    wall0 = float(state["wall_s"]) - time.perf_counter()
    train_s = float(state["train_s"])
    last_saved = step
    epoch_t0, epoch_frames = time.perf_counter(), 0
    prefetch = batches.Prefetcher(
        load_batch, _batch_indices(cfg["seed"], n_train, batch_size, step, total_steps),
        depth=_PREFETCH_BATCHES)
    try:
        for idx, batch in prefetch:
            epoch = step // steps_per_epoch
            t_step = time.perf_counter()
            new_params, new_opt, total, e_loss, f_loss = step_fn(params, opt_state, *batch)
            total, e_loss, f_loss = float(total), float(e_loss), float(f_loss)
            train_s += time.perf_counter() - t_step
            if not math.isfinite(total):
                _raise_divergence(model, train_source.read(idx), train_frames[idx], total,
                                  epoch, step, last_saved, ckpt)
            params, opt_state = new_params, new_opt
            sums += (total, e_loss, f_loss, 1.0)
            step += 1
            epoch_frames += batch_size

            if step % steps_per_epoch == 0:
                epoch_s = time.perf_counter() - epoch_t0
                m = evaluate(params, val_epoch, fitted_shift(params, train_fit))
                row = {
                    "epoch": epoch + 1,
                    "step": step,
                    "learning_rate": float(schedule(step)),
                    "train_loss": sums[0] / sums[3],
                    "train_energy_loss": sums[1] / sums[3],
                    "train_force_loss": sums[2] / sums[3],
                    "val_force_rmse_kJ_mol_nm": m["force_rmse_kJ_mol_nm"],
                    "val_force_rmse_rel": m["force_rmse_rel"],
                    "val_energy_mae_per_atom_kJ_mol": m["energy_mae_per_atom_kJ_mol"],
                    "val_force_std_ratio": m["force_std_ratio"],
                    "val_force_corr": m["force_corr"],
                    "wall_s": wall0 + time.perf_counter(),
                }
                _append_metrics(metrics_path, row)
                sums[:] = 0.0
                _save_checkpoint(ckpt, params, opt_state, step, row["wall_s"], train_s, sums)
                last_saved = step
                progress(
                    f"epoch {epoch + 1}/{cfg['epochs']} step {step} "
                    f"lr {row['learning_rate']:.2e} loss {row['train_loss']:.3e} "
                    f"(E {row['train_energy_loss']:.3e}, F {row['train_force_loss']:.3e}) "
                    f"val force RMSE {m['force_rmse_kJ_mol_nm']:.4g} kJ/mol/nm "
                    f"({100 * m['force_rmse_rel']:.2f} %), "
                    f"E MAE {m['energy_mae_per_atom_kJ_mol']:.2e} kJ/mol/atom, "
                    f"{epoch_frames / epoch_s:.0f} frames/s"
                )
                epoch_t0, epoch_frames = time.perf_counter(), 0
            elif step - last_saved >= cfg["checkpoint_every_steps"]:
                _save_checkpoint(ckpt, params, opt_state, step, wall0 + time.perf_counter(),
                                 train_s, sums)
                last_saved = step
    finally:
        prefetch.close()

    # The per-atom energy constant is undetermined by forces (and by the centred energy
    # loss): refit it by least squares on all training energies (the mean residual per atom).
    shift = fitted_shift(params, train)
    m = evaluate(params, val, shift)
    run = {"devices": n_devices, "streamed": streamed}
    return _finish(out, info, norm, params, train, val, m, shift,
                   wall0 + time.perf_counter(), train_s, progress, run)


def _resume(ckpt: Path, info: dict, target: dict, restart_stale: bool = False,
            progress: Callable[[str], object] = print) -> dict | None:
    """The saved state if `ckpt` holds a matching checkpoint; None if there is none.

    A checkpoint of another run raises, or with `restart_stale` is moved aside.
    """
    config_path = ckpt / "config.json"
    if not config_path.exists():
        return None
    try:
        old = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise ForcematchError(f"cannot read checkpoint {config_path}: {exc}") from exc
    diffs = _config_differences(old, info)
    if diffs and restart_stale:
        stale = ckpt.with_name(ckpt.name + ".stale")
        shutil.rmtree(stale, ignore_errors=True)
        ckpt.rename(stale)
        progress(f"{ckpt} belonged to another run (differs in {', '.join(diffs)}): moved to "
                 f"{stale}; starting afresh")
        return None
    if diffs:
        raise ForcematchError(
            f"{ckpt} belongs to another run (differs in {', '.join(diffs)}); "
            "use another output directory or remove it"
        )
    state_path = ckpt / "state.msgpack"
    if not state_path.exists():
        return None
    try:
        return flax.serialization.from_bytes(target, state_path.read_bytes())
    except Exception as exc:  # msgpack/structure errors have no common base class
        raise ForcematchError(f"cannot restore checkpoint {state_path}: {exc}") from exc


def _config_differences(old: dict, new: dict) -> list[str]:
    keys = ("format", "model", "model_config", "cutoff_nm", "capacity", "n_atoms", "species",
            "stats", "norm", "batch_size", "data")
    diffs = [k for k in keys if old.get(k) != new.get(k)]
    old_tc, new_tc = dict(old.get("train_config", {})), dict(new["train_config"])
    for key in sorted(set(old_tc) | set(new_tc)):
        if key not in _RESUME_IGNORED and old_tc.get(key) != new_tc.get(key):
            diffs.append(f"train_config.{key} ({old_tc.get(key)!r} -> {new_tc.get(key)!r})")
    return diffs


def _save_checkpoint(ckpt: Path, params, opt_state, step: int, wall_s: float, train_s: float,
                     sums) -> None:
    state = {
        "params": _to_numpy_tree(params),
        "opt_state": _to_numpy_tree(opt_state),
        "step": int(step),
        "wall_s": float(wall_s),
        "train_s": float(train_s),
        "epoch_sums": np.asarray(sums, np.float64),
    }
    atomic_write_bytes(ckpt / "state.msgpack", flax.serialization.to_bytes(state))


def _raise_divergence(model, batch: batches.Frames, frame_ids, value, epoch, step, last_saved,
                      ckpt):
    """ForcematchError for a non-finite loss on `batch` (frames `frame_ids` of the training
    data): a neighbour-list overflow names its frame, anything else is divergence."""
    over = jax.vmap(model.overflow)(jnp.asarray(batch.positions_nm, jnp.float32),
                                    jnp.asarray(batch.box_nm, jnp.float32))
    over = np.asarray(over)
    if over.any():
        frame = int(frame_ids[int(np.argmax(over))])
        raise ForcematchError(
            f"neighbour list overflow (capacity {model.capacity}) in training frame {frame} "
            f"at epoch {epoch + 1}, step {step + 1}"
        )
    kept = f"last good checkpoint: step {last_saved} in {ckpt}" if last_saved else "no checkpoint"
    raise ForcematchError(
        f"training diverged: loss is {value} at epoch {epoch + 1}, step {step + 1} "
        f"(try a lower learning_rate or grad_clip_norm); {kept}"
    )


def _finish(out, info, norm, params, train, val, m, shift, wall_s, train_s, progress,
            run: dict) -> dict:
    """Write model/ (with the refitted shift) and final_metrics.json; return the metrics.
    `run`: how it ran (devices, streamed), recorded in final_metrics.json."""
    final_norm = Normalisation(norm.energy_scale, shift)
    final = {
        "model": info["model"],
        "epochs": info["train_config"]["epochs"],
        "steps": info["total_steps"],
        "n_train_frames": train.n_frames,
        "n_val_frames": val.n_frames,
        **{f"val_{k}": v for k, v in m.items()},
        "energy_shift_per_atom_trained_kJ_mol": norm.energy_shift_per_atom,
        "energy_shift_per_atom_refit_kJ_mol": shift,
        "wall_s": wall_s,  # whole run incl. compilation and evaluation (summed over resumes)
        "train_s": train_s,  # inside training steps only
        "frames_per_s": info["total_steps"] * info["batch_size"] / train_s
        if train_s > 0 else math.nan,
        **run,
        "provenance": info["provenance"],
    }
    model_info = dict(info, norm=final_norm.to_dict(), final_metrics=final)
    _write_model_dir(out / "model", model_info, params)
    atomic_write_bytes(out / "metrics.csv", (out / "checkpoint" / "metrics.csv").read_bytes())
    write_json(out / "final_metrics.json", final)
    progress(
        f"done: val force RMSE {m['force_rmse_kJ_mol_nm']:.4g} kJ/mol/nm "
        f"({100 * m['force_rmse_rel']:.2f} % of std, {m['force_rmse_meV_A']:.3g} meV/Å), "
        f"E MAE {m['energy_mae_per_atom_meV']:.3g} meV/atom on {val.n_frames} frames; "
        f"model in {out / 'model'}"
    )
    return final


# --------------------------------------------------------------------------------------------
# Loading


class LoadedModel:
    """A trained model read from a model/ or checkpoint/ directory.

    energy(positions [N,3], box [3]) -> kJ/mol and forces(...) -> [N,3] kJ/mol/nm are jitted
    (usable inside other jitted code; NaN if the neighbour list overflows). predict(positions
    [B,N,3], box [B,3] or [3]) -> (E [B], F [B,N,3]) numpy float64, raising ForcematchError
    naming the frame on overflow. energy_fn_float64 evaluates in float64 (x64 must be on).
    """

    def __init__(self, path: Path, info: dict, params):
        self.path = Path(path)
        self.info = info
        self.model_name: str = info["model"]
        self.model_config: dict = info["model_config"]
        self.train_config: dict = info["train_config"]
        self.cutoff_nm: float = info["cutoff_nm"]
        self.capacity: int = info["capacity"]
        self.n_atoms: int = info["n_atoms"]
        self.species = np.asarray(info["species"], np.int32)
        self.stats: dict = info["stats"]
        self.norm = Normalisation.from_dict(info["norm"])
        self.model: EnergyModel = build_model(
            self.model_name, self.model_config, self.cutoff_nm, self.capacity)
        self.params = jax.tree.map(jnp.asarray, params)
        self._energy = jax.jit(energy_fn(self.model, self.norm))
        self._forces = jax.jit(forces_fn(self.model, self.norm))
        self._predict = jax.jit(predict_fn(self.model, self.norm))
        self._overflow = jax.jit(jax.vmap(self.model.overflow))
        self._params64 = None

    def describe(self) -> dict:
        """JSON-serialisable description: model, hyper-parameters, normalisation, provenance."""
        return {
            "model": self.model_name,
            "model_config": self.model_config,
            "train_config": self.train_config,
            "cutoff_nm": self.cutoff_nm,
            "neighbour_capacity": self.capacity,
            "n_atoms": self.n_atoms,
            "norm": self.norm.to_dict(),
            "forcematch_version": self.info.get("forcematch_version"),
            "provenance": self.info.get("provenance"),
        }

    def _species(self, species):
        return jnp.asarray(self.species if species is None else species, jnp.int32)

    def energy(self, positions_nm, box_nm, species=None):
        """Total energy (kJ/mol, float32 scalar) of one frame."""
        return self._energy(self.params, jnp.asarray(positions_nm, jnp.float32),
                            jnp.asarray(box_nm, jnp.float32), self._species(species))

    def forces(self, positions_nm, box_nm, species=None):
        """Forces [N,3] (kJ/mol/nm) of one frame: -∇E."""
        return self._forces(self.params, jnp.asarray(positions_nm, jnp.float32),
                            jnp.asarray(box_nm, jnp.float32), self._species(species))

    def predict(self, positions_nm, box_nm, species=None, batch_size: int = _EVAL_CHUNK):
        """Energies [B] (kJ/mol) and forces [B,N,3] (kJ/mol/nm) of many frames, numpy."""
        pos = np.asarray(positions_nm, np.float32)
        if pos.ndim != 3 or pos.shape[1:] != (self.n_atoms, 3):
            raise ForcematchError(f"positions must be [B, {self.n_atoms}, 3], got {pos.shape}")
        box = np.array(np.broadcast_to(np.asarray(box_nm, np.float32), (pos.shape[0], 3)))
        if pos.shape[0] == 0:
            return np.zeros(0), np.zeros((0, self.n_atoms, 3))
        e, f = _batched(self._predict, self.params, pos, box, self._species(species),
                        min(batch_size, pos.shape[0]))
        bad = ~np.isfinite(e)
        if bad.any():
            over = np.asarray(self._overflow(pos[bad], box[bad]))
            if over.any():
                frame = int(np.flatnonzero(bad)[int(np.argmax(over))])
                raise ForcematchError(
                    f"neighbour list overflow (capacity {self.capacity}) in frame {frame}: "
                    "the frame is denser than any the model was trained on"
                )
        return e, f

    def energy_fn_float64(self, positions_nm, box_nm, species=None):
        """Total energy (kJ/mol) in float64, for finite differences; needs jax_enable_x64."""
        if jax.dtypes.canonicalize_dtype(jnp.float64) != jnp.float64:
            raise ForcematchError(
                "energy_fn_float64 needs 64-bit JAX: jax.config.update('jax_enable_x64', True) "
                "or `with jax.enable_x64(True):`"
            )
        if self._params64 is None:  # numpy casts: safe even when called under jit/vmap tracing
            self._params64 = jax.tree.map(lambda p: np.asarray(p, np.float64), self.params)
        return self._energy(self._params64, jnp.asarray(positions_nm, jnp.float64),
                            jnp.asarray(box_nm, jnp.float64), self._species(species))


def load_checkpoint(path) -> LoadedModel:
    """Load a model/ or checkpoint/ directory written by `train()` (no pickle: JSON+msgpack)."""
    path = Path(path)
    config_path, state_path = path / "config.json", path / "state.msgpack"
    if not config_path.exists() or not state_path.exists():
        raise ForcematchError(f"{path} is not a forcematch model (config.json, state.msgpack)")
    try:
        info = json.loads(config_path.read_text())
        state = flax.serialization.msgpack_restore(state_path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ForcematchError(f"cannot read model {path}: {exc}") from exc
    if info.get("format") != CHECKPOINT_FORMAT or "params" not in state:
        raise ForcematchError(f"{path} is not a forcematch model directory")
    return LoadedModel(path, info, state["params"])
