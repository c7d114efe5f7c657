"""The Lennard-Jones reference system in OpenMM: parameters, System, start lattice, Contexts,
and the reference energies and forces of given frames.

One species (``system.species: null``, or a one-entry list) is a NonbondedForce; a mixture of
several species (`forcematch.reference.mixture`) is a CustomNonbondedForce with per-pair σ
and ε tables, with the same cutoff, switching function and long-range correction.

Units are OpenMM's: lengths nm, energies kJ/mol, forces kJ/mol/nm, masses amu (g/mol),
temperatures K, time steps fs, friction 1/ps. No JAX here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import openmm
from openmm import unit

from forcematch.errors import ForcematchError
from forcematch.reference.mixture import Mixture, custom_lj_force, mixture_from_config
from forcematch.units import (
    cubic_box_length_nm,
)

NM = unit.nanometer
KJ_MOL = unit.kilojoule_per_mole
KJ_MOL_NM = unit.kilojoule_per_mole / unit.nanometer
OPENMM_MAX_SEED = 2**31 - 1  # OpenMM seeds are 32-bit signed integers
SINGLE_SPECIES_NAME = "LJ"  # the species name of a one-species system without `species`


@dataclass(frozen=True)
class LJSystem:
    """N Lennard-Jones particles in a cubic periodic box (OpenMM units).

    One species (`mixture` None): sigma_nm, epsilon_kJ_mol, mass_amu. A mixture (`mixture`
    given, counts adding up to n_atoms): sigma_nm and epsilon_kJ_mol are species 0's
    self-interaction (the pair table's [0][0]) and mass_amu species 0's mass; they remain the
    system's length, energy (e.g. of MD drift) and mass units. Per atom and per pair use
    `species`, `masses_amu`, `sigma_table_nm` and `epsilon_table_kJ_mol`, which serve both.
    """

    n_atoms: int
    box_nm: float  # cubic box edge
    cutoff_nm: float
    switch_nm: float  # switching function starts here, ends at cutoff_nm
    sigma_nm: float
    epsilon_kJ_mol: float
    mass_amu: float
    dispersion_correction: bool = True
    mixture: Mixture | None = None  # None: one species

    def __post_init__(self) -> None:
        for name in ("mass_amu", "sigma_nm", "epsilon_kJ_mol", "cutoff_nm", "switch_nm",
                     "box_nm"):  # the box follows from mass and density: after the mass
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                key = ("the box edge (from system.density_g_cm3)" if name == "box_nm"
                       else f"system.{name}")
                raise ForcematchError(f"{key} = {value} must be a finite number > 0")
        if self.n_atoms < 1:
            raise ForcematchError(f"system.n_atoms must be >= 1, got {self.n_atoms}")
        if not 0 < self.switch_nm < self.cutoff_nm:
            raise ForcematchError(
                f"system.switch_nm ({self.switch_nm}) must lie in (0, cutoff_nm={self.cutoff_nm})"
            )
        if self.cutoff_nm > 0.5 * self.box_nm:
            raise ForcematchError(
                f"system.cutoff_nm ({self.cutoff_nm}) exceeds half the box edge "
                f"({self.box_nm:.6g} nm / 2)"
            )
        self._check_mixture()

    def _check_mixture(self) -> None:
        """A mixture's counts add up to n_atoms; the scalar parameters are species 0's."""
        mix = self.mixture
        if mix is None:
            return
        if sum(mix.counts) != self.n_atoms:
            raise ForcematchError(f"system.species counts {list(mix.counts)} add up to "
                                  f"{sum(mix.counts)}, not system.n_atoms = {self.n_atoms}")
        species0 = (mix.sigma_nm[0][0], mix.epsilon_kJ_mol[0][0], mix.masses_amu[0])
        if (self.sigma_nm, self.epsilon_kJ_mol, self.mass_amu) != species0:
            raise ForcematchError("LJSystem: sigma_nm, epsilon_kJ_mol and mass_amu of a "
                                  f"mixture must be species 0's {species0}")

    @property
    def n_species(self) -> int:
        """S, the number of species."""
        return 1 if self.mixture is None else self.mixture.n_species

    @property
    def species_names(self) -> tuple[str, ...]:
        """[S] names (one species without `system.species`: SINGLE_SPECIES_NAME)."""
        return (SINGLE_SPECIES_NAME,) if self.mixture is None else self.mixture.names

    @property
    def species(self) -> np.ndarray:
        """[N] int32 species index of each atom (atoms numbered species by species)."""
        if self.mixture is None:
            return np.zeros(self.n_atoms, dtype=np.int32)
        return self.mixture.species()

    @property
    def masses_amu(self) -> np.ndarray:
        """[N] float64 mass (amu) of each atom."""
        if self.mixture is None:
            return np.full(self.n_atoms, self.mass_amu)
        return self.mixture.masses()

    @property
    def sigma_table_nm(self) -> np.ndarray:
        """[S, S] σ (nm) of each pair of species."""
        if self.mixture is None:
            return np.full((1, 1), self.sigma_nm)
        return np.asarray(self.mixture.sigma_nm, dtype=np.float64)

    @property
    def epsilon_table_kJ_mol(self) -> np.ndarray:
        """[S, S] ε (kJ/mol) of each pair of species."""
        if self.mixture is None:
            return np.full((1, 1), self.epsilon_kJ_mol)
        return np.asarray(self.mixture.epsilon_kJ_mol, dtype=np.float64)

    def record(self) -> dict:
        """The system as plain data (for a file's /parameters); `mixture` only if given."""
        record = asdict(self)
        if self.mixture is None:
            del record["mixture"]
        return record


def lj_system_from_config(config: dict) -> LJSystem:
    """LJSystem from ``config['system']`` of a validated config (`config.validate_config`: every
    key present, the schema's defaults filled in).

    With ``system.species`` (a list) the system is that mixture, and the scalar sigma_nm,
    epsilon_kJ_mol and mass_amu keys are not used; the box holds the species' total mass at
    ``density_g_cm3`` (as `forcematch.config.box_length_nm`).
    """
    try:
        sysc = config["system"]
        n_atoms = int(sysc["n_atoms"])
        density = float(sysc["density_g_cm3"])
        cutoff = float(sysc["cutoff_nm"])
        switch = float(sysc["switch_nm"])
        dispersion_correction = bool(sysc["dispersion_correction"])
        mixture = mixture_from_config(sysc)
        if mixture is None:
            mass = mean_mass = float(sysc["mass_amu"])
            sigma, epsilon = float(sysc["sigma_nm"]), float(sysc["epsilon_kJ_mol"])
        else:
            mass, mean_mass = mixture.masses_amu[0], mixture.mean_mass_amu()
            sigma, epsilon = mixture.sigma_nm[0][0], mixture.epsilon_kJ_mol[0][0]
    except KeyError as exc:
        raise ForcematchError(f"config: missing key system.{exc.args[0]}") from exc
    return LJSystem(
        n_atoms=n_atoms,
        box_nm=cubic_box_length_nm(n_atoms, density, mean_mass),
        cutoff_nm=cutoff,
        switch_nm=switch,
        sigma_nm=sigma,
        epsilon_kJ_mol=epsilon,
        mass_amu=mass,
        dispersion_correction=dispersion_correction,
        mixture=mixture,
    )


def switched_lj_pair(lj: LJSystem, a: int, b: int, r_nm: np.ndarray):
    """(φ [M] kJ/mol, F = −dφ/dr [M] kJ/mol/nm) of species a and b at r [M] nm: the pair
    potential OpenMM applies, 4ε((σ/r)¹² − (σ/r)⁶)·S(r), S = 1 − 10x³ + 15x⁴ − 6x⁵ with
    x = (r − switch)/(cutoff − switch) clipped to [0, 1], and 0 beyond the cutoff."""
    r = np.asarray(r_nm, np.float64)
    sigma, epsilon = lj.sigma_table_nm[a, b], lj.epsilon_table_kJ_mol[a, b]
    width = lj.cutoff_nm - lj.switch_nm
    x = np.clip((r - lj.switch_nm) / width, 0.0, 1.0)
    sr6 = (sigma / r) ** 6
    lj_phi, lj_dphi = 4 * epsilon * (sr6**2 - sr6), 4 * epsilon * (-12 * sr6**2 + 6 * sr6) / r
    switch, dswitch = 1 - 10 * x**3 + 15 * x**4 - 6 * x**5, -30 * x**2 * (1 - x) ** 2 / width
    inside = r < lj.cutoff_nm
    return (np.where(inside, lj_phi * switch, 0.0),
            np.where(inside, -(lj_dphi * switch + lj_phi * dswitch), 0.0))


def build_system(lj: LJSystem) -> openmm.System:
    """OpenMM System in a cubic box: one species, a NonbondedForce (CutoffPeriodic, switched,
    uncharged, dispersion correction); several, `mixture.custom_lj_force` (the same LJ with
    per-pair σ, ε, the same switch, OpenMM's long-range correction). Masses per atom."""
    system = openmm.System()
    L = lj.box_nm
    system.setDefaultPeriodicBoxVectors(
        openmm.Vec3(L, 0, 0) * NM, openmm.Vec3(0, L, 0) * NM, openmm.Vec3(0, 0, L) * NM
    )
    if lj.n_species > 1:
        for mass in lj.masses_amu:
            system.addParticle(float(mass))
        system.addForce(custom_lj_force(lj.mixture, lj.cutoff_nm, lj.switch_nm,
                                        lj.dispersion_correction))
        return system
    nb = openmm.NonbondedForce()
    nb.setNonbondedMethod(openmm.NonbondedForce.CutoffPeriodic)
    nb.setCutoffDistance(lj.cutoff_nm * NM)
    nb.setUseSwitchingFunction(True)
    nb.setSwitchingDistance(lj.switch_nm * NM)
    nb.setUseDispersionCorrection(lj.dispersion_correction)
    for _ in range(lj.n_atoms):
        system.addParticle(lj.mass_amu)
        nb.addParticle(0.0, lj.sigma_nm, lj.epsilon_kJ_mol)
    system.addForce(nb)
    return system


def lattice_positions_nm(lj: LJSystem, rng: np.random.Generator) -> np.ndarray:
    """[N, 3] positions (nm) on an fcc lattice filling the box, with 0.005 nm Gaussian jitter.

    The smallest fcc lattice with at least N sites is used; when it has more sites than atoms,
    the occupied sites are drawn with `rng`. With several species the sites are shuffled with
    `rng` too, so each species is spread over the box (atoms are numbered species by species);
    one species keeps the lattice order.
    """
    n_cells = math.ceil((lj.n_atoms / 4) ** (1 / 3) - 1e-9)
    a = lj.box_nm / n_cells
    basis = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    cells = np.stack(np.meshgrid(*[np.arange(n_cells)] * 3, indexing="ij"), -1).reshape(-1, 3)
    sites = ((cells[:, None, :] + basis[None, :, :]).reshape(-1, 3) + 0.25) * a
    if len(sites) > lj.n_atoms:
        sites = sites[np.sort(rng.choice(len(sites), lj.n_atoms, replace=False))]
    if lj.n_species > 1:
        sites = sites[rng.permutation(len(sites))]
    positions = sites + rng.normal(scale=0.005, size=sites.shape)
    return np.mod(positions, lj.box_nm)


def replica_seed(seed: int, replica: int) -> int:
    """Deterministic OpenMM seed in [1, 2**31 - 1) for (`seed`, `replica`); never 0 (= random)."""
    if seed < 0 or replica < 0:
        raise ForcematchError(f"seed and replica must be >= 0, got seed={seed}, replica={replica}")
    if seed > OPENMM_MAX_SEED:
        raise ForcematchError(f"simulate.seed = {seed} is outside 0..{OPENMM_MAX_SEED}: "
                              "OpenMM seeds are 32-bit signed integers")
    word = int(np.random.SeedSequence([seed, replica]).generate_state(1, dtype=np.uint32)[0])
    return 1 + word % (2**31 - 2)


def platform_and_properties(platform: str, threads: int) -> tuple[openmm.Platform, dict]:
    """OpenMM Platform `platform` and its Context properties (CPU: `threads` threads)."""
    try:
        plat = openmm.Platform.getPlatformByName(platform)
    except Exception as exc:  # OpenMMException
        names = [
            openmm.Platform.getPlatform(i).getName()
            for i in range(openmm.Platform.getNumPlatforms())
        ]
        raise ForcematchError(f"OpenMM platform {platform!r} not available; have {names}") from exc
    props = {"Threads": str(int(threads))} if platform == "CPU" else {}
    return plat, props


def make_context(
    system: openmm.System,
    temperature_K: float,
    timestep_fs: float,
    friction_per_ps: float,
    seed: int,
    platform: str = "CPU",
    threads: int = 1,
) -> openmm.Context:
    """Context with a LangevinMiddleIntegrator seeded with `seed` (CPU: `threads` threads)."""
    integrator = openmm.LangevinMiddleIntegrator(
        temperature_K * unit.kelvin,
        friction_per_ps / unit.picosecond,
        timestep_fs * unit.femtosecond,
    )
    if not 0 <= int(seed) <= OPENMM_MAX_SEED:
        raise ForcematchError(f"OpenMM seed {seed} is outside 0..{OPENMM_MAX_SEED} (32-bit)")
    integrator.setRandomNumberSeed(int(seed))
    plat, props = platform_and_properties(platform, threads)
    try:
        return openmm.Context(system, integrator, plat, props)
    except openmm.OpenMMException as exc:
        message = " ".join(str(exc).split())
        raise ForcematchError(
            f"OpenMM could not create a context on platform {platform}: {message}") from exc


def _frames_and_boxes(
    lj: LJSystem, positions_nm: np.ndarray, box_nm: np.ndarray | float
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Positions [T, N, 3] and box edges [T, 3] (nm) of `energy_and_forces`' arguments, checked;
    and whether a single frame was given."""
    pos = np.asarray(positions_nm, dtype=np.float64)
    single = pos.ndim == 2
    if single:
        pos = pos[None]
    if pos.ndim != 3 or pos.shape[1:] != (lj.n_atoms, 3):
        raise ForcematchError(
            f"energy_and_forces: positions of shape {np.shape(positions_nm)}, "
            f"expected [T, {lj.n_atoms}, 3] or [{lj.n_atoms}, 3]"
        )
    t = pos.shape[0]
    box = np.broadcast_to(np.asarray(box_nm, dtype=np.float64), (3,) if single else (t, 3))
    box = np.broadcast_to(box, (t, 3))
    if np.any(box < 2 * lj.cutoff_nm):
        frame = int(np.flatnonzero((box < 2 * lj.cutoff_nm).any(axis=1))[0])
        raise ForcematchError(
            f"energy_and_forces: box {box[frame].tolist()} nm at frame {frame} is smaller than "
            f"twice the cutoff {lj.cutoff_nm} nm"
        )
    return pos, box, single


def energy_and_forces(
    lj: LJSystem,
    positions_nm: np.ndarray,
    box_nm: np.ndarray | float,
    platform: str = "Reference",
) -> tuple[np.ndarray, np.ndarray]:
    """Potential energies (kJ/mol) and forces (kJ/mol/nm) of frames under `lj`.

    positions_nm: [T, N, 3] (or one frame [N, 3]); box_nm: edge (cubic), [3] or [T, 3] edges.
    Returns energies [T] and forces [T, N, 3] (or a float and [N, 3] for one frame).
    One Context is reused across frames; the Reference platform computes in double precision.
    """
    pos, box, single = _frames_and_boxes(lj, positions_nm, box_nm)
    t = pos.shape[0]
    plat, props = platform_and_properties(platform, 1)
    context = openmm.Context(build_system(lj), openmm.VerletIntegrator(1e-3), plat, props)
    energies = np.empty(t)
    forces = np.empty((t, lj.n_atoms, 3))
    current_box = None
    for i in range(t):
        if current_box is None or not np.array_equal(box[i], current_box):
            current_box = box[i]
            a, b, c = (float(x) for x in current_box)
            context.setPeriodicBoxVectors(
                openmm.Vec3(a, 0, 0), openmm.Vec3(0, b, 0), openmm.Vec3(0, 0, c)
            )
        context.setPositions(pos[i])
        state = context.getState(getEnergy=True, getForces=True)
        energies[i] = state.getPotentialEnergy().value_in_unit(KJ_MOL)
        forces[i] = state.getForces(asNumpy=True).value_in_unit(KJ_MOL_NM)
    if single:
        return float(energies[0]), forces[0]
    return energies, forces
