"""`global_readout`: a deliberately poor graph network, kept as the force-collapse diagnostic.

    E = MLP_out( Σ_{i≠j, r_ij < r_c} MLP_edge(d_ij) )

It makes the three choices that make force-only training collapse towards zero forces:
- raw displacement vectors d_ij as edge features: not rotation invariant, so it must learn
  rotational symmetry from data;
- a hard cutoff (a step at r_c): the energy jumps as pairs cross it, a jump autodiff forces
  never see;
- one global readout of the summed edge embeddings instead of a sum of per-atom energies.

It still sees only displacements, so it is translation invariant and its forces sum to zero.
Under a mean-squared force loss, a model whose forces correlate only weakly (ρ) with the labels
is best rescaled to about ρ times the label spread: this one underfits, and its force spread
shrinks with its correlation (figure `collapse`). Do not use it as a potential.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from forcematch import space
from forcematch.models.pair import ACTIVATIONS, MLP, merge_config


class EdgeNetwork(nn.Module):
    """Dense layers on raw displacements; default (non-zero) initialisation throughout."""

    widths: Sequence[int]
    activation: Callable = jax.nn.silu

    @nn.compact
    def __call__(self, x):
        for width in self.widths:
            x = self.activation(nn.Dense(width)(x))
        return x


class GlobalReadoutModel:
    """Implements `models.EnergyModel`; see the module docstring."""

    name = "global_readout"
    # space.neighbour_pairs method: "auto" (dense list for small systems, cell list for
    # large ones: same pairs, cost O(N)), "dense" or "cell". Not a hyper-parameter.
    neighbour_method = "auto"
    DEFAULTS: dict = {
        "edge_hidden": [16, 16],  # widths of the edge network on raw (dx, dy, dz)
        "readout_hidden": [16],  # widths of the global readout network
        "activation": "silu",
    }

    def __init__(self, config: dict, cutoff_nm: float, capacity: int | None = None):
        cfg = merge_config(self.name, self.DEFAULTS, config)
        cfg["edge_hidden"] = [int(h) for h in cfg["edge_hidden"]]
        cfg["readout_hidden"] = [int(h) for h in cfg["readout_hidden"]]
        self.config = cfg
        self.cutoff_nm = float(cutoff_nm)
        self.capacity = None if capacity is None else int(capacity)
        act = ACTIVATIONS[cfg["activation"]]
        self._edge = EdgeNetwork(widths=tuple(cfg["edge_hidden"]), activation=act)
        self._readout = MLP(hidden=tuple(cfg["readout_hidden"]), n_out=1, activation=act)

    def _pairs(self, positions_nm, box_nm):
        n = positions_nm.shape[0]
        cap = self.capacity if self.capacity is not None else n * (n - 1) // 2
        return space.neighbour_pairs(
            positions_nm, box_nm, self.cutoff_nm, cap, self.neighbour_method)

    def init(self, rng, positions_nm, box_nm, species):
        del species
        d = jnp.zeros((4, 3), jnp.result_type(positions_nm))
        edge_params = self._edge.init(rng, d)
        h = self._edge.apply(edge_params, d).sum(axis=0)
        return {"edge": edge_params, "readout": self._readout.init(rng, h)}

    def energy(self, params, positions_nm, box_nm, species):
        """Scalar energy (model units); NaN on neighbour-list overflow."""
        del species
        i, j, mask, overflow = self._pairs(positions_nm, box_nm)
        d = space.displacement(positions_nm[i], positions_nm[j], box_nm)
        # Both directions of each pair, so the sum is symmetric in i and j; hard cutoff = mask.
        h = self._edge.apply(params["edge"], d) + self._edge.apply(params["edge"], -d)
        pooled = jnp.sum(jnp.where(mask[:, None], h, 0.0), axis=0)
        e = self._readout.apply(params["readout"], pooled)[0]
        return e + jnp.where(overflow, jnp.nan, 0.0).astype(e.dtype) * jnp.sum(positions_nm)

    def overflow(self, positions_nm, box_nm):
        return self._pairs(positions_nm, box_nm)[3]
