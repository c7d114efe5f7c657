"""Coarse-graining as a stage (config `cg`): the dataset stage writes CG splits, `cg-mean-force`
samples the exact mean force on CG test frames, validation splits every model's loss into the
noise floor and its error, and the workflow runs it all on the tiny argon (real OpenMM, real
HDF5, a real spline fit, real Snakemake)."""

from __future__ import annotations

import json
import math

import h5py
import numpy as np
import pytest
import yaml
from conftest import tiny_config
from test_workflow import TINY, snakemake

from forcematch.cg.mapping import LinearMap, decimation
from forcematch.cg.run import read_mean_force, sample_test_mean_force
from forcematch.config import load_config, validate_config
from forcematch.dataset import build_dataset
from forcematch.errors import ForcematchError
from forcematch.io.h5md import read_h5md, read_parameters

# Enough to exercise every part, not to converge: 3 test frames, 1 ps of sampling each.
TINY_CG = {"keep_every": 2}
TINY_MEAN_FORCE = {"frames": 3, "equilibration_ps": 0.2, "sample_ps": 1.0, "samples": 24,
                   "runs": 2, "blocks": 4}


@pytest.fixture(scope="module")
def cg_data(tiny_data, tmp_path_factory):
    """The tiny replicas split into a CG dataset, and the mean force on 3 of its test frames."""
    root = tmp_path_factory.mktemp("cg")
    config_path = tiny_config(root, cg=TINY_CG, cg_mean_force=TINY_MEAN_FORCE,
                              diagnose={"enabled": False})
    config = load_config(config_path)
    stats = build_dataset(config, tiny_data.replicas, root / "dataset", progress=lambda _: None)
    sampled = sample_test_mean_force(config, tiny_data.replicas, root / "dataset" / "test.h5",
                                     root / "mean_force.h5", progress=lambda _: None)
    return config, root, stats, sampled


def test_the_dataset_stage_writes_decimated_sites(tiny_data, cg_data):
    config, root, stats, _ = cg_data
    atomistic = read_h5md(tiny_data.dataset / "test.h5")
    cg = read_h5md(root / "dataset" / "test.h5")
    assert (cg.n_frames, cg.n_atoms, stats["cg"]["n_sites"]) == (atomistic.n_frames, 16, 16)
    # site I is atom 2I: its position (wrapped) and its own full force
    np.testing.assert_array_equal(cg.forces_kJ_mol_nm, atomistic.forces_kJ_mol_nm[:, ::2])
    delta = cg.positions_nm - atomistic.positions_nm[:, ::2]
    box = atomistic.box_nm[:, None, :]
    assert np.abs(delta - box * np.round(delta / box)).max() < 1e-6
    np.testing.assert_array_equal(cg.masses_amu, atomistic.masses_amu[::2])
    # the map travels with the data, and reads back as the map that made them
    record = read_parameters(root / "dataset" / "test.h5")["cg_map"]
    mapping = LinearMap.from_record(record)
    np.testing.assert_array_equal(mapping.position_weights,
                                  decimation(32, np.arange(0, 32, 2)).position_weights)
    # decimated labels are not a translation-invariant energy's forces: they do not sum to 0
    assert np.linalg.norm(cg.forces_kJ_mol_nm.sum(axis=1), axis=1).mean() > 1.0


def test_the_mean_force_file_reads_back_with_units(cg_data):
    _, root, _, sampled = cg_data
    again = read_mean_force(root / "mean_force.h5", n_sites=16, n_test_frames=40)
    np.testing.assert_array_equal(again.mean, sampled.mean)
    np.testing.assert_array_equal(again.frame_index, [0, 20, 39])
    assert again.mean.shape == again.standard_error.shape == (3, 16, 3)
    np.testing.assert_array_equal(again.block_standard_error, sampled.block_standard_error)
    assert (again.standard_error > 0).all() and (again.label_variance > 0).all()
    assert (again.block_standard_error > 0).all()
    with h5py.File(root / "mean_force.h5") as f:
        assert f["mean_force"].attrs["unit"] == "kJ mol-1 nm-1"
    # The free atoms are in equilibrium: their mean force vanishes, so by Newton's third law
    # the kept sites' mean forces sum to zero within the sampling error.
    net = again.mean.sum(axis=1)
    net_se = np.sqrt((again.standard_error ** 2).sum(axis=1))
    assert (np.abs(net) < 5 * net_se).all()
    with pytest.raises(ForcematchError, match="shape"):
        read_mean_force(root / "mean_force.h5", n_sites=32, n_test_frames=40)


