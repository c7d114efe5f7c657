"""Periodic space: minimum-image displacements, fixed-capacity neighbour lists, smooth cutoff.

Small pure functions in the style of JAX MD. Units: nm. Boxes are orthorhombic, given by their
three edge lengths `box_nm [3]`; `displacement` and the dense search also take a general cell
[3,3] (rows: cell vectors), which a strain derivative and a sheared ASE cell need.

Two half neighbour lists share one interface, (i, j, mask, overflow) with static shapes:
`dense_neighbour_pairs` looks at all N² distances (the only choice when the box holds fewer
than 3 cutoffs per edge, and it needs no density estimate); `cell_neighbour_pairs` bins atoms
into cells of edge ≥ cutoff and looks only at the 14 cells of a half stencil, so its cost
grows as N. `neighbour_pairs`
picks one from static shapes alone (atom count, pair capacity, cutoff); both give the same
pairs in the same order, so energies and forces agree bit for bit.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np

# `neighbour_pairs(method="auto")` uses the cell list from this many atoms and at least
# CELL_MIN_PER_AXIS cells per box edge (by the density the capacity implies). Measured on the
# 2-core CPU (BENCHMARKS.md): wherever 3 cells fit the cell list is the faster one (280 liquid
# atoms, 0.8 nm: 1.4 vs 3.6 µs per atom), but below 500 atoms the dense list costs under
# 6 µs per atom and needs no density estimate: a deliberately small capacity (as in tests of
# overflow) cannot make it pick cells too small for the frame.
CELL_MIN_ATOMS = 500
CELL_MIN_PER_AXIS = 3
# Cells are this much (relative) wider than the cutoff, so that round-off in binning atoms
# near cell faces can never hide a pair.
_CELL_SLACK = 1e-4


def displacement(Ra, Rb, box_nm):
    """Minimum-image displacement Ra − Rb (nm), shapes broadcast, last axis 3.

    box_nm: the edges [3] of an orthorhombic box, or a general cell [3,3] whose rows are the
    cell vectors (ASE's convention). Orthorhombic: exact when every |Ra − Rb| component is
    under 1.5 box edges. A general cell: the image is rounded in fractional coordinates, which
    gives the minimum image of every pair closer than half the cell's smallest perpendicular
    width (`cell_widths_nm`), so of every pair within a cutoff below that.
    """
    d = Ra - Rb
    if jnp.ndim(box_nm) == 2:
        s = d @ jnp.linalg.inv(box_nm)
        return (s - jnp.round(s)) @ box_nm
    return d - box_nm * jnp.round(d / box_nm)


def cell_widths_nm(cell_nm) -> np.ndarray:
    """Perpendicular widths [3] (nm) of a cell [3,3] (rows: cell vectors): the distances
    between opposite faces, V / |a_j × a_k|; a model's cutoff must stay below half of each."""
    cell = np.asarray(cell_nm, np.float64)
    volume = abs(np.linalg.det(cell))
    areas = [np.linalg.norm(np.cross(cell[(k + 1) % 3], cell[(k + 2) % 3])) for k in range(3)]
    return volume / np.asarray(areas)


def neighbour_pairs(positions_nm, box_nm, cutoff_nm, capacity: int, method: str = "auto"):
    """Half neighbour list (i < j, r_ij < cutoff) with a static capacity; jit-able.

    Args:
        positions_nm: [N, 3] positions (nm).
        box_nm: [3] orthorhombic box edges, or a general cell [3,3] (`displacement`; dense
            search only) (nm).
        cutoff_nm: cutoff radius (nm); a Python number for the cell list.
        capacity: static number of pair slots P.
        method: "dense" (all N² distances), "cell" (cell list, `cell_list_shape`) or "auto":
            the cell list when `cell_list_shape` finds N ≥ CELL_MIN_ATOMS and at least
            CELL_MIN_PER_AXIS cells per edge, else dense. Chosen at trace time from static
            shapes (`cell_shape_for`).

    Returns:
        (i [P] int32, j [P] int32, mask [P] bool, overflow bool scalar). Real pairs come first,
        sorted by (i, j); slots past them are padding with i = j = 0 and mask False.
        `overflow` is True when some pair within the cutoff may be missing: more than
        `capacity` pairs, or (cell list) a cell table too small for this frame.
    """
    shape = cell_shape_for(positions_nm.shape[0], cutoff_nm, capacity, method)
    if shape is None or jnp.ndim(box_nm) == 2:  # the cell list bins orthorhombic boxes only
        return dense_neighbour_pairs(positions_nm, box_nm, cutoff_nm, capacity)
    return cell_neighbour_pairs(positions_nm, box_nm, cutoff_nm, capacity, *shape)


def cell_shape_for(
    n_atoms: int, cutoff_nm, capacity: int, method: str = "auto"
) -> tuple[int, int] | None:
    """The cell-list shapes (max_cells, cell_capacity) that `neighbour_pairs(method=...)` uses
    for N atoms, or None where it uses the dense list. Static: call it outside jit too."""
    if method not in ("auto", "dense", "cell"):
        raise ValueError(f"unknown neighbour-list method {method!r}; known: auto, dense, cell")
    if method == "dense":
        return None
    if not isinstance(cutoff_nm, int | float):
        if method == "cell":
            raise ValueError("the cell list needs a static (Python number) cutoff_nm")
        return None
    if method == "auto":
        return cell_list_shape(n_atoms, cutoff_nm, capacity)
    shape = cell_list_shape(n_atoms, cutoff_nm, capacity, min_atoms=0, min_per_axis=3)
    if shape is None:
        raise ValueError(
            f"no cell list for {n_atoms} atoms, cutoff {cutoff_nm} nm and capacity {capacity}: "
            "the box they imply holds fewer than 3 cells per edge")
    return shape


def dense_neighbour_pairs(positions_nm, box_nm, cutoff_nm, capacity: int):
    """`neighbour_pairs` from all N² distances: O(N²) time and memory, no cell table.

    On overflow the slots hold the first `capacity` pairs in (i, j) order."""
    positions_nm = jax.lax.stop_gradient(positions_nm)
    n = positions_nm.shape[0]
    d = displacement(positions_nm[:, None, :], positions_nm[None, :, :], box_nm)
    r2 = jnp.sum(d * d, axis=-1)
    upper = jnp.triu(jnp.ones((n, n), dtype=bool), k=1)
    within = upper & (r2 < cutoff_nm * cutoff_nm)
    i, j, n_pairs = _compact_bits(within, capacity)  # row-major: sorted by (i, j)
    mask = jnp.arange(capacity) < n_pairs
    return jnp.where(mask, i, 0), jnp.where(mask, j, 0), mask, n_pairs > capacity


def cell_list_shape(
    n_atoms: int,
    cutoff_nm: float,
    capacity: int | None,
    min_atoms: int = CELL_MIN_ATOMS,
    min_per_axis: int = CELL_MIN_PER_AXIS,
) -> tuple[int, int] | None:
    """Static shapes (max_cells, cell_capacity) of a cell list, or None for the dense list.

    Only static numbers are known inside jit, so the density comes from the pair capacity:
    frames with at most P pairs within r_c have a density of about ρ̂ = 2P / (N · 4/3 π r_c³)
    (an overestimate by the capacity's margin). With ρ_hi = 1.1 ρ̂ (so that a capacity
    under-counting the density by 10 % is still safe) a cubic box is at least
    L_lo = (N/ρ_hi)^⅓, holds n ≥ n_lo = floor(L_lo / r_c) cells per edge, of edge below
    r_c (1 + 1/n_lo), so a cell holds on average m ≤ ρ_hi r_c³ (1 + 1/n_lo)³ atoms:
    cell_capacity = m + 5√m + 2 (beyond a 5σ Poisson tail). max_cells = 8 N / (ρ̂ r_c³)
    allows frames down to 1/8 of the implied density. Frames outside these bounds set the
    overflow flag, never silently lose pairs. None when capacity is None or all N(N−1)/2
    pairs (no density known), N < min_atoms, or n_lo < min_per_axis (or < 3).
    """
    all_pairs = n_atoms * (n_atoms - 1) // 2
    if capacity is None or capacity >= all_pairs or n_atoms < max(min_atoms, 2):
        return None
    if not (math.isfinite(cutoff_nm) and cutoff_nm > 0):
        return None
    sphere_nm3 = 4.0 / 3.0 * math.pi * cutoff_nm**3
    density_nm3 = 2.0 * max(capacity, 1) / (n_atoms * sphere_nm3)
    density_hi_nm3 = 1.1 * density_nm3
    per_axis = math.floor((n_atoms / density_hi_nm3) ** (1.0 / 3.0)
                          / (cutoff_nm * (1 + _CELL_SLACK)))
    if per_axis < max(min_per_axis, 3):
        return None
    mean_atoms = density_hi_nm3 * cutoff_nm**3 * (1.0 + 1.0 / per_axis) ** 3
    cell_capacity = min(n_atoms, math.ceil(mean_atoms + 5.0 * math.sqrt(mean_atoms) + 2.0))
    max_cells = max(27, math.ceil(8.0 * n_atoms / (density_nm3 * cutoff_nm**3)))
    return max_cells, cell_capacity


# The 13 neighbour cells "ahead" of a cell (lexicographically positive offsets), and itself.
_HALF_STENCIL = np.array(
    [(0, 0, 0)] + [o for o in itertools.product((-1, 0, 1), repeat=3) if o > (0, 0, 0)],
    dtype=np.int32,
)


def cell_neighbour_pairs(
    positions_nm, box_nm, cutoff_nm, capacity: int, max_cells: int, cell_capacity: int
):
    """`neighbour_pairs` from a cell list: O(N) work (plus an O(P log P) sort of the pairs).

    The box is cut into n_a = floor(L_a / r_c) cells per axis (edge ≥ r_c, computed at run time
    from `box_nm`), each atom binned by its wrapped position, and each atom paired with the
    atoms of its own cell (higher index only) and of the 13 cells ahead of it: every pair
    within r_c exactly once when n_a ≥ 3. Candidates are compacted to `capacity` slots and
    sorted by (i, j), so the result equals `dense_neighbour_pairs`' whenever neither overflows.

    Args:
        positions_nm, box_nm, cutoff_nm, capacity: as `neighbour_pairs`.
        max_cells: static size of the cell table (cells).
        cell_capacity: static atoms per cell C.

    `overflow` is also True when a box edge holds fewer than 3 cells, the grid has more than
    `max_cells` cells, or a cell holds more than `cell_capacity` atoms. Work: N × 14 C
    candidate distances, one bit each.
    """
    positions_nm = jax.lax.stop_gradient(positions_nm)
    n = positions_nm.shape[0]
    n_stencil = len(_HALF_STENCIL)
    box_nm = jnp.asarray(box_nm)
    per_axis, grid_ok = _cell_grid(box_nm, cutoff_nm, max_cells)
    cell = _bin_atoms(positions_nm, box_nm, per_axis)
    cell_id = _flat_cell_id(cell, per_axis)
    table, table_nm, cells_ok = _cell_tables(positions_nm, cell_id, max_cells, cell_capacity)
    nbr, within = _half_stencil_within(
        positions_nm, box_nm, cutoff_nm, cell, per_axis, table, table_nm
    )

    # Compact the candidates within r_c to `capacity` slots, in (atom, stencil cell, slot)
    # order: `_compact_bits` packs them into words and needs no O(N·14·C) scatter.
    rows, col, n_pairs = _compact_bits(within.reshape(n * n_stencil, cell_capacity), capacity)
    a = rows // n_stencil
    b = table[nbr.reshape(-1)[rows], col]
    i, j, mask = _sorted_pairs(a, b, n_pairs, n, capacity)
    overflow = (n_pairs > capacity) | ~grid_ok | ~cells_ok
    return i, j, mask, overflow


def _cell_grid(box_nm, cutoff_nm, max_cells: int):
    """Cells per axis [3] int32 (edge ≥ cutoff, at least 1) and `grid_ok` (bool scalar): every
    axis holds ≥ 3 cells and the grid ≤ `max_cells`. box_nm [3] (nm)."""
    per_axis = jnp.floor(box_nm / (cutoff_nm * (1 + _CELL_SLACK))).astype(jnp.int32)  # [3]
    grid_ok = jnp.all(per_axis >= 3) & (jnp.prod(per_axis) <= max_cells)
    return jnp.maximum(per_axis, 1), grid_ok


def _bin_atoms(positions_nm, box_nm, per_axis):
    """Cell (cx, cy, cz) [N, 3] int32 of each atom, from its wrapped fractional coordinates."""
    frac = positions_nm / box_nm
    frac = frac - jnp.floor(frac)
    return jnp.clip(jnp.floor(frac * per_axis).astype(jnp.int32), 0, per_axis - 1)


def _flat_cell_id(cell, per_axis):
    """Flat (row-major) cell ids [...] of cells (cx, cy, cz) [..., 3] in a grid `per_axis` [3]."""
    return (cell[..., 0] * per_axis[1] + cell[..., 1]) * per_axis[2] + cell[..., 2]


def _cell_tables(positions_nm, cell_id, max_cells: int, cell_capacity: int):
    """Cell tables of N atoms with flat cell ids `cell_id` [N].

    Returns (table [M, C] int32: atom indices ascending, N in empty slots; table_nm [3, M, C]:
    their positions (nm), 0 in empty slots; cells_ok: no cell holds more than C atoms), with
    M = `max_cells`, C = `cell_capacity`. Atoms of cells past M are dropped (`_cell_grid`
    flags that grid).
    """
    n = positions_nm.shape[0]
    counts = jnp.zeros(max_cells, jnp.int32).at[cell_id].add(1, mode="drop")
    cells_ok = jnp.max(counts) <= cell_capacity
    order = jnp.argsort(cell_id, stable=True)
    sorted_id = cell_id[order]
    starts = jnp.cumsum(counts) - counts
    slot = jnp.arange(n, dtype=jnp.int32) - starts[jnp.clip(sorted_id, 0, max_cells - 1)]
    table = jnp.full((max_cells, cell_capacity), n, jnp.int32)
    table = table.at[sorted_id, slot].set(order.astype(jnp.int32), mode="drop")
    table_nm = jnp.zeros((3, max_cells, cell_capacity), positions_nm.dtype)
    table_nm = table_nm.at[:, sorted_id, slot].set(positions_nm[order].T, mode="drop")
    return table, table_nm, cells_ok


def _half_stencil_within(positions_nm, box_nm, cutoff_nm, cell, per_axis, table, table_nm):
    """Candidates of each atom: the atoms of the 14 half-stencil cells of its cell `cell` [N, 3].

    Returns (nbr [N, 14] flat ids of those cells, within [N, 14, C] bool: the candidate in
    `table[nbr]` is a real atom, of higher index in the atom's own cell, closer than the cutoff).
    """
    n = positions_nm.shape[0]
    n_stencil, max_cells = len(_HALF_STENCIL), table.shape[0]
    nbr = _flat_cell_id(jnp.mod(cell[:, None, :] + jnp.asarray(_HALF_STENCIL), per_axis),
                        per_axis)  # [N, 14]
    nbr = jnp.clip(nbr, 0, max_cells - 1)
    cand = table[nbr]
    own_cell = (jnp.arange(n_stencil) == 0)[None, :, None]
    valid = (cand < n) & (~own_cell | (cand > jnp.arange(n, dtype=jnp.int32)[:, None, None]))
    r2 = 0
    for axis in range(3):  # the dense list's arithmetic: r² of −d equals r² of d bit for bit
        d = positions_nm[:, axis, None, None] - table_nm[axis][nbr]
        d = d - box_nm[axis] * jnp.round(d / box_nm[axis])
        r2 = r2 + d * d
    return nbr, valid & (r2 < cutoff_nm * cutoff_nm)  # [N, 14, C]


def _sorted_pairs(a, b, n_pairs, n: int, capacity: int):
    """(i [P] int32, j [P] int32, mask [P]) of the pairs {a, b} [P] in the first `n_pairs`
    slots, i < j, sorted by (i, j) as the dense list is; padding sorts last, then is (0, 0)."""
    slots = jnp.arange(capacity, dtype=jnp.int32)
    mask = slots < n_pairs
    i = jnp.where(mask, jnp.minimum(a, b), n)
    j = jnp.where(mask, jnp.maximum(a, b), n)
    if (n + 1) ** 2 < 2**31:  # one int32 key i·n + j
        key = jnp.sort(i * n + j)
        i, j = key // n, key % n
    else:
        i, j = jax.lax.sort((i, j), num_keys=2)
    i = jnp.where(mask, i, 0).astype(jnp.int32)
    j = jnp.where(mask, j, 0).astype(jnp.int32)
    return i, j, mask


def _pack_bits(flags, chunks: int = 4):
    """Bool [R, L] -> uint32 words [R, ceil(L/32)], bit b of word w = flags[:, 32 w + b].

    Packed in `chunks` rows at a time under `lax.map`: the loop keeps XLA's CPU backend from
    fusing the producer of `flags` (distances and gathers) into this reduction, which makes
    the whole list several times slower (measured: 5.6 vs 1.9 µs per atom, BENCHMARKS.md).
    """
    n_rows, length = flags.shape
    words_per = -(-length // 32)
    powers = jnp.left_shift(jnp.uint32(1), jnp.arange(32, dtype=jnp.uint32))

    def pack(block):  # [rows, L] -> [rows, W]
        block = jnp.pad(block, ((0, 0), (0, 32 * words_per - length)))
        block = block.reshape(-1, 32)
        words = jnp.sum(jnp.where(block, powers, jnp.uint32(0)), axis=1, dtype=jnp.uint32)
        return words.reshape(-1, words_per)

    flags = jnp.pad(flags, ((0, -n_rows % chunks), (0, 0)))
    words = jax.lax.map(pack, flags.reshape(chunks, -1, length))
    return words.reshape(-1, words_per)[:n_rows]


def _compact_bits(flags, capacity: int):
    """Positions of the True entries of flags [R, L] in row-major order, in `capacity` slots.

    Returns (row [P] int32, col [P] int32, count): slots past `count` hold garbage (in range).
    Each slot finds its 32-bit word by the prefix sum of the words' popcounts and its bit by
    a binary search on popcounts: O(R·L) work, one scatter of R·L/32 words, none of R·L.
    """
    n_rows, length = flags.shape
    words = _pack_bits(flags)  # [R, W]
    words_per = words.shape[1]
    words = words.reshape(-1)
    in_word = jax.lax.population_count(words).astype(jnp.int32)
    first = jnp.cumsum(in_word) - in_word  # slot of each word's first True
    count = jnp.sum(in_word)
    slots = jnp.arange(capacity, dtype=jnp.int32)
    w = jnp.cumsum(jnp.zeros(capacity, jnp.int32).at[first].add(1, mode="drop")) - 1
    w = jnp.clip(w, 0, words.shape[0] - 1)  # the word holding each slot's entry
    k, word = slots - first[w], words[w]  # the entry is the k-th set bit of `word`
    bit = jnp.zeros(capacity, jnp.uint32)
    for step in (16, 8, 4, 2, 1):  # largest x with popcount(bits below x) <= k
        x = bit + jnp.uint32(step)
        below = jax.lax.population_count(word & (jnp.left_shift(jnp.uint32(1), x) - 1))
        bit = jnp.where(below.astype(jnp.int32) <= k, x, bit)
    col = jnp.minimum((w % words_per) * 32 + bit.astype(jnp.int32), length - 1)
    return (w // words_per).astype(jnp.int32), col.astype(jnp.int32), count


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
