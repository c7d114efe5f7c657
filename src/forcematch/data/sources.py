"""Where frames come from when they are read in batches: memory, or an H5MD file on demand.

A *frame source* holds T frames of the same N atoms and reads any of them on demand as
`Frames`:

    ArraySource    frames already in memory (a `Frames`)
    H5MDSource     frames of an H5MD file read with read-only h5py a batch at a time, so memory
                   stays flat however many frames the file holds

Both give float64 values in the order asked for, bit for bit the same for the same frames, so
training from either gives the same parameters. Energies [T], boxes [T,3] and virials [T,3,3]
(where the data have them) are small and held in memory by both; positions and forces [T,N,3]
are what a file source leaves on disk.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import h5py
import numpy as np

from forcematch.data.frames import Frames
from forcematch.errors import ForcematchError
from forcematch.io import h5md

FIELDS = ("positions_nm", "forces_kJ_mol_nm")  # the per-atom arrays a file source streams
# Frames per HDF5 read: HDF5 holds a few KiB per chunk it reads in one call, and files are
# chunked per frame, so one read of 100,000 frames of the [T,3] box alone takes ~400 MB.
READ_FRAMES = 1024
_BLOCK_BYTES = 1 << 22  # bytes of one [B,N,3] float64 block of a scan: 4 MiB


class FrameSource(Protocol):
    """T frames of N atoms that can be read in any order (see the module docstring)."""

    name: str  # for messages: the file, or "arrays"
    species: np.ndarray  # [N] int32
    box_nm: np.ndarray  # [T, 3] float64, all frames
    potential_energy_kJ_mol: np.ndarray  # [T] float64, all frames
    virial_kJ_mol: np.ndarray | None  # [T,3,3] float64, all frames; None: the data have none
    frame_ids: np.ndarray  # [T] int64: frame numbers in the underlying file or arrays

    @property
    def n_frames(self) -> int: ...

    @property
    def n_atoms(self) -> int: ...

    def read(self, frames) -> Frames: ...

    def read_field(self, field: str, frames) -> np.ndarray: ...

    def subset(self, frames) -> FrameSource: ...


class ArraySource:
    """Frames held in memory (a `Frames`, not copied)."""

    name = "arrays"

    def __init__(self, frames: Frames, frame_ids=None):
        self.frames = frames
        self.species = frames.species
        self.box_nm = frames.box_nm
        self.potential_energy_kJ_mol = frames.potential_energy_kJ_mol
        self.virial_kJ_mol = frames.virial_kJ_mol
        self.frame_ids = (np.arange(frames.n_frames) if frame_ids is None
                          else np.asarray(frame_ids, np.int64))

    @property
    def n_frames(self) -> int:
        return self.frames.n_frames

    @property
    def n_atoms(self) -> int:
        return self.frames.n_atoms

    def read(self, frames) -> Frames:
        idx = np.asarray(frames, np.int64)
        f = self.frames
        return Frames(f.positions_nm[idx], f.forces_kJ_mol_nm[idx],
                      f.potential_energy_kJ_mol[idx], f.box_nm[idx], f.species,
                      virial_kJ_mol=_rows(f.virial_kJ_mol, idx))

    def read_field(self, field: str, frames) -> np.ndarray:
        return getattr(self.frames, field)[np.asarray(frames, np.int64)]

    def subset(self, frames) -> ArraySource:
        idx = np.asarray(frames, np.int64)
        return ArraySource(self.frames.select(idx), self.frame_ids[idx])


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
        file, where = h5md.open_checked(self.path)
        try:
            part = h5md.particle_group(file, where)
            t = int(part["position/value"].shape[0])
            self._datasets = {"positions_nm": part["position/value"],
                              "forces_kJ_mol_nm": part["force/value"]}
            energy_ds, edges = file["observables/potential_energy/value"], part["box/edges"]
            edges = edges.get("value") if isinstance(edges, h5py.Group) else None
            h5md.check_read_size([(energy_ds, t)] + ([(edges, t)] if edges is not None else []),
                                 where)
            starts = range(0, t, READ_FRAMES)
            box = np.concatenate([np.empty((0, 3))] + [h5md.read_box(
                part, h5md.FrameSelection(slice(a, a + READ_FRAMES), t, where), t, where)
                for a in starts])
            energy = np.concatenate([np.empty(0)] + [
                np.asarray(energy_ds[a : a + READ_FRAMES], np.float64) for a in starts])
            virial = None
            if "observables/virial" in file:  # layout checked by read_h5md above
                virial_ds = file["observables/virial/value"]
                h5md.check_read_size([(virial_ds, t)], where)
                virial = np.concatenate([np.empty((0, 3, 3))] + [
                    np.asarray(virial_ds[a : a + READ_FRAMES], np.float64) for a in starts])
        except OSError as exc:
            file.close()
            raise ForcematchError(f"{where}: HDF5 read error (corrupt or truncated file?): "
                                  f"{exc}") from exc
        self._file = file
        self.species = species
        self._set_frames(np.arange(t) if frames is None else np.asarray(frames, np.int64),
                         box, energy, virial)

    def _set_frames(self, frames: np.ndarray, box_all: np.ndarray, energy_all: np.ndarray,
                    virial_all: np.ndarray | None):
        if frames.size and (np.any(np.diff(frames) <= 0) or frames[0] < 0
                            or frames[-1] >= energy_all.shape[0]):
            raise ForcematchError(f"{self.name}: frames must be increasing file frame numbers "
                                  f"in 0..{energy_all.shape[0] - 1}")
        self.frame_ids = frames
        self._box_all, self._energy_all, self._virial_all = box_all, energy_all, virial_all
        self.box_nm = box_all[frames]
        self.potential_energy_kJ_mol = energy_all[frames]
        self.virial_kJ_mol = _rows(virial_all, frames)

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
                        self._energy_all, self._virial_all)
        return sub

    def read_field(self, field: str, frames) -> np.ndarray:
        """`field` ("positions_nm" or "forces_kJ_mol_nm") of `frames` [B], in that order."""
        file_frames = self.frame_ids[np.asarray(frames, np.int64)]
        # Rows sorted, read as runs of consecutive frames (h5py reads a slice ~6x faster than
        # a list of rows), then put back in the order asked for.
        rows, inverse = np.unique(file_frames, return_inverse=True)
        ds = self._datasets[field]
        h5md.check_read_size([(ds, rows.size)], self.name)
        try:
            runs = [ds[run] for run in h5md.frame_runs(rows)]
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
        return Frames(self.read_field("positions_nm", idx),
                      self.read_field("forces_kJ_mol_nm", idx),
                      self.potential_energy_kJ_mol[idx], self.box_nm[idx], self.species,
                      virial_kJ_mol=_rows(self.virial_kJ_mol, idx))

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> H5MDSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _rows(values: np.ndarray | None, idx: np.ndarray) -> np.ndarray | None:
    """values[idx], or None for data without them."""
    return None if values is None else values[idx]


def as_source(data: Frames | FrameSource) -> FrameSource:
    """A frame source over `data` (a `Frames`: its arrays, no copy)."""
    return ArraySource(data) if isinstance(data, Frames) else data


def in_memory(source: FrameSource) -> ArraySource:
    """All frames of `source` read into memory."""
    if isinstance(source, ArraySource):
        return source
    return ArraySource(source.read(np.arange(source.n_frames)), source.frame_ids)


def chunked(source: FrameSource, chunk: int) -> Iterator[tuple[np.ndarray, Frames]]:
    """(frame indices, frames) of `source` in consecutive chunks of `chunk` frames."""
    for start in range(0, source.n_frames, chunk):
        idx = np.arange(start, min(start + chunk, source.n_frames))
        yield idx, source.read(idx)


def blocks(n_frames: int, n_atoms: int, block_bytes: int = _BLOCK_BYTES) -> list[np.ndarray]:
    """Consecutive frame indices in blocks of at most `block_bytes` of one [B,N,3] float64
    array and at most 1,024 frames."""
    per_block = max(1, min(block_bytes // (8 * 3 * max(n_atoms, 1)), READ_FRAMES))
    return [np.arange(a, min(a + per_block, n_frames)) for a in range(0, n_frames, per_block)]