def test_the_mean_force_refuses_a_test_split_of_other_data(tiny_data, cg_data, tmp_path):
    config, root, _, _ = cg_data
    reversed_replicas = list(reversed(tiny_data.replicas))  # the test replica is another one
    with pytest.raises(ForcematchError, match="mapped test replicas"):
        sample_test_mean_force(config, reversed_replicas, root / "dataset" / "test.h5",
                               tmp_path / "mf.h5", progress=lambda _: None)
    assert not (tmp_path / "mf.h5").exists()


def test_validation_splits_a_cg_models_loss(cg_data, tmp_path):
    """A spline fitted to the CG labels: its loss on the sampled frames is exactly floor +
    error + closure, and the loss is the labels' own squared error against its forces."""
    from forcematch.fit import fit
    from forcematch.potential import load_model
    from forcematch.validation.validate import validate_model

    config, root, stats, _ = cg_data
    train, val, test = (read_h5md(root / "dataset" / f"{s}.h5") for s in ("train", "val",
                                                                           "test"))
    settings = config["train"] | {"model": "spline", "energy_weight": 0.0, "force_weight": 1.0}
    fit(train, val, settings, {"knot_spacing_nm": 0.01}, config["system"]["cutoff_nm"],
        tmp_path / "run", stats=stats["train"], progress=lambda _: None)
    metrics = validate_model(config, tmp_path / "run" / "model", root / "dataset" / "test.h5",
                             tmp_path / "validate", mean_force=root / "mean_force.h5",
                             progress=lambda _: None)
    cg = metrics["cg"]
    assert cg["frames"] == 3
    assert math.isclose(cg["loss"], cg["noise_floor"] + cg["model_error"] + cg["closure"],
                        rel_tol=1e-12)
    predicted = load_model(tmp_path / "run" / "model").predict(test.positions_nm,
                                                               test.box_nm)[1]
    ids = [0, 20, 39]
    expected = np.mean((test.forces_kJ_mol_nm[ids] - predicted[ids]) ** 2)
    assert math.isclose(cg["loss"], expected, rel_tol=1e-5)
    # half the kept atoms' neighbours are integrated out: the labels are far from the mean
    assert 0.1 < cg["noise_floor_rel"] < 1.0 and cg["noise_floor_rel_se"] > 0
    assert json.loads((tmp_path / "validate" / "metrics.json").read_text())["cg"] == cg


@pytest.mark.parametrize(("change", "message"), [
    ({"cg": TINY_CG}, "cg and diagnose.enabled"),
    ({"cg": TINY_CG | {"keep_every": 32}, "diagnose": {"enabled": False}},
     "leaves one site"),
    ({"cg": TINY_CG, "cg_mean_force": {"frames": 41}, "diagnose": {"enabled": False}},
     "exceeds the 40 test frames"),
    ({"cg": TINY_CG, "cg_mean_force": {"samples": 10, "blocks": 4},
      "diagnose": {"enabled": False}}, "do not split into"),
    ({"cg": TINY_CG, "cg_mean_force": {"sample_ps": 0.1, "samples": 400},
      "diagnose": {"enabled": False}}, "fewer than samples"),
], ids=["with-diagnose", "one-site", "too-many-frames", "blocks", "too-short"])
def test_bad_cg_settings_are_refused_by_key(change, message):
    raw = yaml.safe_load(TINY.read_text())
    for section, values in change.items():
        raw[section] = raw.get(section, {}) | values
    with pytest.raises(ForcematchError, match=message):
        validate_config(raw)


