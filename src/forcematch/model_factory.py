"""A model from config values: the family's options resolved by the config layer (schema
defaults filled in, every key checked), then the family built by `forcematch.models`, which
never reads the config itself. Tests, benchmarks and tools that hold partial options use this;
the trainer, the spline fit and the loader resolve once and call `models.build`."""

from __future__ import annotations

from forcematch.config import model_settings
from forcematch.models import EnergyModel, build, cutoff_of


def build_model(name: str, values: dict | None, cutoff_nm: float,
                capacity: int | None = None) -> EnergyModel:
    """The model family `name` with options `values` (missing keys: the schema's defaults;
    unknown keys, wrong types or ranges: ForcematchError naming the key) and the system
    cutoff `cutoff_nm` (the family's own cutoff option, where set, takes its place)."""
    settings = model_settings(name, values, source=f"{name} model")
    return build(name, settings, cutoff_of(name, settings, cutoff_nm), capacity)


def model_cutoff_nm(name: str, values: dict | None, system_cutoff_nm: float) -> float:
    """The cutoff (nm) a model `name` with options `values` has (`models.cutoff_of`)."""
    return cutoff_of(name, model_settings(name, values, source=f"{name} model"),
                     system_cutoff_nm)
