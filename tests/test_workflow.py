"""The whole Snakemake workflow on the tiny config, in a temporary directory; what a config
edit reruns; the per-run config slices that make it rerun only that; and that the config that
runs is the one the user wrote (one file, as `forcematch check-config` shows it, never switched
by another snakemake while a run is under way)."""

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import chromium

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "config" / "tiny.yaml"


def snakemake_argv(workdir: Path, *args: str, configfile: Path | None = TINY) -> list[str]:
    """`snakemake` on this workflow in `workdir`; no --configfile when `configfile` is None."""
    config = ["--configfile", str(configfile)] if configfile is not None else []
    return [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
            "--directory", str(workdir), *config, *args]


ENV = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def snakemake(workdir: Path, *args: str, configfile: Path | None = TINY,
              timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(snakemake_argv(workdir, *args, configfile=configfile),
                          capture_output=True, text=True, env=ENV, check=False, timeout=timeout)


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
    # The simulated data hold a virial: every model's is checked on the test frames (40).
    assert model["n_virial_frames"] == 40
    for key in ("virial_rmse_per_atom", "virial_rmse_rel", "virial_pressure_offset_bar",
                "virial_pressure_offset_se_bar"):
        assert math.isfinite(model[key]) and key in model["units"], key
    # The collapse study: the checks before training expose labels of the wrong sign, the
    # notebook's 3 Å cutoff (no neighbours) and the notebook loss's dominating energy term.
    collapse = json.loads((results / "diagnose" / "collapse" / "summary.json").read_text())
    runs = collapse["runs"]
    assert runs["pair-force"]["checks"]["label_sign"]["level"] == "ok"
    assert runs["pair-force-flipped"]["checks"]["label_sign"]["level"] == "refused"
    assert runs["graph_network-force-3A"]["checks"]["neighbours"]["level"] == "refused"
    balance = runs["graph_network-joint-checks"]["checks"]["gradient_balance"]
    assert balance["energy_over_force"] > 100
    assert all(math.isfinite(r["force_corr"]) for r in runs.values() if r["trained"])
    epochs = np.genfromtxt(results / "train" / run / "metrics.csv", delimiter=",", names=True)
    assert len(np.atleast_1d(epochs["epoch"])) == 2
    # MD with every run and the reference: the same protocol, checks with units.
    md_reference = json.loads((results / "md" / "reference" / "md.json").read_text())
    assert md_reference["stable"] and md_reference["rdf_noise_floor"] > 0
    assert md_reference["momentum_change_relative"] < 1e-5
    for loss in ("energy", "force", "joint"):
        for n in ("16", "all"):
            md = json.loads((results / "md" / f"pair-{loss}-n{n}" / "md.json").read_text())
            # a pair model runs from its table (md.pair_table), within the stated bound
            assert md["engine"] == "jax_md, pair table" and isinstance(md["stable"], bool)
            assert md["pair_table"]["used"] and md["pair_table"]["max_force_error_rel"] <= 1e-6
            assert md["protocol"] == md_reference["protocol"]
    md = json.loads((results / "md" / run / "md.json").read_text())
    if md["equilibration"]["stable"]:  # NVE ran: momentum is conserved to float32 round-off
        assert md["momentum_change_relative"] < 1e-4
    else:  # a 2-epoch model may fail: reported with its time, not crashed on
        assert md["equilibration"]["failure"] and not md["stable"]
    for name in ("parity_force", "parity_energy", "learning_curve", "accuracy_vs_size",
                 "fd_error", "net_force", "collapse", "md_drift", "md_rdf", "md_summary",
                 "pair_potential"):
        for ext in ("png", "pdf", "csv"):
            path = results / "figures" / f"{name}.{ext}"
            assert path.is_file() and path.stat().st_size > 0, path

    # Nothing left to do; the report renders.
    again = snakemake(tmp_path, "--cores", "2", "-n")
    assert "Nothing to be done" in again.stdout + again.stderr
    report = snakemake(tmp_path, "--report", str(tmp_path / "report.html"))
    assert report.returncode == 0, report.stderr[-3000:]
    assert (tmp_path / "report.html").stat().st_size > 10_000


# Every image of the report's `results` loaded by the browser: (name, naturalWidth).
_LOAD_IMAGES = """
const done = arguments[arguments.length - 1];
Promise.all(Object.entries(results).map(([name, r]) => new Promise(resolve => {
  const img = new Image();
  img.onload = () => resolve([name, img.naturalWidth]);
  img.onerror = () => resolve([name, 0]);
  img.src = r.data_uri;
}))).then(done);
"""


@pytest.mark.slow
def test_report_opens_in_a_browser_with_every_figure_and_its_headline(tiny_run, tmp_path):
    from matplotlib.image import imread
    from selenium.webdriver.common.by import By

    report = tiny_run / "report.html"
    result = snakemake(tiny_run, "--report", str(report))
    assert result.returncode == 0 and report.is_file(), result.stderr[-3000:]
    browser = chromium()
    try:
        browser.set_script_timeout(60)
        browser.get(report.as_uri())
        time.sleep(2)  # the report is a React app: let it render
        captions = browser.execute_script(
            "return Object.fromEntries(Object.entries(results).map(([k, r]) => [k, r.caption]))")
        figures = sorted(Path(name).stem for name in captions)
        assert len(figures) == 11 and "collapse" in figures and "md_rdf" in figures, figures
        assert "pair_potential" in figures
        widths = dict(browser.execute_async_script(_LOAD_IMAGES))
        assert all(width > 0 for width in widths.values()), widths
        for name, caption in captions.items():  # what it shows, the config, the numbers
            assert "Config: validation slice " in caption, (name, caption)
        parity = captions["results/figures/parity_force.png"]
        assert re.search(r"pair-joint-nall \d[\d.]* %", parity), parity
        # Open one figure as a reader would: Results, Figures, the eye of parity_force.
        browser.find_element(By.LINK_TEXT, "Results").click()
        time.sleep(1)
        browser.find_element(By.XPATH, "//*[text()='Figures']").click()
        time.sleep(1)
        browser.find_element(By.XPATH, "//*[text()='results/figures/parity_force.png']"
                                       "/ancestor::tr[1]//a[@iconname='eye']").click()
        time.sleep(2)
        shown = browser.execute_script(
            "return Array.from(document.images).map(i => [i.src.slice(0, 40), i.naturalWidth])")
        assert any(src.startswith("data:image/png") and w > 0 for src, w in shown), shown
        browser.save_screenshot(str(tmp_path / "report.png"))
    finally:
        browser.quit()
    pixels = imread(tmp_path / "report.png")[..., :3]
    not_white = (pixels < 0.95).any(axis=-1).mean()
    assert not_white > 0.05 and pixels.std() > 0.05, (not_white, pixels.std())


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
    (rule, f"run=pair-energy-n{n}") for n in ("16", "all") for rule in ("validate_model",
                                                                         "md_model")}


