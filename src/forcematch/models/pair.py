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

import math

import jax
import jax.numpy as jnp

from forcematch import space
from forcematch.errors import ForcematchError
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

    def pair_potentials(self, params, r):
        """φθ(r) [P, T] (model units) of every species pair type T at distances r [P] (nm),
        envelope included."""
        out = self._mlp.apply(params["mlp"], self._features(r))
        return out * space.smooth_cutoff(r, self.cutoff_nm)[:, None]

    def pair_potential(self, params, r, pair_type=None):
        """φθ(r) (model units) for distances r [P] (nm), envelope included; pair_type [P]."""
        out = self.pair_potentials(params, r)
        if pair_type is None:
            return out[:, 0]
        return jnp.take_along_axis(out, pair_type[:, None], axis=1)[:, 0]

    def energy(self, params, positions_nm, box_nm, species, pairs=None):
        """Σ_{i<j} φθ(r_ij) + Σ_i b_{s_i} (model units); NaN (and NaN gradient) on overflow."""
        i, j, mask, overflow = self._pairs(positions_nm, box_nm, pairs)
        r = space.pair_distances(positions_nm, box_nm, i, j, mask, fill_nm=self.cutoff_nm)
        phi = self.pair_potential(params, r, self._pair_type(jnp.asarray(species), i, j))
        e = jnp.sum(jnp.where(mask, phi, jnp.zeros_like(phi)))
        atom_type = self._species_index(species, positions_nm.shape[0])
        e = e + jnp.sum(params["atom_energy"][atom_type])
        return poison_on_overflow(e, overflow, positions_nm)


TABLE_BELOW_CLOSEST = 0.95  # a training table starts at this fraction of the closest pair


def loss_model(model, closest_pair_nm: float, dr_nm: float | None):
    """The model a training loss evaluates: a `PairModel` through its table from
    TABLE_BELOW_CLOSEST × the data's closest pair (nm) at spacing `dr_nm`
    (`train.pair_table_dr_nm`); the model itself for any other family, for `dr_nm` None, or
    when no pair lies within the cutoff."""
    if not isinstance(model, PairModel) or dr_nm is None:
        return model
    r_lo_nm = TABLE_BELOW_CLOSEST * closest_pair_nm
    return TabulatedPair(model, r_lo_nm, dr_nm) if r_lo_nm < model.cutoff_nm else model


class TabulatedPair:
    """A `PairModel` whose φθ is evaluated through a table: what the training loss uses.

    Each training step evaluates the network at the nodes r_k = r_lo + k·dr (and midpoints) up
    to the cutoff, once for the whole batch, instead of at each of the batch's pair slots (21k
    for 8 frames of 100 argon atoms); every pair then reads the cubic of its interval. The
    cubic matches φθ and φθ' at both nodes, with the rise φθ(r_k+1) − φθ(r_k) taken by Simpson's
    rule from φθ' at the nodes and the midpoint: built from derivatives, the float32
    coefficients avoid the cancellation between the large φ of neighbouring nodes that would
    otherwise dominate the forces on a fine grid. Energies, forces (−∇E by autodiff of the
    cubics) and the loss's gradient follow the network's to float32 round-off at dr = 1 pm
    (BENCHMARKS.md, "The pair network's training through a table"). Distances are clipped to
    [r_lo, cutoff]: r_lo must lie below every pair of the frames it is used on. The parameters
    are the model's; validation, MD and export use the model itself."""

    def __init__(self, model: PairModel, r_lo_nm: float, dr_nm: float):
        if not 0 < r_lo_nm < model.cutoff_nm:
            raise ForcematchError(f"pair table: r_lo {r_lo_nm} nm must lie in (0, cutoff "
                                  f"{model.cutoff_nm} nm)")
        if not dr_nm > 0:
            raise ForcematchError(f"pair table: spacing must be positive, got {dr_nm} nm")
        self.model, self.r_lo_nm, self.dr_nm = model, float(r_lo_nm), float(dr_nm)
        self.n_intervals = max(1, math.ceil((model.cutoff_nm - r_lo_nm) / dr_nm))
        self.note = (f", loss through a table of φ: {self.n_intervals} cubics from "
                     f"{self.r_lo_nm:.4f} nm to the cutoff (dr {self.dr_nm} nm)")

    def coefficients(self, params):
        """c [K, T, 4] (model units) of the cubic p(t) = c0 + c1 t + c2 t² + c3 t³ of each
        interval k and pair type, t = (r − r_k)/dr in [0, 1]."""
        k, dr = self.n_intervals, self.dr_nm
        dtype = params["atom_energy"].dtype  # float32 in training; float64 where checked
        nodes = self.r_lo_nm + dr * jnp.arange(k + 1, dtype=dtype)
        points = jnp.concatenate([nodes, nodes[:-1] + 0.5 * dr])
        phi, dphi = jax.jvp(lambda r: self.model.pair_potentials(params, r), (points,),
                            (jnp.ones_like(points),))
        slope_lower, slope_upper = dr * dphi[:k], dr * dphi[1 : k + 1]  # dφ/dt
        rise = (slope_lower + 4 * dr * dphi[k + 1 :] + slope_upper) / 6  # Simpson
        return jnp.stack([phi[:k], slope_lower, 3 * rise - 2 * slope_lower - slope_upper,
                          -2 * rise + slope_lower + slope_upper], axis=-1)

    def neighbour_pairs(self, positions_nm, box_nm):
        return self.model.neighbour_pairs(positions_nm, box_nm)

    def energy(self, params, positions_nm, box_nm, species, pairs=None):
        """`PairModel.energy` with φθ through the table."""
        model = self.model
        i, j, mask, overflow = model._pairs(positions_nm, box_nm, pairs)
        r = space.pair_distances(positions_nm, box_nm, i, j, mask, fill_nm=model.cutoff_nm)
        x = (jnp.clip(r, self.r_lo_nm, model.cutoff_nm) - self.r_lo_nm) / self.dr_nm
        interval = jnp.clip(jnp.floor(x), 0, self.n_intervals - 1).astype(jnp.int32)
        t = x - interval
        c = self.coefficients(params)[interval, model._pair_type(jnp.asarray(species), i, j)]
        phi = c[:, 0] + t * (c[:, 1] + t * (c[:, 2] + t * c[:, 3]))
        e = jnp.sum(jnp.where(mask, phi, jnp.zeros_like(phi)))
        atom_type = model._species_index(species, positions_nm.shape[0])
        e = e + jnp.sum(params["atom_energy"][atom_type])
        return poison_on_overflow(e, overflow, positions_nm)
