"""Fixtures shared by the test modules: 64-bit JAX for a test body, and the tiny dataset.

The tiny dataset is real: the tiny config (tests/config/tiny.yaml) simulated with OpenMM,
3 replicas of 40 frames of 32 atoms, split by `forcematch.dataset`. It is built once per test
session; tests that change files copy it first.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from forcematch.commands import use_compilation_cache

# JAX's persistent compilation cache, as every `forcematch` stage uses it (before JAX is
# imported): the suite trains, validates and runs MD in-process with the same functions and
# shapes many times, and a repeated compilation is then a file read.
use_compilation_cache()

import jax  # noqa: E402 (after the cache is configured)

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "config" / "tiny.yaml"


def tiny_config(directory: Path, name: str = "config.yaml", **sections) -> Path:
    """tests/config/tiny.yaml with the keys of `sections` ({section: {key: value}}) replaced,
    written to `directory/name`."""
    config = yaml.safe_load(TINY.read_text())
    for section, values in sections.items():
        config[section] = config.get(section, {}) | values
    path = directory / name
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def keep_environment():
    """Restore os.environ after the test: `forcematch train` run in-process sets thread
    variables (XLA_FLAGS, OMP_NUM_THREADS, ...) for its own process."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def x64():
    """Run a test body with 64-bit JAX, restoring the global setting afterwards."""
    with jax.enable_x64(True):
        yield


@dataclass(frozen=True)
class TinyData:
    """Real outputs of the tiny config: its config file, the replicas and the dataset splits."""

    root: Path
    config: Path
    replicas: list[Path]
    dataset: Path

    def copy_replicas(self, tmp: Path) -> list[Path]:
        return [Path(shutil.copy(p, tmp / p.name)) for p in self.replicas]

    def copy_dataset(self, tmp: Path) -> Path:
        return Path(shutil.copytree(self.dataset, tmp / "dataset"))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> TinyData:
    """The tiny config simulated (3 replicas) and split into dataset/{train,val,test}.h5."""
    from forcematch.config import load_config
    from forcematch.dataset import build_dataset
    from forcematch.reference import run_replica

    root = tmp_path_factory.mktemp("tiny")
    config_path = Path(shutil.copy(TINY, root / "config.yaml"))
    config = load_config(config_path)
    replicas = [root / f"replica_{k}.h5" for k in range(config["simulate"]["replicas"])]
    for k, path in enumerate(replicas):
        run_replica(config, k, path, progress=None)
    build_dataset(config, replicas, root / "dataset", progress=lambda _: None)
    return TinyData(root, config_path, replicas, root / "dataset")
