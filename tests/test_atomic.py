"""The atomic (Behler–Parrinello-style) model: harmonics, descriptors, per-atom energies, zero
net force (with a non-invariant counter-example), and a short training run. Invariances,
smoothness at the cutoff and finite-difference forces: test_models.py, for every family."""

import csv

import invariance
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from invariance import (
    BOX,
    CUTOFF,
    N,
    liquid_like,
    rel_net_force,
)
from invariance import random_atomic_params as random_params
from precision import float32_atol

from forcematch.config import model_settings
from forcematch.errors import ForcematchError
from forcematch.model_factory import build_model
from forcematch.models import MODELS, Normalisation, cast_params, energy_and_forces_fn, forces_fn
from forcematch.models.atomic import AtomicModel, real_harmonics
from forcematch.models.layers import MLP

SMALL = invariance.SMALL["atomic"]
DEFAULTS = model_settings("atomic", {})  # the config schema's defaults


def setup64(seed=0, model_config=None):
    return invariance.setup64("atomic", seed, model_config)


# ---------------------------------------------------------------------------------------------
# registry, configuration, descriptors


def test_registry_defaults_and_config_errors():
    assert MODELS["atomic"] is AtomicModel
    model = build_model("atomic", {"hidden": [8]}, CUTOFF)
    assert model.name == "atomic" and model.cutoff_nm == CUTOFF and model.capacity is None
    assert model.config == {**DEFAULTS, "hidden": [8]}
    c = DEFAULTS["n_angular"]
    assert model.n_descriptors == DEFAULTS["n_radial"] + c * (c + 1) // 2 * DEFAULTS["l_max"]
    with pytest.raises(ForcematchError, match="known keys: .*n_radial"):
        build_model("atomic", {"n_radiall": 8}, CUTOFF)
    with pytest.raises(ForcematchError, match="activation"):
        build_model("atomic", {"activation": "relu"}, CUTOFF)
    with pytest.raises(ForcematchError, match="l_max"):
        build_model("atomic", {"l_max": 5}, CUTOFF)
    with pytest.raises(ForcematchError, match="r_min_nm"):
        build_model("atomic", {"r_min_nm": CUTOFF}, CUTOFF)
    with pytest.raises(ForcematchError, match="'model.atomic.n_angular'.*when l_max > 0"):
        build_model("atomic", {"n_angular": 0}, CUTOFF)
    assert build_model("atomic", {"n_angular": 0, "l_max": 0}, CUTOFF).n_descriptors == 24


def test_real_harmonics_addition_theorem(x64):
    """Σ_m Y_lm(u) Y_lm(v) = P_l(u·v), so Σ_m M_a M_b are exact Legendre moments of cos θ."""
    rng = np.random.default_rng(0)
    u, v = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in rng.normal(size=(2, 40, 3)))
    c = np.sum(u * v, axis=1)
    legendre = [c, (3 * c**2 - 1) / 2, (5 * c**3 - 3 * c) / 2, (35 * c**4 - 30 * c**2 + 3) / 8]
    ys_u, ys_v = real_harmonics(jnp.asarray(u), 4), real_harmonics(jnp.asarray(v), 4)
    for deg, (yu, yv, p) in enumerate(zip(ys_u, ys_v, legendre, strict=True), start=1):
        assert yu.shape == (40, 2 * deg + 1)
        np.testing.assert_allclose(np.sum(np.asarray(yu) * np.asarray(yv), axis=1), p,
                                   atol=1e-12)


def test_descriptors_match_brute_force_triplets(x64):
    """Radial sums and Σ_{j,k} R_a(r_ij) R_b(r_ik) P_l(cos θ_jik) from explicit loops."""
    model = build_model("atomic", {"n_radial": 4, "n_angular": 2, "l_max": 2}, CUTOFF)
    pos = liquid_like(3, n_cells=1, box=0.8, jitter=0.05)  # 4 atoms, many images within cutoff
    box = np.full(3, 0.8)
    # all 4·3/2 = 6 pairs are within the cutoff in the minimum image; check by brute force
    raw, _ = jax.jit(model.descriptors)(jnp.asarray(pos), jnp.asarray(box),
                                        jnp.zeros(4, jnp.int32))
    mu = np.linspace(model.config["r_min_nm"], CUTOFF, 4)
    w4 = (CUTOFF - model.config["r_min_nm"]) / 3
    mu2 = np.linspace(model.config["r_min_nm"], CUTOFF, 2)
    w2 = CUTOFF - model.config["r_min_nm"]

    def env(r):
        x = r / CUTOFF
        return (1 - 28 * x**6 + 48 * x**7 - 21 * x**8) * (x < 1)

    expected = np.zeros((4, 4 + 3 * 2))
    for i in range(4):
        vecs = []
        for j in range(4):
            if j != i:
                d = pos[j] - pos[i]
                d -= box * np.round(d / box)
                r = np.linalg.norm(d)
                if r < CUTOFF:
                    vecs.append((d / r, r))
        for _, r in vecs:
            expected[i, :4] += np.exp(-0.5 * ((r - mu) / w4) ** 2) * env(r)
        for deg, p in ((1, lambda c: c), (2, lambda c: (3 * c * c - 1) / 2)):
            acc = np.zeros((2, 2))
            for u1, r1 in vecs:
                for u2, r2 in vecs:
                    ra = np.exp(-0.5 * ((r1 - mu2) / w2) ** 2) * env(r1)
                    rb = np.exp(-0.5 * ((r2 - mu2) / w2) ** 2) * env(r2)
                    acc += np.outer(ra, rb) * p(float(u1 @ u2))
            expected[i, 4 + 3 * (deg - 1): 4 + 3 * deg] = acc[np.triu_indices(2)]
    np.testing.assert_allclose(np.asarray(raw), expected, rtol=1e-10, atol=1e-12)


