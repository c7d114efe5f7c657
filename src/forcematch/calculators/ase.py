"""An ASE calculator for any trained forcematch model (`potential.load_model`).

    from forcematch.calculators.ase import ForcematchCalculator
    atoms.calc = ForcematchCalculator("results/train/pair-joint-nall/model")
    atoms.get_potential_energy()      # eV (total)
    atoms.get_forces()                # [N,3] eV/Å = −∂E/∂x
    atoms.get_stress()                # [6] eV/Å³, Voigt (xx, yy, zz, yz, xz, xy)

Units convert at the edge and nowhere else: ASE's Å, eV, eV/Å, eV/Å³ outside; the model's nm,
kJ/mol, kJ/mol/nm inside (1 Å = 0.1 nm, 1 eV = 96.485332 kJ/mol exactly as SI defines it:
`units.KJ_MOL_PER_EV_SI`).

What the models accept, the calculator checks and refuses with a ForcematchError naming what is
wrong: a cell periodic in x, y and z, of any shape (orthorhombic or
triclinic, rows the cell vectors) whose perpendicular widths all exceed twice the model cutoff
(the minimum image: `space.displacement`); species that map onto the model's indices 0..S−1
(see `ForcematchCalculator`); finite positions. Positions are wrapped into the cell before the
model sees them (energy and forces do not change; ASE's atoms are not modified). Non-finite
forces or stress at a finite energy (two atoms at one place) are refused by
`Potential.evaluate`, naming the atoms. An orthorhombic cell goes to
the model as its edges (the cell list serves large systems), any other as the full cell (the
dense pair search).

Stress follows ASE's convention, σ_ab = (1/V) ∂E/∂ε_ab under a symmetric strain of cell and
positions (positive: tension; the virial pressure is −trace(σ)/3), all six components exact
(autodiff: `models.energy_forces_strain_fn`, the function behind `Potential.strain_derivative`),
and excludes the kinetic term (`atoms.get_stress(include_ideal_gas=True)` adds it from the
momenta).

Any number of atoms: a model trained on one box evaluates its replicas or any other system of
its species (`Potential.evaluate` sizes the pair list from N and enlarges it when a denser
configuration overflows it, never dropping a pair; compiled once per size, shared by the
calculators of one loaded model). Float32 by default (the models' training precision);
`float64=True` evaluates the same model in float64 inside `jax.enable_x64(True)` (64-bit JAX
need not be on globally), for finite differences and long NVE runs. Per-atom energies are not
offered: not every model family has them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence

import jax
import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from forcematch import space
from forcematch.errors import ForcematchError
from forcematch.potential import Potential, load_model
from forcematch.units import ANGSTROM_NM, KJ_MOL_PER_EV_SI

ORTHORHOMBIC_TOLERANCE = 1e-10  # off-diagonal cell entries allowed, relative to the longest edge
EV_PER_KJ_MOL = 1.0 / KJ_MOL_PER_EV_SI
FORCE_EV_A_PER_KJ_MOL_NM = EV_PER_KJ_MOL * ANGSTROM_NM  # 1 kJ/mol/nm in eV/Å


def model_box_nm(atoms, cutoff_nm: float) -> np.ndarray:
    """The box of `atoms` as a model takes it (nm): edges [3] for an orthorhombic cell with
    vectors along +x, +y, +z, else the cell [3,3] (rows: vectors). ForcematchError unless the
    cell is periodic in x, y and z, finite, right-handed, and wider than 2 × `cutoff_nm`
    across every pair of faces."""
    pbc = np.asarray(atoms.pbc, bool)
    if not pbc.all():
        raise ForcematchError(
            f"forcematch models need a cell periodic in x, y and z; atoms.pbc is {pbc.tolist()}")
    cell = np.asarray(atoms.cell[:], np.float64)  # rows are cell vectors (Å)
    if not (np.isfinite(cell).all() and np.linalg.det(cell) > 0):
        raise ForcematchError(
            "forcematch models need a finite, right-handed cell of positive volume; the cell "
            f"is {cell.tolist()} Å")
    widths_A = space.cell_widths_nm(cell)
    if widths_A.min() <= 2.0 * cutoff_nm / ANGSTROM_NM:
        raise ForcematchError(
            f"the cell is {widths_A.min():.6g} Å wide between two faces, not wider than twice "
            f"the model cutoff ({2.0 * cutoff_nm / ANGSTROM_NM:.6g} Å): the minimum image "
            "would miss pairs")
    edges = np.diag(cell)
    shear = np.abs(cell - np.diag(edges)).max()
    if shear <= ORTHORHOMBIC_TOLERANCE * edges.max():
        return edges * ANGSTROM_NM
    return cell * ANGSTROM_NM


def finite_positions_nm(atoms) -> np.ndarray:
    """Positions [N,3] of `atoms` in nm; ForcematchError naming the atoms whose positions are
    NaN or infinite (wrapping would turn them into NaN energies)."""
    positions_nm = np.asarray(atoms.get_positions(), np.float64) * ANGSTROM_NM
    bad = np.flatnonzero(~np.isfinite(positions_nm).all(axis=1))
    if bad.size:
        raise ForcematchError(f"positions are not finite (NaN or infinite) on atoms "
                              f"{bad[:10].tolist()}{' ...' if bad.size > 10 else ''}")
    return positions_nm


def wrapped_positions_nm(positions_nm: np.ndarray, box_nm: np.ndarray) -> np.ndarray:
    """Positions [N,3] (nm) wrapped into the box: edges [3] or a cell [3,3] (rows: vectors)."""
    if box_nm.ndim == 1:
        return np.mod(positions_nm, box_nm)
    fractional = positions_nm @ np.linalg.inv(box_nm)
    return (fractional - np.floor(fractional)) @ box_nm


def checked_species_map(species_map: Mapping[str, int] | None, n_species: int,
                        species_names: Sequence[str] | None = None):
    """`species_map` ({chemical symbol: model species index}) checked against the model's
    `n_species` S: every index in 0..S−1. None: for S > 1 the model's `species_names` (each
    name the symbol of its index), refused where the model directory names none; for S = 1
    None (any one element)."""
    if species_map is None:
        if n_species == 1:
            return None
        if species_names is None:
            raise ForcematchError(
                f"this model was trained on {n_species} species and its directory records "
                "indices, not names: give species_map={symbol: index} (indices 0.."
                f"{n_species - 1}), e.g. {{'Ar': 0, 'Kr': 1}}")
        species_map = {name: index for index, name in enumerate(species_names)}
    checked = {}
    for symbol, index in dict(species_map).items():
        if not (isinstance(index, int | np.integer) and not isinstance(index, bool)
                and 0 <= index < n_species):
            raise ForcematchError(
                f"species_map[{symbol!r}] = {index!r}: the model knows species 0.."
                f"{n_species - 1} ({n_species} species)")
        checked[str(symbol)] = int(index)
    return checked


class ForcematchCalculator(Calculator):
    """ASE calculator of a trained forcematch model (module docstring: units, cell, stress).

    Args:
        model: a model directory (`model/` or `checkpoint/` of a training run) or a loaded
            `potential.Potential`.
        species_map: {chemical symbol: model species index 0..S−1}. Optional for a model
            trained on one species (S = 1), which then accepts atoms of any one element; for
            S > 1 the default is the species names stored with the model (a mixture whose
            config names its species by element, `system.species` or `import.species`), and
            it is required for a model whose directory records indices only. Atoms of any
            number and order are accepted.
        float64: evaluate in float64 (`jax.enable_x64` around each call) instead of float32.
        **kwargs: passed to `ase.calculators.calculator.Calculator` (label, atoms, ...).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, model, species_map: Mapping[str, int] | None = None,
                 float64: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.potential = model if isinstance(model, Potential) else load_model(model)
        self.n_species = self.potential.n_species
        self.species_map = checked_species_map(species_map, self.n_species,
                                               self.potential.species_names)
        self.cutoff_nm = float(self.potential.cutoff_nm)
        self.float64 = bool(float64)

    def species_of(self, atoms) -> np.ndarray:
        """Model species indices [N] int32 of `atoms` (by chemical symbol)."""
        symbols = atoms.get_chemical_symbols()
        if self.species_map is None:
            elements = sorted(set(symbols))
            if len(elements) > 1:
                raise ForcematchError(
                    f"the model was trained on one species but the atoms hold {elements}: "
                    "give species_map={symbol: 0, ...} to treat them as that one species")
            return np.zeros(len(symbols), np.int32)
        unknown = sorted(set(symbols) - set(self.species_map))
        if unknown:
            raise ForcematchError(
                f"elements {unknown} are not in species_map {self.species_map}: the model's "
                f"{self.n_species} species are indices 0..{self.n_species - 1}")
        return np.array([self.species_map[s] for s in symbols], np.int32)

    def evaluate(self, positions_nm, box_nm, species) -> tuple[float, np.ndarray, np.ndarray]:
        """`Potential.evaluate` in the calculator's precision: (E kJ/mol, F [N,3] kJ/mol/nm,
        dE/dε [3,3] kJ/mol) of positions [N,3] in a box [3] or cell [3,3] (nm)."""
        with jax.enable_x64(True) if self.float64 else contextlib.nullcontext():
            return self.potential.evaluate(positions_nm, box_nm, species, float64=self.float64)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        """ASE's entry point: fills results energy, free_energy (eV), forces [N,3] (eV/Å) and
        stress [6] (eV/Å³, Voigt: xx, yy, zz, yz, xz, xy; module docstring)."""
        super().calculate(atoms, properties, system_changes)
        box_nm = model_box_nm(self.atoms, self.cutoff_nm)
        species = self.species_of(self.atoms)
        positions_nm = wrapped_positions_nm(finite_positions_nm(self.atoms), box_nm)
        energy, forces, strain = self.evaluate(positions_nm, box_nm, species)
        stress = strain * EV_PER_KJ_MOL / self.atoms.get_volume()  # [3,3] eV/Å³
        energy_eV = energy * EV_PER_KJ_MOL
        self.results = {
            "energy": energy_eV,
            "free_energy": energy_eV,
            "forces": forces * FORCE_EV_A_PER_KJ_MOL_NM,
            "stress": stress[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]],
        }