def test_cg_needs_simulated_data():
    raw = {"cg": {}, "diagnose": {"enabled": False},
           "import": {"files": ["a.xyz", "b.xyz", "c.xyz"], "units": "ase"}}
    with pytest.raises(ForcematchError, match="cg needs simulated data"):
        validate_config(raw)


@pytest.mark.slow
def test_the_cg_workflow_end_to_end(tmp_path):
    """Snakemake on the tiny config with `cg`: mapping, mean force, spline and pair fitted to
    CG labels, validation with the split, CG MD against the test split's own liquid, figures."""
    config = tiny_config(tmp_path, "cg.yaml", cg=TINY_CG, cg_mean_force=TINY_MEAN_FORCE,
                         diagnose={"enabled": False},
                         sweep={"models": ["spline", "pair"], "losses": ["force"],
                                "n_train": ["all"]})
    result = snakemake(tmp_path, "--cores", "2", configfile=config)
    assert result.returncode == 0, result.stderr[-4000:]
    results = tmp_path / "results"
    assert (results / "cg" / "mean_force.h5").is_file()
    assert not (results / "validate" / "reference").exists()  # no reference potential for CG
    for run in ("spline-force-nall", "pair-force-nall"):
        metrics = json.loads((results / "validate" / run / "metrics.json").read_text())
        assert metrics["cg"]["frames"] == 3 and metrics["n_atoms"] == 16
        md = json.loads((results / "md" / run / "md.json").read_text())
        assert md["against_reference"]["potential_eps_per_atom"] is None  # a free energy
    reference = json.loads((results / "md" / "reference" / "md.json").read_text())
    assert reference["engine"] == "data" and "coarse-grained" in reference["note"]
    assert (results / "figures" / "cg_split.png").stat().st_size > 0
    headline = (results / "figures" / "cg_split.headline.rst").read_text()
    assert "spline-force-nall loss" in headline and "pair-force-nall loss" in headline


def test_the_standard_error_comes_from_independent_runs(tiny_data, cg_data):
    """Each frame is sampled in cg_mean_force.runs runs of their own seeds: the file's mean is
    their mean, its standard error their spread over sqrt(runs) (a frame sampled again run by
    run gives the same numbers)."""
    from forcematch.cg.mapping import mapping_from_config
    from forcematch.cg.mean_force import sample_mean_force
    from forcematch.cg.run import atomistic_test_frames, settings_from_config
    from forcematch.reference.system import build_system, lj_system_from_config

    config, _, _, sampled = cg_data
    atoms = atomistic_test_frames(config, tiny_data.replicas)
    mapping = mapping_from_config(config["cg"], atoms.n_atoms, atoms.species)
    system = build_system(lj_system_from_config(config))
    frame = int(sampled.frame_index[1])
    runs = [sample_mean_force(system, atoms.positions_nm[frame], atoms.box_nm[frame], mapping,
                              settings_from_config(config, 1, r)).mean for r in range(2)]
    np.testing.assert_allclose(sampled.mean[1], np.mean(runs, axis=0), rtol=1e-12)
    np.testing.assert_allclose(sampled.standard_error[1],
                               np.std(runs, axis=0, ddof=1) / np.sqrt(2), rtol=1e-12)
    assert settings_from_config(config, 1, 0).seed != settings_from_config(config, 1, 1).seed


def test_cg_data_have_no_reference_to_validate_against(cg_data, tmp_path, capsys,
                                                        keep_environment):
    from forcematch.cli import main

    _, root, _, _ = cg_data
    config = root / "config.yaml"
    code = main(["validate", "--config", str(config), "--dataset-dir", str(root / "dataset"),
                 "--out-dir", str(tmp_path / "out")])
    assert code != 0 and not (tmp_path / "out").exists()
    assert "coarse-grained data have none: give --model" in capsys.readouterr().err
