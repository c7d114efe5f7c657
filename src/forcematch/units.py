"""Units and constants. On disk everything is nm, ps, kJ/mol, kJ/mol/nm, amu, K (OpenMM/H5MD).

Metrics are also reported in the ML-potential community's meV/atom and meV/Å.
"""

import math

AVOGADRO_PER_MOL = 6.02214076e23
BOLTZMANN_KJ_MOL_K = 0.008314462618  # k_B in kJ/mol/K
KJ_MOL_PER_EV = 96.485332  # 1 eV per particle in kJ/mol
KJ_MOL_TO_MEV = 1000.0 / KJ_MOL_PER_EV  # 1 kJ/mol per particle in meV (10.3642688)
NM_TO_A = 10.0
KJ_MOL_NM_TO_MEV_A = KJ_MOL_TO_MEV / NM_TO_A  # 1 kJ/mol/nm in meV/Å
KJ_MOL_NM3_TO_BAR = 16.605390666  # 1 kJ/mol/nm³ in bar (1e3 / N_A / 1e-27 m³ / 1e5 Pa)

# H5MD unit strings, one per quantity stored on disk.
UNIT = {
    "length": "nm",
    "time": "ps",
    "energy": "kJ mol-1",
    "force": "kJ mol-1 nm-1",
    "velocity": "nm ps-1",
    "mass": "u",
    "temperature": "K",
}

# Argon Lennard-Jones parameters (Rowley, Nicholson & Parsonage 1975).
ARGON_SIGMA_NM = 0.3405
ARGON_EPSILON_K = 119.8
ARGON_EPSILON_KJ_MOL = ARGON_EPSILON_K * BOLTZMANN_KJ_MOL_K  # 0.99607 kJ/mol
ARGON_MASS_AMU = 39.948


def cubic_box_length_nm(n_atoms: int, density_g_cm3: float, mass_amu: float) -> float:
    """Edge (nm) of the cubic box holding `n_atoms` of mass `mass_amu` at `density_g_cm3`."""
    volume_cm3 = n_atoms * mass_amu / AVOGADRO_PER_MOL / density_g_cm3
    return (volume_cm3 * 1e21) ** (1.0 / 3.0)  # 1 cm^3 = 1e21 nm^3


assert math.isclose(ARGON_EPSILON_KJ_MOL, 0.99607, rel_tol=1e-4)
assert math.isclose(KJ_MOL_TO_MEV, 10.3642688, rel_tol=1e-7)