@pytest.mark.slow
@pytest.mark.parametrize(("train_by_run", "expected"), [
    # One run's settings: that run's two training-set sizes, their validations, the figures.
    ({"pair-energy": {"learning_rate": 0.005}},
     TRAIN_AND_VALIDATE | {("figures", ""), ("all", "")}),
    # A run only the collapse diagnostic trains: the diagnostic and the figures.
    ({"graph_network-force": {"learning_rate": 0.005}},
     {("diagnose_collapse", ""), ("figures", ""), ("all", "")}),
    # A run no job trains: nothing.
    ({"atomic-joint": {"learning_rate": 0.005}}, set()),
], ids=["pair-energy", "graph_network-force", "atomic-joint"])
def test_editing_one_run_reruns_only_that_run(tiny_run, tmp_path, train_by_run, expected):
    workdir = copy_run(tiny_run, tmp_path / "work")
    config = yaml.safe_load(TINY.read_text()) | {"train_by_run": train_by_run}
    edited = tmp_path / "edited.yaml"
    edited.write_text(yaml.safe_dump(config))
    result = snakemake(workdir, "--cores", "2", "-n", configfile=edited)
    assert planned_jobs(result) == expected


def test_run_slice_gives_the_run_config_of_the_whole_config(tmp_path):
    from forcematch.config import load_config, stage_config, write_if_changed
    from forcematch.config.sweep import (
        DIAGNOSE_RUNS,
        parse_run_name,
        run_config,
        run_slice,
        sweep_runs,
    )

    config = load_config(ROOT / "config" / "config.yaml")  # four families, per-run settings
    runs = sweep_runs(config)
    assert len(runs) == 12
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


# ---------------------------------------------------------------------------------------------
# The config that runs is the config the user wrote (docs/howto/configuration.md)


