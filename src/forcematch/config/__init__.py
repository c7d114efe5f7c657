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
import os
import uuid
from collections.abc import Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import jsonschema
import yaml

from forcematch.config.derived import (  # noqa: F401 (re-exported: what a config implies)
    MAX_MD_ATOM_STEPS,
    MAX_REFERENCE_BYTES,
    MAX_REPLICAS,
    MAX_SWEEP_RUNS,
    box_length_nm,
    check_derived,
    check_size,
    data_parts,
    has_reference_engine,
    mean_mass_amu,
    source_stage,
    species_names,
)
from forcematch.config.file import read_config_with_bases
from forcematch.errors import ForcematchError

# Which config sections each stage depends on: a stage reruns only when these change.
# Validation depends on the model through its input (the trained model directory), not on the
# train sections. The workflow narrows further: each training run gets its own slice
# (`forcematch.config.sweep.run_slice`), and `stage_config(config, "diagnose")` keeps only the
# entries of the model families and losses the diagnostic trains
# (`forcematch.config.sweep.DIAGNOSE_RUNS`).
# The data come from `simulate`, or from `import` (your own trajectories) when that is set;
# `cg` maps them to coarse-grained sites in the dataset stage.
STAGE_SECTIONS = {
    "simulate": ("system", "simulate"),
    "import": ("system", "import"),
    "dataset": ("system", "simulate", "import", "split", "cg"),
    "train": ("system", "simulate", "import", "split", "cg", "train", "train_by_model",
              "train_by_run", "model"),
    "cg_mean_force": ("system", "simulate", "split", "cg", "cg_mean_force"),
    "validate": ("system", "simulate", "import", "split", "cg", "validate"),
    "md": ("system", "simulate", "import", "split", "cg", "md"),
    "diagnose": ("system", "simulate", "import", "split", "cg", "train", "train_by_model",
                 "train_by_run", "model", "validate", "diagnose"),
}


@cache
def schema() -> dict:
    text = resources.files("forcematch").joinpath("schemas/config.schema.yaml").read_text()
    return yaml.safe_load(text)


@cache
def model_families() -> tuple[str, ...]:
    """The model families, as the schema's `$defs/model_family` lists them."""
    return tuple(schema()["$defs"]["model_family"]["enum"])


def _is_integer(checker, instance) -> bool:
    """A Python int: not a bool, and not a float such as 8.0 (JSON Schema counts 8.0)."""
    return isinstance(instance, int) and not isinstance(instance, bool)


def _is_number(checker, instance) -> bool:
    """An int or a finite float: not a bool, NaN or ±inf."""
    if isinstance(instance, bool):
        return False
    return isinstance(instance, int) or (isinstance(instance, float) and math.isfinite(instance))


# Draft 2020-12 with the stricter `integer` and `number` above.
_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine_many(
        {"integer": _is_integer, "number": _is_number}
    ),
)


@cache
def _validator(definition: str | None = None) -> jsonschema.protocols.Validator:
    """A validator of the whole schema, or of its `$defs/<definition>`."""
    root = schema()
    if definition is None:
        return _Validator(root)
    return _Validator({"$defs": root["$defs"], "$ref": f"#/$defs/{definition}"})


def _key_path(error: jsonschema.ValidationError, prefix: tuple[str, ...] = ()) -> str:
    parts = [*prefix, *(str(p) for p in error.absolute_path)]
    return ".".join(parts) if parts else "<top level>"


def _describe(error: jsonschema.ValidationError, prefix: tuple[str, ...] = ()) -> str:
    """One line naming the key (`prefix` + the error's path) and what is wrong with it."""
    path = _key_path(error, prefix)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        where = f"in '{path}'" if prefix or error.absolute_path else "at the top level"
        return (
            f"unknown config key {', '.join(repr(k) for k in extra)} {where}; "
            f"known keys: {', '.join(allowed)}"
        )
    if error.validator == "type":
        types = error.validator_value
        types = " or ".join(types) if isinstance(types, list) else types
        value = error.instance
        note = ""
        if isinstance(value, float) and not math.isfinite(value):
            note = " (NaN and infinities are refused)"
        return (
            f"config key '{path}' must be of type {types}, "
            f"got {value!r} ({type(value).__name__}){note}"
        )
    why = error.schema.get("description") if "then" in error.schema_path else None
    return f"config key '{path}': {error.message}" + (f" ({why})" if why else "")


def _check(instance: Any, definition: str | None, prefix: tuple[str, ...], source: str) -> None:
    """Raise ForcematchError naming the first offending key of `instance` (by key path)."""
    errors = _validator(definition).iter_errors(instance)
    first = min(errors, key=lambda e: [str(p) for p in e.absolute_path], default=None)
    if first is not None:
        raise ForcematchError(f"{source}: {_describe(first, prefix)}")


def _resolve(node: dict) -> dict:
    """`node`, or the `$defs` entry its local `$ref` ("#/$defs/<name>") points to."""
    while "$ref" in node:
        node = schema()["$defs"][node["$ref"].removeprefix("#/$defs/")]
    return node


