"""Training losses: energy per atom, force components and virial per atom, each normalised by
its scale, or (`raw_loss`) JAX MD's notebook loss on raw totals in eV and eV/Å.

Energy-only, force-only and joint training (with or without the stress term) are the same loss
with different weights.
"""

from __future__ import annotations

import jax.numpy as jnp

from forcematch.units import KJ_MOL_PER_EV, NM_TO_A


def loss(
    pred_E,
    pred_F,
    E,
    F,
    n_atoms,
    energy_weight: float,
    force_weight: float,
    energy_scale_per_atom: float,
    force_scale: float,
    center_energy: bool = False,
    stress=None,
):
    """Weighted sum of normalised mean-square energy-per-atom, force-component and (with
    `stress`) virial-per-atom errors.

    Args:
        pred_E, E: [B] total energies (kJ/mol).
        pred_F, F: [B, N, 3] forces (kJ/mol/nm).
        n_atoms: atoms per frame (scalar, or [B]).
        energy_weight, force_weight: weights (either may be 0).
        energy_scale_per_atom: energy-per-atom scale (kJ/mol), e.g. training-set std of E/N.
        force_scale: force scale (kJ/mol/nm), e.g. training-set std of force components.
        center_energy: subtract the batch mean of the per-atom energy error first, so that
            only energy differences between frames are fitted and the constant per-atom energy
            is left to a least-squares refit (needs B >= 2). Adam's steps of size ~lr on any
            parameter that moves the constant would otherwise dominate the energy loss.
        stress: None, or (pred_W [B,3,3], W [B,3,3] virials in kJ/mol, stress_weight,
            virial_scale_per_atom in kJ/mol, e.g. `statistics`' virial_per_atom_std).

    Returns:
        (total, {"energy": mean((ΔE/N/energy_scale_per_atom)²),
                 "force": mean((ΔF/force_scale)²),
                 "stress": mean((ΔW/N/virial_scale_per_atom)²), 0 without `stress`}),
        scalars; total = weighted sum.
    """
    e_err = (pred_E - E) / n_atoms / energy_scale_per_atom
    if center_energy:
        e_err = e_err - jnp.mean(e_err)
    f_err = (pred_F - F) / force_scale
    energy_loss = jnp.mean(e_err**2)
    force_loss = jnp.mean(f_err**2)
    total = energy_weight * energy_loss + force_weight * force_loss
    stress_loss = jnp.zeros_like(total)
    if stress is not None:
        pred_W, W, stress_weight, virial_scale_per_atom = stress
        n = jnp.reshape(n_atoms, (-1, 1, 1))
        stress_loss = jnp.mean(((pred_W - W) / n / virial_scale_per_atom) ** 2)
        total = total + stress_weight * stress_loss
    return total, {"energy": energy_loss, "force": force_loss, "stress": stress_loss}


def raw_loss(pred_E, pred_F, E, F, energy_weight: float, force_weight: float,
             center_energy: bool = False):
    """JAX MD's `neural_networks.ipynb` loss: mean over frames of the squared total-energy
    error in eV², plus the mean over frames of the per-frame sum of squared force-component
    errors in (eV/Å)² (so the force term grows with the number of atoms), weighted.

    Args and returns as `loss` (energies kJ/mol, forces kJ/mol/nm); nothing is normalised.
    """
    e_err = (pred_E - E) / KJ_MOL_PER_EV
    if center_energy:
        e_err = e_err - jnp.mean(e_err)
    f_err = (pred_F - F) / (KJ_MOL_PER_EV * NM_TO_A)
    energy_loss = jnp.mean(e_err**2)
    force_loss = jnp.mean(jnp.sum(f_err**2, axis=(-2, -1)))
    total = energy_weight * energy_loss + force_weight * force_loss
    return total, {"energy": energy_loss, "force": force_loss, "stress": jnp.zeros_like(total)}


def zero_force_loss(F, force_scale: float, form: str) -> float:
    """The force term of a model that predicts zero forces on frames `F` [B, N, 3]
    (kJ/mol/nm): the baseline a force fit must beat."""
    if form == "raw_eV_angstrom":
        return float(jnp.mean(jnp.sum((F / (KJ_MOL_PER_EV * NM_TO_A)) ** 2, axis=(-2, -1))))
    return float(jnp.mean((F / force_scale) ** 2))
