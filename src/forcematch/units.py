"""Units and constants. On disk everything is nm, ps, kJ/mol, kJ/mol/nm, amu, K (OpenMM/H5MD).

Metrics are also reported in the ML-potential community's meV/atom and meV/Å.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass

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



# ------------------------------------------------------------------ units of other engines' files
# What `forcematch import` converts from. Units are declared in the config (`import.units`),
# never guessed. CODATA 2022 (scipy.constants); e and N_A are exact since the 2019 SI, so the eV
# is exact: 96.48533212331 kJ/mol (KJ_MOL_PER_EV above is the same value to 8 digits).
ELEMENTARY_CHARGE_C = 1.602176634e-19
KJ_MOL_PER_EV_SI = ELEMENTARY_CHARGE_C * AVOGADRO_PER_MOL * 1e-3  # 96.48533212331002
KJ_MOL_PER_KCAL_MOL = 4.184  # the thermochemical calorie
KJ_MOL_PER_HARTREE = 4.3597447222060e-18 * AVOGADRO_PER_MOL * 1e-3  # 2625.4996394792
BOHR_NM = 0.0529177210544
ANGSTROM_NM = 0.1

# Each declarable unit in project units (nm, kJ/mol).
LENGTH_NM = {"nm": 1.0, "angstrom": ANGSTROM_NM, "bohr": BOHR_NM}
ENERGY_KJ_MOL = {"kJ/mol": 1.0, "kcal/mol": KJ_MOL_PER_KCAL_MOL, "eV": KJ_MOL_PER_EV_SI,
                 "hartree": KJ_MOL_PER_HARTREE}

# The named unit systems of `import.units`: (length, energy, force).
UNIT_SYSTEMS = {
    "ase": ("angstrom", "eV", "eV/angstrom"),
    "lammps_real": ("angstrom", "kcal/mol", "kcal/mol/angstrom"),
    "lammps_metal": ("angstrom", "eV", "eV/angstrom"),
    "gromacs": ("nm", "kJ/mol", "kJ/mol/nm"),
}


@dataclass(frozen=True)
class SourceUnits:
    """The declared units of a file and the factors that take its values to project units."""

    name: str  # a UNIT_SYSTEMS key, or "explicit"
    length: str
    energy: str
    force: str

    @property
    def length_nm(self) -> float:
        return LENGTH_NM[self.length]

    @property
    def energy_kJ_mol(self) -> float:
        return ENERGY_KJ_MOL[self.energy]

    @property
    def force_kJ_mol_nm(self) -> float:
        energy, length = self.force.rsplit("/", 1)
        return ENERGY_KJ_MOL[energy] / LENGTH_NM[length]

    def describe(self) -> dict:
        """The declaration and the factors applied, for provenance records."""
        return {"declared": self.name, "length": self.length, "energy": self.energy,
                "force": self.force, "length_to_nm": self.length_nm,
                "energy_to_kJ_mol": self.energy_kJ_mol,
                "force_to_kJ_mol_nm": self.force_kJ_mol_nm}

    def __str__(self) -> str:
        units = f"{self.length}, {self.energy}, {self.force}"
        return units if self.name == "explicit" else f"{self.name} ({units})"


def source_units(declared: str | Mapping[str, str]) -> SourceUnits:
    """`import.units` (a UNIT_SYSTEMS name or {length, energy, force}) as SourceUnits."""
    if isinstance(declared, str):
        if declared not in UNIT_SYSTEMS:
            raise ValueError(f"unknown unit system {declared!r}; known: {sorted(UNIT_SYSTEMS)}")
        return SourceUnits(declared, *UNIT_SYSTEMS[declared])
    units = SourceUnits("explicit", declared["length"], declared["energy"], declared["force"])
    energy, _, length = units.force.rpartition("/")
    if (units.length not in LENGTH_NM or units.energy not in ENERGY_KJ_MOL
            or energy not in ENERGY_KJ_MOL or length not in LENGTH_NM):
        raise ValueError(f"unknown units in {dict(declared)}: lengths {sorted(LENGTH_NM)}, "
                         f"energies {sorted(ENERGY_KJ_MOL)}, forces <energy>/<length>")
    return units


def _ratios(table: Mapping[str, float]) -> list[tuple[float, str]]:
    return [(table[a] / table[b], f"{a} per {b}") for a in table for b in table
            if table[a] > table[b]]


def unit_confusions(energy_only: bool = False) -> list[tuple[float, str]]:
    """(factor > 1, what it is) of every ratio between declarable units: energy ratios, length
    ratios, and their products and quotients (e.g. 23.06 = eV per kcal/mol, 10 = nm per
    angstrom, 41.84 = kcal/mol per kJ/mol times nm per angstrom); `energy_only`: the energy
    ratios alone. The inverse of a factor is the same confusion the other way round."""
    energy = _ratios(ENERGY_KJ_MOL)
    if energy_only:
        return sorted(energy)
    length = _ratios(LENGTH_NM)
    found = energy + length
    for e, e_name in energy:
        for n, n_name in length:
            found.append((e * n, f"{e_name} times {n_name}"))
            found.append((e / n, f"{e_name} over {n_name}") if e > n
                         else (n / e, f"{n_name} over {e_name}"))
    return sorted(found)


def closest_confusion(ratio: float, tolerance: float = 0.1,
                      energy_only: bool = False) -> tuple[float, str] | None:
    """The unit confusion (`unit_confusions`) within `tolerance` (relative, on a log scale) of
    `ratio` or of 1/`ratio`, the closest; None when none is that close."""
    if not (ratio > 0 and math.isfinite(ratio)):
        return None
    size = max(ratio, 1 / ratio)
    factor, name = min(unit_confusions(energy_only), key=lambda c: abs(math.log(size / c[0])))
    return (factor, name) if abs(math.log(size / factor)) <= math.log1p(tolerance) else None

assert math.isclose(ARGON_EPSILON_KJ_MOL, 0.99607, rel_tol=1e-4)
assert math.isclose(KJ_MOL_TO_MEV, 10.3642688, rel_tol=1e-7)
assert math.isclose(KJ_MOL_PER_EV_SI, KJ_MOL_PER_EV, rel_tol=1e-8)
