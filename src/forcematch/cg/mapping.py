"""Linear coarse-grained maps: each CG site a weighted combination of atoms, with the force map
that belongs to the mapping (Noid et al., J. Chem. Phys. 128, 244114, 2008).

    R_I = Σ_i c_Ii x_i          positions   (c: the `position_weights`, rows summing to 1)
    F_I = Σ_i d_Ii f_i          forces      (d: the `force_weights`)

For the mean force to be the gradient of the potential of mean force, every atom of site I
must carry weight d_Ii = 1 in the force map when sites share no atoms (decimation: the kept
atom's own force; a centre of mass: the sum of the molecule's forces). Minimum image: a site's
atoms are unwrapped about its first atom before they are combined, so a molecule split by the
box edge maps to one place. No JAX here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from forcematch.data.frames import Frames
from forcematch.errors import ForcematchError


@dataclass(frozen=True)
class LinearMap:
    """position_weights, force_weights [n_sites, n_atoms]; site_species [n_sites] int."""

    position_weights: np.ndarray
    force_weights: np.ndarray
    site_species: np.ndarray

    def __post_init__(self) -> None:
        c = np.asarray(self.position_weights, np.float64)
        d = np.asarray(self.force_weights, np.float64)
        if c.ndim != 2 or c.shape != d.shape or c.shape[0] == 0:
            raise ForcematchError(f"CG map: position weights {c.shape} and force weights "
                                  f"{d.shape} must be the same [sites, atoms] shape")
        if not np.allclose(c.sum(axis=1), 1.0, atol=1e-12):
            raise ForcematchError("CG map: each site's position weights must sum to 1")
        if np.any((c != 0).sum(axis=0) > 1):
            raise ForcematchError("CG map: an atom belongs to more than one site")
        if np.any((c != 0) != (d != 0)):
            raise ForcematchError("CG map: a site's force map must take the atoms its position "
                                  "map takes")
        object.__setattr__(self, "position_weights", c)
        object.__setattr__(self, "force_weights", d)
        object.__setattr__(self, "site_species", np.asarray(self.site_species, np.int32))

    @property
    def n_sites(self) -> int:
        return self.position_weights.shape[0]

    @property
    def mapped_atoms(self) -> np.ndarray:
        """[K] indices of the atoms some site takes (the degrees of freedom held fixed when
        the mean force is sampled)."""
        return np.flatnonzero((self.position_weights != 0).any(axis=0))

    def record(self) -> dict:
        """The map as plain data (provenance of the CG files), sparse: per site, its atoms with
        their position and force weights."""
        c, d = self.position_weights, self.force_weights
        return {"n_atoms": int(c.shape[1]), "site_species": self.site_species.tolist(),
                "sites": [[[int(a), float(c[i, a]), float(d[i, a])] for a in np.flatnonzero(c[i])]
                          for i in range(self.n_sites)]}

    @classmethod
    def from_record(cls, record: dict) -> LinearMap:
        """The map that `record` wrote."""
        c = np.zeros((len(record["sites"]), record["n_atoms"]))
        d = np.zeros_like(c)
        for i, site in enumerate(record["sites"]):
            for atom, position_weight, force_weight in site:
                c[i, atom], d[i, atom] = position_weight, force_weight
        return cls(c, d, np.asarray(record["site_species"], np.int32))


def decimation(n_atoms: int, kept: np.ndarray | list[int], species: np.ndarray | None = None
               ) -> LinearMap:
    """Keep the atoms `kept` (site I = atom kept[I]); force map: each kept atom's own force."""
    kept = np.asarray(kept, np.int64)
    if kept.size == 0 or np.unique(kept).size != kept.size or kept.min() < 0 \
            or kept.max() >= n_atoms:
        raise ForcematchError(
            f"decimation: kept atoms must be distinct indices in 0..{n_atoms - 1}")
    weights = np.zeros((kept.size, n_atoms))
    weights[np.arange(kept.size), kept] = 1.0
    site_species = np.zeros(kept.size, np.int32) if species is None else np.asarray(species)[kept]
    return LinearMap(weights, weights.copy(), site_species)


def mapping_from_config(cg: dict, n_atoms: int, species: np.ndarray | None = None) -> LinearMap:
    """The map of the config's `cg` section for `n_atoms` atoms (decimation: atoms 0, k, 2k,
    ... with k = cg.keep_every)."""
    if cg["map"] != "decimation":
        raise ForcematchError(f"cg.map: unknown map {cg['map']!r}")
    return decimation(n_atoms, np.arange(0, n_atoms, cg["keep_every"]), species)


def map_frames(mapping: LinearMap, frames: Frames) -> Frames:
    """The CG frames of `frames` under `mapping`: site positions (wrapped into the box), mapped
    forces (the labels of CG force matching), the atomistic potential energy (not a CG label:
    the potential of mean force is a free energy), box, site species and masses (the sum of
    each site's atoms' masses)."""
    if frames.n_atoms != mapping.position_weights.shape[1]:
        raise ForcematchError(f"CG map of {mapping.position_weights.shape[1]} atoms given frames "
                              f"of {frames.n_atoms}")
    c, d = mapping.position_weights, mapping.force_weights
    box = frames.box_nm[:, None, :]
    first = np.argmax(c != 0, axis=1)  # each site's first atom: its unwrapping centre
    site_positions = np.empty((frames.n_frames, mapping.n_sites, 3))
    for site in range(mapping.n_sites):
        atoms = np.flatnonzero(c[site])
        rel = frames.positions_nm[:, atoms] - frames.positions_nm[:, first[site], None]
        rel -= box * np.round(rel / box)
        site_positions[:, site] = frames.positions_nm[:, first[site]] + np.einsum(
            "a,tak->tk", c[site, atoms], rel)
    masses = (c != 0) @ np.nan_to_num(frames.masses_amu)
    return Frames(positions_nm=np.mod(site_positions, box),
                  forces_kJ_mol_nm=np.einsum("ia,tak->tik", d, frames.forces_kJ_mol_nm),
                  potential_energy_kJ_mol=frames.potential_energy_kJ_mol, box_nm=frames.box_nm,
                  species=mapping.site_species, masses_amu=masses, step=frames.step,
                  time_ps=frames.time_ps)
