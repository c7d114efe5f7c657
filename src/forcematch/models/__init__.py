"""Energy models: a registry of families behind one interface, and the normalisation wrapper.

Every family maps (positions [N,3] nm, box [3] nm, species [N] int) to one scalar energy in
*model units*; it sees only minimum-image displacements, so it is invariant to translation,
rotation, permutation and periodic images, and smooth at the cutoff. Physical quantities come
from the wrapper, never from a separate network output:

    total_energy [kJ/mol] = energy_scale * model.energy(...) + n_atoms * energy_shift_per_atom
    forces [kJ/mol/nm]     = -jax.grad(total_energy)(positions)

Convention: `energy_scale` = training-set force RMS (kJ/mol/nm) × 1 nm, so the raw model's
gradient with respect to positions (in nm) has RMS ≈ 1, and per-pair/per-atom raw outputs are
O(0.01-1); `energy_shift_per_atom` = training-set mean energy per atom (kJ/mol), so the raw
model need not learn the large constant part of the energy. Both are stored with checkpoints.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import jax
import jax.numpy as jnp

from forcematch.errors import ForcematchError
from forcematch.models.atomic import AtomicModel
from forcematch.models.global_readout import GlobalReadoutModel
from forcematch.models.mpnn import MPNNModel
from forcematch.models.pair import PairModel

Params = Any


class EnergyModel(Protocol):
    """What every model family provides. Arrays are single frames; batch with `predict_fn`."""

    name: str
    config: dict  # the full hyper-parameters, defaults filled in (JSON-serialisable)
    cutoff_nm: float
    capacity: int | None  # neighbour-list slots; None = all N(N-1)/2 pairs
    neighbour_method: str  # space.neighbour_pairs method: "auto" (default), "dense" or "cell"

    def init(self, rng, positions_nm, box_nm, species) -> Params: ...

    def energy(self, params, positions_nm, box_nm, species) -> jax.Array:
        """Scalar energy in model units; NaN (energy and its gradient) on neighbour overflow."""
        ...

    def overflow(self, positions_nm, box_nm) -> jax.Array:
        """True when the frame has more pairs within the cutoff than `capacity` (or, with the
        cell list, a cell holds more atoms than its static capacity)."""
        ...


MODELS: dict[str, type] = {
    "pair": PairModel,
    "atomic": AtomicModel,
    "mpnn": MPNNModel,
    # A deliberately poor network, kept to demonstrate the force-only collapse.
    "global_readout": GlobalReadoutModel,
}


def build_model(
    name: str, model_config: dict | None, cutoff_nm: float, capacity: int | None = None
) -> EnergyModel:
    """The model family `name` with hyper-parameters `model_config` (missing keys: defaults)."""
    if name not in MODELS:
        raise ForcematchError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}")
    if not (isinstance(cutoff_nm, int | float) and math.isfinite(cutoff_nm) and cutoff_nm > 0):
        raise ForcematchError(f"model cutoff must be a positive number of nm, got {cutoff_nm!r}")
    return MODELS[name](dict(model_config or {}), float(cutoff_nm), capacity)


@dataclass(frozen=True)
class Normalisation:
    """Maps model units to kJ/mol: E = energy_scale * raw + n_atoms * energy_shift_per_atom."""

    energy_scale: float = 1.0  # kJ/mol per model unit (force RMS in kJ/mol/nm × 1 nm)
    energy_shift_per_atom: float = 0.0  # kJ/mol per atom

    @classmethod
    def from_stats(cls, stats: dict) -> Normalisation:
        """From `train.dataset_stats` output (force RMS and mean energy per atom)."""
        scale = float(stats["force_rms_kJ_mol_nm"])
        if not (math.isfinite(scale) and scale > 0):
            scale = 1.0
        return cls(scale, float(stats["energy_per_atom_mean_kJ_mol"]))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Normalisation:
        return cls(float(d["energy_scale"]), float(d["energy_shift_per_atom"]))


def energy_fn(model: EnergyModel, norm: Normalisation):
    """f(params, positions [N,3], box [3], species [N]) -> total energy (kJ/mol)."""

    def total_energy(params, positions_nm, box_nm, species):
        raw = model.energy(params, positions_nm, box_nm, species)
        n_atoms = positions_nm.shape[0]
        return norm.energy_scale * raw + n_atoms * norm.energy_shift_per_atom

    return total_energy


def forces_fn(model: EnergyModel, norm: Normalisation):
    """f(params, positions [N,3], box [3], species [N]) -> forces [N,3] (kJ/mol/nm) = -∇E."""
    grad = jax.grad(energy_fn(model, norm), argnums=1)

    def forces(params, positions_nm, box_nm, species):
        return -grad(params, positions_nm, box_nm, species)

    return forces


def energy_and_forces_fn(model: EnergyModel, norm: Normalisation):
    """f(params, positions [N,3], box [3], species [N]) -> (E kJ/mol, F [N,3] kJ/mol/nm)."""
    vg = jax.value_and_grad(energy_fn(model, norm), argnums=1)

    def energy_and_forces(params, positions_nm, box_nm, species):
        e, g = vg(params, positions_nm, box_nm, species)
        return e, -g

    return energy_and_forces


def predict_fn(model: EnergyModel, norm: Normalisation):
    """Batched f(params, positions [B,N,3], box [B,3], species [N]) -> (E [B], F [B,N,3]).

    Not jitted: wrap it in `jax.jit` (or call it inside a jitted function).
    """
    ef = energy_and_forces_fn(model, norm)
    return jax.vmap(ef, in_axes=(None, 0, 0, None))


def cast_params(params: Params, dtype) -> Params:
    """Params with every floating leaf cast to `dtype` (e.g. jnp.float64 under x64)."""
    return jax.tree.map(
        lambda p: jnp.asarray(p, dtype) if jnp.issubdtype(jnp.result_type(p), jnp.floating) else p,
        params,
    )


__all__ = [
    "MODELS",
    "EnergyModel",
    "Normalisation",
    "PairModel",
    "build_model",
    "cast_params",
    "energy_and_forces_fn",
    "energy_fn",
    "forces_fn",
    "predict_fn",
]
