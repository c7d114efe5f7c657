"""Config validation: the schema and the derived checks name the key that is wrong."""

import json
import math
import subprocess
import sys
from pathlib import Path
from types import MappingProxyType

import pytest
import yaml

from forcematch.config import (
    box_length_nm,
    config_hash,
    data_parts,
    load_config,
    model_families,
    model_settings,
    stage_config,
    train_settings,
    validate_config,
    write_if_changed,
)
from forcematch.errors import ForcematchError
from forcematch.units import AVOGADRO_PER_MOL

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
    from forcematch.config.sweep import run_config, sweep_runs

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


def test_a_step_budget_is_not_scaled_for_subsets():
    from forcematch.config.sweep import run_config

    # 6,000 simulated training frames; steps do not depend on the size, so no epoch scaling
    config = validate_config({"train": {"steps": 6000, "epochs": 8},
                              "train_by_model": {"graph_network": {"steps": None}}})
    for n in ("60", "600", "all"):
        train = run_config(config, "pair", "force", n)["train"]
        assert (train["steps"], train["epochs"]) == (6000, 8)
    # a family back on an epoch budget is scaled as before
    graph = run_config(config, "graph_network", "force", "600")["train"]
    assert graph["steps"] is None and graph["epochs"] == 80
    # the default experiment's budgets: its step counts whatever the subset
    default = load_config(ROOT / "config" / "config.yaml")
    steps = {m: run_config(default, m, "joint", "100")["train"]["steps"]
             for m in ("pair", "atomic", "mpnn")}
    assert steps == {"pair": 9000, "atomic": 2250, "mpnn": 6000}


def test_settings_by_model_then_by_run():
    from forcematch.config.sweep import run_config

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
    # an override is checked against the train options when the config is loaded
    with pytest.raises(ForcematchError, match="'train_by_run.pair-force.learning_rate'"):
        run_config(validate_config({"train_by_run": {"pair-force": {"learning_rate": -1}}}),
                   "pair", "force", "all")


# ---------------------------------------------------------------------------------------------
# model and train options: the schema's $defs, strict types


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"model": {"paer": {}}},
         "unknown config key 'paer' in 'model'; known keys: atomic, graph_network, mpnn, pair"),
        ({"model": {"pair": {"hiden": [8]}}},
         "unknown config key 'hiden' in 'model.pair'; known keys: activation, basis, hidden, "),
        ({"model": {"pair": {"hidden": ["32"]}}},
         "config key 'model.pair.hidden.0' must be of type integer, got '32' (str)"),
        ({"model": {"pair": {"hidden": "32"}}},
         "config key 'model.pair.hidden' must be of type array, got '32' (str)"),
        ({"model": {"pair": {"n_basis": 16.0}}},
         "config key 'model.pair.n_basis' must be of type integer, got 16.0 (float)"),
        ({"train": {"epochs": 8.0}}, "config key 'train.epochs' must be of type integer, got 8.0"),
        ({"train": {"epochs": True}}, "'train.epochs' must be of type integer, got True (bool)"),
        ({"system": {"temperature_K": False}}, "'system.temperature_K' must be of type number"),
        ({"model": {"pair": {"activation": "relu"}}}, "'model.pair.activation': 'relu' is not one"),
        ({"model": {"mpnn": {"basis": "chebyshev"}}}, "'model.mpnn.basis': 'chebyshev' is not one"),
        ({"model": {"atomic": {"l_max": 5}}}, "'model.atomic.l_max': 5 is greater than the"),
        ({"model": {"atomic": {"n_angular": 0}}}, "'model.atomic.n_angular': 0 is less than"),
        ({"model": {"graph_network": {"mlp_sizes": [0]}}},
         "'model.graph_network.mlp_sizes.0': 0 is less than the minimum of 1"),
        ({"train_by_model": {"paer": {}}}, "config key 'train_by_model': 'paer' is not one of"),
        ({"train_by_model": {"mpnn": {"batch_sise": 2}}},
         "unknown config key 'batch_sise' in 'train_by_model.mpnn'; known keys: batch_size"),
        ({"train_by_model": {"mpnn": {"epochs": 2.0}}},
         "'train_by_model.mpnn.epochs' must be of type integer"),
        ({"train_by_run": {"mpnn-energy": {"learning_rate": "fast"}}},
         "'train_by_run.mpnn-energy.learning_rate' must be of type number"),
        ({"sweep": {"models": ["pair", "paer"]}}, "'sweep.models.1': 'paer' is not one of"),
        ({"train": {"model": "paer"}}, "'train.model': 'paer' is not one of"),
        ({"system": {"temperature_K": math.nan}}, "'system.temperature_K' must be of type number, "
                                                  "got nan (float) (NaN and infinities"),
        ({"system": {"cutoff_nm": math.inf}}, "'system.cutoff_nm' must be of type number, got inf"),
        ({"train": {"learning_rate": -math.inf}}, "'train.learning_rate' must be of type number"),
        ({"validate": {"fd_steps_nm": [1e-3, math.nan]}}, "'validate.fd_steps_nm.1' must be of"),
        ({"train": {"grad_clip_norm": math.nan}},
         "'train.grad_clip_norm' must be of type number or null, got nan"),
        ({"train": {"devices": 2}}, "unknown config key 'devices' in 'train'"),
        ({"train": {"stream_from_hdf5": True}}, "unknown config key 'stream_from_hdf5' in 'train'"),
    ],
)
def test_bad_model_and_train_options_name_the_key(raw, message):
    with pytest.raises(ForcematchError) as info:
        validate_config(raw)
    assert message in str(info.value)