def _fill_defaults(instance: dict, node: dict) -> None:
    """Insert schema defaults into `instance` in place, recursing into the objects named under
    `properties` (following `$ref`s), never into `additionalProperties`: the overrides of
    train_by_model and train_by_run name only what they change."""
    for key, sub in _resolve(node).get("properties", {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if isinstance(instance.get(key), dict):
            _fill_defaults(instance[key], sub)


def _settings(definition: str, values: Any, prefix: tuple[str, ...], source: str) -> dict:
    """A checked deep copy of `values` (None: {}) with the defaults of `$defs/<definition>`."""
    if values is None:
        values = {}
    data = copy.deepcopy(dict(values) if isinstance(values, Mapping) else values)
    _check(data, definition, prefix, source)
    _fill_defaults(data, schema()["$defs"][definition])
    return data


def model_settings(family: str, values: dict | None, *, source: str = "model") -> dict:
    """The complete options of model `family`: `values` (missing keys: the schema's defaults)
    checked against `$defs/model_<family>`, as a new plain dict. ForcematchError names the key
    (`model.<family>.<key>`) or, for an unknown family, lists the known ones."""
    if family not in model_families():
        raise ForcematchError(
            f"{source}: unknown model {family!r}; known models: {', '.join(model_families())}"
        )
    return _settings(f"model_{family}", values, ("model", family), source)


def train_settings(values: Mapping | None, *, source: str = "train") -> MappingProxyType:
    """The complete options of a training run: `values` (missing keys: the schema's defaults)
    checked against `$defs/train_options`, as a read-only mapping. ForcematchError names the
    key (`train.<key>`)."""
    return MappingProxyType(_settings("train_options", values, ("train",), source))


def validate_config(raw: dict[str, Any] | None, *, source: str = "config") -> dict[str, Any]:
    """Return a validated copy of `raw` with every default filled in; raise ForcematchError."""
    config = {} if raw is None else copy.deepcopy(raw)
    if not isinstance(config, dict):
        raise ForcematchError(f"{source}: the config must be a mapping, got {type(raw).__name__}")
    _check(config, None, (), source)
    _fill_defaults(config, schema())
    check_derived(config, source=source)
    return config


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read a YAML (or JSON) config file strictly, with the files it `extends`
    (`forcematch.config.file`) and the command line's `--config` overrides
    (`forcematch.config.overrides`), and validate it."""
    from forcematch.config.overrides import apply_overrides, describe

    raw, source = read_config_with_bases(path), str(path)
    if overrides:
        raw, source = apply_overrides(raw, overrides), f"{path} with --config {describe(overrides)}"
    return validate_config(raw, source=source)


def stage_config(config: dict[str, Any], stage: str) -> dict[str, Any]:
    """The sections of `config` that `stage` depends on.

    For "diagnose", train_by_model, train_by_run and model keep only the entries of the runs
    it trains (`forcematch.config.sweep.DIAGNOSE_RUNS`). The same function makes the slice the
    workflow writes and the hash a stage records, so the two agree.
    """
    sliced = {key: config[key] for key in STAGE_SECTIONS[stage]}
    if stage == "diagnose":
        from forcematch.config.sweep import (  # sweep imports this module
            DIAGNOSE_RUNS,
            restrict_runs,
        )

        sliced = restrict_runs(sliced, DIAGNOSE_RUNS)
    return sliced


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


def write_slice(directory: str | Path, name: str, config: dict[str, Any]) -> Path:
    """Write `config` as JSON to `<directory>/<name>-<config_hash>.json`, once; return the path.

    The path names the content, so the file a job reads never changes while the job runs, even
    when another `snakemake` (a dry run, or one the lock refuses) parses the workflow with
    another config meanwhile: a changed config gets a new path, which Snakemake sees as a
    changed input and reruns; an unchanged one keeps its file and mtime, so nothing reruns.
    The file appears complete or not at all (a hard link of a finished temporary file), so
    two writers of the same slice at once are safe.
    """
    directory = Path(directory)
    path = directory / f"{name}-{config_hash(config)}.json"
    text = json.dumps(config, indent=2, sort_keys=True) + "\n"
    if path.is_file() and path.read_text() == text:
        return path
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "x") as handle:  # mode from the umask, as any output
            handle.write(text)
        try:
            os.link(tmp, path)  # refuses to replace an existing file: written once
        except FileExistsError:
            if path.read_text() != text:  # edited by hand: restore what its name says
                os.replace(tmp, path)
        except OSError:  # a file system without hard links
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_stage_slices(config: dict[str, Any], directory: str | Path,
                       stages=tuple(STAGE_SECTIONS)) -> dict[str, Path]:
    """Each stage's slice of `config`, written by `write_slice` as `<stage>-<hash>.json`."""
    return {stage: write_slice(directory, stage, stage_config(config, stage)) for stage in stages}
