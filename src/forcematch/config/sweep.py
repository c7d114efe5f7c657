"""Run naming and the training sweep: which runs a config asks for and each run's config.

A run is one (model family, loss, training-set size); its name, `<model>-<loss>-n<n|all>`, is
its directory under results/train/. `run_slice` is the part of a config one run depends on, so
the workflow can give each train job its own config file and rerun only the runs whose settings
changed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from forcematch.config import box_length_nm, config_hash, stage_config, validate_config
from forcematch.errors import ForcematchError

LOSSES = ("joint", "force", "energy")


def loss_label(train_config: dict[str, Any]) -> str:
    """'energy', 'force' or 'joint' from the loss weights."""
    if train_config["energy_weight"] == 0:
        return "force"
    if train_config["force_weight"] == 0:
        return "energy"
    return "joint"


def run_name(config: dict[str, Any]) -> str:
    """Directory name of the training run a config describes: {model}-{loss}-n{n_train|all}."""
    train = config["train"]
    n = train["n_train"] if train["n_train"] is not None else "all"
    return f"{train['model']}-{loss_label(train)}-n{n}"


def run_config(
    config: dict[str, Any], model: str | None, loss: str | None, n_train: str | int | None
) -> dict[str, Any]:
    """The config of one training run of a sweep: model, loss and training-set size overridden.

    Settings apply in order: train, train_by_model[model], the loss, train_by_run[model-loss].
    loss 'force' zeroes train.energy_weight, 'energy' zeroes train.force_weight, 'joint' keeps
    both; 'force' and 'energy' also zero train.stress_weight (the virial term), which 'joint'
    keeps. A run with a step budget (train.steps set) keeps it whatever its size: steps do not
    depend on the number of frames. With an epoch budget (train.steps null) a subset of n of the
    simulated training frames trains for train.epochs x (all frames / n) epochs, capped at
    train.max_epochs (never fewer than train.epochs), so small sets get a comparable number of
    optimiser steps; a subset of imported data keeps train.epochs.
    """
    train = dict(config["train"])
    if model is not None:
        train["model"] = model
    train.update(config["train_by_model"].get(train["model"], {}))
    if loss is not None:
        if loss not in LOSSES:
            raise ForcematchError(f"unknown loss '{loss}'; known: {', '.join(LOSSES)}")
        if loss in ("force", "energy"):
            train["stress_weight"] = 0.0
        if loss == "force":
            train["energy_weight"] = 0.0
        elif loss == "energy":
            train["force_weight"] = 0.0
        elif loss_label(train) != "joint":
            raise ForcematchError(
                "loss 'joint' needs train.energy_weight and train.force_weight both > 0"
            )
    train.update(config["train_by_run"].get(f"{train['model']}-{loss_label(train)}", {}))
    if n_train is not None and n_train != "all":
        n = int(n_train)
        n_all = simulated_training_frames(config)
        train["n_train"] = n
        if train.get("steps") is None and n_all is not None and n < n_all:
            base_epochs = train["epochs"]
            train["epochs"] = min(math.ceil(train["epochs"] * n_all / n), train["max_epochs"])
            train["epochs"] = max(train["epochs"], base_epochs)
    elif n_train == "all":
        train["n_train"] = None
    return validate_config(config | {"train": train}, source=f"run {model}-{loss}-n{n_train}")


def simulated_training_frames(config: dict[str, Any]) -> int | None:
    """Training frames the simulate stage makes; None for imported data (known only from the
    files, so a training subset of imported data keeps train.epochs)."""
    if config["import"] is not None:
        return None
    simulate, split = config["simulate"], config["split"]
    return (simulate["replicas"] - split["val_replicas"] - split["test_replicas"]) * (
        simulate["frames_per_replica"])


def sweep_runs(config: dict[str, Any]) -> list[str]:
    """Run names of the sweep (models x losses x training-set sizes); each one validated."""
    sweep = config["sweep"]
    train = config["train"]
    models = sweep["models"] or [train["model"]]
    losses = sweep["losses"] or [loss_label(train)]
    sizes = sweep["n_train"] or [train["n_train"] if train["n_train"] is not None else "all"]
    names = []
    for model in models:
        for loss in losses:
            for n in sizes:
                names.append(run_name(run_config(config, model, loss, n)))
    return names


def summary(config: dict[str, Any]) -> str:
    """One line saying what `config` runs: its hash, the box and every training run.

    `forcematch check-config FILE` prints it, and the Snakefile prints it when it loads FILE,
    so the two can be compared: what check-config shows is what the workflow runs.
    """
    runs = sweep_runs(config)
    data = (f"{len(config['import']['files'])} imported file(s)" if config["import"] is not None
            else f"box {box_length_nm(config):.6f} nm")
    return (f"config {config_hash(config)}; {data}; {len(runs)} "
            f"training run{'' if len(runs) == 1 else 's'}: {', '.join(runs)}")


# The (model family, loss) pairs that `forcematch diagnose-collapse` trains
# (forcematch.validation.diagnose): its config slice keeps only their train_by_model,
# train_by_run and model entries.
DIAGNOSE_RUNS = (("graph_network", "joint"), ("graph_network", "force"), ("pair", "force"),
                 ("pair", "joint"))

# The sections keyed by model family ('<model>') or by model family and loss ('<model>-<loss>').
_PER_FAMILY = ("train_by_model", "model")
_PER_RUN = ("train_by_run",)


def parse_run_name(name: str) -> tuple[str, str, str]:
    """(model, loss, n_train) of a run name '<model>-<loss>-n<n_train|all>'."""
    model, loss, n = name.rsplit("-", 2)
    if not (model and loss in LOSSES and n.startswith("n") and len(n) > 1):
        raise ForcematchError(f"not a run name '<model>-<loss>-n<frames|all>': {name!r}")
    return model, loss, n[1:]


def restrict_runs(config: dict[str, Any], runs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """A copy of `config` whose per-family and per-run sections keep only the entries of `runs`.

    `runs` are (model, loss) pairs: train_by_model and model keep their families,
    train_by_run its '<model>-<loss>' keys. Sections that `config` lacks stay absent.
    """
    runs = list(runs)
    families = {model for model, _ in runs}
    run_keys = {f"{model}-{loss}" for model, loss in runs}
    out = dict(config)
    for section, keep in [(s, families) for s in _PER_FAMILY] + [(s, run_keys) for s in _PER_RUN]:
        if section in out:
            out[section] = {key: value for key, value in out[section].items() if key in keep}
    return out


def run_slice(config: dict[str, Any], model: str, loss: str) -> dict[str, Any]:
    """The config one training run `<model>-<loss>-n<any>` depends on: its train-stage slice.

    The train stage's sections (`forcematch.config.STAGE_SECTIONS['train']`) with
    train_by_model and model reduced to `model`'s entries and train_by_run to '<model>-<loss>'.
    `forcematch train --config <slice> --model M --loss L --n-train N` trains what it trains with
    the whole config: `run_config` gives the same train section and model options from either.
    Pure; the workflow writes one per run, so editing one run's settings reruns only that run.
    """
    return restrict_runs(stage_config(config, "train"), [(model, loss)])
