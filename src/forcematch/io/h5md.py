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
    /observables/virial                 optional: step, time, value[T,3,3] (kJ mol-1),
                                        W = −∂U/∂ε, the configurational virial (`Frames`)
    /parameters                         attr ``json``: the run's parameters as JSON

Files from other H5MD tools are read too: the particle group may have another name when it is
the only one; ``step``/``time`` may be the H5MD scalar form (value + ``offset`` attr); box edges
may be fixed ([3]) or time-dependent ([T,3]) and may be diagonal [3,3] matrices; a missing
``species`` reads as zeros and a missing ``mass`` as NaN. Units are checked strictly against
``forcematch.units.UNIT``. Position, force, box and potential energy are required, stored as
float32 or float64 (float16 and integers are refused; box edges may be integers). Only regular
files are opened (a FIFO would block), and declared shapes are checked against a bound on one
read (`h5md_readers.MAX_READ_GIB`, 8 GiB as float64, or FORCEMATCH_MAX_READ_GIB) before
anything is allocated.

The low-level readers (opening, unit checks, frame selections, box edges) live in
`forcematch.io.h5md_readers`; those other modules use are re-exported here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from forcematch.data.frames import Frames
from forcematch.errors import ForcematchError
from forcematch.io.atomic import atomic_path
from forcematch.io.h5md_readers import (
    PARTICLE_GROUP,
    FrameSelection,
    attr_str,
    check_finite,
    check_read_size,
    check_storage,
    check_unit,
    frame_runs,
    open_checked,
    particle_group,
    read_box,
    read_step_or_time,
    require,
)
from forcematch.units import UNIT

__all__ = [
    "PARTICLE_GROUP",
    "FrameSelection",
    "check_read_size",
    "frame_runs",
    "n_frames",
    "open_checked",
    "particle_group",
    "read_box",
    "read_h5md",
    "read_parameters",
    "write_h5md",
]

_BOUNDARY = np.array([b"periodic"] * 3, dtype="S8")


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


def _write_h5md_header(f: h5py.File, author: str) -> None:
    """The /h5md group: version 1.1, author and creator."""
    from forcematch import __version__

    h5md = f.create_group("h5md")
    h5md.attrs["version"] = np.array([1, 1], dtype=np.int32)
    h5md.create_group("author").attrs["name"] = author
    creator = h5md.create_group("creator")
    creator.attrs["name"] = "forcematch"
    creator.attrs["version"] = __version__


def _write_frames(f: h5py.File, frames: Frames, observables: dict | None = None) -> None:
    """/particles/all (position, force, velocity, box, species, mass), /observables (the
    potential energy, the virial if any, and `observables`: name -> (values [T], H5MD unit
    string))."""
    t, n = frames.n_frames, frames.n_atoms
    frame_chunk = (1, max(n, 1), 3) if t > 0 and n > 0 else None
    part = f.create_group(f"particles/{PARTICLE_GROUP}")
    times = (frames.step, frames.time_ps)
    pos = _write_time_data(part, "position", frames.positions_nm, UNIT["length"],
                           frame_chunk, None, *times)
    _write_time_data(part, "force", frames.forces_kJ_mol_nm, UNIT["force"], frame_chunk,
                     pos, *times)
    if frames.velocities_nm_ps is not None:
        _write_time_data(part, "velocity", frames.velocities_nm_ps, UNIT["velocity"],
                         frame_chunk, pos, *times)
    box = part.create_group("box")
    box.attrs["dimension"] = np.int32(3)
    box.attrs["boundary"] = _BOUNDARY
    _write_time_data(box, "edges", frames.box_nm, UNIT["length"],
                     (1, 3) if t > 0 else None, pos, *times)
    part.create_dataset("species", data=frames.species, dtype=np.int32)
    mass = part.create_dataset("mass", data=frames.masses_amu, dtype=np.float64)
    mass.attrs["unit"] = UNIT["mass"]
    group = f.create_group("observables")
    _write_time_data(group, "potential_energy", frames.potential_energy_kJ_mol, UNIT["energy"],
                     None, pos, *times)
    if frames.virial_kJ_mol is not None:
        _write_time_data(group, "virial", frames.virial_kJ_mol, UNIT["energy"], None, pos,
                         *times)
    for name, (values, unit) in (observables or {}).items():
        if np.shape(values)[:1] != (t,):
            raise ForcematchError(f"observable {name}: {np.shape(values)} values for {t} frames")
        _write_time_data(group, name, np.asarray(values, np.float64), unit, None, pos, *times)


