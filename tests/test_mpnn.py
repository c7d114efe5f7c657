"""The mpnn model: registry, config, invariances and smoothness in float64, FD forces, training."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from invariance import assert_rotation_invariant

from forcematch.errors import ForcematchError
from forcematch.models import (
    MODELS,
    Normalisation,
    build_model,
    cast_params,
    energy_and_forces_fn,
    energy_fn,
    forces_fn,
)
from forcematch.models.mpnn import MPNNModel
from forcematch.train import load_checkpoint, train

BOX = 1.2  # nm
CUTOFF = 0.55  # nm
N = 32
SMALL = {"features": 8, "n_basis": 8, "filter_hidden": [8], "readout_hidden": [8]}


def liquid_like(seed: int, n_cells: int = 2, box: float = BOX, jitter: float = 0.03):
    """FCC lattice (4 n_cells³ atoms) in a cubic box, randomly displaced, wrapped: [N, 3] nm."""
    cell = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    grid = np.array(list(itertools.product(range(n_cells), repeat=3)))
    pos = (grid[:, None, :] + cell[None]).reshape(-1, 3) * box / n_cells
    rng = np.random.default_rng(seed)
    return (pos + rng.normal(0, jitter, pos.shape)) % box


def random_params(model, seed=0, scale=0.3):
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


@pytest.fixture
def x64():
    """Run a test body with 64-bit JAX, restoring the global setting afterwards."""
    with jax.enable_x64(True):
        yield


def _setup64(seed=0, model_config=None):
    model = build_model("mpnn", {**SMALL, **(model_config or {})}, CUTOFF)
    params = cast_params(random_params(model, seed=seed), jnp.float64)
    pos = jnp.asarray(liquid_like(seed + 10), jnp.float64)
    box = jnp.full(3, BOX, jnp.float64)
    species = jnp.zeros(N, jnp.int32)
    ef = jax.jit(energy_and_forces_fn(model, Normalisation(41.0, -5.0)))
    return model, params, pos, box, species, ef


def test_registry_defaults_and_config_errors():
    assert MODELS["mpnn"] is MPNNModel
    model = build_model("mpnn", {"features": 8}, CUTOFF, capacity=64)
    assert model.name == "mpnn" and model.capacity == 64 and model.cutoff_nm == CUTOFF
    assert model.config == {**MPNNModel.DEFAULTS, "features": 8}
    with pytest.raises(ForcematchError, match="known: .*n_interactions"):
        build_model("mpnn", {"n_interaction": 3}, CUTOFF)
    with pytest.raises(ForcematchError, match="activation"):
        build_model("mpnn", {"activation": "relu"}, CUTOFF)
    with pytest.raises(ForcematchError, match="positive"):
        build_model("mpnn", {"features": 0}, CUTOFF)
    with pytest.raises(ForcematchError, match="r_min_nm"):
        build_model("mpnn", {"r_min_nm": CUTOFF}, CUTOFF)


def test_init_untrained_forces_zero_and_overflow_poisons():
    model = build_model("mpnn", SMALL, CUTOFF, capacity=8)
    pos, box, species = jnp.asarray(liquid_like(3)), jnp.full(3, BOX), jnp.zeros(N, jnp.int32)
    params = model.init(jax.random.PRNGKey(0), pos, box, species)
    assert 1 / 30 < float(params["inv_neighbours"]) < 1  # 1 / mean enveloped neighbour count
    assert bool(model.overflow(pos, box))
    e, f = jax.jit(energy_and_forces_fn(model, Normalisation()))(params, pos, box, species)
    assert np.isnan(float(e)) and np.isnan(np.asarray(f)).all()
    full = build_model("mpnn", SMALL, CUTOFF)  # capacity None: all pairs, never overflows
    e, f = jax.jit(energy_and_forces_fn(full, Normalisation()))(params, pos, box, species)
    assert float(e) == 0.0 and float(jnp.abs(f).max()) == 0.0  # readout starts at zero


def test_atom_energies_sum_to_energy(x64):
    model, params, pos, box, species, _ = _setup64(1)
    eps = jax.jit(model.atom_energies)(params, pos, box, species)
    assert eps.shape == (N,) and eps.dtype == jnp.float64
    assert float(jnp.std(eps)) > 1e-6  # atoms in different environments differ
    e = jax.jit(model.energy)(params, pos, box, species)
    np.testing.assert_allclose(jnp.sum(eps), e, rtol=1e-12)


def test_translation_invariance_and_zero_net_force(x64):
    _, params, pos, box, species, ef = _setup64()
    e0, f0 = ef(params, pos, box, species)
    assert f0.dtype == jnp.float64 and float(jnp.abs(f0).max()) > 0
    e1, f1 = ef(params, pos + jnp.array([0.31, -0.77, 1.9]), box, species)
    np.testing.assert_allclose(e1, e0, rtol=1e-12)
    np.testing.assert_allclose(f1, f0, atol=1e-9 * float(jnp.abs(f0).max()))
    net = np.abs(np.asarray(f0).sum(axis=0)).max()
    assert net < 1e-10 * float(jnp.abs(f0).max()) * N


def test_rotation_invariance_cubic_box(x64):
    _, params, pos, box, species, ef = _setup64(1)
    assert_rotation_invariant(ef, params, pos, box, species, atol_rel=1e-9)


def test_permutation_and_periodic_image_invariance(x64):
    model, params, pos, box, species, ef = _setup64(2)
    e0, f0 = ef(params, pos, box, species)
    perm = np.random.default_rng(0).permutation(N)
    e1, f1 = ef(params, pos[perm], box, species)
    np.testing.assert_allclose(e1, e0, rtol=1e-12)
    np.testing.assert_allclose(f1, f0[perm], atol=1e-9 * float(jnp.abs(f0).max()))
    atom_energies = jax.jit(model.atom_energies)
    eps = atom_energies(params, pos, box, species)
    np.testing.assert_allclose(
        atom_energies(params, pos[perm], box, species), eps[perm], rtol=1e-10
    )
    shifted = pos.at[5].add(jnp.array([BOX, -2 * BOX, 0.0])).at[17].add(jnp.array([0, 0, BOX]))
    e2, f2 = ef(params, shifted, box, species)
    np.testing.assert_allclose(e2, e0, rtol=1e-12)
    np.testing.assert_allclose(f2, f0, atol=1e-9 * float(jnp.abs(f0).max()))


def test_species_embedding(x64):
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


def test_energy_smooth_as_atom_crosses_cutoff(x64):
    """A third atom leaving the cutoff of one atom of a bound pair: E ∝ δ³, F ∝ δ² (C2)."""
    model = build_model("mpnn", SMALL, CUTOFF)
    params = cast_params(random_params(model, seed=4, scale=1.0), jnp.float64)
    box = jnp.full(3, 3.0, jnp.float64)
    species = jnp.zeros(3, jnp.int32)
    ef = jax.jit(energy_and_forces_fn(model, Normalisation()))
    # atoms 0 and 1 at 0.3 nm; atom 2 on the far side of 1 along x, at r from atom 1, so it
    # interacts with atom 1 only (r + 0.3 > cutoff from atom 0), and leaves at r = cutoff

    def at(r):
        x = jnp.array([[1.0, 1.0, 1.0], [1.3, 1.0, 1.0], [1.3 + r, 1.0, 1.0]])
        return ef(params, x, box, species)

    e_far, f_far = at(1.2)
    e_in, f_in = {}, {}
    for delta in (1e-3, 1e-4):
        e, f = at(CUTOFF - delta)
        e_in[delta], f_in[delta] = float(e - e_far), float(jnp.abs(f - f_far).max())
        e_out, f_out = at(CUTOFF + delta)
        assert float(e_out) == float(e_far)
        np.testing.assert_array_equal(f_out, f_far)
    assert 500 < e_in[1e-3] / e_in[1e-4] < 2000
    assert 50 < f_in[1e-3] / f_in[1e-4] < 200
    rs = np.linspace(0.45, 0.65, 201)
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
        fd = -(
            float(e(params, pos + step, box, species)) - float(e(params, pos - step, box, species))
        ) / (2 * h)
        assert abs(fd - f[atom, axis]) < 1e-6 * max(abs(f[atom, axis]), 1e-3 * np.abs(f).max())


def test_short_training_reduces_validation_force_error(tmp_path):
    from test_train import lj_frames, read_metrics  # synthetic switched-LJ, 32 atoms

    data = lj_frames(48, 0)
    model_config = {"features": 16, "n_interactions": 1, "filter_hidden": []}
    metrics = train(
        data,
        lj_frames(16, 1),
        {"model": "mpnn", "epochs": 12, "batch_size": 2, "val_frames": 16, "learning_rate": 1e-2},
        model_config,
        CUTOFF,
        tmp_path,
        progress=lambda _: None,
    )
    rows = read_metrics(tmp_path / "metrics.csv")
    first, last = float(rows[0]["val_force_rmse_rel"]), float(rows[-1]["val_force_rmse_rel"])
    assert last < 0.5 * first and metrics["val_force_rmse_rel"] < 0.4  # 0.17 when written
    # 1/n̄ is a constant of the data, never trained
    params = load_checkpoint(tmp_path / "model").params
    init = build_model("mpnn", model_config, CUTOFF).init(
        jax.random.PRNGKey(0), data.positions_nm[0], data.box_nm[0], data.species
    )
    assert float(params["inv_neighbours"]) == float(init["inv_neighbours"])
