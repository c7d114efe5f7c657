"""Energy models: a registry of families behind one interface, and the normalisation wrapper.

Every family maps (positions [N,3] nm, box [3] nm, species [N] int) to one scalar energy in
*model units* (`base.EnergyModel`); it sees only minimum-image displacements, so it is invariant
to translation, rotation, permutation and periodic images, and smooth at the cutoff. Physical
energies and forces come from the wrapper (`normalisation`), never from a separate network
output. Shared layers and radial bases live in `layers`; each family's hyper-parameters, with
their types and defaults, in the config schema (`$defs/model_<family>`). Models take settings
already resolved (`forcematch.config.model_settings`: every key, checked) and never call the
config layer; `forcematch.model_factory` resolves and builds in one call.
"""

from __future__ import annotations

import math

import numpy as np

from forcematch.errors import ForcematchError
from forcematch.models.atomic import AtomicModel
from forcematch.models.base import EnergyModel, NeighbourListModel, Params, poison_on_overflow
from forcematch.models.graph_network import GraphNetworkModel
from forcematch.models.mpnn import MPNNModel
from forcematch.models.normalisation import (
    Normalisation,
    cast_params,
    energy_and_forces_fn,
    energy_fn,
    energy_forces_strain_fn,
    forces_fn,
    predict_fn,
)
from forcematch.models.pair import PairModel
from forcematch.models.spline import SplineModel

# The families; the config schema's `$defs/model_family` lists the same names (a test checks).
MODELS: dict[str, type] = {
    "pair": PairModel,
    # cubic B-spline pair potential fitted by linear least squares (MS-CG), the baseline
    "spline": SplineModel,
    "atomic": AtomicModel,
    "mpnn": MPNNModel,
    # JAX MD's graph network, the model of its neural_networks notebook (the collapse study).
    "graph_network": GraphNetworkModel,
}


def build(name: str, settings: dict, cutoff_nm: float, capacity: int | None = None
          ) -> EnergyModel:
    """The model family `name` with its resolved `settings` (`config.model_settings`: every
    option of the family) and cutoff (nm, `cutoff_of`), with `capacity` pair slots."""
    if name not in MODELS:
        raise ForcematchError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}")
    if not (isinstance(cutoff_nm, int | float) and math.isfinite(cutoff_nm) and cutoff_nm > 0):
        raise ForcematchError(f"model cutoff must be a positive number of nm, got {cutoff_nm!r}")
    return MODELS[name](settings, float(cutoff_nm), capacity)


def with_data_species(model_config: dict | None, species) -> dict:
    """`model_config` with `n_species` set to the species count of the data (species [N] int,
    indices 0..S-1): every family then resolves species (S > 1) or ignores them (S = 1)."""
    species = np.asarray(species)
    if species.size and species.min() < 0:
        raise ForcematchError(f"species indices must be >= 0, got {int(species.min())}")
    return dict(model_config or {}) | {"n_species": int(species.max()) + 1 if species.size
                                       else 1}


def cutoff_of(name: str, settings: dict, system_cutoff_nm: float) -> float:
    """The cutoff (nm) of model `name` with resolved `settings`: its own `cutoff_nm` option
    where the family has one and it is set (at most the system cutoff, which keeps the
    minimum image valid), else the system cutoff."""
    own = settings.get("cutoff_nm")
    if own is None:
        return float(system_cutoff_nm)
    if own > system_cutoff_nm:
        raise ForcematchError(
            f"model.{name}.cutoff_nm = {own} nm exceeds system.cutoff_nm = {system_cutoff_nm} "
            "nm; a model's cutoff may only be shorter")
    return float(own)


__all__ = [
    "MODELS",
    "EnergyModel",
    "NeighbourListModel",
    "Normalisation",
    "PairModel",
    "Params",
    "build",
    "cutoff_of",
    "with_data_species",
    "cast_params",
    "energy_and_forces_fn",
    "energy_fn",
    "energy_forces_strain_fn",
    "forces_fn",
    "poison_on_overflow",
    "predict_fn",
]