def _write_parameters(f: h5py.File, parameters: dict, path: Path) -> None:
    """/parameters with the JSON of `parameters` in its ``json`` attribute."""
    try:
        text = json.dumps(parameters, sort_keys=True, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise ForcematchError(
            f"{path}: parameters are not JSON-serializable: {exc}"
        ) from exc
    f.create_group("parameters").attrs["json"] = text


def write_h5md(
    path: str | os.PathLike,
    frames: Frames,
    parameters: dict,
    *,
    author: str = "forcematch",
    observables: dict | None = None,
) -> None:
    """Write `frames` and `parameters` (JSON-serializable) to the H5MD file `path`, atomically.

    The file is written under a temporary name in the same directory and renamed to `path`
    when complete (`forcematch.io.atomic`), so an interrupted write never leaves a file at `path`.
    Parent directories are created. `observables`: more /observables, name -> (values [T],
    unit), e.g. an MD run's kinetic and total energy.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
            _write_h5md_header(f, author)
            _write_frames(f, frames, observables)
            # Last, so that a bad parameter fails a write that is already under way.
            _write_parameters(f, parameters, path)
    except OSError as exc:  # HDF5's own write errors (no space, ...) carry no errno
        message = " ".join(str(exc).split())
        raise ForcematchError(f"cannot write {path}: {message}") from exc


# ---------------------------------------------------------------------------------------- read


def _per_frame_datasets(
    f: h5py.File, part: h5py.Group, where: str
) -> tuple[h5py.Dataset, h5py.Dataset, h5py.Dataset]:
    """position [T,N,3], force [T,N,3] and potential-energy [T] value datasets; present, with
    the right units and matching shapes."""
    pos_ds = require(f, f"{part.name}/position/value", where)
    frc_ds = require(f, f"{part.name}/force/value", where)
    if "observables/potential_energy" not in f:
        raise ForcematchError(
            f"{where}: missing required H5MD item observables/potential_energy"
        )
    en_ds = require(f, "observables/potential_energy/value", where)
    for ds, unit in ((pos_ds, UNIT["length"]), (frc_ds, UNIT["force"]), (en_ds, UNIT["energy"])):
        check_unit(ds, unit, where)
        check_storage(ds, where)
    if pos_ds.ndim != 3 or pos_ds.shape[2] != 3:
        raise ForcematchError(
            f"{where}: {pos_ds.name} has shape {pos_ds.shape}, expected (T, N, 3)"
        )
    t = pos_ds.shape[0]
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
    return pos_ds, frc_ds, en_ds


def _velocity_dataset(
    f: h5py.File, part: h5py.Group, pos_ds: h5py.Dataset, where: str
) -> h5py.Dataset | None:
    """The velocity value dataset [T,N,3] (unit and shape checked), or None without one."""
    if "velocity" not in part:
        return None
    vel_ds = require(f, f"{part.name}/velocity/value", where)
    check_unit(vel_ds, UNIT["velocity"], where)
    check_storage(vel_ds, where)
    if vel_ds.shape != pos_ds.shape:
        raise ForcematchError(
            f"{where}: {vel_ds.name} has shape {vel_ds.shape}, "
            f"expected {pos_ds.shape} to match position"
        )
    return vel_ds


def _read_species(part: h5py.Group, n: int) -> np.ndarray:
    """Species [N] int32: a dataset, the first row of an H5MD time-dependent group, or zeros."""
    if "species" not in part:
        return np.zeros(n, dtype=np.int32)
    sp = part["species"]
    sp = sp["value"][0] if isinstance(sp, h5py.Group) else sp[()]
    return np.broadcast_to(np.asarray(sp), (n,)).astype(np.int32)


def _read_masses(part: h5py.Group, n: int, where: str) -> np.ndarray:
    """Masses [N] float64 (u): a dataset, the first row of a time-dependent group, or NaN."""
    if "mass" not in part:
        return np.full(n, np.nan)
    m = part["mass"]
    m_ds = m["value"] if isinstance(m, h5py.Group) else m
    check_unit(m_ds, UNIT["mass"], where)
    m_val = m_ds[0] if isinstance(m, h5py.Group) else m_ds[()]
    return np.broadcast_to(np.asarray(m_val, np.float64), (n,)).copy()


def _virial_dataset(f: h5py.File, t: int, where: str) -> h5py.Dataset | None:
    """The virial value dataset [T,3,3] (unit and shape checked), or None without one."""
    if "observables/virial" not in f:
        return None
    ds = require(f, "observables/virial/value", where)
    check_unit(ds, UNIT["energy"], where)
    check_storage(ds, where)
    if ds.shape != (t, 3, 3):
        raise ForcematchError(f"{where}: {ds.name} has shape {ds.shape}, expected ({t}, 3, 3) "
                              "to match position")
    return ds


def _per_atom_reads(part: h5py.Group) -> list[tuple[h5py.Dataset, int]]:
    """(dataset, rows read) of species and mass: a whole [N] dataset, or the first row of an
    H5MD time-dependent group."""
    reads = []
    for name in ("species", "mass"):
        item = part.get(name)
        if isinstance(item, h5py.Group) and isinstance(item.get("value"), h5py.Dataset):
            reads.append((item["value"], 1))
        elif isinstance(item, h5py.Dataset) and item.ndim >= 1:
            reads.append((item, item.shape[0]))
    return reads


def _read_arrays(
    f: h5py.File, frames: slice | Sequence[int] | np.ndarray | None, where: str
) -> tuple[dict[str, np.ndarray | None], np.ndarray]:
    """(the `Frames` fields of the selected frames of the open file `f`, keyed by field name;
    their file frame indices [K]). Layout, units and shapes checked; finiteness not."""
    part = particle_group(f, where)
    pos_ds, frc_ds, en_ds = _per_frame_datasets(f, part, where)
    t, n = pos_ds.shape[:2]
    vel_ds = _velocity_dataset(f, part, pos_ds, where)
    vir_ds = _virial_dataset(f, t, where)
    k = FrameSelection.count(frames, t)  # refuse what would not fit before allocating anything
    check_read_size([(ds, k) for ds in (pos_ds, frc_ds, en_ds, vel_ds, vir_ds)
                     if ds is not None]
                    + _per_atom_reads(part), where)
    sel = FrameSelection(frames, t, where)
    pos_grp = part["position"]
    check_unit(require(f, f"{pos_grp.name}/time", where), UNIT["time"], where)

    def read_f64(ds: h5py.Dataset) -> np.ndarray:
        return np.asarray(sel.read(ds), dtype=np.float64)

    arrays = {
        "positions_nm": read_f64(pos_ds),
        "forces_kJ_mol_nm": read_f64(frc_ds),
        "potential_energy_kJ_mol": read_f64(en_ds),
        "velocities_nm_ps": None if vel_ds is None else read_f64(vel_ds),
        "virial_kJ_mol": None if vir_ds is None else read_f64(vir_ds),
        "box_nm": read_box(part, sel, t, where),
        "step": np.asarray(read_step_or_time(pos_grp, "step", sel, t, where), np.int64),
        "time_ps": np.asarray(read_step_or_time(pos_grp, "time", sel, t, where), np.float64),
        "species": _read_species(part, n),
        "masses_amu": _read_masses(part, n, where),
    }
    return arrays, sel.indices


# Fields checked for non-finite values by `read_h5md`, in order, with the names in its errors.
_FINITE_CHECKED = {
    "positions_nm": "position",
    "forces_kJ_mol_nm": "force",
    "potential_energy_kJ_mol": "potential_energy",
    "box_nm": "box/edges",
    "velocities_nm_ps": "velocity",
    "virial_kJ_mol": "virial",
}


def read_h5md(
    path: str | os.PathLike,
    frames: slice | Sequence[int] | np.ndarray | None = None,
) -> Frames:
    """Read an H5MD file (all frames, or a slice / integer index array of frames).

    Raises ForcematchError naming the file and the field (and frame) when the file is missing,
    not HDF5 or corrupt, not H5MD, lacks a required dataset or a `unit` attribute, has the wrong
    unit, inconsistent shapes or non-finite values.
    """
    f, where = open_checked(path)
    try:
        with f:
            arrays, frame_ids = _read_arrays(f, frames, where)
    except OSError as exc:
        raise ForcematchError(
            f"{where}: HDF5 read error (corrupt or truncated file?): {exc}"
        ) from exc
    for field, name in _FINITE_CHECKED.items():
        if arrays[field] is not None:
            check_finite(name, arrays[field], frame_ids, where)
    return Frames(**arrays)


def read_parameters(path: str | os.PathLike) -> dict:
    """The parameters stored by `write_h5md` ({} for a file without /parameters json)."""
    f, where = open_checked(path)
    try:
        with f:
            if "parameters" not in f or "json" not in f["parameters"].attrs:
                return {}
            text = attr_str(f["parameters"].attrs["json"])
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
    f, where = open_checked(path)
    try:
        with f:
            ds = require(f, f"{particle_group(f, where).name}/position/value", where)
            if ds.ndim != 3:
                raise ForcematchError(f"{where}: {ds.name} has shape {ds.shape}, expected (T,N,3)")
            return int(ds.shape[0])
    except OSError as exc:
        raise ForcematchError(f"{where}: HDF5 read error (corrupt or truncated?): {exc}") from exc
