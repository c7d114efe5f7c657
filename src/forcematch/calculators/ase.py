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
wrong: exactly the model's N atoms; a cell periodic in x, y and z, orthorhombic (cell vectors
along +x, +y, +z: the models take box edges [3]) with every edge longer than twice the model
cutoff (the minimum image); species that map onto the model's indices 0..S−1 (see
`ForcematchCalculator`). Positions are wrapped into the cell before the model sees them (energy
and forces do not change; ASE's atoms are not modified).

Stress follows ASE's convention, σ_ab = (1/V) ∂E/∂ε_ab under a strain of cell and positions
(positive: tension; the virial pressure is −trace(σ)/3), and excludes the kinetic term
(`atoms.get_stress(include_ideal_gas=True)` adds it from the momenta). The diagonal is exact:
autodiff of E(positions·(1+ε), box·(1+ε)) for a diagonal strain ε [3], whose trace is the
model's `Potential.strain_derivative`. Shear components are reported as zero: a shear strain
makes the cell triclinic, which the models cannot evaluate, so the off-diagonal stress is not
available (zero is its average in a fluid, not its instantaneous value).

Float32 by default (the models' training precision); `float64=True` evaluates the same model in
float64 inside `jax.enable_x64(True)` (64-bit JAX need not be on globally), for finite
differences and long NVE runs. Functions are jit-compiled once per loaded model and shared by
its calculators. A configuration denser than any training frame overflows the model's pair list;
the calculator then rebuilds the model with 1.5× the capacity (compiled again), never dropping
a pair. Per-atom energies are not offered: not every model family has them.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from forcematch.errors import ForcematchError
from forcematch.models import build_model, energy_fn
from forcematch.potential import Potential, load_model
from forcematch.units import ANGSTROM_NM, KJ_MOL_PER_EV_SI

CAPACITY_GROWTH = 1.5  # pair slots of the rebuilt model per slot of the overflowing one
MAX_REALLOCATIONS = 8  # larger pair lists tried for one configuration before giving up
ORTHORHOMBIC_TOLERANCE = 1e-10  # off-diagonal cell entries allowed, relative to the longest edge
EV_PER_KJ_MOL = 1.0 / KJ_MOL_PER_EV_SI
FORCE_EV_A_PER_KJ_MOL_NM = EV_PER_KJ_MOL * ANGSTROM_NM  # 1 kJ/mol/nm in eV/Å

# Jitted (evaluate, overflow) per loaded Potential: the calculators of one model share them.
_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def strained_evaluation(model, norm):
    """f(params, positions [N,3] nm, box [3] nm, species [N]) -> (E kJ/mol, F [N,3] kJ/mol/nm,
    dE/dε [3] kJ/mol): energy, forces and the derivative of E(x·(1+ε), box·(1+ε)) with respect
    to a diagonal strain ε [3] at ε = 0, from one forward and one backward pass (not jitted)."""
    total = energy_fn(model, norm)

    def strained(params, positions_nm, box_nm, species, strain):
        scale = 1.0 + strain
        return total(params, positions_nm * scale, box_nm * scale, species)

    value_and_grad = jax.value_and_grad(strained, argnums=(1, 4))

    def evaluate(params, positions_nm, box_nm, species):
        zero = jnp.zeros(3, positions_nm.dtype)
        energy, (grad_x, grad_strain) = value_and_grad(params, positions_nm, box_nm, species,
                                                       zero)
        return energy, -grad_x, grad_strain

    return evaluate


def compiled(model, norm) -> tuple:
    """(jitted `strained_evaluation(model, norm)`, jitted `model.overflow`)."""
    return jax.jit(strained_evaluation(model, norm)), jax.jit(model.overflow)


def orthorhombic_box_nm(atoms, cutoff_nm: float) -> np.ndarray:
    """Box edges [3] (nm) of `atoms`' cell; ForcematchError unless the cell is periodic in x, y
    and z, orthorhombic with vectors along +x, +y, +z, and every edge > 2 × `cutoff_nm`."""
    pbc = np.asarray(atoms.pbc, bool)
    if not pbc.all():
        raise ForcematchError(
            f"forcematch models need a cell periodic in x, y and z; atoms.pbc is {pbc.tolist()}")
    cell = np.asarray(atoms.cell[:], np.float64)  # rows are cell vectors (Å)
    edges = np.diag(cell).copy()
    if not (np.isfinite(cell).all() and (edges > 0).all()):
        raise ForcematchError(
            "forcematch models need an orthorhombic cell with vectors along +x, +y, +z; the "
            f"cell's diagonal is {edges.tolist()} Å")
    shear = np.abs(cell - np.diag(edges)).max()
    if shear > ORTHORHOMBIC_TOLERANCE * edges.max():
        raise ForcematchError(
            "forcematch models need an orthorhombic cell (box edges only); this cell is "
            f"triclinic (largest off-diagonal entry {shear:.6g} Å): cell {cell.tolist()} Å")
    box_nm = edges * ANGSTROM_NM
    if box_nm.min() <= 2.0 * cutoff_nm:
        raise ForcematchError(
            f"cell edge {edges.min():.6g} Å is not longer than twice the model cutoff "
            f"({2.0 * cutoff_nm / ANGSTROM_NM:.6g} Å): the minimum image would miss pairs")
    return box_nm


def checked_species_map(species_map: Mapping[str, int] | None, n_species: int):
    """`species_map` ({chemical symbol: model species index}) checked against the model's
    `n_species` S: every index in 0..S−1; None stays None (allowed for S = 1 only)."""
    if species_map is None:
        if n_species > 1:
            raise ForcematchError(
                f"this model was trained on {n_species} species and its directory records "
                "indices, not names: give species_map={symbol: index} (indices 0.."
                f"{n_species - 1}), e.g. {{'Ar': 0, 'Kr': 1}}")
        return None
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
            trained on one species (S = 1), which then accepts atoms of any one element;
            required for S > 1, because model directories record species indices, not names.
            Any species array of the model's N atoms with valid indices is accepted (the
            order need not be the training data's).
        float64: evaluate in float64 (`jax.enable_x64` around each call) instead of float32.
        **kwargs: passed to `ase.calculators.calculator.Calculator` (label, atoms, ...).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, model, species_map: Mapping[str, int] | None = None,
                 float64: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.potential = model if isinstance(model, Potential) else load_model(model)
        self.n_atoms = self.potential.n_atoms
        self.n_species = int(self.potential.model.config.get("n_species", 1))
        self.species_map = checked_species_map(species_map, self.n_species)
        self.cutoff_nm = float(self.potential.model.cutoff_nm)
        self.float64 = bool(float64)
        self._dtype = jnp.float64 if self.float64 else jnp.float32
        self._params = jax.tree.map(
            lambda p: np.asarray(p, np.float64 if self.float64 else np.float32)
            if np.issubdtype(np.asarray(p).dtype, np.floating) else np.asarray(p),
            self.potential.params)
        self.capacity = self.potential.capacity  # pair slots of the model's own pair search
        if self.potential not in _COMPILED:
            _COMPILED[self.potential] = compiled(self.potential.model, self.potential.norm)
        self._evaluate, self._overflow = _COMPILED[self.potential]

    def _precision(self):
        return jax.enable_x64(True) if self.float64 else contextlib.nullcontext()

    def species_of(self, atoms) -> np.ndarray:
        """Model species indices [N] int32 of `atoms` (by chemical symbol)."""
        symbols = atoms.get_chemical_symbols()
        if len(symbols) != self.n_atoms:
            raise ForcematchError(
                f"the model was trained on {self.n_atoms} atoms; these atoms are "
                f"{len(symbols)} (forcematch models have a fixed atom count)")
        if self.species_map is None:
            elements = sorted(set(symbols))
            if len(elements) > 1:
                raise ForcematchError(
                    f"the model was trained on one species but the atoms hold {elements}: "
                    "give species_map={symbol: 0, ...} to treat them as that one species")
            return np.zeros(self.n_atoms, np.int32)
        unknown = sorted(set(symbols) - set(self.species_map))
        if unknown:
            raise ForcematchError(
                f"elements {unknown} are not in species_map {self.species_map}: the model's "
                f"{self.n_species} species are indices 0..{self.n_species - 1}")
        return np.array([self.species_map[s] for s in symbols], np.int32)

    def evaluate(self, positions_nm, box_nm, species) -> tuple[float, np.ndarray, np.ndarray]:
        """(E kJ/mol, F [N,3] kJ/mol/nm, dE/dε [3] kJ/mol) of positions [N,3] and box [3] (nm),
        species [N], in the calculator's precision; float64 numpy. A full pair list is
        enlarged and the frame evaluated again; a non-finite energy otherwise raises."""
        with self._precision():
            pos = jnp.asarray(positions_nm, self._dtype)
            box = jnp.asarray(box_nm, self._dtype)
            sp = jnp.asarray(species, jnp.int32)
            for _ in range(MAX_REALLOCATIONS + 1):
                energy, forces, virial = self._evaluate(self._params, pos, box, sp)
                if math.isfinite(float(energy)):
                    return (float(energy), np.asarray(forces, np.float64),
                            np.asarray(virial, np.float64))
                if not bool(self._overflow(pos, box)):
                    raise ForcematchError(
                        f"the model's energy is {float(energy)} at this configuration (no "
                        "neighbour-list overflow): atoms too close, or far outside the "
                        "training data")
                if not self._grow():
                    break
        raise ForcematchError(
            f"the model's pair list overflows at capacity {self.capacity} pairs (after up to "
            f"{MAX_REALLOCATIONS} enlargements): the configuration is far denser than the "
            "training data")

    def _grow(self) -> bool:
        """Rebuild the model with CAPACITY_GROWTH × the pair slots, all N(N−1)/2 at most;
        False when it already has them all."""
        all_pairs = self.n_atoms * (self.n_atoms - 1) // 2
        if self.capacity is None or self.capacity >= all_pairs:
            return False
        self.capacity = min(all_pairs, math.ceil(CAPACITY_GROWTH * self.capacity))
        p = self.potential
        model = build_model(p.model_name, p.model_config, p.cutoff_nm, self.capacity)
        self._evaluate, self._overflow = compiled(model, p.norm)
        return True

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        """ASE's entry point: fills results energy, free_energy (eV), forces [N,3] (eV/Å) and
        stress [6] (eV/Å³, Voigt, shear zero: module docstring)."""
        super().calculate(atoms, properties, system_changes)
        box_nm = orthorhombic_box_nm(self.atoms, self.cutoff_nm)
        species = self.species_of(self.atoms)
        positions_nm = np.mod(self.atoms.get_positions() * ANGSTROM_NM, box_nm)
        energy, forces, virial = self.evaluate(positions_nm, box_nm, species)
        volume_A3 = float(np.prod(box_nm / ANGSTROM_NM))
        energy_eV = energy * EV_PER_KJ_MOL
        self.results = {
            "energy": energy_eV,
            "free_energy": energy_eV,
            "forces": forces * FORCE_EV_A_PER_KJ_MOL_NM,
            "stress": np.concatenate([virial * EV_PER_KJ_MOL / volume_A3, np.zeros(3)]),
        }
