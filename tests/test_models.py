"""space, models and losses: periodic geometry, neighbour lists, invariances, smoothness, FD.

The smoothness and finite-difference tests run over every smooth family (pair, atomic, mpnn);
the family-specific physics lives in test_atomic.py and test_mpnn.py.
"""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from invariance import (
    BOX,
    CUTOFF,
    RANDOM_PARAMS,
    SMALL,
    N,
    assert_permutation_and_image_invariant,
    assert_rotation_invariant,
    liquid_like,
    rel_net_force,
    setup64,
)
from invariance import random_pair_params as random_params
from precision import float32_atol

from forcematch import losses, space
from forcematch.config import model_families, model_settings, schema
from forcematch.data import pairs
from forcematch.errors import ForcematchError
from forcematch.model_factory import build_model
from forcematch.models import (
    MODELS,
    Normalisation,
    cast_params,
    energy_and_forces_fn,
    energy_fn,
    forces_fn,
    layers,
    predict_fn,
)
from forcematch.models.atomic import L_MAX_SUPPORTED

SMOOTH_FAMILIES = ("pair", "spline", "atomic", "mpnn")


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


# ---------------------------------------------------------------------------------------------
# space


def test_displacement_minimum_image_across_boundary():
    box = jnp.array([1.0, 2.0, 3.0])
    d = space.displacement(jnp.array([0.05, 1.95, 0.1]), jnp.array([0.95, 0.05, 2.9]), box)
    # float32 round-off of x_a - x_b - L round(...): 3 terms of the size of the box
    np.testing.assert_allclose(d, [0.1, -0.1, 0.2], rtol=0, atol=float32_atol(box, n_terms=3))
    rng = np.random.default_rng(0)
    a, b = (rng.uniform(0, 1, (50, 3)) * np.asarray(box) for _ in range(2))
    d = np.asarray(space.displacement(a, b, box))
    # brute force over the 27 neighbouring images
    shifts = np.array(list(itertools.product((-1, 0, 1), repeat=3))) * np.asarray(box)
    cand = (a - b)[:, None, :] + shifts[None]
    best = cand[np.arange(50), np.argmin(np.linalg.norm(cand, axis=-1), axis=1)]
    np.testing.assert_allclose(d, best, rtol=0, atol=float32_atol(box, n_terms=3))  # as above


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
    assert pairs.count_pairs(pos[None], box[None], CUTOFF)[0] == len(expected)


def test_neighbour_overflow_flag_and_capacity_estimate():
    frames = np.stack([liquid_like(s) for s in range(4)])
    box = np.full((4, 3), BOX)
    counts = pairs.count_pairs(frames, box, CUTOFF)
    cap = pairs.estimate_capacity(frames, box, CUTOFF)
    assert counts.max() * 1.2 <= cap <= N * (N - 1) // 2 and cap % 8 == 0
    assert pairs.estimate_capacity(frames, box, 10.0) == N * (N - 1) // 2  # never above all pairs
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
    # the config schema offers exactly the registered families, wherever it names one
    assert set(MODELS) == set(model_families())
    family = {"$ref": "#/$defs/model_family"}
    options = schema()["$defs"]["train_options"]["properties"]
    assert {"$ref": options["model"]["$ref"]} == family
    sweep_models = schema()["properties"]["sweep"]["properties"]["models"]["items"]
    assert sweep_models == family
    assert schema()["properties"]["train_by_model"]["propertyNames"] == family
    assert sorted(schema()["properties"]["model"]["properties"]) == sorted(MODELS)
    with pytest.raises(ForcematchError, match="known models: .*pair"):
        build_model("nope", {}, CUTOFF)
    with pytest.raises(ForcematchError, match="unknown model 'nope'; known models: .*pair"):
        model_settings("nope", {})
    with pytest.raises(ForcematchError, match="n_basis"):
        build_model("pair", {"n_bassis": 8}, CUTOFF)
    with pytest.raises(ForcematchError, match="activation"):
        build_model("pair", {"activation": "relu"}, CUTOFF)
    with pytest.raises(ForcematchError, match="'model.pair.r_min_nm'"):
        build_model("pair", {"r_min_nm": -0.1}, CUTOFF)
    with pytest.raises(ForcematchError, match="r_min_nm must lie in"):
        build_model("pair", {"r_min_nm": CUTOFF}, CUTOFF)  # the cutoff: checked by the model
    model = build_model("pair", {"hidden": [8]}, CUTOFF)
    assert model.config["hidden"] == [8] and model.config["n_basis"] == 16
    assert model.config == {**model_settings("pair", {}), "hidden": [8]}


