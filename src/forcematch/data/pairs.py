"""Pairs of atoms in periodic frames, in float64, by SciPy's periodic k-d tree (O(N) per frame,
any box larger than twice the cutoff): what the spline fit and the exporters need on the host,
outside JAX. Orthorhombic boxes (nm)."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from forcematch.data.stats import blocks


def wrap(positions_nm: np.ndarray, box_nm: np.ndarray) -> np.ndarray:
    """Positions [N,3] wrapped into [0, box) (float64), as cKDTree's `boxsize` needs."""
    box = np.asarray(box_nm, np.float64)
    wrapped = np.mod(np.asarray(positions_nm, np.float64), box)
    wrapped[wrapped >= box] = 0.0  # np.mod may round up to the box edge itself
    return wrapped


def frame_pairs(positions_nm: np.ndarray, box_nm: np.ndarray, cutoff_nm: float):
    """(i [P], j [P], d [P,3] = x_i − x_j minimum image (nm), r [P] nm) of the pairs i < j
    closer than `cutoff_nm` in one frame (positions [N,3], box [3])."""
    box = np.asarray(box_nm, np.float64)
    wrapped = wrap(positions_nm, box)
    pairs = cKDTree(wrapped, boxsize=box).query_pairs(cutoff_nm, output_type="ndarray")
    i, j = pairs[:, 0], pairs[:, 1]
    d = wrapped[i] - wrapped[j]
    d -= box * np.round(d / box)
    return i, j, d, np.sqrt(np.sum(d * d, axis=1))


def closest_pairs_nm(source, species, pairs) -> np.ndarray:
    """Closest minimum-image distance (nm) between atoms of species a and b, per pair (a, b)
    of `pairs` [P], over every frame of the frame source `source`; inf where there is none.
    species [N]: the species index of each atom (all 0 for a single-species model)."""
    best = np.full(len(pairs), np.inf)
    groups = {int(s): np.flatnonzero(species == s) for s in np.unique(species)}
    for block in blocks(source.n_frames, source.n_atoms):
        for frame, box in zip(source.read_field("positions_nm", block), source.box_nm[block],
                              strict=True):
            wrapped = wrap(frame, box)
            trees = {s: cKDTree(wrapped[idx], boxsize=box) for s, idx in groups.items()}
            for p, (a, b) in enumerate(pairs):
                if a not in groups or b not in groups or (a == b and groups[a].size < 2):
                    continue
                d, _ = trees[b].query(wrapped[groups[a]], k=2 if a == b else 1)
                best[p] = min(best[p], float((d[:, 1] if a == b else d).min()))
    return best
