"""Where training frames come from: in memory or streamed from HDF5, and a background prefetcher.

A *frame source* holds T frames of the same N atoms and reads any of them on demand:

    ArraySource    frames already in memory (numpy arrays)
    H5MDSource     frames of an H5MD file (`forcematch.h5md` layout) read with read-only h5py a
                   batch at a time, so memory stays flat however many frames the file holds

Both give float64 values in the order asked for, bit for bit the same for the same frames, so
a model trained from either has the same parameters. Energies [T] and boxes [T,3] are small and
held in memory by both; positions and forces [T,N,3] are what a file source leaves on disk.

What training needs from all frames before its first step (the sha256 fingerprint, the check
that every value is finite, the normalisation statistics) `scan` computes in chunks, equal bit
for bit to `TrainData.fingerprint` and `train.dataset_stats` on the same frames in memory
(numpy's pairwise summation replayed chunk by chunk: `PairwiseSum`).

`Prefetcher` runs a loader over a sequence of batch indices a few batches ahead in a
background thread; an error in the loader is raised in the training thread.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from forcematch import h5md
from forcematch.errors import ForcematchError

FIELDS = ("positions_nm", "forces_kJ_mol_nm")  # the per-atom arrays a file source streams
_BLOCK_BYTES = 1 << 22  # bytes of one [B,N,3] float64 block of a scan: 4 MiB
# Frames per HDF5 read: HDF5 holds a few KiB per chunk it reads in one call, and files are
# chunked per frame, so one read of 100,000 frames of the [T,3] box alone takes ~400 MB.
_READ_FRAMES = 1024
_PAIRWISE_LEAF = 1 << 16  # values summed by numpy at once in `PairwiseSum`


@dataclass(frozen=True, eq=False)
class Frames:
    """B frames, float64: positions_nm [B,N,3], box_nm [B,3], energy_kJ_mol [B] (total
    potential energy), forces_kJ_mol_nm [B,N,3]."""

    positions_nm: np.ndarray
    box_nm: np.ndarray
    energy_kJ_mol: np.ndarray
    forces_kJ_mol_nm: np.ndarray


class FrameSource(Protocol):
    """T frames of N atoms that can be read in any order (see the module docstring)."""

    name: str  # for messages: the file, or "arrays"
    species: np.ndarray  # [N] int32
    box_nm: np.ndarray  # [T, 3] float64, all frames
    energy_kJ_mol: np.ndarray  # [T] float64, all frames
    frame_ids: np.ndarray  # [T] int64: frame numbers in the underlying file or arrays

    @property
    def n_frames(self) -> int: ...

    @property
    def n_atoms(self) -> int: ...

    def read(self, frames) -> Frames: ...

    def read_field(self, field: str, frames) -> np.ndarray: ...

    def subset(self, frames) -> FrameSource: ...


class ArraySource:
    """Frames held in memory (float64 numpy arrays; no copy when they already are)."""

    name = "arrays"

    def __init__(self, positions_nm, box_nm, energy_kJ_mol, forces_kJ_mol_nm, species,
                 frame_ids=None):
        self.positions_nm = np.asarray(positions_nm, np.float64)
        self.forces_kJ_mol_nm = np.asarray(forces_kJ_mol_nm, np.float64)
        self.box_nm = np.asarray(box_nm, np.float64)
        self.energy_kJ_mol = np.asarray(energy_kJ_mol, np.float64)
        self.species = np.asarray(species, np.int32)
        t = self.positions_nm.shape[0]
        self.frame_ids = np.arange(t) if frame_ids is None else np.asarray(frame_ids, np.int64)

    @property
    def n_frames(self) -> int:
        return self.positions_nm.shape[0]

    @property
    def n_atoms(self) -> int:
        return self.positions_nm.shape[1]

    def read(self, frames) -> Frames:
        idx = np.asarray(frames, np.int64)
        return Frames(self.positions_nm[idx], self.box_nm[idx], self.energy_kJ_mol[idx],
                      self.forces_kJ_mol_nm[idx])

    def read_field(self, field: str, frames) -> np.ndarray:
        return getattr(self, field)[np.asarray(frames, np.int64)]

    def subset(self, frames) -> ArraySource:
        idx = np.asarray(frames, np.int64)
        return ArraySource(self.positions_nm[idx], self.box_nm[idx], self.energy_kJ_mol[idx],
                           self.forces_kJ_mol_nm[idx], self.species, self.frame_ids[idx])


class H5MDSource:
    """Frames of the H5MD file `path` (all, or the sorted file frames `frames`), read on demand.

    Opening checks the layout and units as `h5md.read_h5md` does (on the first frame) and reads
    the energies and boxes of all frames; positions and forces are read per `read` call. One
    h5py file handle stays open until `close()` (or the end of a `with` block); subsets share
    it. h5py serialises its calls, so several threads may read at once.
    """

    def __init__(self, path, frames=None):
        self.path = Path(path)
        self.name = str(path)
        # The layout, units and shapes, checked as read_h5md does (ForcematchError if bad).
        species = h5md.read_h5md(self.path, slice(0, 1)).species
        file, where = h5md._open_checked(self.path)
        try:
            part = h5md._particle_group(file, where)
            t = int(part["position/value"].shape[0])
            self._datasets = {"positions_nm": part["position/value"],
                              "forces_kJ_mol_nm": part["force/value"]}
            starts = range(0, t, _READ_FRAMES)
            box = np.concatenate([np.empty((0, 3))] + [h5md._read_box(
                part, h5md._FrameSelection(slice(a, a + _READ_FRAMES), t, where), t, where)
                for a in starts])
            energy_ds = file["observables/potential_energy/value"]
            energy = np.concatenate([np.empty(0)] + [
                np.asarray(energy_ds[a : a + _READ_FRAMES], np.float64) for a in starts])
        except OSError as exc:
            file.close()
            raise ForcematchError(f"{where}: HDF5 read error (corrupt or truncated file?): "
                                  f"{exc}") from exc
        self._file = file
        self.species = species
        self._set_frames(np.arange(t) if frames is None else np.asarray(frames, np.int64),
                         box, energy)

    def _set_frames(self, frames: np.ndarray, box_all: np.ndarray, energy_all: np.ndarray):
        if frames.size and (np.any(np.diff(frames) <= 0) or frames[0] < 0
                            or frames[-1] >= energy_all.shape[0]):
            raise ForcematchError(f"{self.name}: frames must be increasing file frame numbers "
                                  f"in 0..{energy_all.shape[0] - 1}")
        self.frame_ids = frames
        self._box_all, self._energy_all = box_all, energy_all
        self.box_nm = box_all[frames]
        self.energy_kJ_mol = energy_all[frames]

    @property
    def n_frames(self) -> int:
        return int(self.frame_ids.shape[0])

    @property
    def n_atoms(self) -> int:
        return int(self._datasets["positions_nm"].shape[1])

    def subset(self, frames) -> H5MDSource:
        """Frames `frames` (increasing indices into this source), sharing the open file."""
        sub = object.__new__(H5MDSource)
        sub.path, sub.name, sub._file, sub._datasets = (self.path, self.name, self._file,
                                                        self._datasets)
        sub.species = self.species
        sub._set_frames(self.frame_ids[np.asarray(frames, np.int64)], self._box_all,
                        self._energy_all)
        return sub

    def read_field(self, field: str, frames) -> np.ndarray:
        """`field` ("positions_nm" or "forces_kJ_mol_nm") of `frames` [B], in that order."""
        file_frames = self.frame_ids[np.asarray(frames, np.int64)]
        # Rows sorted, read as runs of consecutive frames (h5py reads a slice ~6x faster than
        # a list of rows), then put back in the order asked for.
        rows, inverse = np.unique(file_frames, return_inverse=True)
        ds = self._datasets[field]
        try:
            runs = [ds[run] for run in h5md._frame_runs(rows)]
            data = (np.empty((0, *ds.shape[1:])) if not runs else runs[0] if len(runs) == 1
                    else np.concatenate(runs))
        except (OSError, RuntimeError, ValueError) as exc:
            raise ForcematchError(
                f"{self.name}: HDF5 read error in {ds.name} at frames {int(rows[0])}.."
                f"{int(rows[-1])} (corrupt or truncated file?): {exc}") from exc
        data = np.asarray(data, np.float64)
        return data if np.array_equal(rows, file_frames) else data[inverse]

    def read(self, frames) -> Frames:
        idx = np.asarray(frames, np.int64)
        return Frames(self.read_field("positions_nm", idx), self.box_nm[idx],
                      self.energy_kJ_mol[idx], self.read_field("forces_kJ_mol_nm", idx))

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> H5MDSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# Whole-dataset quantities in chunks


def _pairwise_leaves(n: int, leaf: int) -> Iterator[int]:
    """Sizes, in order, of the subtrees of at most `leaf` values in numpy's pairwise sum of n."""
    if n <= leaf:
        yield n
        return
    half = n // 2
    half -= half % 8
    yield from _pairwise_leaves(half, leaf)
    yield from _pairwise_leaves(n - half, leaf)


