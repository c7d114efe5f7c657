"""What every model family provides (`EnergyModel`), and the neighbour-list plumbing shared by
the families that sum over pairs within a cutoff (`NeighbourListModel`)."""

from __future__ import annotations

from typing import Any, Protocol

import jax
import jax.numpy as jnp

from forcematch import space
from forcematch.errors import ForcematchError

Params = Any


class EnergyModel(Protocol):
    """What every model family provides. Arrays are single frames; batch with `predict_fn`."""

    name: str
    config: dict  # the full hyper-parameters, defaults filled in (JSON-serialisable)
    cutoff_nm: float
    capacity: int | None  # neighbour-list slots; None = all N(N-1)/2 pairs
    neighbour_method: str  # space.neighbour_pairs method: "auto" (default), "dense" or "cell"

    def init(self, rng, positions_nm, box_nm, species) -> Params: ...

    def energy(self, params, positions_nm, box_nm, species, pairs=None) -> jax.Array:
        """Scalar energy in model units; NaN (energy and its gradient) on neighbour overflow.
        `pairs` (i [P], j [P], N on padding): a given pair list, e.g. MD's list with a skin."""
        ...

    def neighbour_pairs(self, positions_nm, box_nm) -> tuple:
        """(i [P], j [P], mask [P], overflow) of the model's own pair search."""
        ...

    def overflow(self, positions_nm, box_nm) -> jax.Array:
        """True when the frame has more pairs within the cutoff than `capacity` (or, with the
        cell list, a cell holds more atoms than its static capacity)."""
        ...


def poison_on_overflow(energy, overflow, positions_nm):
    """`energy` (any shape) where `overflow` is False; NaN, with a NaN gradient with respect to
    `positions_nm`, where it is True. Never silently wrong: an overflowing neighbour list
    poisons the energy and its forces instead of dropping pairs."""
    return energy + jnp.where(overflow, jnp.nan, 0.0).astype(energy.dtype) * jnp.sum(positions_nm)


def pairs_within(positions_nm, box_nm, cutoff_nm, i, j):
    """(i [P], j [P], mask [P], overflow=False) of a given pair list, e.g. MD's list with a skin:
    the form `space.neighbour_pairs` returns.

    i, j [P] index atoms, with N (the atom count) on padding slots. Padding becomes (0, 0);
    mask is True for real pairs closer than `cutoff_nm`, as `neighbour_pairs` returns them.
    """
    n = positions_nm.shape[0]
    real = (i < n) & (j < n) & (i != j)
    i = jnp.where(real, i, 0).astype(jnp.int32)
    j = jnp.where(real, j, 0).astype(jnp.int32)
    d = space.displacement(positions_nm[i], positions_nm[j], box_nm)
    mask = real & (jnp.sum(d * d, axis=-1) < cutoff_nm**2)
    return i, j, mask, jnp.asarray(False)



class NeighbourListModel:
    """Base of a model with hyper-parameters `config` (complete: `forcematch.config.
    model_settings` fills the defaults), `cutoff_nm` (nm) and `capacity` (pair slots; None: all
    N(N−1)/2).

    `neighbour_method` is the `space.neighbour_pairs` method: "auto" (dense below
    `space.CELL_MIN_ATOMS` atoms, a cell list above), "dense" or "cell". It is not a
    hyper-parameter: the pairs are the same either way.
    """

    name: str
    neighbour_method = "auto"

    def __init__(self, config: dict, cutoff_nm: float, capacity: int | None = None):
        self.config = config
        self.cutoff_nm = float(cutoff_nm)
        self.capacity = None if capacity is None else int(capacity)
        r_min = config.get("r_min_nm")
        if r_min is not None and not 0.0 <= r_min < self.cutoff_nm:
            raise ForcematchError(
                f"{self.name} model: r_min_nm must lie in [0, cutoff), got {r_min} with a cutoff "
                f"of {self.cutoff_nm} nm"
            )

    def _capacity(self, n_atoms: int) -> int:
        return self.capacity if self.capacity is not None else max(1, n_atoms * (n_atoms - 1) // 2)

    def _pairs(self, positions_nm, box_nm, pairs=None):
        """(i [P], j [P], mask [P], overflow) of `space.neighbour_pairs`, P = the capacity.

        `pairs` (i [P], j [P], index N on padding), e.g. an MD neighbour list with a skin,
        replaces the search: mask is then "a real pair within the cutoff", overflow False (the
        list's owner checks its own overflow).
        """
        if pairs is not None:
            return pairs_within(positions_nm, box_nm, self.cutoff_nm, *pairs)
        cap = self._capacity(positions_nm.shape[0])
        return space.neighbour_pairs(
            positions_nm, box_nm, self.cutoff_nm, cap, self.neighbour_method)

    def _species_index(self, species, n_atoms: int):
        """Index [N] into per-species parameters: all 0 when `n_species` is 1 (ignored)."""
        if self.config["n_species"] == 1:
            return jnp.zeros(n_atoms, jnp.int32)
        return jnp.asarray(species, jnp.int32)

    def neighbour_pairs(self, positions_nm, box_nm):
        """(i [P], j [P], mask [P], overflow) of `space.neighbour_pairs` at the capacity."""
        return self._pairs(positions_nm, box_nm)

    def overflow(self, positions_nm, box_nm):
        """True when the frame has more pairs within the cutoff than the list holds."""
        return self._pairs(positions_nm, box_nm)[3]
