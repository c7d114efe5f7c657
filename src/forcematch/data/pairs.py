"""Pairs of atoms in periodic frames, in float64 on the host, outside JAX: by SciPy's periodic
k-d tree (O(N) per frame, any box larger than twice the cutoff) what the spline fit and the
exporters need, and pair counts by vectorised minimum-image distances (fastest for the small
frames of a dataset scan), which size the models' neighbour lists. Orthorhombic boxes (nm)."""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial import cKDTree

from forcematch.data.sources import blocks


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


def species_pairs(n_species: int) -> list[tuple[int, int]]:
    """Unordered species pairs (a, b), a <= b, in the pair model's output order."""
    return [(a, b) for a in range(n_species) for b in range(a, n_species)]


def closest_by_species_pair(source) -> list[float | None]:
    """The closest pair (nm) of each species pair, `species_pairs` order, over every frame of
    `source` (None where a pair has no two atoms): what the dataset stage stores in stats.json
    (`closest_pair_nm`) for MD's stability limit, the tables' walls and the spline fit."""
    species = np.asarray(source.species)
    n_species = int(species.max()) + 1 if species.size else 1
    found = closest_pairs_nm(source, species, species_pairs(n_species))
    return [float(r) if np.isfinite(r) else None for r in found]


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


def count_pairs(positions_nm, box_nm, cutoff_nm, chunk: int = 256) -> np.ndarray:
    """Number of pairs within the cutoff per frame, numpy. positions [T, N, 3], box [T, 3]."""
    return pair_counts_and_closest(positions_nm, box_nm, cutoff_nm, chunk)[0]


def pair_counts_and_closest(positions_nm, box_nm, cutoff_nm, chunk: int = 256
                            ) -> tuple[np.ndarray, np.ndarray]:
    """(pairs within the cutoff [T], closest minimum-image pair distance [T] nm) per frame,
    numpy, over all atoms (species ignored). positions [T, N, 3], box [T, 3].

    O(N²) time per frame, but at most about 2²¹ pair distances (50 MB) held at once: up to
    `chunk` frames together when N is small, blocks of rows of one frame when N is large.
    """
    positions_nm = np.asarray(positions_nm, dtype=np.float64)
    box_nm = np.broadcast_to(np.asarray(box_nm, dtype=np.float64), (positions_nm.shape[0], 3))
    n_frames, n = positions_nm.shape[:2]
    budget = 1 << 21
    counts = np.zeros(n_frames, dtype=np.int64)
    closest2 = np.full(n_frames, np.inf)
    if n < 2:
        return counts, closest2
    if n * (n - 1) // 2 <= budget:
        iu, ju = np.triu_indices(n, k=1)
        chunk = max(1, min(chunk, budget // max(len(iu), 1)))
        for start in range(0, n_frames, chunk):
            pos = positions_nm[start : start + chunk]
            box = box_nm[start : start + chunk, None, :]
            d = pos[:, iu, :] - pos[:, ju, :]
            d -= box * np.round(d / box)
            r2 = np.sum(d * d, axis=-1)
            counts[start : start + chunk] = np.sum(r2 < cutoff_nm**2, axis=1)
            closest2[start : start + chunk] = r2.min(axis=1)
        return counts, np.sqrt(closest2)
    rows = max(1, budget // n)
    for t in range(n_frames):
        pos, box = positions_nm[t], box_nm[t]
        for r0 in range(0, n - 1, rows):
            r1 = min(r0 + rows, n)
            d = pos[r0:r1, None, :] - pos[None, :, :]
            d -= box * np.round(d / box)
            upper = np.arange(n)[None, :] > np.arange(r0, r1)[:, None]
            r2 = np.where(upper, np.sum(d * d, axis=-1), np.inf)
            counts[t] += np.count_nonzero(r2 < cutoff_nm**2)
            closest2[t] = min(closest2[t], float(r2.min()))
    return counts, np.sqrt(closest2)


def estimate_capacity(positions_nm, box_nm, cutoff_nm, margin: float = 1.2) -> int:
    """Neighbour-list capacity for a dataset: max pairs per frame × margin, rounded up to 8.

    positions [T, N, 3] (nm), box [T, 3] (nm). Never more than N(N−1)/2, where overflow is
    impossible; at least 1.
    """
    n = np.asarray(positions_nm).shape[1]
    max_pairs = int(count_pairs(positions_nm, box_nm, cutoff_nm).max(initial=0))
    capacity = 8 * math.ceil(max(1.0, max_pairs * margin) / 8)
    return int(max(1, min(capacity, n * (n - 1) // 2)))
