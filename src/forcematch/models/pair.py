"""The `pair` model: E = Σ_{i<j} φθ(r_ij) + Σ_i b_{s_i}, a learned pair potential.

    φθ(r) = MLP(radial basis(r)) × smooth_cutoff(r);  b_s: learned energy per atom of species s

The per-atom constants b (initially 0) let the model absorb the fixed per-atom energy shift of
the normalisation (`models.Normalisation`): without them, E − N·shift is not a sum of pair
terms, and fitting energies would distort φ and so the forces.

It can represent any smooth isotropic pair potential (such as the switched Lennard-Jones
reference) exactly, so it shows the accuracy floor of the pipeline. With `n_species` > 1 the
network has one output per unordered species pair (species must then be 0 … n_species−1);
with the default 1, species are ignored.
"""

from __future__ import annotations

import jax.numpy as jnp

from forcematch import space
from forcematch.models.base import NeighbourListModel, poison_on_overflow
from forcematch.models.layers import ACTIVATIONS, BASES, MLP


class PairModel(NeighbourListModel):
    """Learned pair potential; see the module docstring. Implements `models.EnergyModel`."""

    name = "pair"

    def __init__(self, config: dict, cutoff_nm: float, capacity: int | None = None):
        """`config`: the complete `model.pair` options (`config.model_settings("pair", ...)`)."""
        super().__init__(config, cutoff_nm, capacity)
        s = config["n_species"]
        self._mlp = MLP(
            hidden=tuple(config["hidden"]),
            n_out=s * (s + 1) // 2,
            activation=ACTIVATIONS[config["activation"]],
        )
        self._basis = BASES[config["basis"]]

    # -- helpers ---------------------------------------------------------------------------
    def _features(self, r):
        return self._basis(r, self.config["n_basis"], self.config["r_min_nm"], self.cutoff_nm)

    def _pair_type(self, species, i, j):
        s = self.config["n_species"]
        if s == 1:
            return jnp.zeros_like(i)
        a = jnp.minimum(species[i], species[j])
        b = jnp.maximum(species[i], species[j])
        return a * s - a * (a - 1) // 2 + (b - a)  # index of (a, b), a <= b, in the triangle

    # -- EnergyModel interface -------------------------------------------------------------
    def init(self, rng, positions_nm, box_nm, species):
        """Parameters {'params': ...} (float32) for frames shaped like `positions_nm` [N,3]."""
        del box_nm, species
        r = jnp.linspace(0.1, self.cutoff_nm, 4, dtype=jnp.result_type(positions_nm))
        return {
            "mlp": self._mlp.init(rng, self._features(r)),
            "atom_energy": jnp.zeros(self.config["n_species"], jnp.float32),
        }

    def pair_potential(self, params, r, pair_type=None):
        """φθ(r) (model units) for distances r [P] (nm), envelope included; pair_type [P]."""
        out = self._mlp.apply(params["mlp"], self._features(r))
        if pair_type is None:
            phi = out[:, 0]
        else:
            phi = jnp.take_along_axis(out, pair_type[:, None], axis=1)[:, 0]
        return phi * space.smooth_cutoff(r, self.cutoff_nm)

    def energy(self, params, positions_nm, box_nm, species, pairs=None):
        """Σ_{i<j} φθ(r_ij) + Σ_i b_{s_i} (model units); NaN (and NaN gradient) on overflow."""
        i, j, mask, overflow = self._pairs(positions_nm, box_nm, pairs)
        r = space.pair_distances(positions_nm, box_nm, i, j, mask, fill_nm=self.cutoff_nm)
        phi = self.pair_potential(params, r, self._pair_type(jnp.asarray(species), i, j))
        e = jnp.sum(jnp.where(mask, phi, jnp.zeros_like(phi)))
        atom_type = self._species_index(species, positions_nm.shape[0])
        e = e + jnp.sum(params["atom_energy"][atom_type])
        return poison_on_overflow(e, overflow, positions_nm)
