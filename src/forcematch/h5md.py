"""H5MD 1.1 trajectories in float64 with h5py: the on-disk format between stages.

Layout (units in the ``unit`` attribute of every stored array)::

    /h5md                               attrs version=[1, 1]; author/name; creator/{name,version}
    /particles/all/position             step[T] int64, time[T] (ps), value[T,N,3] (nm)
    /particles/all/force                step, time (hard links to position's), value (kJ mol-1 nm-1)
    /particles/all/velocity             optional, same layout (nm ps-1)
    /particles/all/box                  attrs dimension=3, boundary=[b"periodic"]*3;
                                        edges/{step,time,value[T,3]} (nm)
    /particles/all/species              [N] int32
    /particles/all/mass                 [N] float64 (u)
    /observables/potential_energy       step, time, value[T] (kJ mol-1, total of the frame)
    /parameters                         attr ``json``: the run's parameters as JSON

Files from other H5MD tools are read too: the particle group may have another name when it is
the only one; ``step``/``time`` may be the H5MD scalar form (value + ``offset`` attr); box edges
may be fixed ([3]) or time-dependent ([T,3]) and may be diagonal [3,3] matrices; a missing
``species`` reads as zeros and a missing ``mass`` as NaN. Units are checked strictly against
``forcematch.units.UNIT``. Position, force, box and potential energy are required.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from forcematch.errors import ForcematchError
from forcematch.units import UNIT

PARTICLE_GROUP = "all"
_BOUNDARY = np.array([b"periodic"] * 3, dtype="S8")


@dataclass(frozen=True, eq=False)  # arrays: element-wise == makes no sense for a dataclass
class Trajectory:
    """T frames of N particles, in nm, ps, kJ/mol, kJ/mol/nm, u (arrays converted on creation)."""

    positions_nm: np.ndarray  # [T, N, 3] float64
    forces_kJ_mol_nm: np.ndarray  # [T, N, 3] float64
    potential_energy_kJ_mol: np.ndarray  # [T] float64, total energy of the frame
    box_nm: np.ndarray  # [T, 3] float64, orthorhombic edges
    step: np.ndarray  # [T] int64, MD step of each frame
    time_ps: np.ndarray  # [T] float64
    species: np.ndarray  # [N] int32
    masses_amu: np.ndarray  # [N] float64 (NaN where unknown)
    velocities_nm_ps: np.ndarray | None = None  # [T, N, 3] float64 or None

    def __post_init__(self) -> None:
        conv = {
            "positions_nm": np.float64,
            "forces_kJ_mol_nm": np.float64,
            "potential_energy_kJ_mol": np.float64,
            "box_nm": np.float64,
            "step": np.int64,
            "time_ps": np.float64,
            "species": np.int32,
            "masses_amu": np.float64,
            "velocities_nm_ps": np.float64,
        }
        for name, dtype in conv.items():
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, np.asarray(value, dtype=dtype))
        pos = self.positions_nm
        if pos.ndim != 3 or pos.shape[2] != 3:
            raise ForcematchError(f"Trajectory: positions_nm must be [T, N, 3], got {pos.shape}")
        t, n = pos.shape[:2]
        expected = {
            "forces_kJ_mol_nm": (t, n, 3),
            "potential_energy_kJ_mol": (t,),
            "box_nm": (t, 3),
            "step": (t,),
            "time_ps": (t,),
            "species": (n,),
            "masses_amu": (n,),
            "velocities_nm_ps": (t, n, 3),
        }
        for name, shape in expected.items():
            value = getattr(self, name)
            if value is not None and value.shape != shape:
                raise ForcematchError(
                    f"Trajectory: {name} has shape {value.shape}, expected {shape} "
                    f"for T={t} frames and N={n} atoms"
                )

    @property
    def n_frames(self) -> int:
        return self.positions_nm.shape[0]

    @property
    def n_atoms(self) -> int:
        return self.positions_nm.shape[1]

    def select(self, frame_indices: slice | Sequence[int] | np.ndarray) -> Trajectory:
        """The frames `frame_indices` (slice, integer indices or boolean mask), as a copy."""
        idx = frame_indices if isinstance(frame_indices, slice) else np.asarray(frame_indices)
        per_frame = {
            "positions_nm",
            "forces_kJ_mol_nm",
            "potential_energy_kJ_mol",
            "box_nm",
            "step",
            "time_ps",
            "velocities_nm_ps",
        }
        kwargs = {}
        for f in fields(self):
            value = getattr(self, f.name)
            kwargs[f.name] = value[idx] if f.name in per_frame and value is not None else value
        return Trajectory(**kwargs)

    @classmethod
    def concatenate(cls, trajectories: Sequence[Trajectory]) -> Trajectory:
        """Frames of all `trajectories` in order; they must share N, species and masses."""
        trajs = list(trajectories)
        if not trajs:
            raise ForcematchError("Trajectory.concatenate: no trajectories given")
        first = trajs[0]
        for i, tr in enumerate(trajs[1:], start=1):
            if tr.n_atoms != first.n_atoms:
                raise ForcematchError(
                    f"Trajectory.concatenate: trajectory {i} has {tr.n_atoms} atoms, "
                    f"trajectory 0 has {first.n_atoms}"
                )
            if not np.array_equal(tr.species, first.species):
                raise ForcematchError(
                    f"Trajectory.concatenate: species of trajectory {i} differ from trajectory 0"
                )
            if not np.array_equal(tr.masses_amu, first.masses_amu, equal_nan=True):
                raise ForcematchError(
                    f"Trajectory.concatenate: masses of trajectory {i} differ from trajectory 0"
                )
        has_vel = [tr.velocities_nm_ps is not None for tr in trajs]
        if any(has_vel) and not all(has_vel):
            raise ForcematchError(
                "Trajectory.concatenate: some trajectories have velocities and others do not"
            )

        def cat(name: str) -> np.ndarray:
            return np.concatenate([getattr(tr, name) for tr in trajs], axis=0)

        return cls(
            positions_nm=cat("positions_nm"),
            forces_kJ_mol_nm=cat("forces_kJ_mol_nm"),
            potential_energy_kJ_mol=cat("potential_energy_kJ_mol"),
            box_nm=cat("box_nm"),
            step=cat("step"),
            time_ps=cat("time_ps"),
            species=first.species,
            masses_amu=first.masses_amu,
            velocities_nm_ps=cat("velocities_nm_ps") if all(has_vel) else None,
        )


concatenate = Trajectory.concatenate


# --------------------------------------------------------------------------------------- write


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON-serializable")


def _write_time_data(
    parent: h5py.Group,
    name: str,
    value: np.ndarray,
    unit: str,
    chunks: tuple[int, ...],
    link_from: h5py.Group | None,
    step: np.ndarray,
    time_ps: np.ndarray,
) -> h5py.Group:
    """An H5MD time-dependent data group `name` with step, time and value[T, ...]."""
    grp = parent.create_group(name)
    if link_from is None:
        grp.create_dataset("step", data=step, dtype=np.int64)
        grp.create_dataset("time", data=time_ps, dtype=np.float64)
        grp["time"].attrs["unit"] = UNIT["time"]
    else:  # hard links: one copy of step and time per file
        grp["step"] = link_from["step"]
        grp["time"] = link_from["time"]
    ds = grp.create_dataset("value", data=value, dtype=np.float64, chunks=chunks)
    ds.attrs["unit"] = unit
    return grp


def write_h5md(
    path: str | os.PathLike,
    traj: Trajectory,
    parameters: dict,
    *,
    author: str = "forcematch",
) -> None:
    """Write `traj` and `parameters` (JSON-serializable) to the H5MD file `path`, atomically.

    The file is written to ``<name>.tmp-<pid>`` in the same directory and renamed to `path`
    when complete, so an interrupted write never leaves a file at `path`. Parent directories
    are created.
    """
    from forcematch import __version__

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    t, n = traj.n_frames, traj.n_atoms
    frame_chunk = (1, max(n, 1), 3) if t > 0 and n > 0 else None
    try:
        with h5py.File(tmp, "w") as f:
            h5md = f.create_group("h5md")
            h5md.attrs["version"] = np.array([1, 1], dtype=np.int32)
            h5md.create_group("author").attrs["name"] = author
            creator = h5md.create_group("creator")
            creator.attrs["name"] = "forcematch"
            creator.attrs["version"] = __version__

            part = f.create_group(f"particles/{PARTICLE_GROUP}")
            pos = _write_time_data(
                part,
                "position",
                traj.positions_nm,
                UNIT["length"],
                frame_chunk,
                None,
                traj.step,
                traj.time_ps,
            )
            _write_time_data(
                part,
                "force",
                traj.forces_kJ_mol_nm,
                UNIT["force"],
                frame_chunk,
                pos,
                traj.step,
                traj.time_ps,
            )
            if traj.velocities_nm_ps is not None:
                _write_time_data(
                    part,
                    "velocity",
                    traj.velocities_nm_ps,
                    UNIT["velocity"],
                    frame_chunk,
                    pos,
                    traj.step,
                    traj.time_ps,
                )
            box = part.create_group("box")
            box.attrs["dimension"] = np.int32(3)
            box.attrs["boundary"] = _BOUNDARY
            _write_time_data(
                box,
                "edges",
                traj.box_nm,
                UNIT["length"],
                (1, 3) if t > 0 else None,
                pos,
                traj.step,
                traj.time_ps,
            )
            part.create_dataset("species", data=traj.species, dtype=np.int32)
            mass = part.create_dataset("mass", data=traj.masses_amu, dtype=np.float64)
            mass.attrs["unit"] = UNIT["mass"]

            obs = f.create_group("observables")
            _write_time_data(
                obs,
                "potential_energy",
                traj.potential_energy_kJ_mol,
                UNIT["energy"],
                None,
                pos,
                traj.step,
                traj.time_ps,
            )

            # Last, so that a bad parameter fails a write that is already under way.
            try:
                text = json.dumps(parameters, sort_keys=True, default=_json_default)
            except (TypeError, ValueError) as exc:
                raise ForcematchError(
                    f"{path}: parameters are not JSON-serializable: {exc}"
                ) from exc
            f.create_group("parameters").attrs["json"] = text
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------------- read


def _attr_str(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray) and value.shape in ((), (1,)):
        return _attr_str(value.reshape(-1)[0])
    return str(value)


def _require(f: h5py.File, path: str, where: str) -> h5py.Dataset | h5py.Group:
    if path not in f:
        raise ForcematchError(f"{where}: missing required H5MD item {path}")
    return f[path]


def _check_unit(ds: h5py.Dataset, expected: str, where: str) -> None:
    if "unit" not in ds.attrs:
        raise ForcematchError(
            f"{where}: {ds.name} has no 'unit' attribute (expected unit {expected!r})"
        )
    found = _attr_str(ds.attrs["unit"])
    if found != expected:
        raise ForcematchError(f"{where}: {ds.name} has unit {found!r}, expected {expected!r}")


def _particle_group(f: h5py.File, where: str) -> h5py.Group:
    parts = _require(f, "particles", where)
    if PARTICLE_GROUP in parts:
        return parts[PARTICLE_GROUP]
    names = list(parts)
    if len(names) == 1:
        return parts[names[0]]
    raise ForcematchError(
        f"{where}: no /particles/{PARTICLE_GROUP} group and several particle groups {names}"
    )


def _open_checked(path: str | os.PathLike) -> tuple[h5py.File, str]:
    path = Path(path)
    where = str(path)
    if not path.exists():
        raise ForcematchError(f"{where}: file not found")
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


def _frame_runs(idx: np.ndarray) -> list[slice]:
    """Contiguous runs of the sorted unique indices `idx` as slices."""
    if idx.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) != 1) + 1
    starts = np.concatenate([[0], breaks])
    ends = np.concatenate([breaks, [idx.size]])
    return [slice(int(idx[a]), int(idx[b - 1]) + 1) for a, b in zip(starts, ends, strict=True)]


class _FrameSelection:
    """Reads rows of time-dependent datasets for a slice or an index array of frames."""

    def __init__(self, frames: slice | Sequence[int] | np.ndarray | None, t: int, where: str):
        if frames is None:
            frames = slice(None)
        if isinstance(frames, slice):
            self.indices = np.arange(t)[frames]
            self.slice = frames if (frames.step in (None, 1)) else None
            self.runs, self.inverse = None, None
            if self.slice is None:
                self._from_indices(self.indices)
            return
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
        idx = np.where(idx < 0, idx + t, idx)
        self.indices = idx
        self.slice = None
        self._from_indices(idx)

    def _from_indices(self, idx: np.ndarray) -> None:
        unique, inverse = np.unique(idx, return_inverse=True)
        self.runs = _frame_runs(unique)
        self.inverse = None if np.array_equal(unique, idx) else inverse

    def read(self, ds: h5py.Dataset) -> np.ndarray:
        if self.slice is not None:
            return ds[self.slice]
        if not self.runs:
            return np.empty((0,) + ds.shape[1:], dtype=ds.dtype)
        data = np.concatenate([ds[run] for run in self.runs], axis=0)
        return data if self.inverse is None else data[self.inverse]


def _read_step_or_time(grp: h5py.Group, name: str, sel: _FrameSelection, t: int, where: str):
    ds = _require(grp.file, f"{grp.name}/{name}", where)
    if ds.shape == ():  # H5MD fixed form: value = offset + i * increment
        offset = ds.attrs.get("offset", 0)
        return offset + sel.indices * ds[()]
    if ds.shape != (t,):
        raise ForcematchError(f"{where}: {ds.name} has shape {ds.shape}, expected ({t},)")
    return sel.read(ds)


def _read_box(part: h5py.Group, sel: _FrameSelection, t: int, where: str) -> np.ndarray:
    box = _require(part.file, f"{part.name}/box", where)
    edges = _require(part.file, f"{part.name}/box/edges", where)
    if "dimension" in box.attrs and int(np.asarray(box.attrs["dimension"]).reshape(-1)[0]) != 3:
        raise ForcematchError(f"{where}: {box.name} has dimension != 3")
    if isinstance(edges, h5py.Group):
        ds = _require(part.file, f"{edges.name}/value", where)
        _check_unit(ds, UNIT["length"], where)
        if ds.shape[:1] != (t,) or ds.shape[1:] not in ((3,), (3, 3)):
            raise ForcematchError(
                f"{where}: {ds.name} has shape {ds.shape}, expected ({t}, 3) to match position"
            )
        value = sel.read(ds)
    else:
        ds = edges
        _check_unit(ds, UNIT["length"], where)
        if ds.shape not in ((3,), (3, 3)):
            raise ForcematchError(f"{where}: {ds.name} has shape {ds.shape}, expected (3,)")
        value = np.broadcast_to(ds[()], (sel.indices.size, *ds.shape))
    value = np.asarray(value, dtype=np.float64)
    if value.shape[1:] == (3, 3):
        diag = np.diagonal(value, axis1=1, axis2=2)
        if np.any(value - diag[:, :, None] * np.eye(3) != 0):
            raise ForcematchError(f"{where}: {ds.name} is a triclinic box; only orthorhombic")
        value = diag
    return np.array(value, dtype=np.float64)


def _check_finite(name: str, value: np.ndarray, frame_ids: np.ndarray, where: str) -> None:
    if value.size == 0:
        return
    ok = np.isfinite(value).reshape(value.shape[0], -1).all(axis=1)
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        raise ForcematchError(f"{where}: non-finite {name} at frame {int(frame_ids[i])}")


def read_h5md(
    path: str | os.PathLike,
    frames: slice | Sequence[int] | np.ndarray | None = None,
) -> Trajectory:
    """Read an H5MD file (all frames, or a slice / integer index array of frames).

    Raises ForcematchError naming the file and the field (and frame) when the file is missing,
    not HDF5 or corrupt, not H5MD, lacks a required dataset or a `unit` attribute, has the wrong
    unit, inconsistent shapes or non-finite values.
    """
    f, where = _open_checked(path)
    try:
        with f:
            part = _particle_group(f, where)
            pos_ds = _require(f, f"{part.name}/position/value", where)
            frc_ds = _require(f, f"{part.name}/force/value", where)
            if "observables/potential_energy" not in f:
                raise ForcematchError(
                    f"{where}: missing required H5MD item observables/potential_energy"
                )
            en_ds = _require(f, "observables/potential_energy/value", where)
            _check_unit(pos_ds, UNIT["length"], where)
            _check_unit(frc_ds, UNIT["force"], where)
            _check_unit(en_ds, UNIT["energy"], where)
            if pos_ds.ndim != 3 or pos_ds.shape[2] != 3:
                raise ForcematchError(
                    f"{where}: {pos_ds.name} has shape {pos_ds.shape}, expected (T, N, 3)"
                )
            t, n = pos_ds.shape[:2]
            if frc_ds.shape != pos_ds.shape:
                raise ForcematchError(
                    f"{where}: {frc_ds.name} has shape {frc_ds.shape}, "
                    f"expected {pos_ds.shape} to match position"
                )
            if en_ds.shape != (t,):
                raise ForcematchError(
                    f"{where}: {en_ds.name} has shape {en_ds.shape}, expected ({t},) "
                    "to match position"
                )
            vel_ds = None
            if "velocity" in part:
                vel_ds = _require(f, f"{part.name}/velocity/value", where)
                _check_unit(vel_ds, UNIT["velocity"], where)
                if vel_ds.shape != pos_ds.shape:
                    raise ForcematchError(
                        f"{where}: {vel_ds.name} has shape {vel_ds.shape}, "
                        f"expected {pos_ds.shape} to match position"
                    )
            sel = _FrameSelection(frames, t, where)
            pos_grp = part["position"]
            time_ds = _require(f, f"{pos_grp.name}/time", where)
            _check_unit(time_ds, UNIT["time"], where)

            positions = np.asarray(sel.read(pos_ds), dtype=np.float64)
            forces = np.asarray(sel.read(frc_ds), dtype=np.float64)
            energy = np.asarray(sel.read(en_ds), dtype=np.float64)
            velocities = None if vel_ds is None else np.asarray(sel.read(vel_ds), np.float64)
            box = _read_box(part, sel, t, where)
            step = np.asarray(_read_step_or_time(pos_grp, "step", sel, t, where), np.int64)
            time_ps = np.asarray(_read_step_or_time(pos_grp, "time", sel, t, where), np.float64)

            if "species" in part:
                sp = part["species"]
                sp = sp["value"][0] if isinstance(sp, h5py.Group) else sp[()]
                species = np.broadcast_to(np.asarray(sp), (n,)).astype(np.int32)
            else:
                species = np.zeros(n, dtype=np.int32)
            if "mass" in part:
                m = part["mass"]
                m_ds = m["value"] if isinstance(m, h5py.Group) else m
                _check_unit(m_ds, UNIT["mass"], where)
                m_val = m_ds[0] if isinstance(m, h5py.Group) else m_ds[()]
                masses = np.broadcast_to(np.asarray(m_val, np.float64), (n,)).copy()
            else:
                masses = np.full(n, np.nan)
    except OSError as exc:
        raise ForcematchError(
            f"{where}: HDF5 read error (corrupt or truncated file?): {exc}"
        ) from exc

    frame_ids = sel.indices
    _check_finite("position", positions, frame_ids, where)
    _check_finite("force", forces, frame_ids, where)
    _check_finite("potential_energy", energy, frame_ids, where)
    _check_finite("box/edges", box, frame_ids, where)
    if velocities is not None:
        _check_finite("velocity", velocities, frame_ids, where)
    return Trajectory(
        positions_nm=positions,
        forces_kJ_mol_nm=forces,
        potential_energy_kJ_mol=energy,
        box_nm=box,
        step=step,
        time_ps=time_ps,
        species=species,
        masses_amu=masses,
        velocities_nm_ps=velocities,
    )


def read_parameters(path: str | os.PathLike) -> dict:
    """The parameters stored by `write_h5md` ({} for a file without /parameters json)."""
    f, where = _open_checked(path)
    try:
        with f:
            if "parameters" not in f or "json" not in f["parameters"].attrs:
                return {}
            text = _attr_str(f["parameters"].attrs["json"])
    except OSError as exc:
        raise ForcematchError(f"{where}: HDF5 read error (corrupt or truncated?): {exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ForcematchError(
            f"{where}: /parameters json attribute is not valid JSON: {exc}"
        ) from exc


def n_frames(path: str | os.PathLike) -> int:
    """Number of frames in the H5MD file `path`, from the shape of position/value only."""
    f, where = _open_checked(path)
    try:
        with f:
            ds = _require(f, f"{_particle_group(f, where).name}/position/value", where)
            if ds.ndim != 3:
                raise ForcematchError(f"{where}: {ds.name} has shape {ds.shape}, expected (T,N,3)")
            return int(ds.shape[0])
    except OSError as exc:
        raise ForcematchError(f"{where}: HDF5 read error (corrupt or truncated?): {exc}") from exc
