"""Settings given on the command line: `snakemake --config SECTION='{KEY: VALUE}'` and the same
`--config` of `forcematch check-config`, laid over the config file the way `extends` lays a file
over its base (`file.merge_over`: mappings merge key by key, anything else replaces).

    snakemake -n --config 'train={seed: 1}'        # one key of one section
    snakemake --config 'md={nve_ps: 100, nvt_ps: 20}'
    forcematch check-config config/config.yaml --config 'train={seed: 1}'

Snakemake parses `--config` itself (`snakemake.cli.parse_config`): a top-level value becomes an
int, float or bool where it reads as one, a YAML mapping or list is read with every scalar left a
string, and a key may not hold a dot (`train.seed=1` is refused by Snakemake before the
workflow starts). `typed` gives the scalars inside mappings and lists the same types a
top-level value gets, and `parse_entries` reads `forcematch check-config`'s entries the same
way, so both commands resolve the same config (and hash).
"""

from __future__ import annotations

from typing import Any

import yaml

from forcematch.config.file import merge_over
from forcematch.errors import ForcematchError


def _scalar(text: str) -> Any:
    """A command-line scalar as Snakemake reads a top-level one: int, float, bool, else str;
    `null` and `~` are None (the schema's way to switch a section off)."""
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("null", "~"):
        return None
    return text


def typed(value: Any) -> Any:
    """`value` with every string inside it (mappings, lists) read as `_scalar`."""
    if isinstance(value, dict):
        return {key: typed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [typed(item) for item in value]
    return _scalar(value) if isinstance(value, str) else value


def parse_entries(entries: list[str]) -> dict[str, Any]:
    """KEY=VALUE entries, as `snakemake --config` reads them, into {KEY: value}."""
    parsed: dict[str, Any] = {}
    for entry in entries:
        key, eq, text = entry.partition("=")
        if not eq or not key.isidentifier():
            raise ForcematchError(f"--config {entry!r}: give SECTION=VALUE, e.g. "
                                  "'train={seed: 1}' (a key with a dot is refused by Snakemake)")
        try:
            value = yaml.load(text, Loader=yaml.BaseLoader) if text else None
        except yaml.YAMLError as err:
            raise ForcematchError(f"--config {entry!r}: not YAML: {' '.join(str(err).split())}"
                                  ) from None
        parsed[key] = typed(value)
    return parsed


def apply_overrides(raw: Any, overrides: dict[str, Any]) -> Any:
    """The file's content `raw` with the command line's `overrides` laid over it."""
    if not isinstance(raw, dict):
        return raw  # the schema check names what is wrong with the file itself
    return merge_over(raw, typed(overrides))


def describe(overrides: dict[str, Any]) -> str:
    """The overrides as the start-up line and error messages name them."""
    return " ".join(f"{key}={yaml.safe_dump(typed(value), default_flow_style=True).strip()}"
                    .replace("\n...", "") for key, value in overrides.items())
