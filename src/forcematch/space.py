"""Periodic space: minimum-image displacements, fixed-capacity neighbour lists, smooth cutoff.

Small pure functions in the style of JAX MD. Units: nm. Boxes are orthorhombic, given by their
three edge lengths `box_nm [3]`. Neighbour lists are dense (all N² distances, then
`jnp.nonzero` with a static `size`), which is the right trade-off up to a few hundred atoms;
beyond that a cell list with the same (i, j, mask, overflow) interface should replace it.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np


def displacement(Ra, Rb, box_nm):
    """Minimum-image displacement Ra − Rb (nm), shapes broadcast, last axis 3.

    Valid for orthorhombic boxes; exact when every |Ra − Rb| component is under 1.5 box edges.
    """
    d = Ra - Rb
    return d - box_nm * jnp.round(d / box_nm)


def neighbour_pairs(positions_nm, box_nm, cutoff_nm, capacity: int):
    """Half neighbour list (i < j, r_ij < cutoff) with a static capacity; jit-able.

    Args:
        positions_nm: [N, 3] positions (nm).
        box_nm: [3] orthorhombic box edges (nm).
        cutoff_nm: cutoff radius (nm).
        capacity: static number of pair slots P.

    Returns:
        (i [P] int32, j [P] int32, mask [P] bool, overflow bool scalar). Slots past the number
        of real pairs are padding with i = j = 0 and mask False. `overflow` is True when more
        than `capacity` pairs lie within the cutoff (then some real pairs are missing).
    """
    n = positions_nm.shape[0]
    d = displacement(positions_nm[:, None, :], positions_nm[None, :, :], box_nm)
    r2 = jnp.sum(d * d, axis=-1)
    upper = jnp.triu(jnp.ones((n, n), dtype=bool), k=1)
    within = upper & (r2 < cutoff_nm * cutoff_nm)
    i, j = jnp.nonzero(within, size=capacity, fill_value=0)
    n_pairs = jnp.sum(within)
    mask = jnp.arange(capacity) < n_pairs
    return i.astype(jnp.int32), j.astype(jnp.int32), mask, n_pairs > capacity


def pair_distances(positions_nm, box_nm, i, j, mask, fill_nm=1.0):
    """Distances r [P] (nm) of the pairs (i, j); padded slots (mask False) get `fill_nm`.

    The square root sees `fill_nm²` at padded slots (mask applied *before* the sqrt), so the
    gradient with respect to positions is finite everywhere, and exactly zero through padding.
    """
    d = displacement(positions_nm[i], positions_nm[j], box_nm)
    r2 = jnp.sum(d * d, axis=-1)
    r2 = jnp.where(mask, r2, jnp.asarray(fill_nm, r2.dtype) ** 2)
    return jnp.sqrt(r2)


def smooth_cutoff(r, cutoff_nm):
    """C2 envelope: 1 at r = 0, 0 at and beyond the cutoff, zero 1st and 2nd derivatives there.

    The polynomial envelope of order p = 6 (Klicpera et al. 2020; NequIP's PolynomialCutoff),
    with x = r / cutoff:  f(x) = 1 − 28 x⁶ + 48 x⁷ − 21 x⁸,  f'(x) = −168 x⁵ (1 − x)².
    It is flat at the origin (f − 1 = O(x⁶)) so it barely perturbs the short-range part.
    """
    x = r / cutoff_nm
    x6 = x**6
    f = 1.0 - 28.0 * x6 + 48.0 * x6 * x - 21.0 * x6 * x * x
    return jnp.where(x < 1.0, f, jnp.zeros_like(f))


def count_pairs(positions_nm, box_nm, cutoff_nm, chunk: int = 256) -> np.ndarray:
    """Number of pairs within the cutoff per frame, numpy. positions [T, N, 3], box [T, 3]."""
    positions_nm = np.asarray(positions_nm, dtype=np.float64)
    box_nm = np.broadcast_to(np.asarray(box_nm, dtype=np.float64), (positions_nm.shape[0], 3))
    n = positions_nm.shape[1]
    iu, ju = np.triu_indices(n, k=1)
    counts = np.empty(positions_nm.shape[0], dtype=np.int64)
    for start in range(0, positions_nm.shape[0], chunk):
        pos = positions_nm[start : start + chunk]
        box = box_nm[start : start + chunk, None, :]
        d = pos[:, iu, :] - pos[:, ju, :]
        d -= box * np.round(d / box)
        counts[start : start + chunk] = np.sum(np.sum(d * d, axis=-1) < cutoff_nm**2, axis=1)
    return counts


def estimate_capacity(positions_nm, box_nm, cutoff_nm, margin: float = 1.2) -> int:
    """Neighbour-list capacity for a dataset: max pairs per frame × margin, rounded up to 8.

    positions [T, N, 3] (nm), box [T, 3] (nm). Never more than N(N−1)/2, where overflow is
    impossible; at least 1.
    """
    n = np.asarray(positions_nm).shape[1]
    max_pairs = int(count_pairs(positions_nm, box_nm, cutoff_nm).max(initial=0))
    capacity = 8 * math.ceil(max(1.0, max_pairs * margin) / 8)
    return int(max(1, min(capacity, n * (n - 1) // 2)))
