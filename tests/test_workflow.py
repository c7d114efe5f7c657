"""The whole Snakemake workflow on the tiny config, in a temporary directory; what a config
edit reruns; and the per-run config slices that make it rerun only that."""

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "config" / "tiny.yaml"


def snakemake(workdir: Path, *args: str, configfile: Path = TINY) -> subprocess.CompletedProcess:
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
         "--directory", str(workdir), "--configfile", str(configfile), *args],
        capture_output=True, text=True, env=env, check=False, timeout=900,
    )


def planned_jobs(result: subprocess.CompletedProcess) -> set[tuple[str, str]]:
    """(rule, wildcards) of every job a `snakemake -n` plans; empty if nothing is to be done."""
    assert result.returncode == 0, result.stderr[-4000:]
    text = result.stdout + result.stderr
    if "Nothing to be done" in text:
        return set()
    jobs = set()
    for block in re.split(r"^(?=(?:local)?rule \w+:$)", text, flags=re.MULTILINE)[1:]:
        rule = re.match(r"(?:local)?rule (\w+):", block).group(1)
        wildcards = re.search(r"^\s+wildcards: (.*)$", block, flags=re.MULTILINE)
        jobs.add((rule, wildcards.group(1) if wildcards else ""))
    assert jobs, text[-3000:]
    return jobs


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """The directory of one complete run of the workflow on the tiny config."""
    workdir = tmp_path_factory.mktemp("tiny_workflow")
    result = snakemake(workdir, "--cores", "2")
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir


def copy_run(workdir: Path, dest: Path) -> Path:
    """A copy of a finished run (results and Snakemake's metadata, mtimes kept) to edit."""
    for name in ("results", ".snakemake"):
        shutil.copytree(workdir / name, dest / name, symlinks=True,
                        ignore=shutil.ignore_patterns("locks", "incomplete"))
    return dest


@pytest.mark.slow
def test_tiny_workflow_end_to_end(tiny_run):
    tmp_path = tiny_run
    results = tmp_path / "results"
    for name in ("train.h5", "val.h5", "test.h5", "stats.json"):
        assert (results / "dataset" / name).is_file()
    run = "pair-joint-nall"
    reference = json.loads((results / "validate" / "reference" / "metrics.json").read_text())
    model = json.loads((results / "validate" / run / "metrics.json").read_text())
    for loss in ("energy", "force", "joint"):
        for n, expected in (("16", 16), ("all", 40)):
            sweep = json.loads((results / "validate" / f"pair-{loss}-n{n}" / "metrics.json")
                               .read_text())
            assert (sweep["model"], sweep["loss"], sweep["n_train"]) == ("pair", loss, expected)
            assert sweep["energy_offset_fitted"] is True
            assert math.isfinite(sweep["force_std_ratio"])
    for metrics in (reference, model):
        for key in ("force_rmse", "force_rmse_rel", "force_mae", "energy_mae_per_atom",
                    "fd_max_rel_error", "net_force_max"):
            assert math.isfinite(metrics[key]), key
            assert key in metrics["units"], key
    assert math.isfinite(reference["u_per_atom_eps"])
    # Both energies are translation invariant: the net force is round-off.
    assert reference["net_force_max"] < 1e-3
    assert model["net_force_max"] < 1e-2
    assert reference["fd_max_rel_error"] < 1e-6
    assert model["fd_max_rel_error"] < 1e-6
    # Finite differences of the reference energy expose force labels of the wrong sign.
    collapse = json.loads((results / "diagnose" / "collapse" / "summary.json").read_text())
    assert collapse["runs"]["pair-force"]["fd_reference_energy_vs_labels"] < 1e-3
    assert collapse["runs"]["pair-force-flipped"]["fd_reference_energy_vs_labels"] > 1.0
    epochs = np.genfromtxt(results / "train" / run / "metrics.csv", delimiter=",", names=True)
    assert len(np.atleast_1d(epochs["epoch"])) == 2
    for name in ("parity_force", "parity_energy", "learning_curve", "accuracy_vs_size",
                 "fd_error", "net_force", "collapse"):
        for ext in ("png", "pdf", "csv"):
            path = results / "figures" / f"{name}.{ext}"
            assert path.is_file() and path.stat().st_size > 0, path

    # Nothing left to do; the report renders.
    again = snakemake(tmp_path, "--cores", "2", "-n")
    assert "Nothing to be done" in again.stdout + again.stderr
    report = snakemake(tmp_path, "--report", str(tmp_path / "report.html"))
    assert report.returncode == 0, report.stderr[-3000:]
    assert (tmp_path / "report.html").stat().st_size > 10_000


def test_dry_run_reports_a_bad_config_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"system": {"cutoff_nm": 0.7, "switch_nm": 0.75}}))
    result = snakemake(tmp_path, "-n", configfile=bad)
    assert result.returncode != 0
    assert "system.switch_nm = 0.75 nm must be less than system.cutoff_nm" in (
        result.stdout + result.stderr)


