"""The code's rooms keep their rules, read from the source itself (no import of the package).

- A trained model is used through `potential.Potential`'s public methods only: its model,
  normalisation and parameters are read inside `potential.py` and `models/` and nowhere else,
  so that the one loader stays the one interface (how a model evaluates, sizes its pair list
  and casts its parameters is decided in one place).
- Host-side data code (`data/`: frames, sources, statistics, pairs) needs no JAX: it runs in
  the dataset stage and in every scan of the frames without paying for JAX's import.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "forcematch"
# An attribute of a variable that holds a Potential (by the project's naming: `potential`,
# `<something>_potential`, `self.potential`) naming its internals.
INTERNALS = re.compile(r"\b\w*potential\.(model|norm|params)\b")


def test_only_potential_and_models_read_a_potentials_internals():
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        relative = path.relative_to(SRC).as_posix()
        if relative == "potential.py" or relative.startswith("models/"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if INTERNALS.search(line):
                offenders.append(f"{relative}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_the_check_finds_what_it_looks_for():
    assert INTERNALS.search("params = self.potential.params")
    assert INTERNALS.search("total = energy_fn(potential.model, potential.norm)")
    assert not INTERNALS.search("name = potential.model_name")


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any level of the file (lazy imports included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_host_side_data_code_needs_no_jax():
    jax_side = ("jax", "jax_md", "flax", "optax", "forcematch.space", "forcematch.models",
                "forcematch.potential")
    offenders = {path.name: sorted(m for m in imported_modules(path)
                                   if any(m == j or m.startswith(j + ".") for j in jax_side))
                 for path in sorted((SRC / "data").glob("*.py"))}
    assert not {name: found for name, found in offenders.items() if found}