def test_schema_enums_match_the_layers():
    """The activation and basis names a config may use are exactly those the models have."""
    defs = schema()["$defs"]
    assert set(defs["activation"]["enum"]) == set(layers.ACTIVATIONS)
    assert set(defs["basis"]["enum"]) == set(layers.BASES)
    assert defs["model_atomic"]["properties"]["l_max"]["maximum"] == L_MAX_SUPPORTED
    for family in MODELS:  # every option that names an activation or basis uses the enums
        for key, spec in defs[f"model_{family}"]["properties"].items():
            if key in ("activation", "basis"):
                assert spec["$ref"] == f"#/$defs/{key}"


@pytest.mark.parametrize("family", sorted(MODELS))
def test_every_family_builds_from_schema_defaults(family):
    defaults = model_settings(family, None)
    model = build_model(family, {}, CUTOFF)
    assert model.name == family and model.config == defaults
    assert defaults is not model_settings(family, None)  # a new dict each time
    pos, box = jnp.asarray(liquid_like(0)), jnp.full(3, BOX)
    params = model.init(jax.random.PRNGKey(0), pos, box, jnp.zeros(N, jnp.int32))
    e = jax.jit(model.energy)(params, pos, box, jnp.zeros(N, jnp.int32))
    assert e.shape == () and np.isfinite(float(e))
    assert not bool(model.overflow(pos, box))


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
    # float32 round-off of the sum over all N(N-1)/2 pairs, batched against one frame
    np.testing.assert_allclose(eb[0], e, rtol=0, atol=float32_atol(e, n_terms=N * (N - 1) // 2))
    np.testing.assert_allclose(fb[0], f, atol=1e-4 * float(jnp.abs(f).max()))  # float32


# ---------------------------------------------------------------------------------------------
# models: physics (float64)


# Relative force tolerances of the symmetry checks, and the least largest force of the random
# models (so that the checks are not vacuous).
ATOL = {"pair": 1e-9, "spline": 1e-9, "atomic": 1e-10, "mpnn": 1e-9}
MIN_FORCE = {"spline": 1.0, "pair": 0.0, "atomic": 1.0, "mpnn": 0.0}


@pytest.mark.parametrize("family", SMOOTH_FAMILIES)
def test_translation_invariance_and_zero_net_force(family, x64):
    _, params, pos, box, species, ef = setup64(family)
    e0, f0 = ef(params, pos, box, species)
    assert f0.dtype == jnp.float64 and float(jnp.abs(f0).max()) > MIN_FORCE[family]
    e1, f1 = ef(params, pos + jnp.array([0.31, -0.77, 1.9]), box, species)
    np.testing.assert_allclose(e1, e0, rtol=1e-12)
    np.testing.assert_allclose(f1, f0, atol=ATOL[family] * float(jnp.abs(f0).max()))
    net = np.abs(np.asarray(f0).sum(axis=0)).max()
    assert net < 1e-10 * float(jnp.abs(f0).max()) * N
    assert rel_net_force(f0) < 1e-10 and rel_net_force(f1) < 1e-10


@pytest.mark.parametrize("family", SMOOTH_FAMILIES)
def test_rotation_invariance_cubic_box(family, x64):
    _, params, pos, box, species, ef = setup64(family, 1)
    assert_rotation_invariant(ef, params, pos, box, species, atol_rel=ATOL[family])


@pytest.mark.parametrize("family", SMOOTH_FAMILIES)
def test_permutation_and_periodic_image_invariance(family, x64):
    _, params, pos, box, species, ef = setup64(family, 2)
    assert_permutation_and_image_invariant(ef, params, pos, box, species, BOX,
                                           atol_rel=ATOL[family])


@pytest.mark.parametrize("family", SMOOTH_FAMILIES)
def test_species_resolved(family, x64):
    """Two species: relabelling atoms together with their species changes nothing, swapping
    the species labels changes the energy (pair: per species pair; atomic: species-resolved
    descriptors; mpnn: species embedding)."""
    model, params, pos, box, _, _ = setup64(family, 3, {"n_species": 2})
    species = jnp.asarray(np.arange(N) % 2, jnp.int32)
    ef = jax.jit(energy_and_forces_fn(model, Normalisation()))
    e0, f0 = ef(params, pos, box, species)
    perm = np.random.default_rng(1).permutation(N)
    e1, f1 = ef(params, pos[perm], box, species[perm])
    np.testing.assert_allclose(e1, e0, rtol=1e-12)
    np.testing.assert_allclose(f1, f0[perm], atol=ATOL[family] * float(jnp.abs(f0).max()))
    assert rel_net_force(f0) < 1e-10
    e2, _ = ef(params, pos, box, 1 - species)  # swapping the species labels changes the energy
    assert abs(float(e2 - e0)) > 1e-6 * abs(float(e0))


# One atom leaves the cutoff sphere of another; per family: the frame with that atom at
# distance r (it is the last atom), r far away, and the points of the grid across the cutoff.
def _pair_frame(r):  # a lone pair
    return jnp.array([[1.0, 1.0, 1.0], [1.0 + r, 1.0, 1.0]])


def _atomic_frame(r):  # a third atom, at 60° from the 0 → 1 axis: an angle to atom 1
    direction = jnp.array([0.5, math.sqrt(3) / 2, 0.0])
    return jnp.stack([jnp.array([1.0, 1.0, 1.0]), jnp.array([0.7, 1.0, 1.0]),
                      jnp.array([1.0, 1.0, 1.0]) + r * direction])


def _mpnn_frame(r):
    # atoms 0 and 1 at 0.3 nm; atom 2 on the far side of 1 along x, at r from atom 1, so it
    # interacts with atom 1 only (r + 0.3 > cutoff from atom 0), and leaves at r = cutoff
    return jnp.array([[1.0, 1.0, 1.0], [1.3, 1.0, 1.0], [1.3 + r, 1.0, 1.0]])


CROSSING = {"pair": (_pair_frame, 1.4, 401), "spline": (_pair_frame, 1.4, 401),
            "atomic": (_atomic_frame, 1.4, 401),
            "mpnn": (_mpnn_frame, 1.2, 201)}


@pytest.mark.parametrize("family", SMOOTH_FAMILIES)
def test_energy_smooth_as_atom_crosses_cutoff(family, x64):
    """C2 at the cutoff: E − E_far ∝ δ³ and F − F_far ∝ δ² as the atom approaches it from
    inside; beyond it, energy and forces are those with the atom far away, bit for bit."""
    frame, r_far, n_grid = CROSSING[family]
    model = build_model(family, SMALL[family], CUTOFF)
    params = cast_params(RANDOM_PARAMS[family](model, 4, scale=1.0), jnp.float64)
    box = jnp.full(3, 3.0, jnp.float64)
    species = jnp.zeros(frame(0.0).shape[0], jnp.int32)
    ef = jax.jit(energy_and_forces_fn(model, Normalisation()))

    def at(r):
        return ef(params, frame(r), box, species)

    e_far, f_far = at(r_far)
    assert float(jnp.abs(f_far[-1]).max()) == 0.0  # the far atom has no neighbour
    e_in, f_in, f_moving = {}, {}, {}
    for delta in (1e-3, 1e-4):
        e, f = at(CUTOFF - delta)
        e_in[delta], f_in[delta] = float(e - e_far), float(jnp.abs(f - f_far).max())
        f_moving[delta] = float(jnp.abs(f[-1]).max())
        e_out, f_out = at(CUTOFF + delta)
        assert float(e_out) == float(e_far)
        np.testing.assert_array_equal(f_out, f_far)
    assert 500 < e_in[1e-3] / e_in[1e-4] < 2000
    assert 50 < f_in[1e-3] / f_in[1e-4] < 200
    assert 50 < f_moving[1e-3] / f_moving[1e-4] < 200
    rs = np.linspace(0.45, 0.65, n_grid)
    es = np.array([float(at(r)[0]) for r in rs])
    # no jump or kink anywhere on a fine grid across the cutoff: second differences stay small
    assert np.max(np.abs(np.diff(es, 2))) < 0.1 * np.max(np.abs(np.diff(es)))


@pytest.mark.parametrize("family", SMOOTH_FAMILIES)
def test_finite_differences_match_autodiff_forces(family, x64):
    model, params, pos, box, species, _ = setup64(family, 5)
    norm = Normalisation(41.0, -5.0)
    e = jax.jit(energy_fn(model, norm))
    f = np.asarray(jax.jit(forces_fn(model, norm))(params, pos, box, species))
    h = 1e-5
    rng = np.random.default_rng(0)
    for atom, axis in zip(rng.integers(0, N, 6), rng.integers(0, 3, 6), strict=True):
        step = jnp.zeros_like(pos).at[atom, axis].set(h)
        fd = -(float(e(params, pos + step, box, species))
               - float(e(params, pos - step, box, species))) / (2 * h)
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
