"""Building blocks shared by the model families: smooth activations, radial bases and the MLP.

The config schema's `$defs/activation` and `$defs/basis` enums list exactly the keys of
`ACTIVATIONS` and `BASES` (a test checks it), so a config names them by these keys.

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


def shifted_softplus(x):
    """SchNet's ssp(x) = softplus(x) − log 2 (smooth, ssp(0) = 0)."""
    return jax.nn.softplus(x) - jnp.log(2.0).astype(jnp.result_type(x))


# Smooth activations only: forces are derivatives of the energy and the force loss needs one
# more derivative, so the energy must be (at least) C2 in the positions.
ACTIVATIONS: dict[str, Callable] = {
    "silu": jax.nn.silu,
    "softplus": jax.nn.softplus,
    "ssp": shifted_softplus,
    "tanh": jnp.tanh,
    "gelu": jax.nn.gelu,
}


class MLP(nn.Module):
    """Dense layers with a smooth activation after each hidden width, then an output layer of
    `n_out` units that starts at zero. With `n_out` None there is no output layer: the network
    returns the activations of its last hidden layer (default initialisation throughout)."""

    hidden: Sequence[int]
    n_out: int | None
    activation: Callable = jax.nn.silu

    @nn.compact
    def __call__(self, x):
        for width in self.hidden:
            x = self.activation(nn.Dense(width)(x))
        if self.n_out is None:
            return x
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
