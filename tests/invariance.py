"""Shared by the model tests: the liquid-like frames, each family's small configuration and
random parameters (`setup64`), and the symmetry checks every family must pass."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np

from forcematch.model_factory import build_model
from forcematch.models import Normalisation, cast_params, energy_and_forces_fn

BOX = 1.2  # nm
CUTOFF = 0.55  # nm
N = 32

# The configurations the float64 tests use (missing keys: the schema defaults).
SMALL = {
    "pair": {},
    "spline": {"knot_spacing_nm": 0.02},
    "atomic": {"n_radial": 8, "n_angular": 3, "l_max": 3, "hidden": [16, 16]},
    "mpnn": {"features": 8, "n_basis": 8, "filter_hidden": [8], "readout_hidden": [8]},
}


def liquid_like(seed: int, n_cells: int = 2, box: float = BOX, jitter: float = 0.03):
    """FCC lattice (4 n_cells³ atoms) in a cubic box, randomly displaced, wrapped: [N, 3] nm."""
    cell = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    grid = np.array(list(itertools.product(range(n_cells), repeat=3)))
    pos = (grid[:, None, :] + cell[None]).reshape(-1, 3) * box / n_cells
    rng = np.random.default_rng(seed)
    return (pos + rng.normal(0, jitter, pos.shape)) % box


def random_pair_params(model, seed=0, scale=0.3):
    """Initialised parameters with every leaf replaced by N(0, scale²) noise (non-trivial φ)."""
    params = model.init(jax.random.PRNGKey(seed), jnp.zeros((N, 3)), jnp.full(3, BOX),
                        jnp.zeros(N, jnp.int32))
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
    leaves = [scale * jax.random.normal(k, leaf.shape, leaf.dtype) for k, leaf in zip(keys, leaves,
                                                                                     strict=True)]
    return jax.tree.unflatten(tree, leaves)


def random_atomic_params(model, seed=0, scale=0.3, n_atoms=N):
    """Parameters initialised on a liquid-like frame, network weights and per-species
    constants replaced by N(0, scale²) noise (the descriptor standardisation is kept)."""
    params = model.init(jax.random.PRNGKey(seed), jnp.asarray(liquid_like(seed)),
                        jnp.full(3, BOX), jnp.zeros(n_atoms, jnp.int32))
    keys = iter(jax.random.split(jax.random.PRNGKey(seed + 1), 64))

    def noise(tree):
        return jax.tree.map(lambda x: scale * jax.random.normal(next(keys), x.shape, x.dtype),
                            tree)

    return dict(params, mlp=noise(params["mlp"]), atom_energy=noise(params["atom_energy"]))


def random_mpnn_params(model, seed=0, scale=0.3):
    """Initialised parameters with every trainable leaf replaced by N(0, scale²) noise."""
    params = model.init(
        jax.random.PRNGKey(seed),
        jnp.asarray(liquid_like(seed)),
        jnp.full(3, BOX),
        jnp.zeros(N, jnp.int32),
    )
    leaves, tree = jax.tree.flatten(params["net"])
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
    leaves = [
        scale * jax.random.normal(k, leaf.shape, leaf.dtype)
        for k, leaf in zip(keys, leaves, strict=True)
    ]
    return dict(
        params,
        net=jax.tree.unflatten(tree, leaves),
        atom_energy=jnp.full_like(params["atom_energy"], 0.7),
    )


def random_spline_params(model, seed=0, scale=0.3):
    """Spline coefficients of a smooth random φ (three cosine modes with N(0, scale²)
    amplitudes over the grid: independent noise per knot would make φ″″ so large that
    finite differences lose their accuracy) and N(0, scale²) per-species constants."""
    params = model.init(jax.random.PRNGKey(seed), None, None, None)
    rng = np.random.default_rng(seed)
    pairs, width = params["coefficients"].shape
    x = np.linspace(0.0, 1.0, width)
    amplitudes = rng.normal(0.0, scale, (pairs, 3))
    coefficients = sum(amplitudes[:, [m]] * np.cos((m + 1) * np.pi * x) for m in range(3))
    return {"coefficients": jnp.asarray(coefficients, jnp.float32),
            "atom_energy": jnp.asarray(rng.normal(0.0, scale, params["atom_energy"].shape),
                                       jnp.float32)}


RANDOM_PARAMS = {"pair": random_pair_params, "spline": random_spline_params,
                 "atomic": random_atomic_params, "mpnn": random_mpnn_params}


def setup64(family, seed=0, model_config=None):
    """A family's model (SMALL over the defaults, then `model_config`), random float64
    parameters, a liquid-like float64 frame and the jitted (E, F) of Normalisation(41, −5)."""
    model = build_model(family, {**SMALL[family], **(model_config or {})}, CUTOFF)
    params = cast_params(RANDOM_PARAMS[family](model, seed), jnp.float64)
    pos = jnp.asarray(liquid_like(seed + 10), jnp.float64)
    box = jnp.full(3, BOX, jnp.float64)
    species = jnp.zeros(N, jnp.int32)
    ef = jax.jit(energy_and_forces_fn(model, Normalisation(41.0, -5.0)))
    return model, params, pos, box, species, ef


def rel_net_force(f) -> float:
    """|Σ_i F_i| / Σ_i |F_i|: 0 for forces that cancel, 1 if all point the same way."""
    f = np.asarray(f, np.float64)
    return float(np.linalg.norm(f.sum(axis=0)) / np.linalg.norm(f, axis=1).sum())


def assert_rotation_invariant(ef, params, pos, box, species, atol_rel):
    """90° about each axis of a cubic box maps the lattice of images onto itself: the energy is
    unchanged and the forces rotate with the positions."""
    e0, f0 = ef(params, pos, box, species)
    for axis in range(3):
        rot = np.eye(3)
        a, b = [k for k in range(3) if k != axis]
        rot[[a, a, b, b], [a, b, a, b]] = [0.0, -1.0, 1.0, 0.0]
        rot = jnp.asarray(rot)
        e1, f1 = ef(params, pos @ rot.T, box, species)
        np.testing.assert_allclose(e1, e0, rtol=1e-12)
        np.testing.assert_allclose(f1, f0 @ rot.T, atol=atol_rel * float(jnp.abs(f0).max()))


def assert_permutation_and_image_invariant(ef, params, pos, box, species, box_nm, atol_rel):
    """Relabelling atoms permutes the forces; moving atoms by box vectors changes nothing."""
    e0, f0 = ef(params, pos, box, species)
    perm = np.random.default_rng(0).permutation(pos.shape[0])
    e1, f1 = ef(params, pos[perm], box, species)
    np.testing.assert_allclose(e1, e0, rtol=1e-12)
    np.testing.assert_allclose(f1, f0[perm], atol=atol_rel * float(jnp.abs(f0).max()))
    shifted = pos.at[5].add(jnp.array([box_nm, -2 * box_nm, 0.0])).at[17].add(
        jnp.array([0, 0, box_nm]))
    e2, f2 = ef(params, shifted, box, species)
    np.testing.assert_allclose(e2, e0, rtol=1e-12)
    np.testing.assert_allclose(f2, f0, atol=atol_rel * float(jnp.abs(f0).max()))
