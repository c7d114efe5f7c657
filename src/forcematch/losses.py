"""Training losses: energy per atom and force components, each normalised by its scale.

Energy-only, force-only and joint training are the same loss with different weights.
"""

from __future__ import annotations

import jax.numpy as jnp


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
):
    """Weighted sum of normalised mean-square energy-per-atom and force-component errors.

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

    Returns:
        (total, {"energy": mean((ΔE/N/energy_scale_per_atom)²),
                 "force": mean((ΔF/force_scale)²)}), scalars; total = weighted sum.
    """
    e_err = (pred_E - E) / n_atoms / energy_scale_per_atom
    if center_energy:
        e_err = e_err - jnp.mean(e_err)
    f_err = (pred_F - F) / force_scale
    energy_loss = jnp.mean(e_err**2)
    force_loss = jnp.mean(f_err**2)
    total = energy_weight * energy_loss + force_weight * force_loss
    return total, {"energy": energy_loss, "force": force_loss}