def test_init_standardises_descriptors_and_keeps_them_fixed():
    model = build_model("atomic", SMALL, CUTOFF)
    pos, box, species = jnp.asarray(liquid_like(0)), jnp.full(3, BOX), jnp.zeros(N, jnp.int32)
    params = model.init(jax.random.PRNGKey(0), pos, box, species)
    raw, _ = jax.jit(model.descriptors)(pos, box, species)
    z = (raw - params["descriptor_mean"]) * params["descriptor_scale"]
    assert np.all(np.isfinite(np.asarray(z))) and np.all(np.asarray(params["descriptor_scale"]) > 0)
    # float32 round-off of the mean over N atoms of raw · scale (up to ~10), here and in init
    np.testing.assert_allclose(np.mean(np.asarray(z), axis=0), 0.0, rtol=0,
                               atol=float32_atol(raw * params["descriptor_scale"], n_terms=N))
    assert 0.5 < float(np.std(np.asarray(z))) <= 1.0 + 1e-4
    # untrained: output layer at zero, so E = Σ b_s = 0 and forces vanish
    e, f = jax.jit(energy_and_forces_fn(model, Normalisation()))(params, pos, box, species)
    assert float(e) == 0.0 and float(jnp.abs(f).max()) == 0.0
    # the standardisation is held fixed: no gradient reaches it
    grads = jax.jit(jax.grad(model.energy))(random_params(model), pos, box, species)
    assert float(jnp.abs(grads["descriptor_mean"]).max()) == 0.0
    assert float(jnp.abs(grads["descriptor_scale"]).max()) == 0.0
    assert float(jnp.abs(grads["mlp"]["params"]["Dense_0"]["kernel"]).max()) > 0
    # a degenerate frame (all atoms on one point) falls back to mean 0, scale 1
    params0 = model.init(jax.random.PRNGKey(0), jnp.zeros((N, 3)), box, species)
    assert float(jnp.abs(params0["descriptor_mean"]).max()) == 0.0
    np.testing.assert_array_equal(params0["descriptor_scale"], 1.0)


def test_overflow_poisons_energy_and_forces():
    model = build_model("atomic", SMALL, CUTOFF, capacity=8)
    pos, box = jnp.asarray(liquid_like(3)), jnp.full(3, BOX)
    params = random_params(build_model("atomic", SMALL, CUTOFF))
    assert bool(model.overflow(pos, box))
    ef = jax.jit(energy_and_forces_fn(model, Normalisation()))
    e, f = ef(params, pos, box, jnp.zeros(N, jnp.int32))
    assert np.isnan(float(e)) and np.isnan(np.asarray(f)).all()


# ---------------------------------------------------------------------------------------------
# physics (float64)


def test_species_resolved_descriptor_count(x64):
    """Species-resolved sums: S·n radial channels and (S·c)(S·c+1)/2 moments per degree
    (invariances with two species: test_models.test_species_resolved)."""
    model, _, _, _, _, _ = setup64(3, {"n_species": 2})
    assert model.n_descriptors == 2 * 8 + 21 * 3


def test_atom_energies_sum_and_isolated_atoms(x64):
    model, params, pos, box, species, _ = setup64(6, {"n_species": 2})
    species = jnp.asarray(np.arange(N) % 2, jnp.int32)
    atom_energies = jax.jit(model.atom_energies)
    ei = atom_energies(params, pos, box, species)
    assert ei.shape == (N,)
    # the wrapper's energy is their sum; its forces, −∇ Σ_i E_i by autodiff, sum to zero
    e, f = jax.jit(energy_and_forces_fn(model, Normalisation()))(params, pos, box, species)
    np.testing.assert_allclose(jnp.sum(ei), e, rtol=1e-12)
    assert float(jnp.abs(f).max()) > 0.1 and rel_net_force(f) < 1e-10
    # atoms with no neighbour within the cutoff have exactly their species constant
    far = jnp.array([[0.5, 0.5, 0.5], [2.5, 0.5, 0.5], [0.5, 2.5, 0.5], [0.5, 0.5, 2.5],
                     [0.5, 0.8, 0.5]])  # the last is 0.3 nm from the first
    sp = jnp.array([0, 1, 1, 0, 1], jnp.int32)
    ei = atom_energies(params, far, jnp.full(3, 4.0), sp)
    b = params["atom_energy"]
    np.testing.assert_allclose(ei[1:4], b[sp[1:4]], rtol=0, atol=1e-12)
    assert abs(float(ei[0] - b[0])) > 1e-6  # atom 0 has a neighbour