class PairwiseSum:
    """`np.sum` of n float64 values that arrive in pieces, in order, bit for bit.

    numpy sums a contiguous array pairwise: halves rounded down to a multiple of 8, down to
    blocks of at most 128 values. Every subtree of at most `leaf` values is summed by numpy
    itself as soon as its values have arrived; the subtree sums are then added in numpy's
    order. Memory: `leaf` values plus one piece.
    """

    def __init__(self, n: int, leaf: int = _PAIRWISE_LEAF):
        self.n, self.leaf = int(n), max(int(leaf), 128)
        self._sizes = list(_pairwise_leaves(self.n, self.leaf)) if self.n else []
        self._sums: list[np.float64] = []
        self._pending: list[np.ndarray] = []
        self._pending_n = 0

    def add(self, values) -> None:
        v = np.ravel(np.asarray(values, np.float64))
        while v.size:
            if len(self._sums) == len(self._sizes):
                raise ValueError(f"PairwiseSum: more than the {self.n} values announced")
            need = self._sizes[len(self._sums)] - self._pending_n
            self._pending.append(v[:need])
            self._pending_n += self._pending[-1].size
            v = v[need:]
            if self._pending_n == self._sizes[len(self._sums)]:
                block = self._pending[0] if len(self._pending) == 1 else np.concatenate(
                    self._pending)
                self._sums.append(np.add.reduce(block))
                self._pending, self._pending_n = [], 0

    def total(self) -> float:
        if len(self._sums) != len(self._sizes):
            raise ValueError(f"PairwiseSum: got {sum(self._sizes[:len(self._sums)])} + "
                             f"{self._pending_n} of the {self.n} values announced")
        sums = iter(self._sums)

        def combine(n: int):
            if n <= self.leaf:
                return next(sums)
            half = n // 2
            half -= half % 8
            return combine(half) + combine(n - half)

        return float(combine(self.n)) if self.n else 0.0