def tiny_variant(path: Path, **sections) -> Path:
    """The tiny config with whole sections replaced (None: removed), written to `path`."""
    config = yaml.safe_load(TINY.read_text())
    for section, value in sections.items():
        config.pop(section, None)
        if value is not None:
            config[section] = value
    path.write_text(yaml.safe_dump(config))
    return path


def check_config(path: Path, *overrides: str) -> tuple[dict, str]:
    """(the config `forcematch check-config` prints, its summary line without '# ')."""
    given = ["--config", *overrides] if overrides else []
    result = subprocess.run([sys.executable, "-m", "forcematch.cli", "check-config", str(path),
                             *given], capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), result.stderr.strip().removeprefix("# ")


def snakefile_summary(result: subprocess.CompletedProcess, path: Path) -> str:
    """The line the Snakefile printed when it loaded `path`."""
    prefix = f"forcematch: {path}: "
    lines = [line for line in result.stderr.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0].removeprefix(prefix)


def planned_runs(result: subprocess.CompletedProcess) -> list[str]:
    runs = []
    for rule, wildcards in planned_jobs(result):
        if rule == "train":
            values = dict(item.split("=") for item in wildcards.split(", "))
            runs.append(f"{values['model']}-{values['loss']}-n{values['n_train']}")
    return sorted(runs)


def test_a_config_that_extends_another_runs_the_merged_result(tmp_path):
    """`extends: base.yaml` with one key changed: Snakemake plans what check-config prints,
    the base's runs with the variant's sweep, and every other slice is the base's."""
    shutil.copy(TINY, tmp_path / "base.yaml")
    variant = tmp_path / "variant.yaml"
    variant.write_text("extends: base.yaml\nsweep:\n  n_train: [16]\n")
    config, shown = check_config(variant)
    base, _ = check_config(tmp_path / "base.yaml")
    assert config == base | {"sweep": base["sweep"] | {"n_train": [16]}}
    workdir = tmp_path / "work"
    workdir.mkdir()
    result = snakemake(workdir, "-n", configfile=variant)
    assert snakefile_summary(result, variant) == shown
    assert planned_runs(result) == ["pair-energy-n16", "pair-force-n16", "pair-joint-n16"]


@pytest.mark.parametrize("sweep", [
    None,  # before: Snakemake merged config/config.yaml's 18-run sweep under this file
    {"models": ["pair"], "losses": ["force", "joint"], "n_train": [16]},
], ids=["no-sweep", "sweep"])
def test_check_config_shows_what_snakemake_runs(tmp_path, sweep):
    path = tiny_variant(tmp_path / "mine.yaml", sweep=sweep)
    config, shown = check_config(path)
    workdir = tmp_path / "work"
    workdir.mkdir()
    result = snakemake(workdir, "-n", configfile=path)
    assert snakefile_summary(result, path) == shown
    runs = shown.split(": ", 1)[1].split(", ")
    assert planned_runs(result) == sorted(runs)
    assert runs == (["pair-joint-nall"] if sweep is None else ["pair-force-n16", "pair-joint-n16"])
    # every config slice the jobs would read is a slice of what check-config printed
    from forcematch.config import config_hash, stage_config
    from forcematch.config.sweep import parse_run_name, run_slice

    expected = {f"{stage}-{config_hash(stage_config(config, stage))}.json"
                for stage in ("simulate", "dataset", "validate", "md", "diagnose")}
    for run in runs:
        model, loss, _ = parse_run_name(run)
        expected.add(f"train/{model}-{loss}-{config_hash(run_slice(config, model, loss))}.json")
    written = {str(p.relative_to(workdir / "results" / "config"))
               for p in (workdir / "results" / "config").rglob("*.json")}
    assert written == expected


def test_default_config_without_configfile(tmp_path):
    # No --configfile: config/config.yaml, the default experiment's 47 jobs (12 runs trained,
    # validated and run in MD; the reference validated and run in MD; the rest once).
    result = snakemake(tmp_path, "-n", configfile=None)
    assert snakefile_summary(result, ROOT / "config" / "config.yaml") == check_config(
        ROOT / "config" / "config.yaml")[1]
    jobs = planned_jobs(result)
    assert len(jobs) == 47
    assert len(planned_runs(result)) == 12


