"""What forcematch refuses, and what it says: one case per row of the documented catalogue
(docs/explanation/refusals.md).

Every case runs a real `forcematch` subcommand (in-process through `forcematch.cli.main`, so
the exit status is the one the console script returns) on real files made by real runs of the
tiny config, breaks one thing, and checks the exit status (2) and the one-line message. The
documented table "What forcematch refuses, and what it says" lists the same ids; a test keeps the
two in step.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import flax.serialization
import h5py
import numpy as np
import pytest
from bad_input_config import CASES as CONFIG_CASES
from bad_input_data import CASES as DATA_CASES
from bad_input_import import CASES as IMPORT_CASES
from bad_input_training import CASES as TRAINING_CASES
from catalogue import TINY, Case, Tiny, config_with, other_system_dataset, run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tiny_data, tmp_path_factory) -> Tiny:
    root = tmp_path_factory.mktemp("tiny_model")
    assert run(["train", "--config", tiny_data.config, "--dataset-dir", tiny_data.dataset,
                "--out-dir", root / "train"]) == 0
    return Tiny(tiny_data.root, tiny_data.config, tiny_data.replicas, tiny_data.dataset,
                root / "train" / "model")


@pytest.fixture(autouse=True)
def _keep_environment(keep_environment):
    """Every test here runs `forcematch` in-process (conftest.keep_environment)."""



def check_config(**sections) -> Callable:
    return lambda tiny, tmp: ["check-config", config_with(tmp, **sections)]


# ------------------------------------------------------------------------------ the cases


def unknown_key(tiny, tmp):
    path = tmp / "bad.yaml"
    path.write_text(TINY.read_text().replace("n_atoms: 32", "n_atom: 32"))
    return ["check-config", path]


def config_missing(tiny, tmp):
    return ["check-config", tmp / "nope.yaml"]


def config_not_yaml(tiny, tmp):
    path = tmp / "bad.yaml"
    path.write_text("system: [unclosed\n")
    return ["check-config", path]


def replica_out_of_range(tiny, tmp):
    return ["simulate", "--config", tiny.config, "--replica", 3, "--out", tmp / "r.h5"]


def simulation_blows_up(tiny, tmp):
    config = config_with(tmp, simulate={"timestep_fs": 1000.0, "equilibration_steps": 0})
    return ["simulate", "--config", config, "--replica", 0, "--out", tmp / "r.h5"]


def input_missing(tiny, tmp):
    return ["dataset", "--config", tiny.config, "--inputs", *tiny.replicas[:2],
            tmp / "replica_2.h5", "--out-dir", tmp / "dataset"]


def dataset_args(tiny, tmp, replicas):
    return ["dataset", "--config", tiny.config, "--inputs", *replicas, "--out-dir",
            tmp / "dataset"]


def h5_truncated(tiny, tmp):
    replicas = tiny.copy_replicas(tmp)
    data = replicas[1].read_bytes()
    replicas[1].write_bytes(data[: len(data) // 2])
    return dataset_args(tiny, tmp, replicas)


def h5_not_hdf5(tiny, tmp):
    replicas = tiny.copy_replicas(tmp)
    replicas[1].write_text("positions and forces, honest\n")
    return dataset_args(tiny, tmp, replicas)


def h5_not_h5md(tiny, tmp):
    replicas = tiny.copy_replicas(tmp)
    with h5py.File(replicas[1], "w") as f:
        f["positions"] = np.zeros((4, 32, 3))
    return dataset_args(tiny, tmp, replicas)


def h5_missing_unit(tiny, tmp):
    replicas = tiny.copy_replicas(tmp)
    with h5py.File(replicas[2], "r+") as f:
        del f["particles/all/force/value"].attrs["unit"]
    return dataset_args(tiny, tmp, replicas)


def h5_wrong_unit(tiny, tmp):
    replicas = tiny.copy_replicas(tmp)
    with h5py.File(replicas[0], "r+") as f:
        f["particles/all/position/value"].attrs["unit"] = "Angstrom"
    return dataset_args(tiny, tmp, replicas)


def h5_nan(tiny, tmp, field):
    replicas = tiny.copy_replicas(tmp)
    item = {"position": "particles/all/position/value", "force": "particles/all/force/value",
            "energy": "observables/potential_energy/value"}[field]
    with h5py.File(replicas[1], "r+") as f:
        values = f[item][...]
        values[7] = np.nan if field != "force" else np.inf
        f[item][...] = values
    return dataset_args(tiny, tmp, replicas)


def atom_count_mismatch(tiny, tmp):
    replicas = tiny.copy_replicas(tmp)
    config = config_with(tmp, system={"n_atoms": 30})
    assert run(["simulate", "--config", config, "--replica", 2, "--out", replicas[2]]) == 0
    return dataset_args(tiny, tmp, replicas)


def replica_of_other_config(tiny, tmp):
    replicas = tiny.copy_replicas(tmp)
    config = config_with(tmp, simulate={"seed": 8})
    assert run(["simulate", "--config", config, "--replica", 1, "--out", replicas[1]]) == 0
    return dataset_args(tiny, tmp, replicas)


def dataset_of_other_config(tiny, tmp):
    config = config_with(tmp, simulate={"equilibration_steps": 300})
    return ["train", "--config", config, "--dataset-dir", tiny.dataset, "--out-dir",
            tmp / "train"]


def model_of_other_dataset(tiny, tmp):
    # The same config run on a dataset whose files say they come from another config.
    dataset = tiny.copy_dataset(tmp)
    with h5py.File(dataset / "test.h5", "r+") as f:
        params = json.loads(f["parameters"].attrs["json"])
        params["config_hash"] = "0123456789abcdef"
        f["parameters"].attrs["json"] = json.dumps(params)
    return ["validate", "--config", tiny.config, "--dataset-dir", dataset, "--model",
            tiny.model, "--out-dir", tmp / "validate"]


def checkpoint_of_other_config(tiny, tmp):
    out = Path(shutil.copytree(tiny.model.parent, tmp / "train"))
    config = config_with(tmp, train={"learning_rate": 0.02})
    return ["train", "--config", config, "--dataset-dir", tiny.dataset, "--out-dir", out]


def model_dir_not_a_model(tiny, tmp):
    (tmp / "model").mkdir()
    (tmp / "model" / "state.msgpack").write_bytes(b"\x80")
    return ["validate", "--config", tiny.config, "--dataset-dir", tiny.dataset, "--model",
            tmp / "model", "--out-dir", tmp / "validate"]


def model_dir_missing(tiny, tmp):
    return ["validate", "--config", tiny.config, "--dataset-dir", tiny.dataset, "--model",
            tmp / "nope", "--out-dir", tmp / "validate"]


def model_wrong_atoms(tiny, tmp):
    # A dataset of 30-atom replicas (made under its own config) against the 32-atom model.
    config, _ = other_system_dataset(tmp, 30)
    with h5py.File(tmp / "dataset" / "test.h5", "r+") as f:  # as if imported from elsewhere
        params = json.loads(f["parameters"].attrs["json"])
        del params["config_hash"]
        f["parameters"].attrs["json"] = json.dumps(params)
    return ["validate", "--config", config, "--dataset-dir", tmp / "dataset", "--model",
            tiny.model, "--out-dir", tmp / "validate"]


def training_diverges(tiny, tmp):
    config = config_with(tmp, train={"learning_rate": 1e6, "checkpoint_every_steps": 1,
                                     "epochs": 5})
    return ["train", "--config", config, "--dataset-dir", tiny.dataset, "--out-dir",
            tmp / "train"]


def split_missing(tiny, tmp):
    dataset = tiny.copy_dataset(tmp)
    (dataset / "val.h5").unlink()
    return ["train", "--config", tiny.config, "--dataset-dir", dataset, "--out-dir",
            tmp / "train"]


def output_is_a_directory(tiny, tmp):
    (tmp / "replica_0.h5").mkdir()
    return ["simulate", "--config", tiny.config, "--replica", 0, "--out", tmp / "replica_0.h5"]


CASES = [
    Case("unknown-key", "unknown config key (a typo)", unknown_key,
         r"unknown config key 'n_atom' in 'system'; known keys: .*n_atoms"),
    Case("wrong-type", "config value of the wrong type",
         check_config(simulate={"replicas": "five"}),
         r"config key 'simulate.replicas' must be of type integer, got 'five'"),
    Case("temperature-not-positive", "temperature ≤ 0",
         check_config(system={"temperature_K": 0}),
         r"config key 'system.temperature_K': 0 is less than or equal to the minimum of 0"),
    Case("density-not-positive", "density ≤ 0", check_config(system={"density_g_cm3": -1.0}),
         r"config key 'system.density_g_cm3': -1.0 is less than or equal to the minimum of 0"),
    Case("timestep-not-positive", "time step ≤ 0", check_config(simulate={"timestep_fs": 0}),
         r"config key 'simulate.timestep_fs': 0 is less than or equal to the minimum of 0"),
    Case("frame-stride-zero", "steps between frames < 1",
         check_config(simulate={"steps_between_frames": 0}),
         r"config key 'simulate.steps_between_frames': 0 is less than the minimum of 1"),
    Case("cutoff-over-half-box", "cutoff ≥ half the box",
         check_config(system={"cutoff_nm": 0.6, "switch_nm": 0.5}),
         r"system.cutoff_nm = 0.6 nm must be less than half the box: 32 atoms at 1.3137 g/cm3 "
         r"give a box of 1.1735 nm, so the largest allowed cutoff is 0.5867 nm"),
    Case("switch-over-cutoff", "switching distance ≥ cutoff",
         check_config(system={"switch_nm": 0.55}),
         r"system.switch_nm = 0.55 nm must be less than system.cutoff_nm = 0.55 nm"),
    Case("too-few-replicas", "too few replicas for the split",
         check_config(simulate={"replicas": 2}),
         r"simulate.replicas = 2 is too few for the split: split.val_replicas \(1\) \+ "
         r"split.test_replicas \(1\) \+ at least 1 training replica = 3"),
    Case("n-train-too-large", "more training frames asked for than exist",
         check_config(train={"n_train": 41}),
         r"train.n_train = 41 exceeds the 40 training frames \(1 replicas x 40 frames\)"),
    Case("unknown-model", "unknown model family", check_config(train={"model": "mace"}),
         r"config key 'train.model': 'mace' is not one of \['pair', 'spline', 'atomic', 'mpnn', "
         r"'graph_network'\]"),
    Case("config-missing", "config file missing", config_missing,
         r"config file not found: .*nope.yaml"),
    Case("config-not-yaml", "config file that is not YAML", config_not_yaml,
         r"bad.yaml: not valid YAML or JSON"),
    Case("replica-out-of-range", "replica index outside the config's replicas",
         replica_out_of_range, r"--replica 3 is outside 0..2 \(simulate.replicas = 3\)"),
    Case("output-is-directory", "output path that is a directory", output_is_a_directory,
         r"output file .*replica_0.h5 is an existing directory"),
    Case("simulation-blows-up", "blown-up simulation (NaN energy or coordinates)",
         simulation_blows_up, r"replica 0: .* at MD step \d+ \(frame \d+\)"),
    Case("input-missing", "missing input trajectory", input_missing,
         r"input trajectory not found: .*replica_2.h5"),
    Case("h5-truncated", "truncated or corrupt HDF5 file", h5_truncated,
         r"replica_1.h5: .*(corrupt|truncated)"),
    Case("not-hdf5", "a file that is not HDF5", h5_not_hdf5,
         r"replica_1.h5: not a readable HDF5 file"),
    Case("not-h5md", "HDF5 that is not H5MD", h5_not_h5md,
         r"replica_1.h5: not an H5MD file \(no /h5md group\)"),
    Case("unit-missing", "array without a `unit` attribute", h5_missing_unit,
         r"replica_2.h5: /particles/all/force/value has no 'unit' attribute "
         r"\(expected unit 'kJ mol-1 nm-1'\)"),
    Case("unit-wrong", "array with the wrong unit", h5_wrong_unit,
         r"replica_0.h5: /particles/all/position/value has unit 'Angstrom', expected 'nm'"),
    Case("nan-position", "NaN position", lambda t, p: h5_nan(t, p, "position"),
         r"replica_1.h5: non-finite position at frame 7"),
    Case("inf-force", "infinite force", lambda t, p: h5_nan(t, p, "force"),
         r"replica_1.h5: non-finite force at frame 7"),
    Case("nan-energy", "NaN energy", lambda t, p: h5_nan(t, p, "energy"),
         r"replica_1.h5: non-finite potential_energy at frame 7"),
    Case("atom-count-mismatch", "replicas with different atom counts", atom_count_mismatch,
         r"replica_2.h5: holds 30 atoms but system.n_atoms is 32"),
    Case("replica-other-config", "replica simulated under another config",
         replica_of_other_config,
         r"replica_1.h5 was made under config_hash \w+, the current config under \w+: outputs of "
         r"different configs cannot be mixed"),
    Case("dataset-other-config", "training on a dataset built from another config",
         dataset_of_other_config, r"train.h5 was made under config_hash \w+, the current "
         r"config under \w+: outputs of different configs cannot be mixed"),
    Case("model-other-dataset", "validating a model on a test set of another dataset",
         model_of_other_dataset, r"test.h5 was made under config_hash 0123456789abcdef, the "
         r"training data of the model in .* under \w+: outputs of different configs cannot be "
         r"mixed"),
    Case("checkpoint-other-config", "a checkpoint of another model or config in the run "
         "directory", checkpoint_of_other_config,
         r"checkpoint belongs to another run \(differs in train_config.learning_rate "
         r"\(0.01 -> 0.02\)\)"),
    Case("model-dir-missing", "model directory missing", model_dir_missing,
         r"model directory not found: .*nope"),
    Case("not-a-model", "a directory that is not a forcematch model", model_dir_not_a_model,
         r"model .*is not a forcematch model \(config.json, state.msgpack\)"),
    Case("model-wrong-atoms", "test frames with another atom count than the model's",
         model_wrong_atoms, r"test.h5: holds 30 atoms but the model in .* was trained on 32"),
    Case("split-missing", "dataset split missing", split_missing,
         r"dataset split not found: .*val.h5"),
    Case("training-diverges", "divergent training (loss NaN or inf)", training_diverges,
         r"training diverged: loss is (nan|inf) at epoch 1, step 3 \(try a lower learning_rate "
         r"or grad_clip_norm\); last good checkpoint: step 2 in .*checkpoint"),
]
# The documented order: these rows, then one table per area.
CASES += CONFIG_CASES + TRAINING_CASES + DATA_CASES + IMPORT_CASES


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_refused_with_a_clear_message(case, tiny, tmp_path, capsys):
    argv = case.argv(tiny, tmp_path)
    capsys.readouterr()
    status = run(argv)
    err = capsys.readouterr().err.strip()
    assert status == 2, err
    assert len(err.splitlines()) == 1, err  # one line
    assert err.startswith(f"forcematch {argv[0]}: error: "), err
    assert re.search(case.message, err), err


def test_failures_leave_no_output_that_looks_complete(tiny, tmp_path, capsys):
    """A bad replica among good ones: dataset refuses before writing anything; divergent
    training keeps its last good checkpoint and writes no model or metrics."""
    assert run(h5_nan(tiny, tmp_path, "force")) == 2
    assert not (tmp_path / "dataset").exists()
    train_dir = tmp_path / "train"
    assert run(training_diverges(tiny, tmp_path)) == 2
    state = flax.serialization.msgpack_restore(
        (train_dir / "checkpoint" / "state.msgpack").read_bytes())
    assert int(state["step"]) == 2
    # the report of the checks before training, and the checkpoint: no model, no metrics
    assert sorted(p.name for p in train_dir.iterdir()) == ["checkpoint", "preflight.json"]


def test_documented_catalogue_matches_the_cases():
    page = (ROOT / "docs" / "explanation" / "refusals.md").read_text()
    ids = re.findall(r"^\| `([a-z0-9-]+)` \|", page, flags=re.M)
    assert ids == [c.id for c in CASES]
    assert len(ids) >= 20


def test_console_script_exits_non_zero_with_the_message(tmp_path):
    exe = Path(sys.executable).parent / "forcematch"
    result = subprocess.run([str(exe), "check-config", str(tmp_path / "nope.yaml")],
                            capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == f"forcematch check-config: error: config file not found: " \
        f"{tmp_path / 'nope.yaml'}"
