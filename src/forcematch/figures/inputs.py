"""What the figures are drawn from, read and checked before anything is drawn.

`load_inputs` takes the directories `forcematch figures` is given (validation outputs, training
runs, the collapse diagnostic) and refuses, naming the directory or file, whatever would
otherwise stop the drawing half-way with a traceback or draw a wrong figure silently: a missing
or empty directory, a missing, malformed or non-numeric file, a metrics.json without the keys a
figure reads, two directories of one name (their series would merge), a validated model whose
training run is not among the training directories (an empty learning curve).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from forcematch.calculators.tables import PAIR_FAMILIES
from forcematch.errors import ForcematchError
from forcematch.io.model_files import read_json_object, read_regular_file

MAX_INPUT_BYTES = 1024 * 2**20  # a CSV or JSON written by validation or training

_KIND_NAMES = {str: "a string", int: "an integer", float: "a number"}
# What the figures read from each validated model's metrics.json (reference data: nothing).
MODEL_KEYS = {
    "model": str, "loss": str, "n_train": int, "n_test_frames": int, "n_atoms": int,
    "force_rmse": float, "force_rmse_rel": float, "energy_rmse_per_atom": float,
    "energy_mae_per_atom_meV": float,
}


@dataclass
class Inputs:
    runs: dict[str, Path]  # every validation directory, by name ('reference': the data)
    metrics: dict[str, dict]  # their metrics.json
    models: dict[str, dict]  # the validated models' metrics.json
    full: dict[str, Path]  # the models trained on the most frames: the per-run panels
    trains: dict[str, Path]  # training run directories, by name
    diagnose_dir: Path | None
    summary: dict | None  # diagnose_dir/summary.json
    md: dict[str, dict] = field(default_factory=dict)  # md.json of each MD directory, by name
    drawn: dict[str, str] = field(default_factory=dict)  # numbers a drawing measured, by figure


def read_csv(path: Path, columns: Iterable[str] = ()) -> dict[str, np.ndarray]:
    """Columns of a numeric CSV file as float arrays; `columns` must be among them."""
    text = read_regular_file(path, MAX_INPUT_BYTES).decode("utf-8", errors="replace")
    rows = list(csv.DictReader(text.splitlines()))
    if not rows:
        raise ForcematchError(f"{path}: no rows (an empty or header-only file)")
    missing = [c for c in columns if c not in rows[0]]
    if missing:
        raise ForcematchError(f"{path}: no column {', '.join(missing)} (columns: "
                              f"{', '.join(rows[0])})")
    table = {}
    for key in rows[0]:
        try:
            table[key] = np.array([float(r[key]) for r in rows])
        except (TypeError, ValueError):
            line = next(i for i, r in enumerate(rows, 2) if not _is_number(r[key]))
            raise ForcematchError(f"{path}, line {line}: column {key} holds "
                                  f"{rows[line - 2][key]!r}, not a number") from None
    return table


def _is_number(text) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


def _directories(paths: Sequence[str | Path], option: str) -> dict[str, Path]:
    """{name: directory} of existing directories, names unique."""
    found: dict[str, Path] = {}
    for given in paths:
        path = Path(given)
        if not path.exists():
            raise ForcematchError(f"{option}: directory not found: {given}")
        if not path.is_dir():
            raise ForcematchError(f"{option}: {given} is not a directory")
        if path.name in found:
            raise ForcematchError(f"{option}: {found[path.name]} and {given} are both named "
                                  f"'{path.name}'; figures name series after directories")
        found[path.name] = path
    return found


def _metrics(directory: Path, name: str) -> dict:
    path = directory / "metrics.json"
    if not path.exists():
        held = "is empty" if not any(directory.iterdir()) else "holds no metrics.json"
        raise ForcematchError(f"--validate-dirs: {directory} {held}: not the output of "
                              "forcematch validate (run it first)")
    metrics = read_json_object(path)
    if name == "reference":
        return metrics
    for key, kind in MODEL_KEYS.items():
        value = metrics.get(key)
        ok = (isinstance(value, str) if kind is str else
              isinstance(value, int | float) and not isinstance(value, bool)
              and math.isfinite(value) and (kind is float or value == int(value)))
        if not ok:
            raise ForcematchError(f"{path}: '{key}' must be {_KIND_NAMES[kind]}, got {value!r} "
                                  "(a model's validation; the reference data's directory must "
                                  "be named 'reference')")
    return metrics


def _summary(diagnose_dir: Path) -> dict:
    summary = read_json_object(diagnose_dir / "summary.json")
    runs = summary.get("runs")
    if not isinstance(runs, dict) or not runs or not isinstance(summary.get("n_train"), int):
        raise ForcematchError(f"{diagnose_dir / 'summary.json'}: no 'runs' and 'n_train' of the "
                              "collapse diagnostic (rerun forcematch diagnose-collapse)")
    return summary


def _md(md_dirs: Sequence[str | Path], metrics: dict[str, dict]) -> dict[str, dict]:
    """md.json of each directory of `forcematch md`, by name; a model's must match a
    validated model (its test error is drawn beside its MD), 'reference' must be among them."""
    found = {}
    for name, directory in _directories(md_dirs, "--md-dirs").items():
        path = directory / "md.json"
        if not path.exists():
            raise ForcematchError(f"--md-dirs: {directory} holds no md.json: not the output of "
                                  "forcematch md (run it first)")
        summary = read_json_object(path)
        if name == "reference" and summary.get("engine") == "data":  # imported data's liquid
            found[name] = summary
            continue
        if not isinstance(summary.get("equilibration"), dict) or "stable" not in summary:
            raise ForcematchError(f"{path}: no 'equilibration' and 'stable' of forcematch md")
        if name not in metrics:
            raise ForcematchError(f"--md-dirs: {directory} has no validation directory of the "
                                  f"same name among --validate-dirs")
        found[name] = summary
    if found and "reference" not in found:
        raise ForcematchError("--md-dirs: the reference's MD directory (named 'reference') is "
                              "missing: every model's MD is drawn against it")
    return found


def load_inputs(validate_dirs: Sequence[str | Path], train_dirs: Sequence[str | Path],
                diagnose_dir: str | Path | None, md_dirs: Sequence[str | Path] = ()) -> Inputs:
    """Every input of the figures, checked (module docstring)."""
    runs = _directories(validate_dirs, "--validate-dirs")
    metrics = {name: _metrics(d, name) for name, d in runs.items()}
    models = {name: m for name, m in metrics.items() if name != "reference"}
    if not models:
        raise ForcematchError("figures need at least one validated model (--validate-dirs "
                              "holds only the reference data)")
    trains = _directories(train_dirs, "--train-dirs")
    n_max = max(int(m["n_train"]) for m in models.values())
    full = {name: runs[name] for name, m in models.items() if int(m["n_train"]) == n_max}
    missing = sorted(set(full) - set(trains))
    if missing:
        raise ForcematchError(f"--train-dirs: no training run for {', '.join(missing)} (the "
                              "learning curves need the run directory of every model trained "
                              "on all frames)")
    pair_models = sorted(name for name, m in models.items() if m["model"] in PAIR_FAMILIES
                         and name in trains and not (trains[name] / "model").is_dir())
    if pair_models:
        raise ForcematchError(f"--train-dirs: no model/ in the run directory of "
                              f"{', '.join(pair_models)} (the pair-potential figure loads it)")
    summary = None
    if diagnose_dir is not None:
        diagnose_dir = _directories([diagnose_dir], "--diagnose-dir")[Path(diagnose_dir).name]
        summary = _summary(diagnose_dir)
    return Inputs(runs, metrics, models, full, trains, diagnose_dir, summary,
                  _md(md_dirs, metrics) if md_dirs else {})
