"""The `spline` family (MS-CG): a B-spline pair potential fitted by linear least squares to real
OpenMM data, held against the exact switched Lennard-Jones pair potential that made the data.

One species: the tiny argon data (32 atoms, cutoff 0.55 nm switched from 0.45 nm). Two
species: the Kob–Andersen mixture of `test_mixture` (40 atoms: 32 A, 8 B), one table per
species pair. Units: nm, kJ/mol, kJ/mol/nm.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import tiny_config
from test_mixture import KA_CONFIG, R_CUT, R_SWITCH

from forcematch import cli
from forcematch.calculators.tables import PairFunctions
from forcematch.data.frames import Frames
from forcematch.errors import ForcematchError
from forcematch.figures.inputs import read_csv
from forcematch.fit import fit as train
from forcematch.io.h5md import read_h5md
from forcematch.potential import load_model
from forcematch.reference import run_replica
from forcematch.training import train as training_train

TRAIN = {"model": "spline", "energy_weight": 0.0, "force_weight": 1.0, "seed": 0}


def switched_lj_phi(r, sigma, epsilon, r_cut, r_switch):
    """φ(r) S(r) (kJ/mol) of OpenMM's switched LJ, S = 1 − 10x³ + 15x⁴ − 6x⁵."""
    sr6 = (sigma / r) ** 6
    x = np.clip((r - r_switch) / (r_cut - r_switch), 0.0, 1.0)
    return 4 * epsilon * (sr6**2 - sr6) * (1 - 10 * x**3 + 15 * x**4 - 6 * x**5)


def fit_table(out) -> dict[str, np.ndarray]:
    table = read_csv(out / "fit.csv")
    table["pair"] = np.array([f"{a:.0f}-{b:.0f}" for a, b in zip(
        table["species_a"], table["species_b"], strict=True)])
    return table


def deviations(table, pair: str, exact, r_from: float) -> tuple[float, float]:
    """(max |φ_fit − φ_exact| in kJ/mol, median of |φ_fit − φ_exact| / its block standard
    error) over r ≥ r_from of `pair`. The band is the statistical error only: the spline's
    representation error (largest near the closest pairs and where OpenMM's switch starts,
    φ‴ jumping there) adds a bias of ~1e-5 kJ/mol on these data (2e-6 on the default data)."""
    sel = (table["pair"] == pair) & (table["r_nm"] >= r_from) & (table["phi_se_kJ_mol"] > 0)
    r, se = table["r_nm"][sel], table["phi_se_kJ_mol"][sel]
    gap = np.abs(table["phi_kJ_mol"][sel] - exact(r))
    return float(gap.max()), float(np.median(gap / se))


@pytest.fixture(scope="module")
def argon_fit(tiny_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("spline")
    train_frames, val = (read_h5md(tiny_data.dataset / f"{s}.h5") for s in ("train", "val"))
    final = train(train_frames, val, TRAIN, None, 0.55, root, progress=lambda _: None)
    return root, final, train_frames


def test_argon_fit_matches_the_switched_lj_within_its_band(argon_fit):
    root, final, frames = argon_fit
    # 40 frames of 32 atoms: measured 1.0e-4 of the force std on the 40 validation frames
    assert final["val_force_rmse_rel"] < 5e-4
    assert final["fit"]["effective_rank"] == final["fit"]["n_coefficients"]
    table = fit_table(root)

    def exact(r):
        return switched_lj_phi(r, 0.3405, 0.99607, 0.55, 0.45)

    # where the data sample (from 0.02 nm above the closest pair on): measured 2.0e-5 kJ/mol
    # at most, a median 1.8 standard errors
    r_lo = final["fit"]["r_lo_nm"][0]
    gap, ratio = deviations(table, "0-0", exact, r_lo + 0.02)
    assert gap < 1e-4 and ratio < 3.0, (gap, ratio)
    model = load_model(root / "model")
    assert model.model_name == "spline" and model.model.config["r_lo_nm"] == [r_lo]
    metrics = read_csv(root / "metrics.csv")
    assert metrics["epoch"].tolist() == [1]


def test_the_wall_below_the_data_is_repulsive_and_continuous(argon_fit):
    import jax
    import jax.numpy as jnp

    root, final, _ = argon_fit
    potential = load_model(root / "model")
    r_lo = final["fit"]["r_lo_nm"][0]
    with jax.enable_x64(True):
        params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float64), potential.params)
        phi = jax.vmap(jax.grad(lambda r: potential.model.pair_potential(params, r[None])[0]))
        r = jnp.linspace(0.5 * r_lo, r_lo, 400)
        force = -np.asarray(phi(r))
        values = np.asarray(potential.model.pair_potential(params, r))
        below, above = (float(potential.model.pair_potential(params, jnp.array([x]))[0])
                        for x in (r_lo - 1e-9, r_lo + 1e-9))
        # the force at the join itself (r_lo as the model computes it, to the last bit: a
        # table's grid node can land there) and on either side
        grid = potential.model.grid
        join = grid.r0_nm + grid.spacing_nm * jnp.asarray(grid.first, jnp.int32)[0].astype(
            jnp.float64)
        at_join = -np.asarray(phi(jnp.stack([join - 1e-9, join, join + 1e-9])))
    assert np.all(np.diff(force) < 0) and force[0] > 100 * abs(force[-1])  # grows inward
    assert np.all(np.diff(values) < 0)
    assert abs(below - above) < 1e-6
    np.testing.assert_allclose(at_join, at_join[1], rtol=1e-6)


