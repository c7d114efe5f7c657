"""The force-collapse answer, tested: JAX MD's graph network as a family (against JAX MD's own
energy function), the checks before training (no neighbours, wrong-sign labels, a dominating
energy gradient), the stale-jit pitfall, and the coarse-grained case where spread =
correlation < 1 is the right answer."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from invariance import BOX, CUTOFF, N, liquid_like

from forcematch.config import load_config, schema
from forcematch.data.stats import statistics
from forcematch.errors import ForcematchError
from forcematch.io.h5md import read_h5md
from forcematch.metrics import accuracy
from forcematch.model_factory import build_model
from forcematch.models import cast_params
from forcematch.potential import load_model
from forcematch.training import train
from forcematch.training.run import check_training
from forcematch.validation.diagnose import RUNS, relabel

# JAX MD's neural_networks.ipynb recipe (config/config.yaml, train_by_model.graph_network).
NOTEBOOK = {"model": "graph_network", "batch_size": 128, "learning_rate": 1e-3,
            "final_learning_rate_factor": 1.0, "grad_clip_norm": 1.0, "energy_weight": 1.0,
            "force_weight": 1.0, "energy_loss": "absolute", "loss_form": "raw_eV_angstrom",
            "output_scale": "eV", "epochs": 1}
SMALL_GN = {"mlp_sizes": [16, 16]}


def _splits(tiny_data):
    return {s: read_h5md(tiny_data.dataset / f"{s}.h5") for s in ("train", "val")}


def _stats(tiny_data):
    return json.loads((tiny_data.dataset / "stats.json").read_text())["train"]


def _quiet(_):
    return None


# -- the family --------------------------------------------------------------------------------
def test_graph_network_is_jax_mds_energy_function(x64):
    """Same parameters, same frame: our family's energy equals the energy function of
    `jax_md.energy.graph_network_neighbor_list` (the notebook's constructor) with its own
    neighbour list, in Å, self-pairs included."""
    from flax import nnx
    from jax_md import energy, partition, space

    model = build_model("graph_network", SMALL_GN, CUTOFF)
    params = cast_params(model.init(jax.random.PRNGKey(3), None, None, None), jnp.float64)
    x_nm = jnp.asarray(liquid_like(0, box=BOX))
    ours = model.energy(params, x_nm, jnp.full(3, BOX), jnp.zeros(N, jnp.int32))

    box_a, x_a = 10 * BOX, 10 * x_nm
    displacement, _ = space.periodic(box_a)
    neighbour_fn, energy_fn = energy.graph_network_neighbor_list(
        displacement, box_a, 10 * CUTOFF, 0.0, key=jax.random.PRNGKey(3), mlp_sizes=(16, 16),
        format=partition.Sparse)
    nnx.update(energy_fn.model, params)
    theirs = energy_fn(x_a, neighbor=neighbour_fn.allocate(x_a))
    np.testing.assert_allclose(float(ours), float(theirs), rtol=1e-10)


def test_graph_network_starts_from_the_notebooks_initialisers():
    """`initialisation: notebook` (the default) draws what the haiku-era JAX MD of the notebook
    drew: weights of standard deviation sqrt(1 / fan-in), biases sqrt(0.1 / width) (haiku's
    VarianceScaling(0.1) of a vector); JAX MD 0.2.29's NNX defaults (`jax_md_nnx`) scale
    weights by fan-average and start biases at zero."""
    model = build_model("graph_network", {"mlp_sizes": [64, 64]}, CUTOFF)
    encoder = model.init(jax.random.PRNGKey(0), None, None, None)["GraphNetEncoder"]
    edge = encoder["edge_fns_0"]["layers_0"]  # fan-in 8 x 64 = 512
    assert np.std(edge["kernel"]) == pytest.approx(np.sqrt(1 / 512), rel=0.05)
    biases = np.concatenate([layer["bias"] for mlp in encoder.values()
                             for layer in mlp.values()])
    assert np.std(biases) == pytest.approx(np.sqrt(0.1 / 64), rel=0.05)
    nnx_model = build_model("graph_network", {"mlp_sizes": [64, 64],
                                              "initialisation": "jax_md_nnx"}, CUTOFF)
    nnx_edge = nnx_model.init(jax.random.PRNGKey(0), None, None, None)[
        "GraphNetEncoder"]["edge_fns_0"]["layers_0"]
    assert np.std(nnx_edge["kernel"]) == pytest.approx(np.sqrt(2 / (512 + 64)), rel=0.05)
    assert not np.any(nnx_edge["bias"])


def test_graph_network_forces_sum_to_zero_and_match_finite_differences(x64):
    model = build_model("graph_network", SMALL_GN, CUTOFF)
    params = cast_params(model.init(jax.random.PRNGKey(0), None, None, None), jnp.float64)
    box, species = jnp.full(3, BOX), jnp.zeros(N, jnp.int32)
    x = jnp.asarray(liquid_like(1, box=BOX))

    def energy(pos):
        return model.energy(params, pos, box, species)

    forces = -jax.grad(energy)(x)
    assert float(jnp.abs(forces.sum(axis=0)).max()) < 1e-9 * float(jnp.abs(forces).max())
    h, (atom, axis) = 1e-6, (5, 1)  # no pair crosses the hard cutoff over ±h here
    step = jnp.zeros_like(x).at[atom, axis].set(h)
    fd = -(energy(x + step) - energy(x - step)) / (2 * h)
    # the central difference's round-off: float64 energies of size |E| differenced over 2h
    round_off = 8 * abs(float(energy(x))) * np.finfo(np.float64).eps / (2 * h)
    np.testing.assert_allclose(float(fd), float(forces[atom, axis]), rtol=1e-6, atol=round_off)
    shifted = energy((x + jnp.array([0.3, -0.7, 1.1])) % BOX)
    np.testing.assert_allclose(float(shifted), float(energy(x)), rtol=1e-10)


# -- the stale jit trace ------------------------------------------------------------------------
def loss(p):  # the notebook's global `loss`, read when the update below is first traced
    return (p - 1.0) ** 2


@jax.jit
def update(p):
    return p - 0.25 * jax.grad(loss)(p)


def test_redefining_the_loss_after_jit_keeps_the_old_trace():
    """Redefining the global `loss` (joint -> force-only, as the user did) does not reach an
    update function jitted before: the cached trace keeps the old loss until it is re-jitted."""
    global loss
    first = float(update(0.0))  # traced: minimises (p - 1)²
    assert first == pytest.approx(0.5)

    def loss(p):  # noqa: F811  (redefined, as in the notebook)
        return (p - 5.0) ** 2

    assert float(update(0.0)) == pytest.approx(0.5)  # still the old loss
    fresh = jax.jit(lambda p: p - 0.25 * jax.grad(loss)(p))  # a new jit traces the new loss
    assert float(fresh(0.0)) == pytest.approx(2.5)


# -- the checks before training -----------------------------------------------------------------
def test_a_cutoff_with_no_neighbours_is_refused_before_training(tiny_data, tmp_path):
    splits = _splits(tiny_data)
    with pytest.raises(ForcematchError, match=r"no pair of atoms lies within the model's cutoff "
                       r"of 0.25 nm .* forces are exactly zero under any loss"):
        train(splits["train"], splits["val"], NOTEBOOK | {"energy_weight": 0.0},
              SMALL_GN | {"cutoff_nm": 0.25}, 0.55, tmp_path, stats=_stats(tiny_data),
              progress=_quiet)
    assert not (tmp_path / "model").exists()


def test_the_notebook_loss_warns_that_the_energy_term_dominates(tiny_data):
    splits = _splits(tiny_data)
    said = []
    report = check_training(splits["train"], splits["val"], NOTEBOOK, SMALL_GN, 0.55,
                            stats=_stats(tiny_data), progress=said.append)
    balance = report["gradient_balance"]
    assert balance["level"] == "warning"
    assert balance["energy_over_force"] > 100
    assert any("the energy term dominates every step" in line for line in said)
    # The project's normalised joint loss on the pair model is balanced.
    pair = check_training(splits["train"], splits["val"], {"energy_weight": 0.01}, {}, 0.55,
                          stats=_stats(tiny_data), progress=_quiet)
    assert pair["gradient_balance"]["level"] == "ok"
    assert pair["neighbours"]["level"] == "ok"
    assert pair["zero_force_loss"]["force_loss"] == pytest.approx(1.0, rel=0.05)


def test_force_labels_of_the_wrong_sign_are_refused(tiny_data, tmp_path):
    splits = _splits(tiny_data)
    good = check_training(splits["train"], splits["val"], {}, {}, 0.55, stats=_stats(tiny_data),
                          progress=_quiet)["label_sign"]
    assert good["level"] == "ok" and good["correlation"] > 0.9
    flipped = [relabel(splits[s], "flipped") for s in ("train", "val")]
    with pytest.raises(ForcematchError, match=r"the force labels have the wrong sign"):
        train(*flipped, {}, {}, 0.55, tmp_path, stats=_stats(tiny_data), progress=_quiet)


# -- coarse-grained labels ----------------------------------------------------------------------
def test_decimated_labels_give_spread_equal_to_correlation(tiny_data, tmp_path):
    """Every second atom integrated out: the kept atoms' full forces are not a function of the
    kept positions, so the best fit is the mean force, with spread ratio = correlation < 1."""
    config = load_config(tiny_data.config)
    data = [relabel(s, "decimated") for s in _splits(tiny_data).values()]
    train(*data, {"energy_weight": 0.0, "epochs": 60, "learning_rate": 0.01, "batch_size": 8},
          {}, config["system"]["cutoff_nm"], tmp_path, stats=statistics(data[0]),
          progress=_quiet, preflight="warn")
    fit = data[0]
    energy, forces = load_model(tmp_path / "model").predict(fit.positions_nm, fit.box_nm)
    m = accuracy(fit.potential_energy_kJ_mol, energy, fit.forces_kJ_mol_nm, forces)
    assert 0.3 < m["force_corr"] < 0.95
    assert m["force_std_ratio"] == pytest.approx(m["force_corr"], abs=0.05)


def test_the_schema_lists_the_studys_runs():
    runs = schema()["properties"]["diagnose"]["properties"]["runs"]["items"]["enum"]
    assert runs == list(RUNS)
