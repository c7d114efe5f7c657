"""The whole Snakemake workflow on the tiny config, in a temporary directory."""

import json
import math
import os
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


@pytest.mark.slow
def test_tiny_workflow_end_to_end(tmp_path):
    result = snakemake(tmp_path, "--cores", "2")
    assert result.returncode == 0, result.stderr[-4000:]
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
