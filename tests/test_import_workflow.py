"""The workflow on data made by other engines: `import` replaces `simulate`, and the rest
(dataset, train, validate, MD against the data's own liquid, figures) runs unchanged.

One ASE extxyz file (its Lennard-Jones calculator driving its own MD), cut into 3 blocks; and
three LAMMPS runs (real `lmp`, `units real`, dumps with a `fix print` energy file each), one
part per file. The trained `pair` model's forces are compared with the engine's own on the
held-out test part."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from engines import ase_lj_md, lammps_lj_md
from test_workflow import snakemake

from forcematch.io.h5md import read_h5md, read_parameters

# A minute of work on 2 cores: one pair model, about a second of MD per run.
SETTINGS = {
    "split": {"val_replicas": 1, "test_replicas": 1},
    "sweep": {"models": ["pair"], "losses": ["joint"], "n_train": ["all"]},
    "train": {"epochs": 30, "batch_size": 8, "val_frames": 16},
    "validate": {"fd_frames": 1, "fd_samples_per_frame": 6},
    "diagnose": {"enabled": False},
    "md": {"equilibration_ps": 0.2, "nve_ps": 0.5, "nvt_ps": 1.0, "record_every": 10,
           "timesteps_fs": [5.0, 2.5], "close_pair_margin": 0.2},
}


def ase_config(root: Path) -> dict:
    path = ase_lj_md(root / "ase_lj.xyz", n_frames=240, stride=2, seed=3)
    return {"system": {"temperature_K": 120.0, "cutoff_nm": 0.8, "switch_nm": 0.7},
            "import": {"files": [str(path)], "units": "ase", "blocks": 3, "gap_frames": 10}}


def lammps_config(root: Path) -> dict:
    try:
        runs = [lammps_lj_md(root / f"lammps_{k}", n_frames=80, stride=4, seed=4928 + k)
                for k in range(3)]
    except RuntimeError as exc:
        pytest.skip(str(exc))
    return {"system": {"temperature_K": 100.0, "cutoff_nm": 0.8, "switch_nm": 0.7},
            "import": {"files": [str(r / "lj.dump") for r in runs], "units": "lammps_real",
                       "energy_files": [str(r / "energy.txt") for r in runs],
                       "masses_amu": {"1": 39.948}}}


@pytest.mark.slow
@pytest.mark.parametrize("make_config", [ase_config, lammps_config], ids=["ase", "lammps"])
def test_imported_data_run_through_the_workflow(tmp_path, make_config):
    config = make_config(tmp_path) | SETTINGS
    config_path = tmp_path / "import.yaml"
    config_path.write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path, "--cores", "2", configfile=config_path)
    assert result.returncode == 0, result.stderr[-4000:]
    results = tmp_path / "results"
    assert not (results / "simulate").exists()  # import replaced the simulate stage
    parts = sorted((results / "import").glob("part_*.h5"))
    assert len(parts) == 3
    source = read_parameters(parts[0])["source"]
    assert source["units"]["declared"] == config["import"]["units"]
    test = read_h5md(results / "dataset" / "test.h5")
    assert test.masses_amu.tolist() == pytest.approx([39.948] * test.n_atoms, rel=1e-3)
    # The model against the other engine's forces on the held-out part.
    metrics = json.loads((results / "validate" / "pair-joint-nall" / "metrics.json")
                         .read_text())
    assert metrics["force_rmse_rel"] < 0.15, metrics["force_rmse_rel"]
    assert metrics["fd_max_rel_error"] < 1e-6 and metrics["net_force_max"] < 1e-2
    assert [row["n_atoms"] for row in metrics["by_species"]] == [test.n_atoms]
    # MD with the model, held against the data's own liquid (no engine reruns the data).
    reference = json.loads((results / "md" / "reference" / "md.json").read_text())
    assert reference["engine"] == "data" and reference["liquid"]["pressure_bar"] is None
    md = json.loads((results / "md" / "pair-joint-nall" / "md.json").read_text())
    assert md["stable"], md.get("stability")
    assert md["against_reference"]["available"]
    assert md["against_reference"]["pressure_bar"] is None
    assert not (results / "validate" / "reference").exists()
    figures = results / "figures"
    assert (figures / "md_rdf.png").is_file() and not (figures / "collapse.png").exists()