def test_two_train_targets_in_a_fresh_directory(tmp_path):
    # Each run's config slice exists before Snakemake plans: one written while it plans is
    # invisible to the existence cache of a directory it has listed ("Missing input files").
    targets = [f"results/train/{run}/final_metrics.json"
               for run in ("pair-joint-nall", "pair-force-n16")]
    jobs = planned_jobs(snakemake(tmp_path, "-n", *targets))
    assert {("train", "model=pair, loss=joint, n_train=all"),
            ("train", "model=pair, loss=force, n_train=16")} <= jobs
    result = snakemake(tmp_path, "-n", "results/train/pair-joint-n7/final_metrics.json")
    assert result.returncode != 0
    assert "no training run pair-joint-n7 in" in result.stdout + result.stderr


@pytest.mark.parametrize("given", [
    lambda a, b: ["--configfile", a, b],
    lambda a, b: ["--configfile", a, "--configfile", b],  # argparse would keep only b
    lambda a, b: [f"--configfiles={a}", "--configfile", b],
], ids=["one-option", "repeated", "equals-and-repeated"])
def test_two_config_files_are_refused(tmp_path, given):
    a = tiny_variant(tmp_path / "a.yaml", sweep=None)
    b = tiny_variant(tmp_path / "b.yaml", train={"epochs": 3})
    result = snakemake(tmp_path, "-n", *given(str(a), str(b)), configfile=None)
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"2 config files given ({a}, {b}): forcematch runs exactly one config file" in out
    assert not (tmp_path / "results").exists()


def test_config_on_the_command_line_is_laid_over_the_file(tmp_path):
    # `snakemake --config SECTION='{KEY: VALUE}'` resolves what `forcematch check-config FILE
    # --config ...` prints (same hash); a key the schema does not know is refused naming it.
    result = snakemake(tmp_path, "-n", "--config", "train={epochs: 3, seed: 7}")
    line = [x for x in result.stderr.splitlines() if x.startswith("forcematch: ")]
    assert result.returncode == 0, result.stderr[-3000:]
    assert line == [f"forcematch: {TINY} with --config train={{epochs: 3, seed: 7}}: "
                    + check_config(TINY, "train={epochs: 3, seed: 7}")[1]]
    printed = check_config(TINY, "train={epochs: 3, seed: 7}")[0]
    assert (printed["train"]["epochs"], printed["train"]["seed"]) == (3, 7)
    assert printed["train"]["learning_rate"] == check_config(TINY)[0]["train"]["learning_rate"]
    result = snakemake(tmp_path, "-n", "--config", "train={sead: 1}")
    assert result.returncode != 0
    assert f"{TINY} with --config train={{sead: 1}}: unknown config key 'sead' in 'train'" in (
        result.stdout + result.stderr)


@pytest.mark.slow
def test_a_command_line_setting_reruns_only_what_it_changes(tiny_run, tmp_path):
    # As editing the file would (test_editing_one_run_reruns_only_that_run): that run's two
    # training-set sizes, their validations and MD, the figures.
    workdir = copy_run(tiny_run, tmp_path / "work")
    result = snakemake(workdir, "--cores", "2", "-n", "--config",
                       "train_by_run={pair-energy: {learning_rate: 0.005}}")
    assert planned_jobs(result) == TRAIN_AND_VALIDATE | {("figures", ""), ("all", "")}


@pytest.mark.parametrize(("text", "message"), [
    (lambda tiny: tiny + "train:\n  epochs: 4\n",
     r"mine.yaml: line \d+: duplicate key 'train' at the top level \(first at line \d+\)"),
    (lambda tiny: tiny.replace("  epochs: 2\n", "  epochs: 2\n  epochs: 20\n", 1),
     r"mine.yaml: line \d+: duplicate key 'epochs' in 'train'"),
    (lambda tiny: tiny + "train_by_model: {pair: &p {epochs: 3}, mpnn: *p}\n",
     r"mine.yaml: line \d+: YAML anchor '&p' refused"),
    (lambda tiny: tiny.replace("  n_train: [16, all]", "  n_train: [" + ", ".join(
        str(n) for n in range(1, 201)) + "]"),
     r"the sweep asks for 600 training runs"),
], ids=["duplicate-section", "duplicate-key", "alias", "sweep-too-large"])
def test_dry_run_refuses_what_check_config_refuses(tmp_path, text, message):
    path = tmp_path / "mine.yaml"
    path.write_text(text(TINY.read_text()))
    checked = subprocess.run([sys.executable, "-m", "forcematch.cli", "check-config", str(path)],
                             capture_output=True, text=True, check=False, timeout=120)
    assert checked.returncode == 2 and re.search(message, checked.stderr), checked.stderr
    result = snakemake(tmp_path, "-n", configfile=path)
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert re.search(message, out), out[-2000:]
    assert not (tmp_path / "results").exists()  # refused before anything is written


