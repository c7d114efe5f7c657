"""Low-level H5MD readers: opening and checking files, units, frame selections, box edges.

The building blocks of `forcematch.io.h5md.read_h5md` (and of `forcematch.data.sources`, which
imports them from `forcematch.io.h5md`). Every failure raises ForcematchError naming the file
(`where`) and the HDF5 item. Units are checked strictly against `forcematch.units.UNIT`.
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from forcematch.errors import ForcematchError
from forcematch.units import UNIT

PARTICLE_GROUP = "all"
# The most one read may take in memory (float64), unless FORCEMATCH_MAX_READ_GIB says otherwise:
# a file whose declared shapes need more is refused before anything is allocated.
MAX_READ_GIB = 8.0
_FILE_KINDS = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device",
               stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket",
               stat.S_IFDIR: "a directory"}


def attr_str(value: Any) -> str:
    """An HDF5 attribute (str, bytes, or a 1-element array of them) as a str."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray) and value.shape in ((), (1,)):
        return attr_str(value.reshape(-1)[0])
    return str(value)


def require(f: h5py.File, path: str, where: str) -> h5py.Dataset | h5py.Group:
    """The item `path` of `f`; ForcematchError when it is missing."""
    if path not in f:
        raise ForcematchError(f"{where}: missing required H5MD item {path}")
    return f[path]


def check_unit(ds: h5py.Dataset, expected: str, where: str) -> None:
    """Raise unless the `unit` attribute of `ds` is exactly `expected`."""
    if "unit" not in ds.attrs:
        raise ForcematchError(
            f"{where}: {ds.name} has no 'unit' attribute (expected unit {expected!r})"
        )
    found = attr_str(ds.attrs["unit"])
    if found != expected:
        raise ForcematchError(f"{where}: {ds.name} has unit {found!r}, expected {expected!r}")


def particle_group(f: h5py.File, where: str) -> h5py.Group:
    """/particles/all, or the only group under /particles."""
    parts = require(f, "particles", where)
    if PARTICLE_GROUP in parts:
        return parts[PARTICLE_GROUP]
    names = list(parts)
    if len(names) == 1:
        return parts[names[0]]
    raise ForcematchError(
        f"{where}: no /particles/{PARTICLE_GROUP} group and several particle groups {names}"
    )


def check_storage(ds: h5py.Dataset, where: str, *, integers: bool = False) -> None:
    """Raise unless `ds` is stored as float32 or float64 (or, with `integers`, an integer).

    float16 keeps 11 significant bits: positions near 1 nm move by up to 5e-4 nm, which shifts
    force labels by about 1 % of their spread; such data cannot be trusted as labels.
    """
    kind, size = ds.dtype.kind, ds.dtype.itemsize
    if (kind == "f" and size >= 4) or (integers and kind in "iu"):
        return
    detail = (" (11 significant bits, about 3 decimal digits)" if (kind, size) == ("f", 2)
              else "")
    raise ForcematchError(f"{where}: {ds.name} is stored as {ds.dtype}{detail}; forcematch "
                          "reads float64 or float32 only (store full precision)")


def max_read_bytes() -> float:
    """The bound on one read (bytes as float64): FORCEMATCH_MAX_READ_GIB, else MAX_READ_GIB."""
    text = os.environ.get("FORCEMATCH_MAX_READ_GIB", "")
    try:
        gib = float(text) if text.strip() else MAX_READ_GIB
    except ValueError:
        gib = math.nan
    if not (math.isfinite(gib) and gib > 0):
        raise ForcematchError(f"FORCEMATCH_MAX_READ_GIB={text!r} must be a positive number")
    return gib * 2**30