@pytest.mark.slow
def test_run_time_resources_rerun_nothing(tiny_run):
    # Devices and HDF5 streaming are resources, not config keys: not rerun triggers.
    result = snakemake(tiny_run, "--cores", "2", "-n", "-p", "--set-resources",
                       "train:train_devices=1", "train:stream_from_hdf5=1")
    assert planned_jobs(result) == set()


TRAIN_AND_VALIDATE = {
    ("train", f"model=pair, loss=energy, n_train={n}") for n in ("16", "all")} | {
    ("validate_model", f"run=pair-energy-n{n}") for n in ("16", "all")}


@pytest.mark.slow
@pytest.mark.parametrize(("train_by_run", "expected"), [
    # One run's settings: that run's two training-set sizes, their validations, the figures.
    ({"pair-energy": {"learning_rate": 0.005}},
     TRAIN_AND_VALIDATE | {("figures", ""), ("all", "")}),
    # A run only the collapse diagnostic trains: the diagnostic and the figures.
    ({"global_readout-force": {"learning_rate": 0.005}},
     {("diagnose_collapse", ""), ("figures", ""), ("all", "")}),
    # A run no job trains: nothing.
    ({"atomic-joint": {"learning_rate": 0.005}}, set()),
], ids=["pair-energy", "global_readout-force", "atomic-joint"])
def test_editing_one_run_reruns_only_that_run(tiny_run, tmp_path, train_by_run, expected):
    workdir = copy_run(tiny_run, tmp_path / "work")
    config = yaml.safe_load(TINY.read_text()) | {"train_by_run": train_by_run}
    edited = tmp_path / "edited.yaml"
    edited.write_text(yaml.safe_dump(config))
    result = snakemake(workdir, "--cores", "2", "-n", configfile=edited)
    assert planned_jobs(result) == expected


def test_run_slice_gives_the_run_config_of_the_whole_config(tmp_path):
    from forcematch.config import load_config, stage_config, write_if_changed
    from forcematch.sweep import DIAGNOSE_RUNS, parse_run_name, run_config, run_slice, sweep_runs

    config = load_config(ROOT / "config" / "config.yaml")  # three families, per-run settings
    runs = sweep_runs(config)
    assert len(runs) == 18
    for run in runs:
        model, loss, n_train = parse_run_name(run)
        path = write_if_changed(tmp_path / f"{run}.json", run_slice(config, model, loss))
        sliced = json.loads(path.read_text())
        assert set(sliced["train_by_model"]) <= {model}
        assert set(sliced["train_by_run"]) <= {f"{model}-{loss}"}
        assert set(sliced["model"]) <= {model}
        # What `forcematch train --config <slice> --model --loss --n-train` trains.
        from_slice = run_config(load_config(path), model, loss, n_train)
        whole = run_config(config, model, loss, n_train)
        assert from_slice["train"] == whole["train"]
        assert from_slice["model"].get(model) == whole["model"].get(model)
        assert run_slice(from_slice, model, loss) == run_slice(whole, model, loss)
        assert stage_config(from_slice, "dataset") == stage_config(whole, "dataset")
    mpnn_energy = run_config(config, "mpnn", "energy", "all")["train"]
    assert mpnn_energy["learning_rate"] == 0.005 and mpnn_energy["batch_size"] == 2
    # Validation does not read the train sections; the diagnostic keeps only what it trains.
    assert "train" not in stage_config(config, "validate")
    diagnose = stage_config(config, "diagnose")
    assert set(diagnose["train_by_model"]) <= {m for m, _ in DIAGNOSE_RUNS}
    assert set(diagnose["train_by_run"]) <= {f"{m}-{loss}" for m, loss in DIAGNOSE_RUNS}
    assert set(diagnose["model"]) <= {m for m, _ in DIAGNOSE_RUNS}


def test_stage_slices_give_the_stage_hashes_of_the_whole_config(tmp_path):
    # A stage records config_hash(stage_config(<the slice it was given>, stage)): the same hash
    # as the whole config's, so provenance checks compare like with like.
    from forcematch.config import (
        STAGE_SECTIONS,
        config_hash,
        load_config,
        stage_config,
        write_if_changed,
    )

    config = load_config(ROOT / "config" / "config.yaml")
    for stage in STAGE_SECTIONS:
        path = write_if_changed(tmp_path / f"{stage}.json", stage_config(config, stage))
        loaded = load_config(path)
        assert config_hash(stage_config(loaded, stage)) == config_hash(stage_config(config, stage))
        assert config_hash(stage_config(loaded, "dataset")) == config_hash(
            stage_config(config, "dataset"))


@pytest.mark.parametrize(("bad", "named"), [
    ({"model": {"paer": {}}}, ["paer"]),
    ({"model": {"pair": {"hiden": [8]}}}, ["hiden", "model.pair"]),
    ({"model": {"pair": {"hidden": "32"}}}, ["model.pair.hidden"]),
    ({"train": {"epochs": 8.0}}, ["train.epochs"]),
], ids=["model-family", "model-option", "model-option-type", "float-for-integer"])
def test_dry_run_reports_a_bad_model_or_integer_key(tmp_path, bad, named):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    result = snakemake(tmp_path, "-n", configfile=path)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out[-2000:]
    for text in named:
        assert text in out, out[-2000:]
