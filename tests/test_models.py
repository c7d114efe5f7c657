"""space, models and losses: periodic geometry, neighbour lists, invariances, smoothness, FD."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from invariance import assert_permutation_and_image_invariant, assert_rotation_invariant

from forcematch import losses, space
from forcematch.config import schema
from forcematch.errors import ForcematchError
from forcematch.models import (
    MODELS,
    Normalisation,
    build_model,
    cast_params,
    energy_and_forces_fn,
    energy_fn,
    forces_fn,
    predict_fn,
)

BOX = 1.2  # nm
CUTOFF = 0.55  # nm
N = 32


def liquid_like(seed: int, n_cells: int = 2, box: float = BOX, jitter: float = 0.03):
    """FCC lattice (4 n_cells³ atoms) in a cubic box, randomly displaced, wrapped: [N, 3] nm."""
    cell = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    grid = np.array(list(itertools.product(range(n_cells), repeat=3)))
    pos = (grid[:, None, :] + cell[None]).reshape(-1, 3) * box / n_cells
    rng = np.random.default_rng(seed)
    return (pos + rng.normal(0, jitter, pos.shape)) % box


def brute_force_pairs(pos, box, cutoff):
    n = len(pos)
    out = set()
    for i in range(n):
        for j in range(i + 1, n):
            d = pos[i] - pos[j]
            d -= box * np.round(d / box)
            if np.sqrt(d @ d) < cutoff:
                out.add((i, j))
    return out


def random_params(model, seed=0, scale=0.3):
    """Initialised parameters with every leaf replaced by N(0, scale²) noise (non-trivial φ)."""
    params = model.init(jax.random.PRNGKey(seed), jnp.zeros((N, 3)), jnp.full(3, BOX),
                        jnp.zeros(N, jnp.int32))
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
    leaves = [scale * jax.random.normal(k, leaf.shape, leaf.dtype) for k, leaf in zip(keys, leaves,
                                                                                     strict=True)]
    return jax.tree.unflatten(tree, leaves)


@pytest.fixture
def x64():
    """Run a test body with 64-bit JAX, restoring the global setting afterwards."""
    with jax.enable_x64(True):
        yield


# ---------------------------------------------------------------------------------------------
# space


def test_displacement_minimum_image_across_boundary():
    box = jnp.array([1.0, 2.0, 3.0])
    d = space.displacement(jnp.array([0.05, 1.95, 0.1]), jnp.array([0.95, 0.05, 2.9]), box)
    np.testing.assert_allclose(d, [0.1, -0.1, 0.2], atol=1e-6)
    rng = np.random.default_rng(0)
    a, b = (rng.uniform(0, 1, (50, 3)) * np.asarray(box) for _ in range(2))
    d = np.asarray(space.displacement(a, b, box))
    # brute force over the 27 neighbouring images
    shifts = np.array(list(itertools.product((-1, 0, 1), repeat=3))) * np.asarray(box)
    cand = (a - b)[:, None, :] + shifts[None]
    best = cand[np.arange(50), np.argmin(np.linalg.norm(cand, axis=-1), axis=1)]
    np.testing.assert_allclose(d, best, atol=1e-5)


def test_neighbour_pairs_match_brute_force():
    pos = liquid_like(1)
    box = np.full(3, BOX)
    expected = brute_force_pairs(pos, box, CUTOFF)
    cap = len(expected) + 37
    i, j, mask, overflow = jax.jit(space.neighbour_pairs, static_argnums=(2, 3))(
        jnp.asarray(pos), jnp.asarray(box), CUTOFF, cap)
    i, j, mask = np.asarray(i), np.asarray(j), np.asarray(mask)
    assert not bool(overflow)
    assert i.shape == (cap,) and mask.sum() == len(expected)
    assert set(zip(i[mask].tolist(), j[mask].tolist(), strict=True)) == expected
    assert np.all(i[~mask] == 0) and np.all(j[~mask] == 0)
    assert space.count_pairs(pos[None], box[None], CUTOFF)[0] == len(expected)


def test_neighbour_overflow_flag_and_capacity_estimate():
    frames = np.stack([liquid_like(s) for s in range(4)])
    box = np.full((4, 3), BOX)
    counts = space.count_pairs(frames, box, CUTOFF)
    cap = space.estimate_capacity(frames, box, CUTOFF)
    assert counts.max() * 1.2 <= cap <= N * (N - 1) // 2 and cap % 8 == 0
    assert space.estimate_capacity(frames, box, 10.0) == N * (N - 1) // 2  # never above all pairs
    _, _, mask, overflow = space.neighbour_pairs(jnp.asarray(frames[0]), jnp.asarray(box[0]),
                                                 CUTOFF, int(counts[0]) - 1)
    assert bool(overflow) and bool(mask.all())
    assert not bool(space.neighbour_pairs(jnp.asarray(frames[0]), jnp.asarray(box[0]), CUTOFF,
                                          int(counts[0]))[3])


def test_padded_pairs_have_finite_zero_gradient():
    pos = jnp.asarray(liquid_like(2))
    box = jnp.full(3, BOX)
    i, j, mask, _ = space.neighbour_pairs(pos, box, CUTOFF, 400)  # many padded (0, 0) slots
    assert not bool(mask.all())
    g = jax.grad(lambda p: jnp.sum(space.pair_distances(p, box, i, j, mask)))(pos)
    assert np.isfinite(np.asarray(g)).all()
    model = build_model("pair", {}, CUTOFF, capacity=400)
    params = random_params(model)
    f = forces_fn(model, Normalisation())(params, pos, box, jnp.zeros(N, jnp.int32))
    assert np.isfinite(np.asarray(f)).all() and float(jnp.abs(f).max()) > 0


def test_overflow_poisons_energy_and_forces():
    pos = jnp.asarray(liquid_like(3))
    box = jnp.full(3, BOX)
    model = build_model("pair", {}, CUTOFF, capacity=8)
    params = random_params(model)
    species = jnp.zeros(N, jnp.int32)
    e, f = energy_and_forces_fn(model, Normalisation())(params, pos, box, species)
    assert bool(model.overflow(pos, box))
    assert np.isnan(float(e)) and np.isnan(np.asarray(f)).all()


def test_smooth_cutoff_envelope_is_c2():
    f = lambda r: space.smooth_cutoff(r, 0.5)  # noqa: E731
    d1, d2 = jax.grad(f), jax.grad(jax.grad(f))
    assert float(f(0.0)) == 1.0
    for r in (0.5, 0.5 - 1e-7, 0.6):
        assert abs(float(f(r))) < 1e-6 and abs(float(d1(r))) < 1e-4 and abs(float(d2(r))) < 1e-2
    r = jnp.linspace(0.0, 0.6, 601)
    vals = np.asarray(f(r))
    assert np.all(np.diff(vals) <= 1e-7) and vals.min() >= -1e-7


# ---------------------------------------------------------------------------------------------
# models: registry, wrapper


def test_registry_and_config_errors():
    assert "pair" in MODELS
    # the config schema offers exactly the registered families
    train_model = schema()["properties"]["train"]["properties"]["model"]["enum"]
    sweep_models = schema()["properties"]["sweep"]["properties"]["models"]["items"]["enum"]
    assert sorted(train_model) == sorted(sweep_models) == sorted(MODELS)
    with pytest.raises(ForcematchError, match="known models: .*pair"):
        build_model("nope", {}, CUTOFF)
    with pytest.raises(ForcematchError, match="n_basis"):
        build_model("pair", {"n_bassis": 8}, CUTOFF)
    with pytest.raises(ForcematchError, match="activation"):
        build_model("pair", {"activation": "relu"}, CUTOFF)
    model = build_model("pair", {"hidden": [8]}, CUTOFF)
    assert model.config["hidden"] == [8] and model.config["n_basis"] == 16


def test_normalisation_wrapper_and_batched_predict():
    model = build_model("pair", {"n_basis": 8, "hidden": [16, 16]}, CUTOFF)
    params = random_params(model)
    norm = Normalisation(energy_scale=37.0, energy_shift_per_atom=-4.5)
    frames = jnp.asarray(np.stack([liquid_like(s) for s in range(3)]))
    boxes = jnp.full((3, 3), BOX)
    species = jnp.zeros(N, jnp.int32)
    raw = model.energy(params, frames[0], boxes[0], species)
    e = energy_fn(model, norm)(params, frames[0], boxes[0], species)
    np.testing.assert_allclose(e, 37.0 * raw - 4.5 * N, rtol=1e-5)
    f = forces_fn(model, norm)(params, frames[0], boxes[0], species)
    g = jax.grad(model.energy, argnums=1)(params, frames[0], boxes[0], species)
    np.testing.assert_allclose(f, -37.0 * g, atol=1e-4 * float(jnp.abs(f).max()))  # float32
    eb, fb = jax.jit(predict_fn(model, norm))(params, frames, boxes, species)
    assert eb.shape == (3,) and fb.shape == (3, N, 3)
    np.testing.assert_allclose(eb[0], e, rtol=1e-5)
    np.testing.assert_allclose(fb[0], f, atol=1e-4 * float(jnp.abs(f).max()))  # float32


# ---------------------------------------------------------------------------------------------
# models: physics (float64)


def _setup64(seed=0, model_config=None):
    model = build_model("pair", model_config or {}, CUTOFF)
    params = cast_params(random_params(model, seed), jnp.float64)
    pos = jnp.asarray(liquid_like(seed + 10), jnp.float64)
    box = jnp.full(3, BOX, jnp.float64)
    species = jnp.zeros(N, jnp.int32)
    ef = jax.jit(energy_and_forces_fn(model, Normalisation(41.0, -5.0)))
    return model, params, pos, box, species, ef


def test_translation_invariance_and_zero_net_force(x64):
    _, params, pos, box, species, ef = _setup64()
    e0, f0 = ef(params, pos, box, species)
    assert f0.dtype == jnp.float64
    e1, f1 = ef(params, pos + jnp.array([0.31, -0.77, 1.9]), box, species)
    np.testing.assert_allclose(e1, e0, rtol=1e-12)
    np.testing.assert_allclose(f1, f0, atol=1e-9 * float(jnp.abs(f0).max()))
    net = np.abs(np.asarray(f0).sum(axis=0)).max()
    assert net < 1e-10 * float(jnp.abs(f0).max()) * N


def test_rotation_invariance_cubic_box(x64):
    _, params, pos, box, species, ef = _setup64(1)
    assert_rotation_invariant(ef, params, pos, box, species, atol_rel=1e-9)


def test_permutation_and_periodic_image_invariance(x64):
    _, params, pos, box, species, ef = _setup64(2)
    assert_permutation_and_image_invariant(ef, params, pos, box, species, BOX,
                                           atol_rel=1e-9)


def test_species_pairs_symmetric(x64):
    model, params, pos, box, _, _ = _setup64(3, {"n_species": 2})
    species = jnp.asarray(np.arange(N) % 2, jnp.int32)
    ef = jax.jit(energy_and_forces_fn(model, Normalisation()))
    e0, f0 = ef(params, pos, box, species)
    perm = np.random.default_rng(1).permutation(N)
    e1, f1 = ef(params, pos[perm], box, species[perm])
    np.testing.assert_allclose(e1, e0, rtol=1e-12)
    np.testing.assert_allclose(f1, f0[perm], atol=1e-9 * float(jnp.abs(f0).max()))
    e2, _ = ef(params, pos, box, 1 - species)  # swapping the species labels changes the energy
    assert abs(float(e2 - e0)) > 1e-6 * abs(float(e0))


def test_energy_smooth_as_pair_crosses_cutoff(x64):
    model = build_model("pair", {}, CUTOFF)
    params = cast_params(random_params(model, 4, scale=1.0), jnp.float64)
    box = jnp.full(3, 3.0, jnp.float64)
    species = jnp.zeros(2, jnp.int32)
    ef = jax.jit(energy_and_forces_fn(model, Normalisation()))

    def at(r):  # energy relative to the separated pair (the per-atom constants), forces
        e, f = ef(params, jnp.array([[1.0, 1.0, 1.0], [1.0 + r, 1.0, 1.0]]), box, species)
        return e - e_far, f

    e_far = 0.0
    e_far = at(1.4)[0]
    e_in, f_in = {}, {}
    for delta in (1e-3, 1e-4):
        e_in[delta], f = at(CUTOFF - delta)
        f_in[delta] = float(jnp.abs(f).max())
        e_out, f_out = at(CUTOFF + delta)
        assert float(e_out) == 0.0 and float(jnp.abs(f_out).max()) == 0.0
    # C2 envelope: E ∝ δ³ and F ∝ δ² as the pair approaches the cutoff from inside
    assert 500 < float(e_in[1e-3] / e_in[1e-4]) < 2000
    assert 50 < f_in[1e-3] / f_in[1e-4] < 200
    rs = np.linspace(0.45, 0.65, 401)
    es = np.array([float(at(r)[0]) for r in rs])
    # no jump or kink anywhere on a fine grid across the cutoff: second differences stay small
    assert np.max(np.abs(np.diff(es, 2))) < 0.1 * np.max(np.abs(np.diff(es)))


def test_finite_differences_match_autodiff_forces(x64):
    model, params, pos, box, species, _ = _setup64(5)
    norm = Normalisation(41.0, -5.0)
    e = jax.jit(energy_fn(model, norm))
    f = np.asarray(jax.jit(forces_fn(model, norm))(params, pos, box, species))
    h = 1e-5
    rng = np.random.default_rng(0)
    for atom, axis in zip(rng.integers(0, N, 6), rng.integers(0, 3, 6), strict=True):
        step = jnp.zeros_like(pos).at[atom, axis].set(h)
        fd = -(float(e(params, pos + step, box, species)) - float(e(params, pos - step, box,
                                                                      species))) / (2 * h)
        assert abs(fd - f[atom, axis]) < 1e-6 * max(abs(f[atom, axis]), 1e-3 * np.abs(f).max())


# ---------------------------------------------------------------------------------------------
# losses


def test_loss_parts_and_weights():
    e_pred, e_ref = jnp.array([1.0, 2.0]), jnp.array([0.0, 0.0])
    f_pred, f_ref = jnp.ones((2, 4, 3)), jnp.zeros((2, 4, 3))
    total, parts = losses.loss(e_pred, f_pred, e_ref, f_ref, 4, 0.5, 2.0, 0.25, 0.5)
    e_expected = np.mean((np.array([1.0, 2.0]) / 4 / 0.25) ** 2)  # (1² + 2²)/2 = 2.5
    np.testing.assert_allclose(parts["energy"], e_expected)
    np.testing.assert_allclose(parts["force"], 4.0)
    np.testing.assert_allclose(total, 0.5 * e_expected + 2.0 * 4.0)
    total, _ = losses.loss(e_pred, f_pred, e_ref, f_ref, 4, 0.0, 1.0, 0.25, 0.5)
    np.testing.assert_allclose(total, 4.0)  # force only
    _, parts = losses.loss(e_pred + 7.0, f_pred, e_ref, f_ref, 4, 1.0, 1.0, 0.25, 0.5,
                           center_energy=True)
    np.testing.assert_allclose(parts["energy"], 0.25)  # a constant offset costs nothing
