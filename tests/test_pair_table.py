"""The pair family's training loss through a table of φθ (`models.pair.TabulatedPair`): the
same energies, forces and loss gradient as the network at every pair, to float32 round-off and
the cubics' interpolation error; and the closest pair the training scan finds, which the
table starts below."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from invariance import BOX, CUTOFF, N, liquid_like, random_pair_params

from forcematch import losses
from forcematch.data import pairs
from forcematch.errors import ForcematchError
from forcematch.model_factory import build_model
from forcematch.models import Normalisation, cast_params, predict_fn
from forcematch.models.pair import TabulatedPair

DR_NM = 0.001  # the schema's train.pair_table_dr_nm


def _setup(n_species, dtype):
    """A pair model with random parameters, 4 liquid-like frames and its table from 0.95 x
    their closest pair, in `dtype`; species alternate over the atoms."""
    model = build_model("pair", {"n_species": n_species}, CUTOFF, capacity=N * (N - 1) // 2)
    params = cast_params(random_pair_params(model, 0), dtype)
    pos = np.stack([liquid_like(s) for s in range(4)])
    box = np.full((4, 3), BOX)
    closest = float(pairs.pair_counts_and_closest(pos, box, CUTOFF)[1].min())
    species = jnp.asarray(np.arange(N) % n_species, jnp.int32)
    return (model, params, jnp.asarray(pos, dtype), jnp.asarray(box, dtype), species,
            TabulatedPair(model, 0.95 * closest, DR_NM))


def _predictions_and_gradient(energy_model, params, pos, box, species, targets):
    """(energies, forces, the force-matching loss's gradient flattened) of `energy_model`."""
    norm = Normalisation(energy_scale=41.0, energy_shift_per_atom=-5.0)
    predict = predict_fn(energy_model, norm)
    target_e, target_f, f_scale = targets

    def loss(p):
        e, f = predict(p, pos, box, species)
        return losses.loss(e, f, target_e, target_f, N, 0.01, 1.0, 1.0, f_scale)[0]

    e, f = jax.jit(predict)(params, pos, box, species)
    grad = jax.jit(jax.grad(loss))(params)
    return e, f, jnp.concatenate([x.ravel() for x in jax.tree.leaves(grad)])


def _compare(n_species, dtype):
    """Largest force error / force RMS, energy error / energy spread, gradient error / its
    norm, of the table against the network (float64), the table evaluated in `dtype`."""
    with jax.enable_x64(True):
        model, params, pos, box, species, table = _setup(n_species, jnp.float64)
        e_net, f_net, g_net = _predictions_and_gradient(model, params, pos, box, species,
                                                        (0.0, 0.0, 1.0))
        f_rms = float(jnp.sqrt(jnp.mean(f_net**2)))
        noise = jax.random.normal(jax.random.PRNGKey(3), f_net.shape, jnp.float64)
        targets = (e_net + 3.0, f_net + f_rms * noise, f_rms)
        e_net, f_net, g_net = _predictions_and_gradient(model, params, pos, box, species,
                                                        targets)
        cast = [x.astype(dtype) for x in (pos, box, *targets[:2])]
        e, f, g = (np.asarray(x, np.float64) for x in _predictions_and_gradient(
            table, cast_params(params, dtype), cast[0], cast[1], species,
            (cast[2], cast[3], f_rms)))
        e_net, f_net, g_net = (np.asarray(x) for x in (e_net, f_net, g_net))
    assert f_rms > 1.0  # a non-trivial φ
    return {"force": float(np.max(np.abs(f - f_net))) / f_rms,
            "energy": float(np.max(np.abs(e - e_net) / np.ptp(e_net))),
            "gradient": float(np.linalg.norm(g - g_net) / np.linalg.norm(g_net))}


@pytest.mark.parametrize("n_species", [1, 2])
def test_table_matches_the_network(n_species):
    """The table against the network (one species; two, one table per species pair).

    float64, the table's own error (cubic Hermite: dr³ in φ'; measured with one species: forces
    4.6e-6 of their RMS, energies 1.4e-8 of their spread, the gradient 3.6e-6 of its norm at
    dr = 1 pm, 3.7e-7 at 0.5 pm): within 1e-5, 1e-6 and 3e-5. float32, what training sees
    (measured: forces 4.0e-5, the gradient 1.9e-4, against 4.3e-5 for the network's own float32
    evaluation; the distance's round-off, eps · r / dr in the interval coordinate; a minibatch
    gradient's own noise is of order 1): within 1e-4 and 1e-3."""
    exact = _compare(n_species, jnp.float64)
    assert exact["force"] < 1e-5 and exact["energy"] < 1e-6 and exact["gradient"] < 3e-5, exact
    if n_species == 1:
        single = _compare(n_species, jnp.float32)
        assert single["force"] < 1e-4 and single["gradient"] < 1e-3, single


def test_table_refuses_a_start_outside_the_cutoff():
    model = build_model("pair", {}, CUTOFF)
    for r_lo in (0.0, CUTOFF, 2 * CUTOFF):
        with pytest.raises(ForcematchError, match="r_lo"):
            TabulatedPair(model, r_lo, DR_NM)
    with pytest.raises(ForcematchError, match="spacing"):
        TabulatedPair(model, 0.2, 0.0)


def test_pair_counts_and_closest_match_brute_force():
    """Counts within the cutoff and the closest minimum-image pair per frame, both branches
    (frames together; blocks of rows above 2²¹ pairs), against all distances at once."""
    rng = np.random.default_rng(5)
    for n_atoms, box_nm in ((N, BOX), (2100, 4.8)):
        pos = rng.uniform(0, box_nm, (2, n_atoms, 3))
        box = np.full((2, 3), box_nm)
        counts, closest = pairs.pair_counts_and_closest(pos, box, CUTOFF)
        for t in range(2):
            d = pos[t][:, None, :] - pos[t][None, :, :]
            d -= box_nm * np.round(d / box_nm)
            r = np.sqrt(np.sum(d * d, axis=-1))[np.triu_indices(n_atoms, k=1)]
            assert counts[t] == np.count_nonzero(r < CUTOFF)
            assert closest[t] == pytest.approx(r.min(), rel=1e-12)
