"""The cell-list neighbour list against the dense one: same pairs, same order, same overflow.

Every comparison is exact (array equality), in float32 and float64, on random and lattice
frames, atoms on and outside the box faces, and cubic and elongated orthorhombic boxes; the
dense list itself is checked against `jnp.nonzero` of the N² mask.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from precision import float32_atol

from forcematch import space
from forcematch.data import pairs
from forcematch.model_factory import build_model
from forcematch.models import Normalisation, energy_and_forces_fn

CUTOFF = 0.8  # nm
DENSITY = 19.8  # atoms per nm³: liquid argon at 100 K


def random_frame(seed, box_nm, density=DENSITY):
    box_nm = np.asarray(box_nm, dtype=np.float64)
    n = int(round(density * np.prod(box_nm)))
    return np.random.default_rng(seed).uniform(0.0, 1.0, (n, 3)) * box_nm, box_nm


def max_cell_count(pos, box_nm, cutoff_nm):
    """Most atoms in one cell of the grid the cell list uses (numpy)."""
    per_axis = np.floor(box_nm / (cutoff_nm * (1 + space._CELL_SLACK))).astype(int)
    frac = np.mod(pos / box_nm, 1.0)
    cell = np.minimum(np.floor(frac * per_axis).astype(int), per_axis - 1)
    flat = (cell[:, 0] * per_axis[1] + cell[:, 1]) * per_axis[2] + cell[:, 2]
    return int(np.bincount(flat).max())


def both_lists(pos, box_nm, cutoff_nm, capacity, max_cells=None, cell_capacity=None,
               dtype=jnp.float32):
    """(dense, cell) results as numpy tuples; cell shapes from `cell_list_shape` by default."""
    shape = space.cell_list_shape(len(pos), cutoff_nm, capacity, min_atoms=0, min_per_axis=3)
    max_cells = max_cells or shape[0]
    cell_capacity = cell_capacity or shape[1]
    p, b = jnp.asarray(pos, dtype), jnp.asarray(box_nm, dtype)
    dense = jax.jit(space.dense_neighbour_pairs, static_argnums=(2, 3))(p, b, cutoff_nm, capacity)
    cell = jax.jit(space.cell_neighbour_pairs, static_argnums=(2, 3, 4, 5))(
        p, b, cutoff_nm, capacity, max_cells, cell_capacity)
    return tuple(map(np.asarray, dense)), tuple(map(np.asarray, cell))


def nonzero_reference(pos, box_nm, cutoff_nm, capacity, dtype=jnp.float32):
    """The neighbour list the straightforward way (`jnp.nonzero` of the N² mask), numpy tuple."""
    p, b = jnp.asarray(pos, dtype), jnp.asarray(box_nm, dtype)
    d = space.displacement(p[:, None, :], p[None, :, :], b)
    within = jnp.triu(jnp.sum(d * d, axis=-1) < cutoff_nm * cutoff_nm, k=1)
    i, j = jnp.nonzero(within, size=capacity, fill_value=0)
    count = jnp.sum(within)
    mask = jnp.arange(capacity) < count
    return tuple(map(np.asarray, (i.astype(jnp.int32), j.astype(jnp.int32), mask,
                                  count > capacity)))


def assert_same(dense, cell):
    for name, a, b in zip(("i", "j", "mask", "overflow"), dense, cell, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape, name
        np.testing.assert_array_equal(a, b, err_msg=name)


def n_pairs(pos, box_nm, cutoff_nm):
    return int(pairs.count_pairs(pos[None], np.asarray(box_nm)[None], cutoff_nm)[0])


@pytest.mark.parametrize("box_nm", [(3.3, 3.3, 3.3), (2.45, 3.1, 5.0), (4.0, 2.5, 2.9)])
@pytest.mark.parametrize("seed", [0, 1])
def test_cell_list_equals_dense_on_random_frames(box_nm, seed):
    pos, box = random_frame(seed, box_nm)
    count = n_pairs(pos, box, CUTOFF)
    dense, cell = both_lists(pos, box, CUTOFF, int(count * 1.2))
    assert not dense[3] and dense[2].sum() == count
    assert_same(nonzero_reference(pos, box, CUTOFF, int(count * 1.2)), dense)
    assert_same(dense, cell)


def test_cell_list_equals_dense_in_float64(x64):
    pos, box = random_frame(2, (2.6, 3.4, 3.0))
    count = n_pairs(pos, box, CUTOFF)
    dense, cell = both_lists(pos, box, CUTOFF, count + 5, dtype=jnp.float64)
    assert dense[2].sum() == count
    assert_same(nonzero_reference(pos, box, CUTOFF, count + 5, jnp.float64), dense)
    assert_same(dense, cell)


def lattice(kind, spacing_nm, repeats):
    """Simple cubic ("sc") or fcc lattice of `repeats`³ unit cells; (positions, box)."""
    basis = np.zeros((1, 3)) if kind == "sc" else np.array(
        [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    grid = np.array(list(itertools.product(range(repeats), repeat=3)), dtype=float)
    pos = ((grid[:, None, :] + basis[None]) * spacing_nm).reshape(-1, 3)
    return pos, np.full(3, repeats * spacing_nm)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    "kind, spacing_nm, repeats",
    [
        ("sc", 0.41, 12),  # 6 cells of exactly 2 spacings: lattice planes on every cell face
        ("sc", 0.4, 10),  # second neighbours at exactly the cutoff (r < cutoff is strict)
        ("fcc", CUTOFF * np.sqrt(2), 3),  # nearest neighbours at exactly the cutoff
        ("fcc", 0.65, 4),  # 3 cells per edge, the fewest the half stencil allows
    ],
)
def test_cell_list_equals_dense_on_lattices(kind, spacing_nm, repeats, dtype, x64):
    """Lattices with atoms on cell and box faces, some moved by whole box vectors (unwrapped)
    and one exactly on the far face x = L."""
    pos, box = lattice(kind, spacing_nm, repeats)
    pos[::7] += box * np.array([1, -1, 0])
    pos[3] = [box[0], 0.0, box[2] / 2]
    count = n_pairs(pos, box, CUTOFF)
    # float32 round-off moves pairs at exactly the cutoff in or out: room for them
    dense, cell = both_lists(pos, box, CUTOFF, int(1.2 * count), max_cells=1000,
                             cell_capacity=max_cell_count(pos, box, CUTOFF), dtype=jnp.dtype(dtype))
    assert not dense[3] and (dense[2].sum() == count or dtype == "float32")
    assert_same(dense, cell)


def test_cell_list_equals_dense_near_faces():
    """Atoms within round-off of the box faces and cell faces, on both sides."""
    rng = np.random.default_rng(5)
    box = np.array([2.5, 3.3, 4.1])
    pos, _ = random_frame(3, box)
    edge = box / np.floor(box / CUTOFF)
    k = rng.integers(0, 4, (len(pos), 3))
    eps = rng.choice([-1e-6, -1e-7, 0.0, 1e-7, 1e-6], (len(pos), 3))
    near = k * edge + eps  # on or next to a cell face (k = 0: the box face, also from below)
    use = rng.uniform(size=pos.shape) < 0.5
    pos = np.where(use, near, pos)
    count = n_pairs(pos, box, CUTOFF)
    assert_same(*both_lists(pos, box, CUTOFF, count + 1))


def test_pair_capacity_overflow():
    pos, box = random_frame(4, (3.0, 3.0, 3.0))
    count = n_pairs(pos, box, CUTOFF)
    dense, cell = both_lists(pos, box, CUTOFF, count - 1)
    assert dense[3] and cell[3] and cell[2].all()
    # the dense list keeps the first pairs in (i, j) order, as jnp.nonzero would
    assert_same(nonzero_reference(pos, box, CUTOFF, count - 1), dense)
    dense, cell = both_lists(pos, box, CUTOFF, count)
    assert not cell[3] and cell[2].all()
    assert_same(dense, cell)


def test_cell_capacity_overflow():
    pos, box = random_frame(6, (2.5, 3.0, 3.5))
    count = n_pairs(pos, box, CUTOFF)
    most = max_cell_count(pos, box, CUTOFF)
    _, cell = both_lists(pos, box, CUTOFF, count + 8, cell_capacity=most - 1)
    assert cell[3], "a cell with more atoms than cell_capacity must flag overflow"
    dense, cell = both_lists(pos, box, CUTOFF, count + 8, cell_capacity=most)
    assert not cell[3]
    assert_same(dense, cell)
    # All atoms crowded into one cell of a large box.
    crowded = np.random.default_rng(0).uniform(0.0, 0.3, (40, 3))
    _, cell = both_lists(crowded, np.full(3, 4.0), CUTOFF, 800, max_cells=125, cell_capacity=20)
    assert cell[3]


def test_grid_overflow():
    """Fewer than 3 cells along an edge, or more cells than the table holds: overflow."""
    pos, box = random_frame(7, (2.0, 3.0, 3.0))  # 2 cells along x
    count = n_pairs(pos, box, CUTOFF)
    _, cell = both_lists(pos, box, CUTOFF, count + 8, max_cells=200, cell_capacity=64)
    assert cell[3]
    pos, box = random_frame(8, (3.3, 3.3, 3.3))  # 4 × 4 × 4 cells
    count = n_pairs(pos, box, CUTOFF)
    _, cell = both_lists(pos, box, CUTOFF, count + 8, max_cells=63, cell_capacity=64)
    assert cell[3]
    dense, cell = both_lists(pos, box, CUTOFF, count + 8, max_cells=64, cell_capacity=64)
    assert_same(dense, cell)


def test_cell_list_under_vmap_with_different_boxes():
    frames = [random_frame(s, box) for s, box in enumerate([(3.0, 3.0, 3.0), (3.05, 2.95, 3.0)])]
    n = min(len(p) for p, _ in frames)
    pos = np.stack([p[:n] for p, _ in frames])
    box = np.stack([b for _, b in frames])
    cap = int(1.3 * max(n_pairs(p, b, CUTOFF) for p, b in zip(pos, box, strict=True)))
    shape = space.cell_list_shape(n, CUTOFF, cap, min_atoms=0, min_per_axis=3)
    batched = jax.jit(jax.vmap(lambda p, b: space.cell_neighbour_pairs(p, b, CUTOFF, cap, *shape)))
    out = batched(jnp.asarray(pos, jnp.float32), jnp.asarray(box, jnp.float32))
    for t in range(2):
        dense = space.dense_neighbour_pairs(jnp.asarray(pos[t], jnp.float32),
                                            jnp.asarray(box[t], jnp.float32), CUTOFF, cap)
        assert_same(tuple(map(np.asarray, dense)), tuple(np.asarray(x[t]) for x in out))


def test_dispatcher_chooses_from_static_shapes():
    # the default 100-atom system: a 1.7 nm box holds 2 cells per edge -> dense
    assert space.cell_shape_for(100, CUTOFF, 2552) is None
    # capacity None or all pairs: no density known -> dense
    assert space.cell_shape_for(20000, CUTOFF, None) is None
    assert space.cell_shape_for(300, CUTOFF, 300 * 299 // 2) is None
    assert space.cell_shape_for(20000, CUTOFF, 500000, "dense") is None
    # 10,000 atoms at liquid density and ~24 pairs per atom: 9 cells per edge -> cells
    max_cells, cell_capacity = space.cell_shape_for(10000, CUTOFF, 243352)
    assert max_cells >= 9**3 and 14 <= cell_capacity <= 48
    assert space.cell_shape_for(400, CUTOFF, 10000, "cell") is not None
    with pytest.raises(ValueError, match="fewer than 3 cells"):
        space.cell_shape_for(100, CUTOFF, 2552, "cell")
    with pytest.raises(ValueError, match="unknown neighbour-list method"):
        space.cell_shape_for(100, CUTOFF, 2552, "verlet")
    with pytest.raises(ValueError, match="static"):
        jax.jit(lambda c: space.neighbour_pairs(jnp.zeros((400, 3)), jnp.ones(3), c, 10,
                                                "cell"))(0.8)


def test_auto_uses_the_cell_list_for_large_systems():
    pos, box = random_frame(9, (5.5, 5.5, 5.5))
    cap = int(1.2 * n_pairs(pos, box, CUTOFF))
    assert len(pos) >= space.CELL_MIN_ATOMS and space.cell_shape_for(len(pos), CUTOFF, cap)
    p, b = jnp.asarray(pos, jnp.float32), jnp.asarray(box, jnp.float32)
    auto = jax.jit(space.neighbour_pairs, static_argnums=(2, 3))(p, b, CUTOFF, cap)
    jaxpr = str(jax.make_jaxpr(space.neighbour_pairs, static_argnums=(2, 3))(p, b, CUTOFF, cap))
    assert "population_count" in jaxpr  # the cell list's compaction
    dense = space.dense_neighbour_pairs(p, b, CUTOFF, cap)
    assert_same(tuple(map(np.asarray, dense)), tuple(map(np.asarray, auto)))


def test_gradients_through_cell_and_dense_lists_are_identical():
    pos, box = random_frame(10, (3.0, 3.2, 3.4))
    cap = int(1.2 * n_pairs(pos, box, CUTOFF))
    p, b = jnp.asarray(pos, jnp.float32), jnp.asarray(box, jnp.float32)
    # a pure function of the pair distances (padding masked before the square root)
    def energy(positions, method):
        i, j, mask, _ = space.neighbour_pairs(positions, b, CUTOFF, cap, method)
        r = space.pair_distances(positions, b, i, j, mask, fill_nm=CUTOFF)
        return jnp.sum(jnp.where(mask, (r - CUTOFF) ** 2 / r**6, 0.0))

    g = {m: np.asarray(jax.jit(jax.grad(energy), static_argnums=1)(p, m)) for m in ("dense",
                                                                               "cell")}
    assert np.isfinite(g["cell"]).all() and np.abs(g["cell"]).max() > 0
    np.testing.assert_array_equal(g["cell"], g["dense"])
    # and through every model family: energies and forces bit for bit
    species = jnp.zeros(len(pos), jnp.int32)
    for name in ("pair", "atomic", "mpnn"):
        model = build_model(name, {}, CUTOFF, cap)
        params = model.init(jax.random.PRNGKey(1), p, b, species)
        out = {}
        for method in ("dense", "cell"):
            model.neighbour_method = method
            out[method] = jax.jit(energy_and_forces_fn(model, Normalisation()))(
                params, p, b, species)
        assert np.isfinite(np.asarray(out["cell"][1])).all(), name
        np.testing.assert_array_equal(out["cell"][0], out["dense"][0], err_msg=name)
        np.testing.assert_array_equal(out["cell"][1], out["dense"][1], err_msg=name)


def test_mpnn_neighbour_normalisation_through_the_cell_list():
    pos, box = random_frame(11, (3.0, 3.0, 3.0))
    count = n_pairs(pos, box, CUTOFF)
    model = build_model("mpnn", {}, CUTOFF, int(1.2 * count))
    species = np.zeros(len(pos), np.int32)
    dense = model.init(jax.random.PRNGKey(0), pos, box, species)["inv_neighbours"]
    model.neighbour_method = "cell"
    cell = model.init(jax.random.PRNGKey(0), pos, box, species)["inv_neighbours"]
    # 1/n̄: float32 round-off of n̄'s sum over the 2 x count directed pairs, in another order
    np.testing.assert_allclose(cell, dense, rtol=0, atol=float32_atol(dense, n_terms=2 * count))


def test_count_pairs_in_row_blocks_matches_brute_force():
    """Above 2²¹ pairs count_pairs works on blocks of rows; same counts as all pairs at once."""
    pos, box = random_frame(12, (4.8, 4.8, 4.8))  # about 2,190 atoms: 2.4 M pairs
    assert len(pos) * (len(pos) - 1) // 2 > 1 << 21
    d = pos[:, None, :] - pos[None, :, :]
    d -= box * np.round(d / box)
    expected = int(np.triu(np.sum(d * d, axis=-1) < CUTOFF**2, k=1).sum())
    assert pairs.count_pairs(pos[None], box[None], CUTOFF)[0] == expected


@pytest.mark.parametrize("n", [40, 50_000])  # one int32 key i·n + j; a two-key sort past 46340
def test_sorted_pairs_orders_by_i_then_j_in_both_sort_branches(n):
    rng = np.random.default_rng(7)
    capacity, n_pairs = 64, 50
    a = rng.integers(0, n, capacity).astype(np.int32)
    b = (a + rng.integers(1, n, capacity)) % n  # b != a
    i, j, mask = map(np.asarray, jax.jit(space._sorted_pairs, static_argnums=(3, 4))(
        jnp.asarray(a), jnp.asarray(b, jnp.int32), n_pairs, n, capacity))
    lo, hi = np.minimum(a, b)[:n_pairs], np.maximum(a, b)[:n_pairs]
    order = np.lexsort((hi, lo))
    assert i.dtype == j.dtype == np.int32
    assert np.array_equal(mask, np.arange(capacity) < n_pairs)
    assert np.array_equal(i[:n_pairs], lo[order]) and np.array_equal(j[:n_pairs], hi[order])
    assert not i[n_pairs:].any() and not j[n_pairs:].any()


def test_cell_tables_hold_each_cell_atoms_in_ascending_order():
    pos, box = random_frame(4, (2.5, 2.6, 2.7))
    p, b = jnp.asarray(pos, jnp.float32), jnp.asarray(box, jnp.float32)
    per_axis, grid_ok = space._cell_grid(b, CUTOFF, 64)
    cell_id = np.asarray(space._flat_cell_id(space._bin_atoms(p, b, per_axis), per_axis))
    cap = max_cell_count(pos, box, CUTOFF)
    table, table_nm, cells_ok = map(np.asarray, space._cell_tables(p, cell_id, 64, cap))
    assert bool(grid_ok) and bool(cells_ok) and np.array_equal(np.asarray(per_axis), [3, 3, 3])
    n = len(pos)
    for c in range(27):
        atoms = np.flatnonzero(cell_id == c)
        assert np.array_equal(table[c, : atoms.size], atoms) and np.all(table[c, atoms.size :] == n)
        assert np.array_equal(table_nm[:, c, : atoms.size], np.asarray(p)[atoms].T)
    assert np.all(table[27:] == n)
    _, _, cells_ok = space._cell_tables(p, cell_id, 64, cap - 1)
    assert not bool(cells_ok)
