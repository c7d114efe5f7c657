"""The reference data against physics: mean potential energy per atom (in ε) against the
equation of state, where the config's state is the one a published value is for
(`U_REFERENCE_STATE`, the default argon state); any other state, and any mixture, reports its
U/N with a note saying why there is no expected value."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from forcematch.data.frames import Frames
from forcematch.units import ARGON_EPSILON_KJ_MOL, ARGON_MASS_AMU, ARGON_SIGMA_NM

# U/N of OpenMM's LJ argon, N = 100, 0.8 nm cutoff switched from 0.7 nm, dispersion correction,
# 100 K, rho* = 0.7818 (design.md); the full potential (Thol 2016 EOS) gives -5.566. It holds
# for this state only (`system` keys; the atom count is not part of the state, though the
# tolerance was set for the 100-atom box): any other state gets no expected value.
U_PER_ATOM_EPS_EXPECTED = -5.59
U_PER_ATOM_EPS_TOLERANCE = 0.05
U_REFERENCE_STATE = {
    "temperature_K": 100.0, "density_g_cm3": 1.3137, "cutoff_nm": 0.8, "switch_nm": 0.7,
    "sigma_nm": ARGON_SIGMA_NM, "epsilon_kJ_mol": round(ARGON_EPSILON_KJ_MOL, 5),
    "mass_amu": ARGON_MASS_AMU, "dispersion_correction": True,
}
NO_REFERENCE = "no reference value for this state"
MIXTURE_NO_REFERENCE = "no reference value: a mixture (the expected U/N is one-species argon's)"


def u_per_atom_eps(
    energy_kJ_mol: np.ndarray, n_atoms: int, epsilon_kJ_mol: float, n_blocks: int = 10
) -> tuple[float, float | None]:
    """Mean potential energy per atom in units of epsilon, and its block-average standard error
    (None with fewer than 2 frames: no spread to estimate it from)."""
    u = np.asarray(energy_kJ_mol, dtype=np.float64) / n_atoms / epsilon_kJ_mol
    blocks = np.array([b.mean() for b in np.array_split(u, min(n_blocks, len(u)))])
    sem = float(blocks.std(ddof=1) / np.sqrt(len(blocks))) if len(blocks) > 1 else None
    return float(u.mean()), sem


def has_u_reference(system: dict) -> bool:
    """Whether `system` (the config's section) is the state U_PER_ATOM_EPS_EXPECTED is for."""
    species = system.get("species")
    if species:  # a mixture has none; one listed species is judged by its own parameters
        if len(species) > 1:
            return False
        system = system | {k: species[0][k] for k in ("sigma_nm", "epsilon_kJ_mol", "mass_amu")}
    for key, value in U_REFERENCE_STATE.items():
        got = system.get(key)
        if isinstance(value, bool) or isinstance(got, bool):
            if got is not value:
                return False
        elif not (isinstance(got, int | float) and np.isclose(got, value, rtol=1e-9, atol=0)):
            return False
    return True


def u_per_atom_metrics(splits: Sequence[Frames], system: dict,
                        progress: Callable[[str], None]) -> dict:
    """U/N in ε (a mixture: species 0's) over all frames of all splits, against the equation
    of state where the state (`system`) has a reference value."""
    energies = np.concatenate([s.potential_energy_kJ_mol for s in splits])
    species = system.get("species")
    epsilon = species[0]["epsilon_kJ_mol"] if species else system["epsilon_kJ_mol"]
    u_mean, u_sem = u_per_atom_eps(energies, splits[-1].n_atoms, epsilon)
    sem = "" if u_sem is None else f" +- {u_sem:.4f}"
    metrics = {"u_per_atom_eps": u_mean, "u_per_atom_eps_sem": u_sem}
    if not has_u_reference(system):
        note = MIXTURE_NO_REFERENCE if species and len(species) > 1 else NO_REFERENCE
        progress(f"U/N = {u_mean:.4f}{sem} eps over {len(energies)} frames ({note}: "
                 f"{U_PER_ATOM_EPS_EXPECTED} eps is for {U_REFERENCE_STATE})")
        return metrics | {"u_per_atom_eps_expected": None, "u_per_atom_eps_tolerance": None,
                          "u_per_atom_within_tolerance": None, "u_per_atom_note": note}
    progress(f"U/N = {u_mean:.4f}{sem} eps over {len(energies)} frames "
             f"(expected {U_PER_ATOM_EPS_EXPECTED} +- {U_PER_ATOM_EPS_TOLERANCE})")
    return metrics | {
        "u_per_atom_eps_expected": U_PER_ATOM_EPS_EXPECTED,
        "u_per_atom_eps_tolerance": U_PER_ATOM_EPS_TOLERANCE,
        "u_per_atom_within_tolerance": bool(
            abs(u_mean - U_PER_ATOM_EPS_EXPECTED) <= U_PER_ATOM_EPS_TOLERANCE),
        "u_per_atom_note": "expected value: OpenMM, N = 100, this state (design.md)",
    }
