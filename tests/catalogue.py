"""The pieces every catalogue case uses: the tiny run's files, a case, running a subcommand.

The cases live in `test_bad_input.py` (the first rows) and in `bad_input_*.py`, one module per
area; `test_bad_input.py` runs them all in the documented order.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from conftest import TINY, tiny_config

from forcematch import cli

__all__ = ["TINY", "Case", "Tiny", "config_with", "other_system_dataset", "run"]


@dataclass
class Tiny:
    """Real outputs of the tiny config: replicas, dataset splits (the session's `tiny_data`)
    and a model trained on them by `forcematch train`."""

    root: Path
    config: Path
    replicas: list[Path]
    dataset: Path
    model: Path

    def copy_replicas(self, tmp: Path) -> list[Path]:
        return [Path(shutil.copy(p, tmp / p.name)) for p in self.replicas]

    def copy_dataset(self, tmp: Path) -> Path:
        return Path(shutil.copytree(self.dataset, tmp / "dataset"))


@dataclass
class Case:
    id: str
    what: str  # the documented catalogue's "input" column
    argv: Callable[[Tiny, Path], list]  # the subcommand's arguments, after breaking one thing
    message: str  # regular expression the one-line message must match


def run(argv: list) -> int:
    """`forcematch <argv>` in this process; its exit status."""
    return cli.main([str(a) for a in argv])


def config_with(tmp: Path, **sections) -> Path:
    """The tiny config with `sections` replaced, as tmp/bad.yaml."""
    return tiny_config(tmp, "bad.yaml", **sections)


def other_system_dataset(tmp: Path, n_atoms: int = 30) -> tuple[Path, Path]:
    """(config, dataset dir) of a system of `n_atoms` atoms under its own config (tmp/bad.yaml):
    three replicas simulated and split by the real stages, for cases that meet the tiny
    run's 32-atom model or reference with another system."""
    config = config_with(tmp, system={"n_atoms": n_atoms})
    replicas = [tmp / f"replica_{k}.h5" for k in range(3)]
    for k, path in enumerate(replicas):
        assert run(["simulate", "--config", config, "--replica", k, "--out", path]) == 0
    assert run(["dataset", "--config", config, "--inputs", *replicas, "--out-dir",
                tmp / "dataset"]) == 0
    return config, tmp / "dataset"