def check_read_size(parts: Sequence[tuple[h5py.Dataset, int]], where: str) -> None:
    """Raise before reading when the rows asked of the datasets, as float64, would exceed the
    bound of `max_read_bytes`. `parts`: (dataset, rows read along its first axis) pairs."""
    sizes = [(rows * math.prod(ds.shape[1:]) * 8, ds, rows) for ds, rows in parts]
    total, bound = sum(s[0] for s in sizes), max_read_bytes()
    if total <= bound:
        return
    _, ds, rows = max(sizes, key=lambda s: s[0])
    shape = " x ".join(str(n) for n in (rows, *ds.shape[1:]))
    more = f" and {len(sizes) - 1} more arrays" if len(sizes) > 1 else ""
    raise ForcematchError(
        f"{where}: reading {ds.name} ({shape} values){more} would take {total / 2**30:.4g} GiB "
        f"as float64, more than the {bound / 2**30:g} GiB bound on one read "
        "(FORCEMATCH_MAX_READ_GIB): a corrupt header, or a file to split")


def check_regular_file(path: Path, where: str) -> None:
    """Raise unless `path` is an existing regular file (a FIFO would block the open)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ForcematchError(f"{where}: file not found") from None
    except OSError as exc:
        raise ForcematchError(f"{where}: cannot be examined: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(mode):
        kind = _FILE_KINDS.get(stat.S_IFMT(mode), "not a regular file")
        raise ForcematchError(f"{where}: is {kind}, not a regular file; forcematch reads "
                              "H5MD files only")


def open_checked(path: str | os.PathLike) -> tuple[h5py.File, str]:
    """The H5MD file `path` opened read-only, and its name for error messages."""
    path = Path(path)
    where = str(path)
    check_regular_file(path, where)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise ForcematchError(
            f"{where}: not a readable HDF5 file (corrupt or truncated?): {exc}"
        ) from exc
    if "h5md" not in f:
        f.close()
        raise ForcematchError(f"{where}: not an H5MD file (no /h5md group)")
    return f, where


def frame_runs(idx: np.ndarray) -> list[slice]:
    """Contiguous runs of the sorted unique indices `idx` as slices."""
    if idx.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) != 1) + 1
    starts = np.concatenate([[0], breaks])
    ends = np.concatenate([breaks, [idx.size]])
    return [slice(int(idx[a]), int(idx[b - 1]) + 1) for a, b in zip(starts, ends, strict=True)]


def _checked_indices(frames: Sequence[int] | np.ndarray, t: int, where: str) -> np.ndarray:
    """Frame indices [K] int64 in 0..t-1 from an integer array (negatives wrap) or a bool mask."""
    idx = np.asarray(frames)
    if idx.dtype == bool:
        if idx.shape != (t,):
            raise ForcematchError(
                f"{where}: boolean frame mask of shape {idx.shape}, file has {t} frames"
            )
        idx = np.flatnonzero(idx)
    if idx.ndim != 1 or not (idx.size == 0 or np.issubdtype(idx.dtype, np.integer)):
        raise ForcematchError(f"{where}: frames must be a slice or a 1-d integer array")
    idx = idx.astype(np.int64)
    bad = (idx < -t) | (idx >= t)
    if bad.any():
        raise ForcematchError(
            f"{where}: frame {int(idx[bad][0])} out of range for a file with {t} frames"
        )
    return np.where(idx < 0, idx + t, idx)


class FrameSelection:
    """Reads rows of time-dependent datasets for a slice or an index array of frames.

    `indices` [K] int64: the selected frames of a file of `t` frames, in the order read.
    """

    def __init__(self, frames: slice | Sequence[int] | np.ndarray | None, t: int, where: str):
        if frames is None:
            frames = slice(None)
        if isinstance(frames, slice):
            self.indices = np.arange(*frames.indices(t))
            self.slice = frames if (frames.step in (None, 1)) else None
            self.runs, self.inverse = None, None
            if self.slice is None:
                self._from_indices(self.indices)
            return
        idx = _checked_indices(frames, t, where)
        self.indices = idx
        self.slice = None
        self._from_indices(idx)

    @staticmethod
    def count(frames: slice | Sequence[int] | np.ndarray | None, t: int) -> int:
        """How many frames `FrameSelection(frames, t, ...)` selects, without allocating them
        (an index array or mask counts as its length)."""
        if frames is None:
            return t
        if isinstance(frames, slice):
            return len(range(*frames.indices(t)))
        idx = np.asarray(frames)
        return int(idx.sum()) if idx.dtype == bool else int(idx.size)

    def _from_indices(self, idx: np.ndarray) -> None:
        unique, inverse = np.unique(idx, return_inverse=True)
        self.runs = frame_runs(unique)
        self.inverse = None if np.array_equal(unique, idx) else inverse

    def read(self, ds: h5py.Dataset) -> np.ndarray:
        """The selected rows of `ds` [K, ...]."""
        if self.slice is not None:
            return ds[self.slice]
        if not self.runs:
            return np.empty((0,) + ds.shape[1:], dtype=ds.dtype)
        data = np.concatenate([ds[run] for run in self.runs], axis=0)
        return data if self.inverse is None else data[self.inverse]


def read_step_or_time(grp: h5py.Group, name: str, sel: FrameSelection, t: int, where: str):
    """The selected rows [K] of `grp/name` (`step` or `time`), stored per frame or scalar."""
    ds = require(grp.file, f"{grp.name}/{name}", where)
    if ds.shape == ():  # H5MD fixed form: value = offset + i * increment
        offset = ds.attrs.get("offset", 0)
        return offset + sel.indices * ds[()]
    if ds.shape != (t,):
        raise ForcematchError(f"{where}: {ds.name} has shape {ds.shape}, expected ({t},)")
    return sel.read(ds)


def _box_edges_value(part: h5py.Group, sel: FrameSelection, t: int, where: str):
    """(edges dataset, selected edges [K, 3] or [K, 3, 3] (nm)), time-dependent or fixed."""
    box = require(part.file, f"{part.name}/box", where)
    edges = require(part.file, f"{part.name}/box/edges", where)
    if "dimension" in box.attrs and int(np.asarray(box.attrs["dimension"]).reshape(-1)[0]) != 3:
        raise ForcematchError(f"{where}: {box.name} has dimension != 3")
    if isinstance(edges, h5py.Group):
        ds = require(part.file, f"{edges.name}/value", where)
        check_unit(ds, UNIT["length"], where)
        check_storage(ds, where, integers=True)
        if ds.shape[:1] != (t,) or ds.shape[1:] not in ((3,), (3, 3)):
            raise ForcematchError(
                f"{where}: {ds.name} has shape {ds.shape}, expected ({t}, 3) to match position"
            )
        return ds, sel.read(ds)
    ds = edges
    check_unit(ds, UNIT["length"], where)
    check_storage(ds, where, integers=True)
    if ds.shape not in ((3,), (3, 3)):
        raise ForcematchError(f"{where}: {ds.name} has shape {ds.shape}, expected (3,)")
    return ds, np.broadcast_to(ds[()], (sel.indices.size, *ds.shape))


def read_box(part: h5py.Group, sel: FrameSelection, t: int, where: str) -> np.ndarray:
    """Orthorhombic box edges [K, 3] float64 (nm) of the selected frames.

    Diagonal [3, 3] matrices read as their diagonals; a triclinic box raises.
    """
    ds, value = _box_edges_value(part, sel, t, where)
    value = np.asarray(value, dtype=np.float64)
    if value.shape[1:] == (3, 3):
        diag = np.diagonal(value, axis1=1, axis2=2)
        if np.any(value - diag[:, :, None] * np.eye(3) != 0):
            raise ForcematchError(f"{where}: {ds.name} is a triclinic box; only orthorhombic")
        value = diag
    return np.array(value, dtype=np.float64)


def check_finite(name: str, value: np.ndarray, frame_ids: np.ndarray, where: str) -> None:
    """Raise naming `name` and the file frame (from `frame_ids` [K]) of the first non-finite row
    of `value` [K, ...]."""
    if value.size == 0:
        return
    ok = np.isfinite(value).reshape(value.shape[0], -1).all(axis=1)
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        raise ForcematchError(f"{where}: non-finite {name} at frame {int(frame_ids[i])}")
