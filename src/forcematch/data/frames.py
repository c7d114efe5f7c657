"""`Frames`: the one container of frames of one system, from the H5MD reader to the trainer.

Units are the project's (and H5MD's): nm, ps, kJ/mol, kJ/mol/nm, u. Every array is converted on
creation (float64, int64 steps, int32 species) and its shape checked against T frames of N
atoms, so code that receives a `Frames` never checks shapes again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

from forcematch.errors import ForcematchError

# Per-frame fields (first axis T) and per-atom fields (first axis N), with their dtypes.
_PER_FRAME = {
    "positions_nm": np.float64,
    "forces_kJ_mol_nm": np.float64,
    "potential_energy_kJ_mol": np.float64,
    "box_nm": np.float64,
    "step": np.int64,
    "time_ps": np.float64,
    "velocities_nm_ps": np.float64,
    "virial_kJ_mol": np.float64,
}
_OPTIONAL = ("velocities_nm_ps", "virial_kJ_mol")  # per-frame fields a file may lack
_PER_ATOM = {"species": np.int32, "masses_amu": np.float64}


@dataclass(frozen=True, eq=False)  # arrays: element-wise == makes no sense for a dataclass
class Frames:
    """T frames of N particles (orthorhombic periodic box).

    positions_nm [T,N,3], forces_kJ_mol_nm [T,N,3], potential_energy_kJ_mol [T] (total of the
    frame), box_nm [T,3] (edges), species [N] int32 (default: all 0), masses_amu [N] (NaN where
    unknown), step [T] int64 (default 0..T-1), time_ps [T] (default NaN), velocities_nm_ps
    [T,N,3] or None, virial_kJ_mol [T,3,3] or None: W = −∂U/∂ε, the configurational virial
    (symmetric strain ε of positions and box; P = (2K + tr W)/(3V), `reference.virial`).
    """

    positions_nm: np.ndarray
    forces_kJ_mol_nm: np.ndarray
    potential_energy_kJ_mol: np.ndarray
    box_nm: np.ndarray
    species: np.ndarray | None = None
    masses_amu: np.ndarray | None = None
    step: np.ndarray | None = None
    time_ps: np.ndarray | None = None
    velocities_nm_ps: np.ndarray | None = None
    virial_kJ_mol: np.ndarray | None = None

    def __post_init__(self) -> None:
        pos = np.asarray(self.positions_nm, np.float64)
        if pos.ndim != 3 or pos.shape[2] != 3:
            raise ForcematchError(f"Frames: positions_nm must be [T, N, 3], got {pos.shape}")
        t, n = pos.shape[:2]
        defaults = {"species": np.zeros(n, np.int32), "masses_amu": np.full(n, np.nan),
                    "step": np.arange(t), "time_ps": np.full(t, np.nan)}
        for name, dtype in (_PER_FRAME | _PER_ATOM).items():
            value = getattr(self, name)
            if value is None:
                value = defaults.get(name)
            if value is not None:
                object.__setattr__(self, name, np.asarray(value, dtype))
        box = self.box_nm
        if box.shape == (3,):  # one box for every frame
            object.__setattr__(self, "box_nm", np.array(np.broadcast_to(box, (t, 3))))
        expected = {"forces_kJ_mol_nm": (t, n, 3), "potential_energy_kJ_mol": (t,),
                    "box_nm": (t, 3), "step": (t,), "time_ps": (t,), "species": (n,),
                    "masses_amu": (n,), "velocities_nm_ps": (t, n, 3),
                    "virial_kJ_mol": (t, 3, 3)}
        for name, shape in expected.items():
            value = getattr(self, name)
            if value is not None and value.shape != shape:
                raise ForcematchError(
                    f"Frames: {name} has shape {value.shape}, expected {shape} "
                    f"for T={t} frames and N={n} atoms")

    @property
    def n_frames(self) -> int:
        return self.positions_nm.shape[0]

    @property
    def n_atoms(self) -> int:
        return self.positions_nm.shape[1]

    def select(self, frame_indices: slice | Sequence[int] | np.ndarray) -> Frames:
        """The frames `frame_indices` (slice, integer indices or boolean mask), as a copy."""
        idx = frame_indices if isinstance(frame_indices, slice) else np.asarray(frame_indices)
        kwargs = {}
        for f in fields(self):
            value = getattr(self, f.name)
            per_frame = f.name in _PER_FRAME and value is not None
            kwargs[f.name] = np.array(value[idx]) if per_frame else value
        return Frames(**kwargs)

    @classmethod
    def concatenate(cls, parts: Sequence[Frames]) -> Frames:
        """Frames of all `parts` in order; they must share N, species and masses."""
        parts = list(parts)
        if not parts:
            raise ForcematchError("Frames.concatenate: no frames given")
        first = parts[0]
        for i, part in enumerate(parts[1:], start=1):
            for what, same in (
                ("atom count", part.n_atoms == first.n_atoms),
                ("species", np.array_equal(part.species, first.species)),
                ("masses", np.array_equal(part.masses_amu, first.masses_amu, equal_nan=True)),
            ):
                if not same:
                    raise ForcematchError(
                        f"Frames.concatenate: the {what} of part {i} differ from part 0")
        for name in _OPTIONAL:
            has = [getattr(p, name) is not None for p in parts]
            if any(has) and not all(has):
                raise ForcematchError(
                    f"Frames.concatenate: some parts have {name} and others do not")
        per_frame = {name: np.concatenate([getattr(p, name) for p in parts])
                     for name in _PER_FRAME if getattr(first, name) is not None}
        return cls(**per_frame, species=first.species, masses_amu=first.masses_amu)

    def fingerprint(self) -> str:
        """sha256 of positions, box, forces, energies, species and the virial where there is
        one: identifies the data a checkpoint was trained on (`forcematch.data.stats.scan`
        gives the same from a source)."""
        h = hashlib.sha256()
        virial = () if self.virial_kJ_mol is None else (self.virial_kJ_mol,)
        for arr in (self.positions_nm, self.box_nm, self.forces_kJ_mol_nm,
                    self.potential_energy_kJ_mol, self.species, *virial):
            h.update(str(arr.shape).encode())
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()
