"""Neighbour-list plumbing shared by the model families that sum over pairs within a cutoff."""

from __future__ import annotations

from forcematch import space


class NeighbourListModel:
    """Base of a model with `cutoff_nm` (nm) and `capacity` (pair slots; None: all N(N−1)/2).

    `neighbour_method` is the `space.neighbour_pairs` method: "auto" (dense below
    `space.CELL_MIN_ATOMS` atoms, a cell list above), "dense" or "cell".
    """

    cutoff_nm: float
    capacity: int | None
    neighbour_method = "auto"

    def _capacity(self, n_atoms: int) -> int:
        return self.capacity if self.capacity is not None else max(1, n_atoms * (n_atoms - 1) // 2)

    def overflow(self, positions_nm, box_nm):
        """True when the frame has more pairs within the cutoff than the list holds."""
        cap = self._capacity(positions_nm.shape[0])
        return space.neighbour_pairs(
            positions_nm, box_nm, self.cutoff_nm, cap, self.neighbour_method)[3]