def test_dry_run_with_another_config_leaves_the_slices_alone(tmp_path):
    # What a running job reads never changes: another config's dry run writes new files.
    first = tiny_variant(tmp_path / "first.yaml", sweep=None)
    second = tiny_variant(tmp_path / "second.yaml", sweep=None,
                          simulate=yaml.safe_load(TINY.read_text())["simulate"] | {"seed": 8})
    assert snakemake(tmp_path, "-n", configfile=first).returncode == 0
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns)
              for p in (tmp_path / "results" / "config").rglob("*.json")}
    assert snakemake(tmp_path, "-n", configfile=second).returncode == 0
    assert snakemake(tmp_path, "-n", configfile=first).returncode == 0
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns)
             for p in (tmp_path / "results" / "config").rglob("*.json")}
    assert {p: after[p] for p in before} == before
    assert len(after) > len(before)  # the second config's own slices beside the first's


@pytest.mark.slow
def test_a_second_run_cannot_switch_the_config_of_a_running_one(tmp_path):
    from forcematch.config import config_hash, load_config, stage_config, validate_config
    from forcematch.config.sweep import run_config, run_slice
    from forcematch.io.h5md import read_parameters

    one_run = {"models": ["pair"], "losses": ["joint"], "n_train": ["all"]}
    first = tiny_variant(tmp_path / "first.yaml", sweep=one_run)
    second = tiny_variant(tmp_path / "second.yaml", sweep=one_run,
                          simulate=yaml.safe_load(TINY.read_text())["simulate"] | {"seed": 8})
    workdir = tmp_path / "work"
    workdir.mkdir()
    running = subprocess.Popen(snakemake_argv(workdir, "--cores", "2", configfile=first),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=ENV)
    try:
        deadline = time.monotonic() + 300
        while not (workdir / "results" / "logs" / "simulate").exists():
            assert running.poll() is None and time.monotonic() < deadline, "first run ended"
            time.sleep(0.2)
        refused = snakemake(workdir, "--cores", "2", configfile=second, timeout=300)
        log, _ = running.communicate(timeout=900)
    finally:
        if running.poll() is None:
            running.kill()
            running.wait()
    assert refused.returncode != 0
    # Snakemake refuses on its lock, or earlier, while building the DAG, when a job of the
    # first run has written its outputs but is not yet marked complete: either way the second
    # run starts no job.
    assert re.search(r"Directory cannot be locked|IncompleteFilesException",
                     refused.stdout + refused.stderr), refused.stderr[-2000:]
    assert running.returncode == 0, log[-4000:]
    # every job of the first run ran with the first config
    config = load_config(first)
    hashes = {stage: config_hash(stage_config(config, stage))
              for stage in ("simulate", "dataset", "validate", "diagnose")}
    results = workdir / "results"
    for replica in range(3):
        assert read_parameters(results / "simulate" / f"replica_{replica}.h5")[
            "config_hash"] == hashes["simulate"]
    for split in ("train", "val", "test"):
        assert read_parameters(results / "dataset" / f"{split}.h5")["config_hash"] == hashes[
            "dataset"]
    assert json.loads((results / "dataset" / "stats.json").read_text())[
        "config_hash"] == hashes["dataset"]
    final = json.loads((results / "train" / "pair-joint-nall" / "final_metrics.json").read_text())
    # the train job reads its own slice (its family's train_by_model entries only)
    run_slice_config = validate_config(run_slice(config, "pair", "joint"))
    assert final["provenance"]["config_hash"] == config_hash(
        stage_config(run_config(run_slice_config, "pair", "joint", "all"), "train"))
    for name in ("reference", "pair-joint-nall"):
        metrics = json.loads((results / "validate" / name / "metrics.json").read_text())
        assert metrics["provenance"]["config_hash"] == hashes["validate"]
    summary = json.loads((results / "diagnose" / "collapse" / "summary.json").read_text())
    assert summary["provenance"]["config_hash"] == hashes["diagnose"]
