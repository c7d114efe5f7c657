"""Reading a model or checkpoint directory without trusting it: what `potential.load_model` and
the trainer's resume check use.

A directory holds `config.json` (what the model is) and `state.msgpack` (its parameters). Either
may be missing, damaged, or not a file at all (a FIFO or a device would make a plain read hang
or never end), so every read here opens without blocking, refuses anything but a regular file,
checks the size before reading, and turns every defect into a ForcematchError naming the file:

    read_regular_file(path, max_bytes)     bytes of a regular file of bounded size
    read_json_object(path)                 a JSON object ({...}) from such a file
    check_model_info(info, path)           config.json's keys and their types
    restore_msgpack(data, path)            msgpack bytes -> nested dicts of arrays
    check_params(params, expected, path)   parameters of the model's shapes, finite
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any

import numpy as np

from forcematch.errors import ForcematchError

MAX_JSON_BYTES = 64 * 2**20  # a config.json holds settings and statistics: kilobytes
STATE_OVERHEAD_BYTES = 2**20  # msgpack framing and scalars beyond the arrays' own bytes

_KINDS = {stat.S_ISDIR: "a directory", stat.S_ISFIFO: "a FIFO (named pipe)",
          stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device",
          stat.S_ISSOCK: "a socket"}


def read_regular_file(path: str | os.PathLike, max_bytes: int) -> bytes:
    """The bytes of the regular file `path`, at most `max_bytes` of them.

    Opened with O_NONBLOCK (a FIFO cannot block the open) and checked with fstat on the open
    descriptor (no race with a swapped file): anything but a regular file, or a file larger
    than `max_bytes`, is refused before a byte is read.
    """
    path = Path(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise ForcematchError(f"{path} not found") from None
    except OSError as exc:
        raise ForcematchError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = next((k for test, k in _KINDS.items() if test(info.st_mode)),
                        "a special file")
            raise ForcematchError(f"{path} is {kind}, not a regular file")
        if info.st_size > max_bytes:
            raise ForcematchError(f"{path} holds {info.st_size} bytes, more than the "
                                  f"{max_bytes} it can hold (not this file, or damaged)")
        with os.fdopen(os.dup(fd), "rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise ForcematchError(f"cannot read {path}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
    if len(data) > max_bytes:  # grew while being read
        raise ForcematchError(f"{path} holds more than the {max_bytes} bytes it can hold")
    return data


def read_json_object(path: str | os.PathLike, max_bytes: int = MAX_JSON_BYTES) -> dict:
    """The JSON object in the regular file `path` (see `read_regular_file`)."""
    data = read_regular_file(path, max_bytes)
    try:
        value = _strict_json(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ForcematchError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ForcematchError(f"{path}: expected a JSON object {{...}}, got "
                              f"{type(value).__name__}")
    return value


def _strict_json(text: str) -> Any:
    """json.loads that refuses the non-standard NaN and Infinity tokens."""

    def refuse(token):
        raise ValueError(f"{token} is not a JSON number")

    return json.loads(text, parse_constant=refuse)


def _number(value, *, positive: bool = False) -> bool:
    ok = (isinstance(value, int | float) and not isinstance(value, bool)
          and math.isfinite(value))
    return ok and (value > 0 or not positive)


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


# config.json of a model or checkpoint: key -> (check, what it must be)
_INFO_KEYS = {
    "format": (lambda v: isinstance(v, str), "a string"),
    "model": (lambda v: isinstance(v, str), "a model family name"),
    "model_config": (lambda v: isinstance(v, dict), "an object of model options"),
    "train_config": (lambda v: isinstance(v, dict), "an object of training options"),
    "cutoff_nm": (lambda v: _number(v, positive=True), "a positive number (nm)"),
    "capacity": (lambda v: v is None or _count(v), "a positive integer or null"),
    "n_atoms": (_count, "a positive integer"),
    "species": (lambda v: isinstance(v, list) and all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in v),
        "a list of non-negative integers"),
    "stats": (lambda v: isinstance(v, dict), "an object of dataset statistics"),
    "norm": (lambda v: isinstance(v, dict) and all(
        _number(v.get(k)) for k in ("energy_scale", "energy_shift_per_atom")),
        "an object with numbers energy_scale and energy_shift_per_atom"),
}


def check_model_info(info: dict, path: str | os.PathLike, model_format: str) -> None:
    """Refuse a config.json without the keys a model needs, or with values of the wrong type."""
    if info.get("format") != model_format:
        raise ForcematchError(f"{path}: not a forcematch model description (format "
                              f"{info.get('format')!r}, expected {model_format!r})")
    for key, (ok, what) in _INFO_KEYS.items():
        if key not in info:
            raise ForcematchError(f"{path}: missing key '{key}' ({what})")
        if not ok(info[key]):
            raise ForcematchError(f"{path}: '{key}' must be {what}, got {info[key]!r:.80}")
    _check_species_names(info, path)
    if len(info["species"]) != info["n_atoms"]:
        raise ForcematchError(f"{path}: 'species' lists {len(info['species'])} atoms but "
                              f"'n_atoms' is {info['n_atoms']}")


def _check_species_names(info: dict, path: str | os.PathLike) -> None:
    """`species_names` (optional; null: unnamed) must name species 0..S−1, S the model's."""
    names = info.get("species_names")
    if names is None:
        return
    n_species = int(info["model_config"].get("n_species", 1))
    if not (isinstance(names, list) and all(isinstance(n, str) and n for n in names)
            and len(set(names)) == len(names)):
        raise ForcematchError(f"{path}: 'species_names' must be a list of distinct non-empty "
                              f"names or null, got {names!r:.80}")
    if len(names) != n_species:
        raise ForcematchError(f"{path}: 'species_names' names {len(names)} species but the "
                              f"model knows {n_species}")


