"""The normalisation wrapper: physical energies and forces from a model's raw energy.

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

import jax
import jax.numpy as jnp

from forcematch.models.base import EnergyModel, Params
from forcematch.units import KJ_MOL_PER_EV


@dataclass(frozen=True)
class Normalisation:
    """Maps model units to kJ/mol: E = energy_scale * raw + n_atoms * energy_shift_per_atom."""

    energy_scale: float = 1.0  # kJ/mol per model unit (force RMS in kJ/mol/nm × 1 nm)
    energy_shift_per_atom: float = 0.0  # kJ/mol per atom

    @classmethod
    def from_stats(cls, stats: dict, output_scale: str = "force_rms",
                   n_atoms: int | None = None) -> Normalisation:
        """From the dataset statistics (`stats.json`), by the train option `output_scale`:
        "force_rms" (the convention above), "energy_std" (E = std(E)·raw + mean(E), JAX MD's
        2020 notebook; needs `n_atoms`) or "eV" (the raw output in eV, no shift)."""
        if output_scale == "eV":
            return cls(KJ_MOL_PER_EV, 0.0)
        if output_scale == "energy_std":
            scale = float(stats["energy_per_atom_std_kJ_mol"]) * int(n_atoms)
        elif output_scale == "force_rms":
            scale = float(stats["force_rms_kJ_mol_nm"])
        else:
            raise ValueError(f"unknown output_scale {output_scale!r}")
        if not (math.isfinite(scale) and scale > 0):
            scale = 1.0
        return cls(scale, float(stats["energy_per_atom_mean_kJ_mol"]))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Normalisation:
        return cls(float(d["energy_scale"]), float(d["energy_shift_per_atom"]))


def energy_fn(model: EnergyModel, norm: Normalisation):
    """f(params, positions [N,3], box [3], species [N], pairs=None) -> total energy (kJ/mol);
    `pairs` as in `EnergyModel.energy`."""

    def total_energy(params, positions_nm, box_nm, species, pairs=None):
        raw = model.energy(params, positions_nm, box_nm, species, pairs)
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


def energy_forces_strain_fn(model: EnergyModel, norm: Normalisation):
    """f(params, positions [N,3], box [3] or cell [3,3], species [N]) -> (E kJ/mol,
    F [N,3] kJ/mol/nm, dE/dε [3,3] kJ/mol), in the dtype of the positions; not jitted.

    dE/dε is the derivative of E(x·(1+ε), cell·(1+ε)) with respect to a symmetric strain ε at
    ε = 0, positions and cell vectors strained alike (autodiff, one backward pass with the
    forces). Its trace is dE/dλ of a uniform scaling, so the pressure is
    P = (2K − tr dE/dε)/(3V); the configurational stress is σ = (dE/dε)/V (ASE's sign:
    positive under tension); the virial is −dE/dε. The pairs are found once in the unstrained
    box (the model's own search, with its capacity) and the strain acts on their displacements
    (through a general cell), so the derivative is exact for every family and no strain changes
    the pair list. NaN everywhere when the pair list overflows.
    """
    total = energy_fn(model, norm)

    def strained(params, positions_nm, cell_nm, species, strain, pairs):
        deform = jnp.eye(3, dtype=positions_nm.dtype) + 0.5 * (strain + strain.T)
        return total(params, positions_nm @ deform, cell_nm @ deform, species, pairs)

    value_and_grad = jax.value_and_grad(strained, argnums=(1, 4))

    def evaluate(params, positions_nm, box_nm, species):
        n = positions_nm.shape[0]
        i, j, mask, overflow = model.neighbour_pairs(positions_nm, box_nm)
        pairs = (jnp.where(mask, i, n), jnp.where(mask, j, n))  # padding: index N
        cell = box_nm if box_nm.ndim == 2 else jnp.diag(box_nm)
        zero = jnp.zeros((3, 3), positions_nm.dtype)
        energy, (grad_x, grad_strain) = value_and_grad(params, positions_nm, cell, species,
                                                       zero, pairs)
        poison = jnp.where(overflow, jnp.nan, 0.0).astype(positions_nm.dtype)
        return energy + poison, -grad_x + poison, grad_strain + poison

    return evaluate


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