def blocks(n_frames: int, n_atoms: int, block_bytes: int = _BLOCK_BYTES) -> list[np.ndarray]:
    """Consecutive frame indices in blocks of at most `block_bytes` of one [B,N,3] float64
    array and at most 1,024 frames."""
    per_block = max(1, min(block_bytes // (8 * 3 * max(n_atoms, 1)), _READ_FRAMES))
    return [np.arange(a, min(a + per_block, n_frames)) for a in range(0, n_frames, per_block)]


def _first_bad(name: str, label: str, values: np.ndarray, frame_ids: np.ndarray) -> None:
    bad = ~np.isfinite(values.reshape(values.shape[0], -1)).all(axis=1)
    if bad.any():
        raise ForcematchError(
            f"{name} data: non-finite {label} in frame {int(frame_ids[int(np.argmax(bad))])}")


def scan(
    source: FrameSource,
    name: str,
    *,
    stats: bool = False,
    on_positions: Callable[[np.ndarray, np.ndarray], object] | None = None,
) -> tuple[str, dict | None]:
    """One chunked read of `source`: (sha256 fingerprint, statistics or None).

    The fingerprint equals `TrainData.fingerprint()` of the same frames. Raises
    ForcematchError naming `name` and the frame (as `TrainData.check_finite`) at the first
    non-finite value or non-positive box. With `stats`, also the normalisation statistics,
    equal bit for bit to `train.dataset_stats` (one more read of the forces).
    `on_positions(positions [B,N,3] nm, box [B,3] nm)` sees every block of positions in order.
    """
    t, n = source.n_frames, source.n_atoms
    chunks = blocks(t, n)
    h = hashlib.sha256()
    h.update(str((t, n, 3)).encode())
    for b in chunks:
        pos = source.read_field("positions_nm", b)
        _first_bad(name, "positions", pos, source.frame_ids[b])
        h.update(np.ascontiguousarray(pos).tobytes())
        if on_positions is not None:
            on_positions(pos, source.box_nm[b])
    _first_bad(name, "box", source.box_nm, source.frame_ids)
    h.update(str(source.box_nm.shape).encode())
    h.update(np.ascontiguousarray(source.box_nm).tobytes())
    h.update(str((t, n, 3)).encode())
    n_values = t * n * 3
    f_sum, f2_sum = PairwiseSum(n_values), PairwiseSum(n_values)
    for b in chunks:
        f = source.read_field("forces_kJ_mol_nm", b)
        _first_bad(name, "forces", f, source.frame_ids[b])
        h.update(np.ascontiguousarray(f).tobytes())
        if stats:
            f_sum.add(f)
            f2_sum.add(f * f)
    _first_bad(name, "energy", source.energy_kJ_mol[:, None], source.frame_ids)
    for arr in (source.energy_kJ_mol, source.species):
        h.update(str(arr.shape).encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    bad = (source.box_nm <= 0).any(axis=1)
    if bad.any():
        raise ForcematchError(
            f"{name} data: non-positive box in frame {int(source.frame_ids[np.argmax(bad)])}")
    if not stats:
        return h.hexdigest(), None

    # As np.mean / np.std: mean = Σf / M, std = sqrt(Σ(f − mean)² / M), rms = sqrt(Σf² / M).
    f_mean = f_sum.total() / n_values
    dev_sum = PairwiseSum(n_values)
    for b in chunks:
        d = source.read_field("forces_kJ_mol_nm", b) - f_mean
        dev_sum.add(d * d)
    e_per_atom = source.energy_kJ_mol / n
    return h.hexdigest(), {
        "energy_per_atom_mean_kJ_mol": float(np.mean(e_per_atom)),
        "energy_per_atom_std_kJ_mol": float(np.std(e_per_atom)),
        "force_std_kJ_mol_nm": float(np.sqrt(dev_sum.total() / n_values)),
        "force_rms_kJ_mol_nm": float(np.sqrt(f2_sum.total() / n_values)),
        "n_frames": int(t),
        "n_atoms": int(n),
    }


# --------------------------------------------------------------------------------------------
# Prefetching


class Prefetcher:
    """`load(item)` for each item of `items`, up to `depth` items ahead in a daemon thread.

    Iterating gives the results in order. An exception raised by `load` (or by `items`) is
    raised in the iterating thread when it reaches that item. `close()` (also at the end of a
    `with` block) stops the thread and waits for it to finish the item it is loading.
    """

    def __init__(self, load: Callable, items: Iterable, depth: int = 3,
                 name: str = "forcematch-prefetch"):
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._finished = False
        self._thread = threading.Thread(target=self._run, args=(load, items), name=name,
                                        daemon=True)
        self._thread.start()

    def _put(self, entry) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, load: Callable, items: Iterable) -> None:
        try:
            for item in items:
                if self._stop.is_set() or not self._put((True, load(item))):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            self._put((False, exc))
            return
        self._put((False, None))

    def __iter__(self) -> Prefetcher:
        return self

    def __next__(self):
        if self._finished:
            raise StopIteration
        ok, value = self._queue.get()
        if ok:
            return value
        self._finished = True
        self.close()
        if value is None:
            raise StopIteration
        raise value

    def close(self) -> None:
        """Stop loading and wait for the thread (idempotent)."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                while True:
                    self._queue.get_nowait()
            except queue.Empty:
                pass
            self._thread.join(timeout=0.05)
        self._finished = True

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def chunked(source: FrameSource, chunk: int) -> Iterator[tuple[np.ndarray, Frames]]:
    """(frame indices, frames) of `source` in consecutive chunks of `chunk` frames."""
    for start in range(0, source.n_frames, chunk):
        idx = np.arange(start, min(start + chunk, source.n_frames))
        yield idx, source.read(idx)