def model_info(*, model_format: str, version: str, model, train_config: dict, source,
               stats: dict, norm, fingerprints: dict, provenance: dict | None,
               species_names, **extra) -> dict:
    """The config.json of a trained model, for every family (`check_model_info` reads it):
    what loads it (model, options, cutoff, capacity, atoms and their species, names of the
    species where the data give them, normalisation) and what identifies the run (training
    options, data fingerprints, provenance); `extra`: a family's own keys. JSON types only."""
    import numpy as np

    info = {
        "format": model_format, "format_version": 1, "forcematch_version": version,
        "model": model.name, "model_config": model.config, "train_config": dict(train_config),
        "cutoff_nm": model.cutoff_nm, "capacity": model.capacity, "n_atoms": source.n_atoms,
        "species": np.asarray(source.species).tolist(),
        "species_names": None if species_names is None else list(species_names),
        "stats": stats, "norm": norm.to_dict(), **extra,
        "data": fingerprints, "provenance": provenance,
    }
    return json.loads(json.dumps(info))


def restore_msgpack(data: bytes, path: str | os.PathLike) -> Any:
    """`flax.serialization.msgpack_restore(data)`, its many exception types (msgpack's,
    ValueError, TypeError...) turned into one ForcematchError naming `path`."""
    import flax.serialization

    try:
        return flax.serialization.msgpack_restore(data)
    except Exception as exc:  # noqa: BLE001 - msgpack's errors share no base class
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise ForcematchError(f"{path}: not a readable msgpack state ({detail}); the file is "
                              "damaged or not a forcematch state") from None


def _key(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def shape_mismatch(got: Any, want: Any) -> str | None:
    """How the pytree `got` differs from `want` (arrays or ShapeDtypeStructs) in structure or
    in the shape of a leaf, in words; None when it does not."""
    import jax  # here, not at the top: reading config.json (the figures) needs no JAX

    got_leaves = {_key(k): v for k, v in jax.tree_util.tree_flatten_with_path(got)[0]}
    want_leaves = {_key(k): v for k, v in jax.tree_util.tree_flatten_with_path(want)[0]}
    missing = sorted(set(want_leaves) - set(got_leaves))
    extra = sorted(set(got_leaves) - set(want_leaves))
    if missing or extra:
        return "; ".join(part for part in (
            missing and f"missing {', '.join(missing[:3])}",
            extra and f"unexpected {', '.join(extra[:3])}") if part)
    for key, spec in want_leaves.items():
        shape, needed = _shape(got_leaves[key]), _shape(spec)
        if shape != needed:
            return f"{key} has shape {shape} where {needed} is needed"
    return None


def _shape(leaf) -> tuple:
    return tuple(leaf.shape) if hasattr(leaf, "shape") else np.shape(leaf)


def check_params(params: Any, expected: Any, path: str | os.PathLike) -> None:
    """Refuse parameters that differ from `expected` (a pytree of ShapeDtypeStructs, e.g.
    `jax.eval_shape` of the model's init) in structure or shape, or that hold NaN or inf."""
    import jax

    mismatch = shape_mismatch(params, expected)
    if mismatch:
        raise ForcematchError(f"{path}: the parameters do not match the model described in "
                              f"config.json: {mismatch}")
    for key, value in jax.tree_util.tree_flatten_with_path(params)[0]:
        if not isinstance(value, np.ndarray | jax.Array) or not np.issubdtype(value.dtype,
                                                                               np.floating):
            raise ForcematchError(f"{path}: parameter {_key(key)} is not an array of floats")
        if not np.all(np.isfinite(value)):
            raise ForcematchError(f"{path}: parameter {_key(key)} holds NaN or infinite values")


def state_size_limit(expected: Any, copies: int) -> int:
    """The most bytes a state file of `copies` copies of the parameters `expected` (pytree of
    ShapeDtypeStructs) may hold: float64 arrays at worst, plus framing."""
    import jax

    n_values = sum(int(np.prod(s.shape)) for s in jax.tree.leaves(expected))
    return copies * 8 * n_values + STATE_OVERHEAD_BYTES
