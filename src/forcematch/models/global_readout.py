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

import jax
import jax.numpy as jnp

from forcematch import space
from forcematch.models.base import NeighbourListModel, poison_on_overflow
from forcematch.models.layers import ACTIVATIONS, MLP


class GlobalReadoutModel(NeighbourListModel):
    """Implements `models.EnergyModel`; see the module docstring."""

    name = "global_readout"

    def __init__(self, config: dict, cutoff_nm: float, capacity: int | None = None):
        """`config`: the complete `model.global_readout` options (`config.model_settings`)."""
        super().__init__(config, cutoff_nm, capacity)
        act = ACTIVATIONS[config["activation"]]
        # Dense layers on raw displacements, default (non-zero) initialisation throughout.
        self._edge = MLP(hidden=tuple(config["edge_hidden"]), n_out=None, activation=act)
        self._readout = MLP(hidden=tuple(config["readout_hidden"]), n_out=1, activation=act)

    def init(self, rng, positions_nm, box_nm, species):
        del species
        # One key per network: with a shared key, layers of equal shape in the two networks
        # would start with identical weights.
        edge_key, readout_key = jax.random.split(rng)
        d = jnp.zeros((4, 3), jnp.result_type(positions_nm))
        edge_params = self._edge.init(edge_key, d)
        h = self._edge.apply(edge_params, d).sum(axis=0)
        return {"edge": edge_params, "readout": self._readout.init(readout_key, h)}

    def energy(self, params, positions_nm, box_nm, species):
        """Scalar energy (model units); NaN on neighbour-list overflow."""
        del species
        i, j, mask, overflow = self._pairs(positions_nm, box_nm)
        d = space.displacement(positions_nm[i], positions_nm[j], box_nm)
        # Both directions of each pair, so the sum is symmetric in i and j; hard cutoff = mask.
        h = self._edge.apply(params["edge"], d) + self._edge.apply(params["edge"], -d)
        pooled = jnp.sum(jnp.where(mask[:, None], h, 0.0), axis=0)
        e = self._readout.apply(params["readout"], pooled)[0]
        return poison_on_overflow(e, overflow, positions_nm)