def test_train_cli_fits_a_spline_run_and_export_tabulates_it(tiny_data, tmp_path):
    saved = dict(os.environ)  # `forcematch train` in-process sets thread variables
    try:
        config = tiny_config(tmp_path)
        assert cli.main(["train", "--config", str(config), "--dataset-dir",
                         str(tiny_data.dataset), "--out-dir", str(tmp_path / "run"), "--model",
                         "spline", "--loss", "joint", "--n-train", "all"]) == 0
        assert cli.main(["export", "--model", str(tmp_path / "run" / "model"),
                         "--dataset-dir", str(tiny_data.dataset), "--out-dir",
                         str(tmp_path / "export")]) == 0
    finally:
        os.environ.clear()
        os.environ.update(saved)
    final = json.loads((tmp_path / "run" / "final_metrics.json").read_text())
    assert final["model"] == "spline" and final["val_force_rmse_rel"] < 5e-4
    assert final["val_energy_mae_per_atom_meV"] < 0.1  # joint fit: energies fitted too
    summary = json.loads((tmp_path / "export" / "export.json").read_text())
    errors = summary["tabulation_error"]
    assert errors["openmm_spline"]["max_force_error_rel"] < 1e-4  # measured 1.0e-6
    assert errors["lammps_linear"]["max_force_error_rel"] < 1e-4  # measured 2.7e-5
    # The run's pair table (what the figures plot, so they load no model) is the model's own φ
    # and F in float64, from 0.3 of the cutoff on a 1 pm grid.
    table = read_csv(tmp_path / "run" / "model" / "pair_table.csv",
                     ["species_a", "species_b", "r_nm", "phi_kJ_mol", "force_kJ_mol_nm"])
    functions = PairFunctions(load_model(tmp_path / "run" / "model"))
    phi, force = functions(table["r_nm"], 0)[:2]
    np.testing.assert_allclose(table["phi_kJ_mol"], phi, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(table["force_kJ_mol_nm"], force, rtol=1e-12, atol=1e-9)
    assert table["r_nm"][0] == pytest.approx(0.3 * 0.55, abs=1e-3)
    assert table["r_nm"][-1] == pytest.approx(0.55) and np.allclose(np.diff(table["r_nm"]), 1e-3)


def test_validation_and_figures_treat_a_spline_run_like_the_others(tiny_data, tmp_path):
    """`forcematch validate` and `forcematch figures` on a spline run and a pair run: the
    pair-potential figure holds both against the exact switched LJ of the dataset."""
    saved = dict(os.environ)
    try:
        config = tiny_config(tmp_path, train={"epochs": 10})
        for model in ("spline", "pair"):
            run = tmp_path / "train" / f"{model}-force-nall"
            assert cli.main(["train", "--config", str(config), "--dataset-dir",
                             str(tiny_data.dataset), "--out-dir", str(run), "--model", model,
                             "--loss", "force", "--n-train", "all"]) == 0
            assert cli.main(["validate", "--config", str(config), "--dataset-dir",
                             str(tiny_data.dataset), "--model", str(run / "model"),
                             "--out-dir", str(tmp_path / "validate" / run.name)]) == 0
        assert cli.main(["validate", "--config", str(config), "--dataset-dir",
                         str(tiny_data.dataset), "--out-dir",
                         str(tmp_path / "validate" / "reference")]) == 0
        names = ("spline-force-nall", "pair-force-nall")
        assert cli.main(["figures", "--validate-dirs",
                         *[str(tmp_path / "validate" / n) for n in ("reference", *names)],
                         "--train-dirs",
                         *[str(tmp_path / "train" / n) for n in names], "--dataset-dir",
                         str(tiny_data.dataset), "--out-dir", str(tmp_path / "figures")]) == 0
    finally:
        os.environ.clear()
        os.environ.update(saved)
    spline = json.loads((tmp_path / "validate" / names[0] / "metrics.json").read_text())
    assert spline["model"] == "spline" and spline["fd_max_rel_error"] < 1e-6
    assert spline["force_rmse_rel"] < 5e-4  # held-out test frames
    figures = tmp_path / "figures"
    for ext in ("png", "pdf", "csv", "headline.rst"):
        assert (figures / f"pair_potential.{ext}").stat().st_size > 0
    series = set(np.loadtxt(figures / "pair_potential.csv", delimiter=",", skiprows=1,
                            usecols=0, dtype=str))
    assert series == {*names, "exact switched LJ"}
    headline = (figures / "pair_potential.headline.rst").read_text()
    assert "spline-force-nall" in headline and "pair-force-nall" in headline


def test_the_trainer_refuses_a_spline_run(tiny_data, tmp_path):
    """`forcematch.fit.fit` chooses between the fit and the trainer; the trainer itself takes
    networks only (it never calls the spline fit)."""
    frames, val = (read_h5md(tiny_data.dataset / f"{s}.h5") for s in ("train", "val"))
    with pytest.raises(ForcematchError, match="fitted by linear least squares, not trained"):
        training_train(frames, val, TRAIN, None, 0.55, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_a_fit_needs_a_frame_per_block(tiny_data, tmp_path):
    frames, val = (read_h5md(tiny_data.dataset / f"{s}.h5") for s in ("train", "val"))
    with pytest.raises(ForcematchError, match="model.spline.blocks"):
        train(frames.select(np.arange(3)), val, TRAIN, {"blocks": 5}, 0.55, tmp_path)


@pytest.fixture(scope="module")
def ka_data(tmp_path_factory):
    """Kob–Andersen frames: 3 replicas of 60 frames, 2 to fit and 1 to validate."""
    root = tmp_path_factory.mktemp("ka_spline")
    config = dict(KA_CONFIG, simulate=dict(KA_CONFIG["simulate"], replicas=3,
                                           frames_per_replica=60))
    frames = []
    for k in range(3):
        run_replica(config, k, root / f"replica_{k}.h5", progress=None)
        frames.append(read_h5md(root / f"replica_{k}.h5"))
    return root, Frames.concatenate(frames[:2]), frames[2]


def test_two_species_fit_one_table_per_pair_each_the_exact_one(ka_data):
    root, frames, val = ka_data
    final = train(frames, val, TRAIN | {"batch_size": 2}, None, R_CUT, root / "fit",
                  progress=lambda _: None)
    assert final["val_force_rmse_rel"] < 2e-3
    table = fit_table(root / "fit")
    sigma, epsilon = 0.3405, 0.99607
    pairs = {"0-0": (sigma, epsilon), "0-1": (0.8 * sigma, 1.5 * epsilon),
             "1-1": (0.88 * sigma, 0.5 * epsilon)}
    assert sorted(set(table["pair"])) == sorted(pairs)
    for k, (name, (s, e)) in enumerate(pairs.items()):
        r_lo = final["fit"]["r_lo_nm"][k]
        gap, ratio = deviations(table, name, lambda r, s=s, e=e: switched_lj_phi(
            r, s, e, R_CUT, R_SWITCH), r_lo + 0.02)
        print(name, gap, ratio)
        assert gap < 1e-3 * e and ratio < 3.0, (name, gap, ratio)
