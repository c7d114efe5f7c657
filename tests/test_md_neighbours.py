"""MD's half-shell pair list (`md.neighbours`) against a periodic k-d tree (scipy), for small
boxes (all pairs), the smallest cell grid (3 cells an edge) and orthorhombic boxes; the skin
rule and overflow."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from forcematch.data.pairs import frame_pairs
from forcematch.md.neighbours import HalfShellPairs

pytestmark = pytest.mark.quick


def liquid(n_atoms, box_nm, seed=0):
    """Uniformly random positions [N,3] nm in the box."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (n_atoms, 3)) * np.asarray(box_nm)


def pair_set(idx, n_atoms):
    i, j = np.asarray(idx)
    real = (i < n_atoms) & (j < n_atoms)
    return {(min(a, b), max(a, b)) for a, b in zip(i[real], j[real], strict=True)}


def kd_tree_pairs(positions, box_nm, range_nm):
    i, j, _, _ = frame_pairs(positions, np.asarray(box_nm), range_nm)
    return set(zip(i.tolist(), j.tolist(), strict=True))


@pytest.mark.parametrize("box_nm, n_atoms, all_pairs", [
    ((1.7, 1.7, 1.7), 100, True),         # fewer than 3 cells an edge: all pairs
    ((2.7, 2.8, 2.9), 400, False),        # exactly 3 cells an edge: no cell pair twice
    ((3.7, 4.6, 2.75), 900, False),       # orthorhombic, 4 × 5 × 3 cells
])
def test_pairs_equal_the_kd_tree_each_once(box_nm, n_atoms, all_pairs):
    positions = liquid(n_atoms, box_nm)
    builder = HalfShellPairs(box_nm, cutoff_nm=0.8, skin_nm=0.1)
    assert builder.all_pairs == all_pairs
    pairs = builder.allocate(jnp.asarray(positions))
    i, j = np.asarray(pairs.idx)
    real = i < n_atoms
    assert not bool(pairs.overflow)
    assert len(pair_set(pairs.idx, n_atoms)) == int(real.sum())  # no pair twice
    assert pair_set(pairs.idx, n_atoms) == kd_tree_pairs(positions, box_nm, 0.9)


def test_rebuilds_after_half_the_skin_and_flags_overflow():
    box = (3.7, 3.7, 3.7)
    positions = jnp.asarray(liquid(1000, box, seed=1))
    builder = HalfShellPairs(box, cutoff_nm=0.8, skin_nm=0.1)
    pairs = builder.allocate(positions)
    update = jax.jit(builder.update)
    nudged = positions.at[0, 0].add(0.049)  # under half the skin: the list stands
    assert update(nudged, pairs).reference_nm[0, 0] == positions[0, 0]
    moved = positions.at[::2].add(0.03).at[1::2].add(-0.03) % jnp.asarray(box)  # 0.052 nm
    rebuilt = update(moved, pairs)
    np.testing.assert_allclose(np.asarray(rebuilt.reference_nm), np.asarray(moved))
    assert not bool(rebuilt.overflow)
    assert pair_set(rebuilt.idx, 1000) == kd_tree_pairs(np.asarray(moved), box, 0.9)
    crowded = positions.at[:100].set(positions[0] + 1e-4 * jnp.arange(100)[:, None])
    overflowed = update(crowded, pairs)
    assert bool(overflowed.overflow)  # 100 atoms in one cell: more than it holds
    assert bool(update(positions, overflowed).overflow)  # and it stays set
