"""Load and validate an experiment config against the one JSON schema, and check derived limits.

The Snakefile calls `validate_config` when it loads (so `snakemake -n` reports config errors),
and every `forcematch` subcommand calls `load_config` on the file it is given: the same checks
either way.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from forcematch.errors import ForcematchError
from forcematch.units import cubic_box_length_nm

# Which config sections each stage depends on: a stage reruns only when these change.
STAGE_SECTIONS = {
    "simulate": ("system", "simulate"),
    "dataset": ("system", "simulate", "split"),
    "train": ("system", "simulate", "split", "train", "train_by_model", "train_by_run", "model"),
    "validate": ("system", "simulate", "split", "train", "train_by_model", "train_by_run",
                 "model", "validate"),
    "diagnose": ("system", "simulate", "split", "train", "train_by_model", "train_by_run",
                 "model", "validate", "diagnose"),
}


LOSSES = ("joint", "force", "energy")


@cache
def schema() -> dict:
    text = resources.files("forcematch").joinpath("schemas/config.schema.yaml").read_text()
    return yaml.safe_load(text)


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "<top level>"


def _describe(error: jsonschema.ValidationError) -> str:
    path = _key_path(error)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        where = f"in '{path}'" if error.absolute_path else "at the top level"
        return (
            f"unknown config key {', '.join(repr(k) for k in extra)} {where}; "
            f"known keys: {', '.join(allowed)}"
        )
    if error.validator == "type":
        return (
            f"config key '{path}' must be of type {error.validator_value}, "
            f"got {error.instance!r} ({type(error.instance).__name__})"
        )
    return f"config key '{path}': {error.message}"


def _fill_defaults(instance: dict, node: dict) -> None:
    """Insert schema defaults into `instance` in place, recursing into object sections."""
    for key, sub in node.get("properties", {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if isinstance(instance.get(key), dict) and sub.get("type") == "object":
            _fill_defaults(instance[key], sub)


def validate_config(raw: dict[str, Any] | None, *, source: str = "config") -> dict[str, Any]:
    """Return a validated copy of `raw` with every default filled in; raise ForcematchError."""
    config = copy.deepcopy(raw) if raw else {}
    if not isinstance(config, dict):
        raise ForcematchError(f"{source}: the config must be a mapping, got {type(raw).__name__}")
    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        raise ForcematchError(f"{source}: {_describe(errors[0])}")
    _fill_defaults(config, schema())
    check_derived(config, source=source)
    return config


def check_derived(config: dict[str, Any], *, source: str = "config") -> None:
    """Limits that involve more than one key (the schema checks one key at a time).

    The diagnostic runs use min(diagnose.n_train, training frames), so need no check here.
    """
    system, simulate, split = config["system"], config["simulate"], config["split"]
    box_nm = box_length_nm(config)
    if system["cutoff_nm"] >= box_nm / 2:
        raise ForcematchError(
            f"{source}: system.cutoff_nm = {system['cutoff_nm']} nm must be less than half the "
            f"box: "
            f"{system['n_atoms']} atoms at {system['density_g_cm3']} g/cm3 give a box of "
            f"{box_nm:.4f} nm, so the largest allowed cutoff is {box_nm / 2:.4f} nm"
        )
    if system["switch_nm"] >= system["cutoff_nm"]:
        raise ForcematchError(
            f"{source}: system.switch_nm = {system['switch_nm']} nm must be less than "
            f"system.cutoff_nm = {system['cutoff_nm']} nm"
        )
    held_out = split["val_replicas"] + split["test_replicas"]
    if simulate["replicas"] < held_out + 1:
        raise ForcematchError(
            f"{source}: simulate.replicas = {simulate['replicas']} is too few for the split: "
            f"split.val_replicas ({split['val_replicas']}) + split.test_replicas "
            f"({split['test_replicas']}) + at least 1 training replica = {held_out + 1}"
        )
    train = config["train"]
    if train["energy_weight"] == 0 and train["force_weight"] == 0:
        raise ForcematchError(
            f"{source}: train.energy_weight and train.force_weight are both 0: nothing to fit"
        )
    n_train_frames = (simulate["replicas"] - held_out) * simulate["frames_per_replica"]
    if train["n_train"] is not None and train["n_train"] > n_train_frames:
        raise ForcematchError(
            f"{source}: train.n_train = {train['n_train']} exceeds the {n_train_frames} training "
            f"frames ({simulate['replicas'] - held_out} replicas x "
            f"{simulate['frames_per_replica']} frames)"
        )
    usable = train["n_train"] or n_train_frames
    if train["batch_size"] > usable:
        raise ForcematchError(
            f"{source}: train.batch_size = {train['batch_size']} exceeds the {usable} "
            f"training frames"
        )


def box_length_nm(config: dict[str, Any]) -> float:
    system = config["system"]
    return cubic_box_length_nm(system["n_atoms"], system["density_g_cm3"], system["mass_amu"])


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML (or JSON) config file and validate it."""
    path = Path(path)
    if not path.is_file():
        raise ForcematchError(f"config file not found: {path}")
    try:
        # JSON through its own parser: PyYAML (YAML 1.1) reads JSON's 3e-05 as a string.
        raw = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(
            path.read_text())
    except (yaml.YAMLError, json.JSONDecodeError) as err:
        detail = " ".join(str(err).split())  # one line
        raise ForcematchError(f"{path}: not valid YAML or JSON: {detail}") from err
    return validate_config(raw, source=str(path))


def stage_config(config: dict[str, Any], stage: str) -> dict[str, Any]:
    """The sections of `config` that `stage` depends on."""
    return {key: config[key] for key in STAGE_SECTIONS[stage]}


def config_hash(config: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a config (or a stage's slice of it), first 16 hex digits."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def write_if_changed(path: str | Path, config: dict[str, Any]) -> Path:
    """Write `config` as JSON to `path` unless it already holds the same content.

    Keeping the file's mtime when nothing changed is what lets Snakemake rerun only the stages
    whose config sections changed.
    """
    path = Path(path)
    text = json.dumps(config, indent=2, sort_keys=True) + "\n"
    if path.is_file() and path.read_text() == text:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


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
    both. A training subset of n frames trains for train.epochs x (all frames / n) epochs,
    capped at train.max_epochs, so small sets get a comparable number of optimiser steps.
    """
    train = dict(config["train"])
    if model is not None:
        train["model"] = model
    train.update(config["train_by_model"].get(train["model"], {}))
    if loss is not None:
        if loss not in LOSSES:
            raise ForcematchError(f"unknown loss '{loss}'; known: {', '.join(LOSSES)}")
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
        simulate, split = config["simulate"], config["split"]
        n_all = (simulate["replicas"] - split["val_replicas"] - split["test_replicas"]) * (
            simulate["frames_per_replica"])
        train["n_train"] = n
        if n < n_all:
            base_epochs = train["epochs"]
            train["epochs"] = min(math.ceil(train["epochs"] * n_all / n), train["max_epochs"])
            train["epochs"] = max(train["epochs"], base_epochs)
    elif n_train == "all":
        train["n_train"] = None
    return validate_config(config | {"train": train}, source=f"run {model}-{loss}-n{n_train}")


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