def test_net_force_vanishes_only_for_invariant_energy():
    """Why the forces sum to zero: E depends only on differences r_i − r_j, so E(r + a) = E(r)
    and 0 = dE/da = Σ_i ∂E/∂r_i = −Σ_i F_i. A per-atom network fed absolute positions (not
    translation invariant) has no such identity: its net force is as large as a typical force.
    """
    pos32, box32 = jnp.asarray(liquid_like(7), jnp.float32), jnp.full(3, BOX, jnp.float32)
    species = jnp.zeros(N, jnp.int32)

    mlp = MLP(hidden=(16, 16), n_out=1, activation=jax.nn.silu)
    toy_params = mlp.init(jax.random.PRNGKey(0), jnp.zeros((1, 3)))
    toy_params = jax.tree.map(lambda x: x + 0.5, toy_params)  # a non-zero output layer

    def toy_energy(params, positions):  # Σ_i NN(r_i): per-atom, but of absolute positions
        return jnp.sum(mlp.apply(params, positions))

    f_toy = -jax.jit(jax.grad(toy_energy, argnums=1))(toy_params, pos32)
    assert float(jnp.abs(f_toy).max()) > 0.1
    assert rel_net_force(f_toy) > 1e-2
    assert abs(float(toy_energy(toy_params, pos32 + 0.1) - toy_energy(toy_params, pos32))) > 1e-3

    model = build_model("atomic", SMALL, CUTOFF)
    params = random_params(model, 7)
    forces = jax.jit(forces_fn(model, Normalisation(41.0, -5.0)))
    f32 = forces(params, pos32, box32, species)
    assert f32.dtype == jnp.float32 and float(jnp.abs(f32).max()) > 1.0
    assert rel_net_force(f32) < 1e-5  # round-off only: about 1e-8 in float32
    with jax.enable_x64(True):
        f64 = forces(cast_params(params, jnp.float64), jnp.asarray(pos32, jnp.float64),
                     jnp.asarray(box32, jnp.float64), species)
        assert f64.dtype == jnp.float64
        assert rel_net_force(f64) < 1e-12  # about 1e-16
        f64 = np.asarray(f64)
    np.testing.assert_allclose(f32, f64, atol=1e-4 * np.abs(f64).max())


# ---------------------------------------------------------------------------------------------
# training


def test_short_training_reduces_validation_force_error(tmp_path):
    from test_train import lj_frames

    from forcematch.potential import load_model
    from forcematch.training import train

    train_data, val_data = lj_frames(48, 0), lj_frames(16, 1)
    cfg = {"model": "atomic", "epochs": 12, "batch_size": 8, "learning_rate": 1e-2,
           "val_frames": 16, "energy_weight": 0.01}
    metrics = train(train_data, val_data, cfg, SMALL, CUTOFF, tmp_path, progress=lambda _: None)
    with open(tmp_path / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    first, last = float(rows[0]["val_force_rmse_rel"]), float(rows[-1]["val_force_rmse_rel"])
    assert last < 0.5 * first and last < 0.3
    assert metrics["val_force_rmse_rel"] == pytest.approx(last, rel=1e-6)
    loaded = load_model(tmp_path / "model")
    assert loaded.model_name == "atomic" and loaded.model_config == {**DEFAULTS, **SMALL}
    e, f = loaded.predict(val_data.positions_nm[:4], val_data.box_nm[:4])
    assert np.abs(f.sum(axis=1)).max() < 1e-4 * np.abs(f).max() * N
    # per-atom energies of the trained model, in kJ/mol, add up to its total energy
    pos, box = jnp.asarray(val_data.positions_nm[0], jnp.float32), jnp.asarray(val_data.box_nm[0],
                                                                                 jnp.float32)
    ei = jax.jit(loaded.model.atom_energies)(loaded.params, pos, box, jnp.asarray(loaded.species))
    ei_kj = loaded.norm.energy_scale * ei + loaded.norm.energy_shift_per_atom
    # float32 round-off of a sum over N atoms, against the batched prediction
    assert float(jnp.sum(ei_kj)) == pytest.approx(e[0], abs=float32_atol(e[0], n_terms=N))
