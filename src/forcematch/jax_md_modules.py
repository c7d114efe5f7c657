"""JAX MD's submodules without the cost of importing the whole package.

`import jax_md` runs the package's `__init__`, which imports every submodule: `energy` brings in
`nn` with e3nn-jax, sympy and scipy.signal (2.0 s), and `rigid_body` traces and runs JAX
functions at import (3.8 s): 5.8 s of every MD job, twice the whole MD protocol of the test
suite's tiny config (`python -X importtime -c "import jax_md"`, disk cache warm; BENCHMARKS.md).
MD needs `space`, `partition` and `simulate`, the graph network `energy`, `partition` and
`space`; each submodule imports what it needs itself. `load` registers the package without
running its `__init__`, so importing a submodule runs that submodule and its own imports alone.
Where the package is already imported, it is used as it is.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType


def load(*names: str) -> tuple[ModuleType, ...]:
    """The submodules `jax_md.<name>` for `names`, imported without jax_md/__init__.py."""
    if "jax_md" not in sys.modules:
        spec = importlib.util.find_spec("jax_md")
        if spec is None:
            raise ImportError("jax_md is not installed (pip install jax-md)")
        # A package module with its search path but without its __init__ executed.
        sys.modules["jax_md"] = importlib.util.module_from_spec(spec)
    return tuple(importlib.import_module(f"jax_md.{name}") for name in names)
