"""Config validation: the schema and the derived checks name the key that is wrong."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from forcematch.config import (
    config_hash,
    load_config,
    stage_config,
    validate_config,
    write_if_changed,
)
from forcematch.errors import ForcematchError

ROOT = Path(__file__).resolve().parents[1]


def test_default_config_is_valid_and_fills_defaults():
    config = load_config(ROOT / "config" / "config.yaml")
    assert config["system"]["n_atoms"] == 100
    assert config["simulate"]["replicas"] * config["simulate"]["frames_per_replica"] == 10_000
    assert config["simulate"]["equilibration_steps"] == 10000  # from the schema default
    assert config["validate"]["fd_steps_nm"][0] == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"system": {"n_atom": 10}}, "unknown config key 'n_atom' in 'system'"),
        ({"trian": {}}, "unknown config key 'trian' at the top level"),
        ({"system": {"temperature_K": "hot"}}, "'system.temperature_K' must be of type number"),
        ({"train": {"epochs": 2.5}}, "'train.epochs' must be of type integer"),
        ({"system": {"temperature_K": 0}}, "'system.temperature_K'"),
        ({"system": {"density_g_cm3": -1.0}}, "'system.density_g_cm3'"),
        ({"simulate": {"timestep_fs": 0}}, "'simulate.timestep_fs'"),
        ({"simulate": {"steps_between_frames": 0}}, "'simulate.steps_between_frames'"),
        ({"system": {"cutoff_nm": 0.9}}, "largest allowed cutoff is 0.8578 nm"),
        ({"system": {"switch_nm": 0.8}}, "system.switch_nm = 0.8 nm must be less than"),
        ({"simulate": {"replicas": 2}}, "simulate.replicas = 2 is too few for the split"),
        ({"train": {"energy_weight": 0, "force_weight": 0}}, "both 0"),
        ({"train": {"n_train": 9000}}, "train.n_train = 9000 exceeds the 6000 training frames"),
    ],
)
def test_bad_config_names_the_key(raw, message):
    with pytest.raises(ForcematchError, match=None) as info:
        validate_config(raw)
    assert message in str(info.value)


def test_cutoff_error_states_the_box():
    with pytest.raises(ForcematchError) as info:
        validate_config({"system": {"cutoff_nm": 0.9}})
    assert "box of 1.7156 nm" in str(info.value)


def test_missing_and_unparsable_config_files(tmp_path):
    with pytest.raises(ForcematchError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("system: [unclosed\n")
    with pytest.raises(ForcematchError, match="not valid YAML or JSON"):
        load_config(bad)


def test_stage_slices_change_only_with_their_sections(tmp_path):
    base = validate_config({})
    changed = validate_config({"train": {"epochs": 3}})
    assert config_hash(stage_config(base, "simulate")) == config_hash(
        stage_config(changed, "simulate"))
    assert config_hash(stage_config(base, "train")) != config_hash(stage_config(changed, "train"))
    path = write_if_changed(tmp_path / "simulate.json", stage_config(base, "simulate"))
    mtime = path.stat().st_mtime_ns
    write_if_changed(path, stage_config(changed, "simulate"))
    assert path.stat().st_mtime_ns == mtime


def test_cli_reports_config_error_and_exits_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"system": {"switch_nm": 0.9, "cutoff_nm": 0.8}}))
    result = subprocess.run(
        [sys.executable, "-m", "forcematch.cli", "check-config", str(bad)],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 2
    assert "system.switch_nm = 0.9 nm must be less than system.cutoff_nm" in result.stderr
    assert "Traceback" not in result.stderr


def test_sweep_runs_and_run_overrides():
    from forcematch.config import run_config, sweep_runs

    config = validate_config({"sweep": {"models": ["pair"], "losses": ["energy", "force"],
                                        "n_train": [60, "all"]}})
    assert sweep_runs(config) == ["pair-energy-n60", "pair-energy-nall", "pair-force-n60",
                                  "pair-force-nall"]
    force = run_config(config, "pair", "force", "60")["train"]
    assert force["energy_weight"] == 0 and force["force_weight"] == 1.0
    # 6,000 frames in all: a 60-frame subset gets 100x the epochs, capped at max_epochs.
    assert force["n_train"] == 60 and force["epochs"] == 200
    assert run_config(config, "pair", "energy", "all")["train"]["force_weight"] == 0
    with pytest.raises(ForcematchError, match="unknown loss 'both'"):
        run_config(config, "pair", "both", "all")
    with pytest.raises(ForcematchError, match="'joint' needs"):
        run_config(validate_config({"train": {"energy_weight": 0}}), "pair", "joint", "all")
    with pytest.raises(ForcematchError, match="sweep.losses"):
        validate_config({"sweep": {"losses": ["forces"]}})


def test_settings_by_model_then_by_run():
    from forcematch.config import run_config

    config = validate_config({
        "train": {"learning_rate": 0.01, "batch_size": 8},
        "train_by_model": {"mpnn": {"learning_rate": 0.02, "batch_size": 2}},
        "train_by_run": {"mpnn-energy": {"learning_rate": 0.005}},
    })
    energy = run_config(config, "mpnn", "energy", "all")["train"]
    assert (energy["learning_rate"], energy["batch_size"]) == (0.005, 2)
    joint = run_config(config, "mpnn", "joint", "all")["train"]
    assert (joint["learning_rate"], joint["batch_size"]) == (0.02, 2)
    assert run_config(config, "pair", "energy", "all")["train"]["learning_rate"] == 0.01
    with pytest.raises(ForcematchError, match="'train_by_run': 'mpnn-both' does not match"):
        validate_config({"train_by_run": {"mpnn-both": {}}})
    with pytest.raises(ForcematchError, match="train.learning_rate"):
        run_config(validate_config({"train_by_run": {"pair-force": {"learning_rate": -1}}}),
                   "pair", "force", "all")
