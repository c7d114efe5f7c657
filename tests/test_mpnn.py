"""The mpnn model: registry, config, overflow, per-atom energies, training. Invariances,
smoothness at the cutoff and finite-difference forces: test_models.py, for every family."""

import invariance
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from invariance import BOX, CUTOFF, N, liquid_like

from forcematch.config import model_settings
from forcematch.errors import ForcematchError
from forcematch.model_factory import build_model
from forcematch.models import MODELS, Normalisation, energy_and_forces_fn
from forcematch.models.mpnn import MPNNModel

SMALL = invariance.SMALL["mpnn"]


def _setup64(seed=0, model_config=None):
    return invariance.setup64("mpnn", seed, model_config)


def test_registry_defaults_and_config_errors():
    assert MODELS["mpnn"] is MPNNModel
    model = build_model("mpnn", {"features": 8}, CUTOFF, capacity=64)
    assert model.name == "mpnn" and model.capacity == 64 and model.cutoff_nm == CUTOFF
    assert model.config == {**model_settings("mpnn", {}), "features": 8}
    with pytest.raises(ForcematchError, match="known keys: .*n_interactions"):
        build_model("mpnn", {"n_interaction": 3}, CUTOFF)
    with pytest.raises(ForcematchError, match="activation"):
        build_model("mpnn", {"activation": "relu"}, CUTOFF)
    with pytest.raises(ForcematchError, match="'model.mpnn.features': 0 is less than the minimum"):
        build_model("mpnn", {"features": 0}, CUTOFF)  # sizes must be positive
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


def test_atom_energies_permute_with_the_atoms(x64):
    model, params, pos, box, species, _ = _setup64(2)
    perm = np.random.default_rng(0).permutation(N)
    atom_energies = jax.jit(model.atom_energies)
    eps = atom_energies(params, pos, box, species)
    np.testing.assert_allclose(
        atom_energies(params, pos[perm], box, species), eps[perm], rtol=1e-10
    )


def test_short_training_reduces_validation_force_error(tmp_path):
    from test_train import lj_frames, read_metrics  # synthetic switched-LJ, 32 atoms

    from forcematch.potential import load_model
    from forcematch.training import train

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
    params = load_model(tmp_path / "model").params
    init = build_model("mpnn", model_config, CUTOFF).init(
        jax.random.PRNGKey(0), data.positions_nm[0], data.box_nm[0], data.species
    )
    assert float(params["inv_neighbours"]) == float(init["inv_neighbours"])
