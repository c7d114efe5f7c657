"""MD's pair list: every pair within cutoff + skin once, from a half-shell cell list, rebuilt
inside the compiled loop when any atom has moved half the skin since the last build.

    builder = HalfShellPairs(box_nm, cutoff_nm, skin_nm)
    pairs = builder.allocate(positions_nm, capacity_multiplier=1.25)  # host: sizes the list
    pairs = builder.update(positions_nm, pairs)                       # jittable
    i, j = pairs.idx                                                  # [P] each, padding N

The list is JAX MD's `OrderedSparse` format (each pair once, padding index N), and the
engine used `partition.neighbor_list` in that format until the cost of its rebuild was
measured at 10,000 atoms: JAX MD gathers every atom's candidates from all 27 cells around it
and keeps half of them, so it computes each candidate pair twice. This builder takes the
atom's own cell (partners of larger index) and the 13 cells of one half shell, half the
candidates, and ranks the kept ones by cell block (`_ranks_by_block`): a rebuild at 10,000
atoms of liquid argon measured 17–20 against JAX MD's 57 µs per atom on one core
(BENCHMARKS.md), with the identical pair set (tests/test_md_neighbours.py).

Cells are at least cutoff + skin wide, so every pair in range lies in one cell or two
adjacent ones; with fewer than 3 cells along an edge the list takes all pairs (a small box).
Boxes are orthorhombic, edges [3] nm. Capacities are static (array shapes): the cells'
(`PairList.cell_capacity`) and the list's (`idx.shape[1]`), set by `allocate` from the
positions it is given times the capacity multiplier; an update that would need more sets
`overflow`, which stays set: the caller reallocates and reruns (never a silently missing pair).
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np

from forcematch import space

# The 13 cell offsets of a half shell: one of each pair (o, −o) of the 26 neighbour cells.
HALF_SHELL = np.array([o for o in itertools.product((-1, 0, 1), repeat=3) if o > (0, 0, 0)],
                      np.int32)
MIN_PAIR_SLOTS = 16  # a list for a dilute start still has room for a first few pairs


@dataclasses.dataclass(frozen=True)
class PairList:
    """idx [2, P] int32: the pairs (padding N); reference_nm [N, 3]: the positions of the last
    build; overflow: a build needed more slots (pairs or cells) than there are."""

    idx: jax.Array
    reference_nm: jax.Array
    overflow: jax.Array
    cell_capacity: int  # atoms per cell (static); 0 when the list takes all pairs


jax.tree_util.register_dataclass(PairList, data_fields=["idx", "reference_nm", "overflow"],
                                 meta_fields=["cell_capacity"])


class HalfShellPairs:
    """Builds and updates `PairList`s for one box, cutoff and skin (see the module docstring)."""

    def __init__(self, box_nm, cutoff_nm: float, skin_nm: float):
        self.box_nm = np.asarray(box_nm, np.float64).reshape(3)
        self.range_nm = float(cutoff_nm) + float(skin_nm)
        self.skin_nm = float(skin_nm)
        self.cells = np.floor(self.box_nm / self.range_nm).astype(np.int64)  # per edge
        self.all_pairs = bool(self.cells.min() < 3)

    # -- host side ---------------------------------------------------------------------------
    def allocate(self, positions_nm, capacity_multiplier: float = 1.25) -> PairList:
        """A list at `positions_nm` [N, 3] with `capacity_multiplier` × the cell occupancy and
        the pairs found there."""
        positions = jnp.asarray(positions_nm)
        n = positions.shape[0]
        cell_capacity = 0
        if not self.all_pairs:
            wrapped = jnp.mod(positions, self._box(positions))
            occupied = int(jnp.max(jnp.bincount(self._cell_index(wrapped)[1],
                                                length=int(np.prod(self.cells)))))
            cell_capacity = max(int(math.ceil(occupied * capacity_multiplier)), 1)
        found = int(jax.jit(self._count, static_argnums=1)(positions, cell_capacity))
        slots = max(int(math.ceil(found * capacity_multiplier)), MIN_PAIR_SLOTS)
        slots = min(slots, max(n * (n - 1) // 2, 1))
        return self._build(positions, cell_capacity, slots)

    # -- traced ------------------------------------------------------------------------------
    def update(self, positions_nm, pairs: PairList) -> PairList:
        """`pairs` rebuilt at `positions_nm` (same capacities) if any atom has moved more than
        half the skin since its last build, else `pairs`; `overflow` is kept once set."""
        moved = space.displacement(positions_nm, pairs.reference_nm, self._box(positions_nm))
        far = jnp.max(jnp.sum(moved * moved, axis=-1)) > (0.5 * self.skin_nm) ** 2
        rebuilt = jax.lax.cond(
            far, lambda: self._build(positions_nm, pairs.cell_capacity, pairs.idx.shape[1]),
            lambda: pairs)
        return dataclasses.replace(rebuilt, overflow=rebuilt.overflow | pairs.overflow)

    def _box(self, positions_nm):
        return jnp.asarray(self.box_nm, positions_nm.dtype)

    def _cell_index(self, positions_nm):
        """Cell [N, 3] and flat cell index [N] of each atom (positions within [0, edge])."""
        cells = jnp.asarray(self.cells, jnp.int32)
        width = self._box(positions_nm) / cells
        cell = jnp.clip(jnp.floor(positions_nm / width).astype(jnp.int32), 0, cells - 1)
        return cell, self._flat(cell)

    def _flat(self, cell):
        return (cell[..., 0] * self.cells[1] + cell[..., 1]) * self.cells[2] + cell[..., 2]

    def _candidates(self, positions_nm, cell_capacity):
        """(candidates [N, K] atom indices, N on padding; keep [N, K]: within range, each pair
        once), and whether a cell holds more atoms than `cell_capacity`."""
        n = positions_nm.shape[0]
        atom = jnp.arange(n, dtype=jnp.int32)[:, None]
        box = self._box(positions_nm)
        # r² one component at a time (arrays [N, K] of each): measured 13× faster on the CPU
        # than [N, K, 3] displacements, whose gather XLA fuses into the sum badly.
        r2 = 0.0
        if self.all_pairs:
            candidates = jnp.broadcast_to(atom.T, (n, n))
            for k in range(3):
                delta = positions_nm[None, :, k] - positions_nm[:, k, None]
                r2 = r2 + (delta - box[k] * jnp.round(delta / box[k])) ** 2
            own_cell, overflow = jnp.ones(n, bool), jnp.zeros((), bool)
        else:
            x = jnp.mod(positions_nm, box)
            cell, flat = self._cell_index(x)
            members, overflow = _cell_members(flat, int(np.prod(self.cells)), cell_capacity)
            # The atom's own cell, then the half shell; `image` moves a neighbour cell's atoms
            # next to the atom's cell across the box's faces (no minimum image per pair).
            around = cell[:, None, :] + jnp.asarray(np.vstack([[0, 0, 0], HALF_SHELL]))
            image = jnp.floor_divide(around, jnp.asarray(self.cells, jnp.int32)) * box
            around = self._flat(around % jnp.asarray(self.cells, jnp.int32))  # [N, 14]
            candidates = members[around].reshape(n, -1)
            padded = jnp.concatenate([x, x[:1]])  # padding N reads atom 0: masked below
            for k in range(3):
                member_nm = padded[:, k][members]  # [cells, capacity]
                delta = member_nm[around] + image[:, :, k, None] - x[:, k, None, None]
                r2 = r2 + (delta * delta).reshape(n, -1)
            own_cell = jnp.arange(candidates.shape[1]) < cell_capacity
        keep = ((candidates < n) & (r2 < self.range_nm**2)
                & jnp.where(own_cell, candidates > atom, True))
        return candidates, keep, overflow

    def _count(self, positions_nm, cell_capacity):
        return jnp.sum(self._candidates(positions_nm, cell_capacity)[1])

    def _build(self, positions_nm, cell_capacity: int, slots: int) -> PairList:
        """The list at `positions_nm` with `slots` pair slots: the kept candidates compacted in
        order, the rest padding."""
        n = positions_nm.shape[0]
        candidates, keep, overflow = self._candidates(positions_nm, cell_capacity)
        rank, found = (_ranks(keep) if self.all_pairs
                       else _ranks_by_block(keep, cell_capacity))
        slot = jnp.where(keep, rank - 1, slots).ravel()  # beyond the list: dropped
        senders = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32)[:, None], candidates.shape)
        idx = jnp.stack([jnp.full(slots + 1, n, jnp.int32).at[slot].set(k.ravel())[:slots]
                         for k in (candidates.astype(jnp.int32), senders)])
        overflow = overflow | (found > slots)
        return PairList(idx, positions_nm, overflow, cell_capacity)


def _ranks(keep):
    """([N, K] int32: the inclusive count of kept candidates up to each one in row-major order,
    the count of all)."""
    rank = jnp.cumsum(keep.ravel().astype(jnp.int32))
    return rank.reshape(keep.shape), rank[-1]


def _ranks_by_block(keep, block: int):
    """`_ranks` of candidates in blocks of `block` (a cell's slots): within a block by a
    product with a triangular matrix (exact: counts below 2^24 in float32), then the blocks'
    and rows' offsets by cumulative sums over blocks and rows. On the CPU the build measured
    1.75× faster than one cumulative sum over all N·K candidates (BENCHMARKS.md)."""
    n = keep.shape[0]
    blocks = keep.reshape(n, -1, block).astype(jnp.float32)
    upper = jnp.triu(jnp.ones((block, block), jnp.float32))  # [k, l] = 1 for k <= l
    within = (blocks @ upper).astype(jnp.int32)  # [N, B, block]
    per_block = within[:, :, -1]
    block_offset = jnp.cumsum(per_block, axis=1) - per_block
    per_row = jnp.sum(per_block, axis=1)
    row_offset = jnp.cumsum(per_row) - per_row
    rank = within + block_offset[:, :, None] + row_offset[:, None, None]
    return rank.reshape(keep.shape), row_offset[-1] + per_row[-1]


def _cell_members(flat_cell, n_cells: int, capacity: int):
    """[n_cells, capacity] atom indices of each cell (N on padding) from the atoms' flat cell
    indices [N], by sorting; and whether a cell holds more than `capacity`."""
    n = flat_cell.shape[0]
    order = jnp.argsort(flat_cell).astype(jnp.int32)
    counts = jnp.bincount(flat_cell, length=n_cells)
    first = jnp.cumsum(counts) - counts
    k = jnp.arange(capacity)
    members = jnp.where(k < counts[:, None], order[jnp.minimum(first[:, None] + k, n - 1)], n)
    return members, jnp.max(counts) > capacity
