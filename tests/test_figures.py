"""Figures: drawn from what validation and training wrote, checked first, written whole.

The inputs are small hand-made validation and training outputs (the files' formats, not a real
run), so these tests need neither OpenMM nor JAX.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from forcematch.errors import ForcematchError
from forcematch.figures import plots as figures
from forcematch.training.checkpoint import METRICS_COLUMNS


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def validation_dir(root: Path, name: str, n_train: int | None, seed: int = 0) -> Path:
    """A validation output of `name`: a model trained on `n_train` frames (None: reference)."""
    rng = np.random.default_rng(seed)
    d = root / "validate" / name
    d.mkdir(parents=True)
    f_true = rng.normal(0, 40, 500)
    f_pred = f_true + rng.normal(0, 2, 500)
    e_true = rng.normal(-5, 0.1, 10)
    write_csv(d / "parity_force.csv", [{"force_true_kJ_mol_nm": t, "force_pred_kJ_mol_nm": p}
                                       for t, p in zip(f_true, f_pred, strict=True)])
    write_csv(d / "parity_energy.csv", [
        {"energy_true_kJ_mol_per_atom": t, "energy_pred_kJ_mol_per_atom": t + 0.01}
        for t in e_true])
    write_csv(d / "fd.csv", [{"step_nm": h, "max_rel_error": h**2, "median_rel_error": h**2 / 3}
                             for h in (1e-1, 1e-2, 1e-3)])
    write_csv(d / "net_force.csv", [{"frame": t, "net_force_kJ_mol_nm": 1e-5 * (t + 1)}
                                    for t in range(10)])
    metrics = {"name": name, "n_test_frames": 10, "provenance": {"stage": "validate"}}
    if n_train is not None:
        # The test set's RMSE over all frames: not the RMSE of the 500 points in the CSV.
        # a network family without a pair potential: no model directory needed
        metrics |= {"model": "atomic", "loss": "joint", "n_train": n_train, "n_atoms": 32,
                    "force_rmse": 1.2345, "force_rmse_rel": 0.03, "energy_rmse_per_atom": 0.0101,
                    "energy_mae_per_atom_meV": 0.1}
    (d / "metrics.json").write_text(json.dumps(metrics))
    return d


def train_dir(root: Path, name: str) -> Path:
    d = root / "train" / name
    d.mkdir(parents=True)
    write_csv(d / "metrics.csv", [dict.fromkeys(METRICS_COLUMNS, 0.5) | {"epoch": e, "step": e}
                                  for e in (1, 2, 3)])
    return d


@pytest.fixture
def inputs(tmp_path):
    validate = [validation_dir(tmp_path, "reference", None),
                validation_dir(tmp_path, "pair-joint-nall", 40, 1),
                validation_dir(tmp_path, "pair-joint-n16", 16, 2)]
    train = [train_dir(tmp_path, "pair-joint-nall"), train_dir(tmp_path, "pair-joint-n16")]
    return validate, train


def test_figures_are_written_whole(inputs, tmp_path):
    out = tmp_path / "figures"
    written = figures.make_figures(*inputs, out, progress=lambda _: None)
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([p.name for p in written] + ["provenance.json"])
    assert set(names) <= set(figures.output_names())
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".figures")]  # no temporaries


def test_a_failed_run_leaves_the_previous_figures(inputs, tmp_path, monkeypatch):
    out = tmp_path / "figures"
    figures.make_figures(*inputs, out, progress=lambda _: None)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(*args):
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(figures, "net_force_figure", broken)
    with pytest.raises(RuntimeError):
        figures.make_figures(*inputs, out, progress=lambda _: None)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["figures", "train", "validate"]


def test_parity_panels_state_the_rmse_of_metrics_json(inputs, tmp_path, monkeypatch):
    titles = []
    original = figures.plt.Axes.set

    def record(self, **kwargs):
        if "title" in kwargs:
            titles.append(kwargs["title"])
        return original(self, **kwargs)

    monkeypatch.setattr(figures.plt.Axes, "set", record)
    figures.make_figures(*inputs, tmp_path / "figures", progress=lambda _: None)
    force = next(t for t in titles if "kJ/mol/nm" in t and t.startswith("pair-joint-nall"))
    energy = next(t for t in titles if "per atom" in t and t.startswith("pair-joint-nall"))
    assert "RMSE 1.23 kJ/mol/nm\n(10 test frames; 500 of 960 points shown)" in force
    assert "RMSE 0.0101 kJ/mol per atom\n(10 test frames)" in energy


# Each breakage gets the validation directories (reference, nall, n16) and the tmp path, and
# returns the --validate-dirs to give.
BREAKAGES = [
    (lambda v, tmp: [tmp / "nope", *v], r"--validate-dirs: directory not found: .*nope"),
    (lambda v, tmp: [_mkdir(tmp / "empty"), *v],
     r"--validate-dirs: .*empty is empty: not the output of forcematch validate"),
    (lambda v, tmp: _then(v, (v[1] / "metrics.json").unlink()),
     r"pair-joint-nall holds no metrics.json"),
    (lambda v, tmp: _then(v, (v[1] / "metrics.json").write_text("{broken")),
     r"metrics.json: not valid JSON"),
    (lambda v, tmp: _then(v, (v[1] / "metrics.json").write_text('{"n_train": NaN}')),
     r"metrics.json: not valid JSON: NaN is not a JSON number"),
    (lambda v, tmp: _then(v, _edit(v[1] / "metrics.json", n_train="40")),
     r"metrics.json: 'n_train' must be an integer, got '40'"),
    (lambda v, tmp: _then(v, _edit(v[1] / "metrics.json", force_rmse=None)),
     r"metrics.json: 'force_rmse' must be a number, got None"),
    (lambda v, tmp: v[:1], r"at least one validated model"),
    (lambda v, tmp: [*v, _copy(v[1], tmp / "elsewhere")], r"are both named 'pair-joint-nall'"),
    (lambda v, tmp: _then(v, (v[1] / "parity_force.csv").write_text("force_true_kJ_mol_nm\n")),
     r"parity_force.csv: no rows"),
    (lambda v, tmp: _then(v, (v[1] / "parity_force.csv").write_text(
        "force_true_kJ_mol_nm,force_pred_kJ_mol_nm\n1,2\n3,x\n")),
     r"parity_force.csv, line 3: column force_pred_kJ_mol_nm holds 'x', not a number"),
    (lambda v, tmp: _then(v, (v[1] / "fd.csv").write_text("step_nm\n0.1\n")),
     r"fd.csv: no column max_rel_error, median_rel_error"),
]


@pytest.mark.parametrize("breakage, message", BREAKAGES)
def test_bad_inputs_are_refused_by_name(inputs, tmp_path, breakage, message):
    validate, train = inputs
    with pytest.raises(ForcematchError, match=message):
        figures.make_figures(breakage(validate, tmp_path), train, tmp_path / "figures",
                             progress=lambda _: None)
    assert not (tmp_path / "figures").exists()


def test_missing_training_runs_are_refused(inputs, tmp_path):
    validate, train = inputs
    with pytest.raises(ForcematchError, match=r"--train-dirs: directory not found: .*nope"):
        figures.make_figures(validate, [tmp_path / "nope"], tmp_path / "figures")
    with pytest.raises(ForcematchError, match=r"no training run for pair-joint-nall"):
        figures.make_figures(validate, train[1:], tmp_path / "figures")
    with pytest.raises(ForcematchError, match=r"--diagnose-dir: directory not found"):
        figures.make_figures(validate, train, tmp_path / "figures",
                             diagnose_dir=tmp_path / "nope")
    with pytest.raises(ForcematchError, match=r"summary.json not found"):
        figures.make_figures(validate, train, tmp_path / "figures", diagnose_dir=tmp_path)


def test_a_directory_of_other_files_is_not_replaced(inputs, tmp_path):
    out = _mkdir(tmp_path / "mine")
    (out / "thesis.tex").write_text("years of work")
    with pytest.raises(ForcematchError, match=r"holds files this stage did not write "
                                              r"\(thesis.tex\).*choose a new or empty --out-dir"):
        figures.make_figures(*inputs, out)
    assert (out / "thesis.tex").read_text() == "years of work"


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _then(value, _):
    return value


def _edit(path: Path, **values) -> None:
    path.write_text(json.dumps(json.loads(path.read_text()) | values))


def _copy(directory: Path, root: Path) -> Path:
    return Path(shutil.copytree(directory, root / directory.name))


def test_a_pair_family_run_without_its_model_is_refused(inputs, tmp_path):
    """The pair-potential figure loads the model of each pair-family run: a run directory
    without model/ is refused by name before anything is drawn."""
    validate, train = inputs
    metrics_path = validate[1] / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    metrics_path.write_text(json.dumps(metrics | {"model": "spline"}))
    with pytest.raises(ForcematchError, match="no model/ in the run directory of "
                                              "pair-joint-nall"):
        figures.make_figures(validate, train, tmp_path / "figures", progress=lambda _: None)
    assert not (tmp_path / "figures").exists()


@pytest.mark.parametrize("sizes", [[6000], [100, 6000]], ids=["one-size", "two-sizes"])
def test_accuracy_figure_axis_follows_the_sizes(tmp_path, monkeypatch, sizes):
    """One training-set size: families on the x axis (losses side by side); several: the
    size on a log axis. Every run is one row of the CSV either way."""
    metrics = {f"{model}-{loss}-{n}": {"model": model, "loss": loss, "n_train": n,
                                       "force_rmse_rel": 0.01, "energy_mae_per_atom_meV": 0.1}
               for model in ("spline", "pair", "mpnn") for loss in ("energy", "force")
               for n in sizes}
    drawn = {}
    monkeypatch.setattr(figures, "_save", lambda fig, out, name, columns: drawn.update(
        axis=fig.axes[0], columns=columns))
    figures.accuracy_vs_size_figure(metrics, tmp_path)
    axis = drawn["axis"]
    assert len(drawn["columns"]["series"]) == len(metrics)
    if len(sizes) == 1:
        assert [t.get_text() for t in axis.get_xticklabels()] == ["spline", "pair", "mpnn"]
        assert axis.get_xscale() == "linear" and "6,000 training frames" in axis.get_xlabel()
        xs = sorted(float(line.get_xdata()[0]) for line in axis.get_lines())
        assert len(set(np.round(xs, 6))) == 6  # no two runs drawn on one spot
    else:
        assert axis.get_xscale() == "log" and axis.get_xlabel() == "training frames"