def test_non_finite_numbers_in_files_are_refused(tmp_path):
    (tmp_path / "nan.json").write_text('{"system": {"temperature_K": NaN}}')
    (tmp_path / "inf.yaml").write_text("model: {pair: {r_min_nm: .inf}}\n")
    with pytest.raises(ForcematchError, match="'system.temperature_K' must be of type number"):
        load_config(tmp_path / "nan.json")
    with pytest.raises(ForcematchError, match="'model.pair.r_min_nm' must be of type number"):
        load_config(tmp_path / "inf.yaml")


def test_model_section_is_complete_for_every_family():
    config = validate_config({"model": {"mpnn": {"r_min_nm": 0.2}}})
    assert set(config["model"]) == set(model_families())
    assert config["model"]["pair"] == {"n_basis": 16, "hidden": [16, 16], "activation": "silu",
                                       "basis": "gaussian", "r_min_nm": 0.0, "n_species": 1}
    assert config["model"]["mpnn"] == {**model_settings("mpnn", None), "r_min_nm": 0.2}
    for family in ("atomic", "graph_network"):
        assert config["model"][family] == model_settings(family, {})


def test_overrides_are_checked_but_not_filled():
    config = validate_config({"train_by_model": {"mpnn": {"batch_size": 2}},
                              "train_by_run": {"mpnn-energy": {"learning_rate": 0.005}}})
    assert config["train_by_model"] == {"mpnn": {"batch_size": 2}}
    assert config["train_by_run"] == {"mpnn-energy": {"learning_rate": 0.005}}
    assert config["train"] == dict(train_settings(None))
    # '<family>-<loss>' accepts exactly the families of $defs/model_family
    for family in model_families():
        for loss in ("energy", "force", "joint"):
            validate_config({"train_by_run": {f"{family}-{loss}": {}}})
    with pytest.raises(ForcematchError, match="'train_by_run': 'paer-force' does not match"):
        validate_config({"train_by_run": {"paer-force": {}}})


def test_model_settings_resolves_one_family():
    values = {"hidden": [8]}
    pair = model_settings("pair", values)
    assert pair == {**model_settings("pair", None), "hidden": [8]}
    pair["hidden"].append(4)
    assert values == {"hidden": [8]}  # a deep copy: the caller's dict is never touched
    with pytest.raises(ForcematchError,
                       match="unknown model 'paer'; known models: pair, spline, atomic"):
        model_settings("paer", {})
    with pytest.raises(ForcematchError,
                       match=r"^model: config key 'model\.atomic\.hidden\.1' must be of type int"):
        model_settings("atomic", {"hidden": [8, 8.0]})
    with pytest.raises(ForcematchError, match="unknown config key 'n_bassis' in 'model.mpnn'"):
        model_settings("mpnn", {"n_bassis": 8}, source="config.yaml")


