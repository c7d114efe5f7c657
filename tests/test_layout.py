"""The code's rooms keep their rules, read from the source itself (no import of the package).

- A trained model is used through `potential.Potential`'s public methods only: its model,
  normalisation and parameters are read inside `potential.py` and `models/` and nowhere else,
  so that the one loader stays the one interface (how a model evaluates, sizes its pair list
  and casts its parameters is decided in one place).
- Host-side data code (`data/`: frames, sources, statistics, pairs) needs no JAX: it runs in
  the dataset stage and in every scan of the frames without paying for JAX's import.
- Models take resolved settings and never call the config layer (the `config` package):
  `model_factory` resolves and builds, for code that holds partial options.
- Figures never load a model: a pair-family run writes its φ and F (pair_table.csv) and the
  figures read files; importing the figures imports neither a model nor JAX.
- The trainer and the spline fit do not call each other's entry point: `fit.fit` chooses;
  `linear` may use training's parts (checkpoint files, evaluation), `training` nothing of
  `linear`, so the packages form no cycle.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
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


def _offenders(files, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    found = {}
    for path in files:
        hits = sorted(m for m in imported_modules(path)
                      if any(m == f or m.startswith(f + ".") for f in forbidden))
        if hits:
            found[path.relative_to(SRC).as_posix()] = hits
    return found


def test_models_never_call_the_config_layer():
    assert not _offenders(sorted((SRC / "models").glob("*.py")), ("forcematch.config",))


def test_training_never_imports_the_spline_fit():
    assert not _offenders(sorted((SRC / "training").glob("*.py")), ("forcematch.linear",))


def test_the_import_reader_sees_lazy_and_aliased_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from forcematch.config import model_settings as m\n"
                      "    import forcematch.linear.run\n")
    assert {"forcematch.config", "forcematch.linear.run"} <= imported_modules(source)


def test_figures_never_load_a_model():
    files = sorted((SRC / "figures").glob("*.py")) + [SRC / "md" / "figures.py"]
    assert len(files) >= 6
    assert not _offenders(files, ("forcematch.potential", "forcematch.models", "jax"))
    for path in files:
        assert "load_model" not in path.read_text(), path
    # and nothing they import does, at import time
    probe = ("import sys, forcematch.figures.plots; "
             "print(sorted(m for m in ('forcematch.potential', 'jax') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert loaded == "[]"
