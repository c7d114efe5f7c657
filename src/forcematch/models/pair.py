"""The `pair` model: E = Σ_{i<j} φθ(r_ij) + Σ_i b_{s_i}, a learned pair potential.

    φθ(r) = MLP(radial basis(r)) × smooth_cutoff(r);  b_s: learned energy per atom of species s

The per-atom constants b (initially 0) let the model absorb the fixed per-atom energy shift of
the normalisation (`models.Normalisation`): without them, E − N·shift is not a sum of pair
terms, and fitting energies would distort φ and so the forces.

It can represent any smooth isotropic pair potential (such as the switched Lennard-Jones
reference) exactly, so it shows the accuracy floor of the pipeline. With `n_species` > 1 the
network has one output per unordered species pair (species must then be 0 … n_species−1);
with the default 1, species are ignored.

Flax *linen* is used rather than nnx: linen modules are pure `init`/`apply` functions over a
plain dict of arrays, which is exactly the functional `init`/`energy(params, ...)` interface
the training loop vmaps, differentiates twice and serialises with msgpack; nnx's mutable
objects would have to be split/merged at every such boundary.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from forcematch import space
from forcematch.errors import ForcematchError
from forcematch.models.neighbours import NeighbourListModel

# Smooth activations only: forces are derivatives of the energy and the force loss needs one
# more derivative, so the energy must be (at least) C2 in the positions.
ACTIVATIONS: dict[str, Callable] = {
    "silu": jax.nn.silu,
    "softplus": jax.nn.softplus,
    "tanh": jnp.tanh,
    "gelu": jax.nn.gelu,
}


def merge_config(name: str, defaults: dict, given: dict) -> dict:
    """`given` over `defaults`; unknown keys raise ForcematchError listing the known ones."""
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ForcematchError(
            f"unknown {name} model option(s) {unknown}; known: {', '.join(sorted(defaults))}"
        )
    return {**defaults, **given}


class MLP(nn.Module):
    """Dense network with smooth activations; the output layer starts at zero."""

    hidden: Sequence[int]
    n_out: int
    activation: Callable = jax.nn.silu

    @nn.compact
    def __call__(self, x):
        for width in self.hidden:
            x = self.activation(nn.Dense(width)(x))
        return nn.Dense(self.n_out, kernel_init=nn.initializers.zeros)(x)


def gaussian_basis(r, n_basis: int, r_min_nm: float, cutoff_nm: float):
    """Gaussians exp(-½((r−μ_k)/w)²), centres μ_k evenly on [r_min, cutoff], w = spacing.

    r [P] (nm) -> [P, n_basis].
    """
    mu = jnp.linspace(r_min_nm, cutoff_nm, n_basis, dtype=r.dtype)
    width = (cutoff_nm - r_min_nm) / max(n_basis - 1, 1)
    return jnp.exp(-0.5 * ((r[:, None] - mu) / width) ** 2)


def bessel_basis(r, n_basis: int, r_min_nm: float, cutoff_nm: float):
    """DimeNet radial Bessel functions sin(kπ r/c)/(r/c), k = 1 … n_basis. r [P] -> [P, n]."""
    del r_min_nm
    k = jnp.arange(1, n_basis + 1, dtype=r.dtype)
    x = r[:, None] / cutoff_nm
    return jnp.sin(k * jnp.pi * x) / x


BASES: dict[str, Callable] = {"gaussian": gaussian_basis, "bessel": bessel_basis}


class PairModel(NeighbourListModel):
    """Learned pair potential; see the module docstring. Implements `models.EnergyModel`."""

    name = "pair"
    DEFAULTS: dict = {
        "n_basis": 16,  # radial basis functions
        "hidden": [16, 16],  # widths of the hidden layers
        "activation": "silu",  # one of ACTIVATIONS
        "basis": "gaussian",  # one of BASES
        "r_min_nm": 0.0,  # first Gaussian centre (nm); the last is at the cutoff
        "n_species": 1,  # 1: species ignored; S: one output per unordered species pair
    }

    def __init__(self, config: dict, cutoff_nm: float, capacity: int | None = None):
        cfg = merge_config(self.name, self.DEFAULTS, config)
        cfg["hidden"] = [int(h) for h in cfg["hidden"]]
        cfg["n_basis"] = int(cfg["n_basis"])
        cfg["n_species"] = int(cfg["n_species"])
        cfg["r_min_nm"] = float(cfg["r_min_nm"])
        if cfg["activation"] not in ACTIVATIONS:
            raise ForcematchError(
                f"unknown activation {cfg['activation']!r}; known: {', '.join(ACTIVATIONS)}"
            )
        if cfg["basis"] not in BASES:
            raise ForcematchError(f"unknown basis {cfg['basis']!r}; known: {', '.join(BASES)}")
        if cfg["n_basis"] < 1 or cfg["n_species"] < 1 or any(h < 1 for h in cfg["hidden"]):
            raise ForcematchError(f"pair model sizes must be positive, got {cfg}")
        if not 0.0 <= cfg["r_min_nm"] < cutoff_nm:
            raise ForcematchError(f"r_min_nm must lie in [0, cutoff), got {cfg['r_min_nm']}")
        self.config = cfg
        self.cutoff_nm = float(cutoff_nm)
        self.capacity = None if capacity is None else int(capacity)
        s = cfg["n_species"]
        self._mlp = MLP(
            hidden=tuple(cfg["hidden"]),
            n_out=s * (s + 1) // 2,
            activation=ACTIVATIONS[cfg["activation"]],
        )
        self._basis = BASES[cfg["basis"]]

    # -- helpers ---------------------------------------------------------------------------
    def _features(self, r):
        return self._basis(r, self.config["n_basis"], self.config["r_min_nm"], self.cutoff_nm)

    def _atom_type(self, species, n_atoms: int):
        if self.config["n_species"] == 1:
            return jnp.zeros(n_atoms, jnp.int32)
        return jnp.asarray(species)

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

    def energy(self, params, positions_nm, box_nm, species):
        """Σ_{i<j} φθ(r_ij) + Σ_i b_{s_i} (model units); NaN (and NaN gradient) on overflow."""
        cap = self._capacity(positions_nm.shape[0])
        i, j, mask, overflow = space.neighbour_pairs(
            positions_nm, box_nm, self.cutoff_nm, cap, self.neighbour_method)
        r = space.pair_distances(positions_nm, box_nm, i, j, mask, fill_nm=self.cutoff_nm)
        phi = self.pair_potential(params, r, self._pair_type(jnp.asarray(species), i, j))
        e = jnp.sum(jnp.where(mask, phi, jnp.zeros_like(phi)))
        e = e + jnp.sum(params["atom_energy"][self._atom_type(species, positions_nm.shape[0])])
        # Never silently wrong: an overflowing list poisons the energy and its gradient.
        return e + jnp.where(overflow, jnp.nan, 0.0).astype(e.dtype) * jnp.sum(positions_nm)
