"""Where an output came from: config hash, seeds, package versions, git commit.

Every output of the pipeline carries a `provenance` record (a JSON object; in HDF5 files inside
`/parameters`). Records identify their stage config by `config_hash` (`forcematch.config.
config_hash` of the stage's config slice); `require_same_origin` refuses to combine outputs
whose records disagree, e.g. replicas simulated under different configs.

Outputs are written through `forcematch.io.atomic`.
"""

from __future__ import annotations

import platform
import subprocess
import sys
import time
from collections.abc import Iterable
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from forcematch.errors import ForcematchError

# Packages whose versions can change the numbers an output holds.
PACKAGES = ("forcematch", "numpy", "h5py", "openmm", "jax", "jaxlib", "flax", "optax",
            "MDAnalysis", "snakemake")


@cache
def package_versions() -> dict[str, str | None]:
    """Installed versions (from package metadata, without importing the packages)."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


@cache
def git_commit() -> str | None:
    """Commit of the forcematch source tree ('<sha>-dirty' with local changes); None if the
    package does not run from a git checkout or git is missing."""
    source = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=source, capture_output=True, text=True, timeout=10,
                               check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty else sha


def provenance(stage: str, config_hash: str, seeds: dict[str, int] | None = None,
               inputs: dict[str, Any] | None = None) -> dict[str, Any]:
    """The provenance record of one output of `stage`.

    Args:
        stage: pipeline stage that wrote the output ("simulate", "dataset", "train", ...).
        config_hash: hash of the stage's config slice (`forcematch.config.config_hash`).
        seeds: every seed that went into the output, by name.
        inputs: provenance (or hashes) of the inputs the output was made from, by name.
    """
    return {
        "stage": stage,
        "config_hash": config_hash,
        "seeds": dict(seeds or {}),
        "inputs": dict(inputs or {}),
        "versions": package_versions(),
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "git_commit": git_commit(),
        "command": " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:]),
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def require_same_origin(records: Iterable[tuple[str, dict | None]], key: str = "config_hash",
                        expected: str | None = None) -> str | None:
    """Check that every record (name, provenance) agrees on `key` (and equals `expected`).

    Records that are None (files from outside the pipeline) are skipped. Returns the common
    value, or None when no record has one. Raises ForcematchError naming the first mismatch.
    """
    common, first = expected, "the current config" if expected is not None else None
    for name, record in records:
        if record is None or record.get(key) is None:
            continue
        value = record[key]
        if common is None:
            common, first = value, name
        elif value != common:
            raise ForcematchError(
                f"{name} was made under {key} {value}, {first} under {common}: outputs of "
                "different configs cannot be mixed (rerun the upstream stage, e.g. delete the "
                "stale file and run snakemake again)"
            )
    return common