def test_train_settings_accepts_null_clip_and_val_frames():
    train = train_settings({"grad_clip_norm": None, "val_frames": None})
    assert train["grad_clip_norm"] is None and train["val_frames"] is None
    assert train["epochs"] == 8 and train["model"] == "pair"  # the schema defaults
    assert isinstance(train, MappingProxyType)
    with pytest.raises(TypeError):
        train["epochs"] = 3  # read-only
    assert dict(train_settings(train)) == dict(train)  # a read-only mapping is accepted back
    with pytest.raises(ForcematchError,
                       match=r"^run x: config key 'train\.batch_size' must be of type integer"):
        train_settings({"batch_size": "8"}, source="run x")
    with pytest.raises(ForcematchError, match="unknown config key 'devices' in 'train'"):
        train_settings({"devices": 1})


# ---------------------------------------------------------------------------------------------
# the config file as written: a strict loader, and bounds on what a config expands to


@pytest.mark.parametrize(("name", "text", "message"), [
    ("dup.yaml", "system:\n  n_atoms: 32\ntrain:\n  epochs: 2\n  seed: 1\n  epochs: 3\n",
     "dup.yaml: line 6: duplicate key 'epochs' in 'train' (first at line 4)"),
    ("dup.yaml", "train: {epochs: 2}\nsystem: {n_atoms: 32}\ntrain: {seed: 1}\n",
     "dup.yaml: line 3: duplicate key 'train' at the top level (first at line 1)"),
    ("dup.yaml", "train_by_run:\n  pair-energy: {epochs: 2, epochs: 3}\n",
     "line 2: duplicate key 'epochs' in 'train_by_run.pair-energy' (first at line 2)"),
    ("alias.yaml", "train: &t {epochs: 2}\ntrain_by_model: {pair: *t}\n",
     "alias.yaml: line 1: YAML anchor '&t' refused: anchors and aliases are not allowed"),
    ("alias.yaml", "train: {epochs: 2}\ntrain_by_model: {pair: *t}\n",
     "alias.yaml: line 2: YAML alias '*t' refused"),
    ("merge.yaml", "train:\n  <<: {epochs: 3}\n", "line 2: YAML merge key '<<' in 'train'"),
    ("bool.yaml", "yes: 1\n", "line 1: key 'yes' at the top level is not a string (YAML reads "
                              "it as bool); quote it"),
    ("int.yaml", "sweep:\n  1: [pair]\n", "line 2: key '1' in 'sweep' is not a string (YAML "
                                         "reads it as int)"),
    ("null.yaml", "~: 1\n", "key '~' at the top level is not a string (YAML reads it as null)"),
    ("deep.yaml", "a: " + "[" * 33 + "]" * 33 + "\n", "line 1: nested deeper than 32 levels"),
    ("deep.yaml", "a: " + "{b: " * 40 + "1" + "}" * 40 + "\n", "nested deeper than 32 levels"),
    ("dup.json", '{"train": {"epochs": 2},\n "system": {},\n "train": {}}',
     "dup.json: line 1: duplicate key 'train' in the JSON object that starts on this line"),
    ("dup.json", '{"train":\n  {"epochs": 2, "epochs": 3}}', "dup.json: line 2: duplicate key"),
    ("deep.json", "[" * 100_000 + "]" * 100_000, "deep.json: nested deeper than Python can"),
    ("list.yaml", "[]\n", "list.yaml: the config must be a mapping, got list"),
])
def test_config_file_is_read_as_written(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ForcematchError) as info:
        load_config(path)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_billion_laughs_is_refused_before_it_expands(tmp_path):
    from bad_input_config import BILLION_LAUGHS

    path = tmp_path / "lol.yaml"
    path.write_text(BILLION_LAUGHS)
    assert path.stat().st_size < 1024
    with pytest.raises(ForcematchError, match=r"line 1: YAML anchor '&a0' refused"):
        load_config(path)


def test_config_file_size_text_and_kind(tmp_path):
    from forcematch.config.file import MAX_CONFIG_BYTES

    big = tmp_path / "big.yaml"
    big.write_text("# x\n" * (MAX_CONFIG_BYTES // 4 + 1))
    with pytest.raises(ForcematchError, match=r"a config file may have at most 1048576 bytes"):
        load_config(big)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"system:\n  n_atoms: 32\n\xff")
    with pytest.raises(ForcematchError, match=r"bin.yaml: line 3: not UTF-8 text \(byte 22\)"):
        load_config(binary)
    with pytest.raises(ForcematchError, match="is a directory"):
        load_config(tmp_path)
    # what the strict loader still accepts: an empty file, quoted keys, JSON with tabs and NaN
    (tmp_path / "empty.yaml").write_text("")
    assert load_config(tmp_path / "empty.yaml") == validate_config({})
    (tmp_path / "quoted.yaml").write_text("train_by_model: {'pair': {epochs: 3}}\n")
    assert load_config(tmp_path / "quoted.yaml")["train_by_model"] == {"pair": {"epochs": 3}}
    (tmp_path / "tabs.json").write_text('{\n\t"train": {"learning_rate": 3e-05}}')
    assert load_config(tmp_path / "tabs.json")["train"]["learning_rate"] == 3e-05


@pytest.mark.parametrize(("raw", "message"), [
    ({"sweep": {"models": ["pair", "atomic"], "losses": ["energy", "force", "joint"],
                "n_train": list(range(1, 85))}},
     "the sweep asks for 504 training runs (2 sweep.models x 3 sweep.losses x 84 sweep.n_train)"
     "; the limit is 500"),
    ({"simulate": {"replicas": 1001}}, "simulate.replicas = 1001 exceeds the limit of 1000"),
    ({"simulate": {"frames_per_replica": 10**9}}, "atom-frames need 2.4e+04 GB of positions"),
    ({"system": {"n_atoms": 10**9}}, "5 x 2000 x 1000000000 atom-frames need 4.8e+05 GB"),
    ({"simulate": {"equilibration_steps": 10**10}},
     "5 replicas x 10000040000 MD steps (simulate.equilibration_steps + frames_per_replica x "
     "steps_between_frames) x 100 atoms = 5e+12 atom-steps; the limit is 1e+12"),
])
def test_absurd_expansion_is_refused(raw, message):
    with pytest.raises(ForcematchError) as info:
        validate_config(raw)
    assert message in str(info.value)


def test_bounds_leave_the_shipped_configs_alone():
    for name in ("config.yaml", "paper.yaml", "large.yaml", "md_100ps.yaml",
                 "kob_andersen.yaml", "import_ase.yaml", "collapse.yaml", "sizes.yaml"):
        load_config(ROOT / "config" / name)
    # 500 runs exactly is allowed
    validate_config({"sweep": {"models": ["pair"], "losses": ["force"],
                               "n_train": list(range(1, 501))}, "train": {"batch_size": 1}})


def _variant_of_the_default(name: str, changed: str) -> tuple[dict, dict]:
    """(default, variant) configs, asserting that the variant config/`name` shares every stage
    slice but `changed`, and every training run's slice, with config/config.yaml: after a
    default run it reruns only that stage (and the figures)."""
    from forcematch.config.sweep import run_slice, sweep_runs

    default = load_config(ROOT / "config" / "config.yaml")
    variant = load_config(ROOT / "config" / name)
    for stage in {"simulate", "dataset", "validate", "md", "diagnose"} - {changed}:
        assert stage_config(variant, stage) == stage_config(default, stage), (name, stage)
    assert sweep_runs(variant) == sweep_runs(default)
    for run in sweep_runs(default):
        model, loss, _ = run.split("-")
        assert run_slice(variant, model, loss) == run_slice(default, model, loss), (name, run)
    assert stage_config(variant, changed) != stage_config(default, changed)
    return default, variant


def test_the_collapse_config_changes_only_the_study():
    """config/collapse.yaml is the default experiment with the graph network trained."""
    _, collapse = _variant_of_the_default("collapse.yaml", "diagnose")
    assert collapse["diagnose"]["enabled"] and collapse["diagnose"]["runs"] is None


def test_the_100ps_md_config_changes_only_md():
    """config/md_100ps.yaml is the default experiment with 100 ps MD runs."""
    default, longer = _variant_of_the_default("md_100ps.yaml", "md")
    assert longer["md"]["nve_ps"] == 100.0 != default["md"]["nve_ps"]


def test_the_sizes_config_adds_only_100_frame_runs():
    """config/sizes.yaml is the default experiment plus every model x loss at 100 frames: the
    default's runs and stage slices unchanged, so after a default run only the new runs train."""
    from forcematch.config.sweep import run_slice, sweep_runs

    default = load_config(ROOT / "config" / "config.yaml")
    sizes = load_config(ROOT / "config" / "sizes.yaml")
    for stage in ("simulate", "dataset", "validate", "md", "diagnose"):
        assert stage_config(sizes, stage) == stage_config(default, stage), stage
    runs = sweep_runs(default)
    assert len(runs) == 12
    assert sorted(sweep_runs(sizes)) == sorted(runs + [r.replace("-nall", "-n100") for r in runs])
    for run in runs:
        model, loss, _ = run.split("-")
        assert run_slice(sizes, model, loss) == run_slice(default, model, loss), run


def test_slices_are_written_once_under_their_hash(tmp_path):
    from forcematch.config import write_slice, write_stage_slices

    base = validate_config({})
    path = write_slice(tmp_path, "simulate", stage_config(base, "simulate"))
    assert path.name == f"simulate-{config_hash(stage_config(base, 'simulate'))}.json"
    assert json.loads(path.read_text()) == stage_config(base, "simulate")
    stamp = path.stat().st_mtime_ns
    assert write_slice(tmp_path, "simulate", stage_config(base, "simulate")) == path
    assert path.stat().st_mtime_ns == stamp  # unchanged config: same file, same mtime
    other = write_slice(tmp_path, "simulate",
                        stage_config(validate_config({"simulate": {"seed": 9}}), "simulate"))
    assert other != path and path.stat().st_mtime_ns == stamp  # the old file is never touched
    path.write_text("{}")  # edited by hand: restored to what its name says
    assert json.loads(write_slice(tmp_path, "simulate", stage_config(base, "simulate"))
                      .read_text()) == stage_config(base, "simulate")
    paths = write_stage_slices(base, tmp_path / "stages")
    assert set(paths) == {"simulate", "import", "dataset", "train", "cg_mean_force", "validate",
                          "md", "diagnose"}
    assert sorted(p.name for p in (tmp_path / "stages").iterdir()) == sorted(
        p.name for p in paths.values())  # no temporary files left


def test_check_config_prints_the_runs_of_the_sweep(tmp_path):
    path = tmp_path / "one.yaml"
    path.write_text("train: {model: atomic, energy_weight: 0}\n")
    result = subprocess.run(
        [sys.executable, "-m", "forcematch.cli", "check-config", str(path)],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    assert result.stderr.strip() == (f"# config {config_hash(config)}; box 1.715600 nm; "
                                     "1 training run: atomic-force-nall")


A = {"name": "A", "count": 80, "mass_amu": 39.948, "sigma_nm": 0.3405, "epsilon_kJ_mol": 0.99607}
B = {"name": "B", "count": 20, "mass_amu": 83.798, "sigma_nm": 0.36, "epsilon_kJ_mol": 1.4}


@pytest.mark.parametrize(("system", "message"), [
    ({"species": [A]}, r"the counts of system.species add up to 80 = 80 atoms, but "
                       r"system.n_atoms is 100"),
    ({"species": [A, A | {"count": 20}]}, r"system.species names must be unique"),
    ({"species": [A, B], "pair_parameters": [{"species": ["A", "C"], "sigma_nm": 0.3,
                                              "epsilon_kJ_mol": 1.0}]},
     r"system.pair_parameters.0.species names 'C', not one of system.species"),
    ({"species": [A, B], "pair_parameters": [{"species": ["B", "B"], "sigma_nm": 0.3,
                                              "epsilon_kJ_mol": 1.0}]},
     r"system.pair_parameters.0 pairs 'B' with itself"),
    ({"species": [A, B], "pair_parameters": [
        {"species": ["A", "B"], "sigma_nm": 0.3, "epsilon_kJ_mol": 1.0},
        {"species": ["B", "A"], "sigma_nm": 0.3, "epsilon_kJ_mol": 1.0}]},
     r"system.pair_parameters.1: the pair \['B', 'A'\] is given twice"),
    ({"pair_parameters": [{"species": ["A", "B"], "sigma_nm": 0.3, "epsilon_kJ_mol": 1.0}]},
     r"system.pair_parameters needs system.species"),
])
def test_mixture_keys_are_checked(system, message):
    with pytest.raises(ForcematchError, match=message):
        validate_config({"system": system})


def test_a_mixture_box_holds_its_total_mass():
    config = validate_config({"system": {"species": [A, B]}})
    mean_mass = (80 * 39.948 + 20 * 83.798) / 100
    assert box_length_nm(config) == pytest.approx(
        (100 * mean_mass / AVOGADRO_PER_MOL / 1.3137 * 1e21) ** (1 / 3), rel=1e-12)
    # one listed species is the scalar config, to the last bit
    one = validate_config({"system": {"species": [A | {"count": 100}]}})
    assert box_length_nm(one) == box_length_nm(validate_config({}))


@pytest.mark.parametrize(("section", "message"), [
    ({"files": ["a.xyz", "b.xyz"], "units": "ase"},
     r"2 import.files give 2 parts, too few for the split: split.val_replicas \(1\) \+ "
     r"split.test_replicas \(1\) \+ at least 1 for training = 3"),
    ({"files": ["a.xyz"], "units": "ase", "blocks": 3, "energy_files": ["e1", "e2"]},
     r"import.energy_files lists 2 files for 1 import.files"),
    ({"files": ["a.xyz"]}, r"config key 'import': 'units' is a required property"),
    ({"files": ["a.xyz"], "units": "kcal"}, r"config key 'import.units'"),
    ({"files": ["a.xyz"], "units": {"length": "angstrom", "energy": "eV",
                                    "force": "eV/furlong"}}, r"config key 'import.units'"),
])
def test_import_section_is_checked(section, message):
    with pytest.raises(ForcematchError, match=message):
        validate_config({"import": section})


def test_imported_data_need_no_simulated_box():
    """With `import`, the box is in the files: a cutoff over half the config's box passes
    here (the dataset stage checks it against every frame's box)."""
    config = validate_config({"system": {"cutoff_nm": 2.0, "switch_nm": 1.9},
                              "import": {"files": ["a.xyz"], "units": "ase", "blocks": 3}})
    assert config["import"]["format"] == "auto"
    assert data_parts(config) == 3


def test_extends_merges_mappings_and_replaces_everything_else(tmp_path):
    from forcematch.config.file import read_config_with_bases

    (tmp_path / "sub").mkdir()
    (tmp_path / "base.yaml").write_text(
        "system: {n_atoms: 64, cutoff_nm: 0.5}\nsweep: {models: [pair, mpnn], n_train: [all]}\n"
        "train_by_model: {mpnn: {steps: 10, batch_size: 2}}\ncg: {keep_every: 2}\n")
    (tmp_path / "sub" / "middle.yaml").write_text(
        "extends: ../base.yaml\nsystem: {n_atoms: 32}\nsweep: {models: [pair]}\n")
    (tmp_path / "sub" / "top.yaml").write_text(
        "extends: middle.yaml\ntrain_by_model: {mpnn: {steps: 20}}\ncg: null\n")
    merged = read_config_with_bases(tmp_path / "sub" / "top.yaml")
    assert merged == {"system": {"n_atoms": 32, "cutoff_nm": 0.5},
                      "sweep": {"models": ["pair"], "n_train": ["all"]},   # a list replaced
                      "train_by_model": {"mpnn": {"steps": 20, "batch_size": 2}},  # merged
                      "cg": None}                                            # null replaces
    # the shipped variants are the default with their one change
    default = load_config(ROOT / "config" / "config.yaml")
    assert load_config(ROOT / "config" / "sizes.yaml") == default | {
        "sweep": default["sweep"] | {"n_train": [100, "all"]}}


@pytest.mark.parametrize(("files", "message"), [
    ({"a.yaml": "extends: b.yaml\n", "b.yaml": "extends: a.yaml\n"}, "extends makes a cycle"),
    ({"a.yaml": "extends: missing.yaml\n"}, "missing.yaml is not a file"),
    ({"a.yaml": "extends: [b.yaml]\n"}, "extends must name a config file"),
    ({"a.yaml": "extends: b.yaml\n", "b.yaml": "sweep: {n_trian: [all]}\n"}, "n_trian"),
], ids=["cycle", "missing", "not-a-name", "bad-key-in-base"])
def test_a_bad_extends_is_refused_naming_the_file(tmp_path, files, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ForcematchError, match=message) as info:
        load_config(tmp_path / "a.yaml")
    assert "a.yaml" in str(info.value)


def test_command_line_settings_are_typed_as_snakemake_types_top_level_values():
    from forcematch.config.overrides import parse_entries

    parsed = parse_entries(["train={seed: 7, learning_rate: 1e-3, loss_form: mse}",
                            "sweep={models: [pair, spline]}", "cg=null"])
    assert parsed == {"train": {"seed": 7, "learning_rate": 1e-3, "loss_form": "mse"},
                      "sweep": {"models": ["pair", "spline"]}, "cg": None}
    for bad in ("train.seed=1", "seed", "train={seed: [1}"):
        with pytest.raises(ForcematchError, match=r"--config"):
            parse_entries([bad])
