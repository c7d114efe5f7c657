"""Lennard-Jones mixtures on the OpenMM reference side, with real OpenMM.

The Kob–Andersen 80:20 binary mixture in argon units (σ_AA = 0.3405 nm, ε_AA = 0.99607 kJ/mol,
σ_AB = 0.8 σ_AA, ε_AB = 1.5 ε_AA, σ_BB = 0.88 σ_AA, ε_BB = 0.5 ε_AA, equal masses), 40 atoms
(32 A, 8 B) at the number density 1.2/σ_AA³ (box 1.0958 nm), cutoff 0.54 nm switched from
0.45 nm: OpenMM's energies, forces, virial and long-range correction against independent NumPy
computations; the mixing rule; a one-entry species list against the scalar config; a short
replica. Units: nm, kJ/mol, kJ/mol/nm, amu, K.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import openmm
import pytest
from precision import float32_atol

from forcematch.config import validate_config
from forcematch.errors import ForcematchError
from forcematch.io.h5md import read_h5md, read_parameters
from forcematch.md.record import StabilityLimits
from forcematch.md.reference import (
    OpenMMEngine,
    strain_derivative_kJ_mol,
    tail_correction_pressure_bar,
)
from forcematch.reference import (
    build_system,
    energy_and_forces,
    lattice_positions_nm,
    lj_system_from_config,
    run_replica,
)
from forcematch.reference.mixture import mixture_from_config
from forcematch.reference.system import LJSystem
from forcematch.units import (
    ARGON_MASS_AMU,
    ARGON_SIGMA_NM,
    AVOGADRO_PER_MOL,
    KJ_MOL_NM3_TO_BAR,
)

SIG, EPS, MASS = ARGON_SIGMA_NM, 0.99607, ARGON_MASS_AMU  # the config's defaults
R_CUT, R_SWITCH = 0.54, 0.45
KA_DENSITY_G_CM3 = 1.2 / SIG**3 * MASS / AVOGADRO_PER_MOL * 1e21  # ρ* = 1.2 at equal masses
KA_SPECIES = [
    {"name": "A", "count": 32, "mass_amu": MASS, "sigma_nm": SIG, "epsilon_kJ_mol": EPS},
    {"name": "B", "count": 8, "mass_amu": MASS, "sigma_nm": 0.88 * SIG,
     "epsilon_kJ_mol": 0.5 * EPS},
]
KA_CONFIG = validate_config({
    "system": {"n_atoms": 40, "temperature_K": 119.8, "density_g_cm3": KA_DENSITY_G_CM3,
               "cutoff_nm": R_CUT, "switch_nm": R_SWITCH, "species": KA_SPECIES,
               "pair_parameters": [{"species": ["B", "A"], "sigma_nm": 0.8 * SIG,
                                    "epsilon_kJ_mol": 1.5 * EPS}]},
    "simulate": {"replicas": 3, "frames_per_replica": 4, "steps_between_frames": 10,
                 "equilibration_steps": 100, "timestep_fs": 2.0, "seed": 7},
    "train": {"batch_size": 2},
})
LIMITS = StabilityLimits(min_distance_nm=0.15, runaway_factor=10.0)


def switched_lj(pos, box, species, sigma, epsilon, r_cut=R_CUT, r_switch=R_SWITCH):
    """Energy (kJ/mol) [], forces [N,3] (kJ/mol/nm) and Σ_pairs r dU/dr (kJ/mol) of the
    switched LJ with per-pair tables σ, ε [S,S]: φ_ab(r) S(x), S = 1 − 10x³ + 15x⁴ − 6x⁵,
    x = (r − r_switch)/(r_cut − r_switch) clipped to [0, 1], minimum image, r < r_cut."""
    d = pos[:, None, :] - pos[None, :, :]
    d -= box * np.round(d / box)
    r = np.sqrt((d**2).sum(-1))
    inside = (r < r_cut) & ~np.eye(len(pos), dtype=bool)
    r_safe = np.where(inside, r, 1.0)
    sig, eps = sigma[species[:, None], species[None, :]], epsilon[species[:, None], species]
    sr6 = (sig / r_safe) ** 6
    phi = 4 * eps * (sr6**2 - sr6)
    dphi = 4 * eps * (-12 * sr6**2 + 6 * sr6) / r_safe
    width = r_cut - r_switch
    x = np.clip((r_safe - r_switch) / width, 0.0, 1.0)
    s = 1 - 10 * x**3 + 15 * x**4 - 6 * x**5
    ds = (-30 * x**2 + 60 * x**3 - 30 * x**4) / width
    du = np.where(inside, dphi * s + phi * ds, 0.0)
    energy = 0.5 * np.sum(np.where(inside, phi * s, 0.0))
    forces = -np.einsum("ij,ijk->ik", du / r_safe, d)
    return energy, forces, 0.5 * np.sum(r_safe * du)


@pytest.fixture(scope="module")
def ka():
    return lj_system_from_config(KA_CONFIG)


@pytest.fixture(scope="module")
def ka_frames(ka):
    """4 liquid frames [4,40,3] (nm): NVT at 119.8 K from the lattice, every 200 steps."""
    engine = OpenMMEngine(ka, platform="CPU", threads=1)
    start = lattice_positions_nm(ka, np.random.default_rng(3))
    segment = engine.run("nvt", start, None, 119.8, 2.0, 1000, 200, seed=5,
                         friction_per_ps=5.0, limits=LIMITS)
    assert segment.failure is None
    return np.mod(segment.positions_nm[-4:], ka.box_nm)


def test_ka_tables_species_and_masses(ka):
    assert ka.n_species == 2 and ka.species_names == ("A", "B")
    np.testing.assert_allclose(ka.sigma_table_nm, SIG * np.array([[1, 0.8], [0.8, 0.88]]))
    np.testing.assert_allclose(ka.epsilon_table_kJ_mol, EPS * np.array([[1, 1.5], [1.5, 0.5]]))
    assert np.array_equal(ka.species, np.repeat(np.int32([0, 1]), [32, 8]))
    assert ka.species.dtype == np.int32 and np.array_equal(ka.masses_amu, np.full(40, MASS))
    assert (ka.sigma_nm, ka.epsilon_kJ_mol, ka.mass_amu) == (SIG, EPS, MASS)  # species 0's
    assert ka.box_nm == pytest.approx((40 / 1.2) ** (1 / 3) * SIG, rel=1e-12)
    system = build_system(ka)
    (force,) = system.getForces()
    assert isinstance(force, openmm.CustomNonbondedForce)
    assert force.getNonbondedMethod() == openmm.CustomNonbondedForce.CutoffPeriodic
    assert force.getUseSwitchingFunction() and force.getUseLongRangeCorrection()
    assert force.getSwitchingDistance()._value == R_SWITCH
    assert force.getCutoffDistance()._value == R_CUT
    assert [system.getParticleMass(i)._value for i in range(40)] == [MASS] * 40


def test_ka_energies_and_forces_match_numpy(ka, ka_frames):
    """Reference platform (double) against NumPy to 1e-9 relative (measured: ~1e-15),
    long-range correction off; the CPU platform (single-precision forces) to 1e-4."""
    lj = dataclasses.replace(ka, dispersion_correction=False)
    box = np.full(3, ka.box_nm)
    energies, forces = energy_and_forces(lj, ka_frames, box)
    cpu_energies, cpu_forces = energy_and_forces(lj, ka_frames, box, platform="CPU")
    for t, frame in enumerate(ka_frames):
        d = frame[:, None] - frame[None]
        r = np.sqrt(((d - box * np.round(d / box)) ** 2).sum(-1))
        ab = r[:32, 32:]
        assert ((ab > R_SWITCH) & (ab < R_CUT)).any() and (ab < 0.9 * SIG).any()
        energy, force, _ = switched_lj(frame, box, ka.species, ka.sigma_table_nm,
                                       ka.epsilon_table_kJ_mol)
        assert energies[t] == pytest.approx(energy, rel=1e-9)
        scale = np.sqrt(np.mean(force**2))
        assert np.abs(forces[t] - force).max() <= 1e-9 * scale
        assert cpu_energies[t] == pytest.approx(energy, rel=1e-4)
        assert np.abs(cpu_forces[t] - force).max() <= 1e-4 * scale
    # physics beyond the expression: a liquid frame of a cohesive mixture is bound
    assert np.all(energies < 0)


def _lb_config(pair_parameters=()) -> dict:
    """An argon–krypton mixture (32 Ar, 8 Kr) at 1.3137 g/cm3 under Lorentz–Berthelot."""
    species = [{"name": "Ar", "count": 32, "mass_amu": MASS, "sigma_nm": SIG,
                "epsilon_kJ_mol": EPS},
               {"name": "Kr", "count": 8, "mass_amu": 83.798, "sigma_nm": 0.3636,
                "epsilon_kJ_mol": 1.4133}]
    return validate_config({
        "system": {"n_atoms": 40, "cutoff_nm": 0.6, "switch_nm": 0.5, "species": species,
                   "pair_parameters": list(pair_parameters)},
        "simulate": {"replicas": 3}})


def test_lorentz_berthelot_without_pair_parameters():
    lj = lj_system_from_config(_lb_config())
    sigma_ab, eps_ab = (SIG + 0.3636) / 2, math.sqrt(EPS * 1.4133)
    assert lj.sigma_table_nm[0, 1] == lj.sigma_table_nm[1, 0] == pytest.approx(sigma_ab)
    assert lj.epsilon_table_kJ_mol[1, 0] == pytest.approx(eps_ab, rel=1e-15)
    assert lj.epsilon_table_kJ_mol[1, 1] == 1.4133 and lj.sigma_table_nm[1, 1] == 0.3636
    mean_mass = (32 * MASS + 8 * 83.798) / 40  # the box holds the total mass at the density
    volume_cm3 = 40 * mean_mass / AVOGADRO_PER_MOL / 1.3137
    assert lj.box_nm == pytest.approx((volume_cm3 * 1e21) ** (1 / 3), rel=1e-12)
    # an Ar–Kr dimer inside the switch: exactly 4ε_ab((σ_ab/r)^12 − (σ_ab/r)^6)
    dimer = LJSystem(n_atoms=2, box_nm=3.0, cutoff_nm=0.6, switch_nm=0.5, sigma_nm=SIG,
                     epsilon_kJ_mol=EPS, mass_amu=MASS, dispersion_correction=False,
                     mixture=dataclasses.replace(lj.mixture, counts=(1, 1)))
    for r in (0.36, 0.41, 0.48):
        energy, forces = energy_and_forces(dimer, np.array([[1.0, 1, 1], [1 + r, 1, 1]]), 3.0)
        sr6 = (sigma_ab / r) ** 6
        assert energy == pytest.approx(4 * eps_ab * (sr6**2 - sr6), rel=1e-12)
        assert forces[1, 0] == pytest.approx(-4 * eps_ab * (-12 * sr6**2 + 6 * sr6) / r,
                                             rel=1e-12)
    # an explicit pair overrides the rule for that pair only
    override = lj_system_from_config(_lb_config(
        [{"species": ["Ar", "Kr"], "sigma_nm": 0.35, "epsilon_kJ_mol": 1.0}]))
    assert override.sigma_table_nm[0, 1] == 0.35 and override.epsilon_table_kJ_mol[1, 0] == 1.0
    assert np.array_equal(np.diag(override.sigma_table_nm), np.diag(lj.sigma_table_nm))
    with pytest.raises(ForcematchError, match="pairs .Kr. with itself"):
        mixture_from_config(_lb_config([{"species": ["Kr", "Kr"], "sigma_nm": 0.35,
                                         "epsilon_kJ_mol": 1.0}])["system"])


def test_three_species_with_one_explicit_pair_match_numpy():
    """Any number of species: three (Ne, Ar, Kr; Ne–Kr explicit, the rest Lorentz–Berthelot),
    Reference platform against NumPy, long-range correction off."""
    params = {"Ne": (20.18, 0.2782, 0.2948), "Ar": (MASS, SIG, EPS), "Kr": (83.798, 0.3636,
                                                                           1.4133)}
    species = [{"name": name, "count": count, "mass_amu": m, "sigma_nm": s, "epsilon_kJ_mol": e}
               for (name, (m, s, e)), count in zip(params.items(), (10, 20, 10), strict=True)]
    lj = lj_system_from_config(validate_config({
        "system": {"n_atoms": 40, "cutoff_nm": 0.6, "switch_nm": 0.5, "species": species,
                   "dispersion_correction": False, "pair_parameters": [
                       {"species": ["Kr", "Ne"], "sigma_nm": 0.33, "epsilon_kJ_mol": 0.7}]},
        "simulate": {"replicas": 3}}))
    sig, eps = (np.array([p[k] for p in params.values()]) for k in (1, 2))
    sigma, epsilon = (sig[:, None] + sig) / 2, np.sqrt(eps[:, None] * eps)
    sigma[0, 2] = sigma[2, 0] = 0.33
    epsilon[0, 2] = epsilon[2, 0] = 0.7
    np.testing.assert_allclose(lj.epsilon_table_kJ_mol, epsilon, rtol=1e-15)
    np.testing.assert_allclose(lj.sigma_table_nm, sigma, rtol=1e-15)
    assert np.array_equal(lj.masses_amu, np.repeat([20.18, MASS, 83.798], [10, 20, 10]))
    rng = np.random.default_rng(8)
    frames = np.stack([lattice_positions_nm(lj, rng) + rng.normal(scale=0.02, size=(40, 3))
                       for _ in range(3)])
    box = np.full(3, lj.box_nm)
    energies, forces = energy_and_forces(lj, frames, box)
    for t, frame in enumerate(frames):
        energy, force, _ = switched_lj(frame, box, lj.species, sigma, epsilon, 0.6, 0.5)
        assert energies[t] == pytest.approx(energy, rel=1e-9)
        assert np.abs(forces[t] - force).max() <= 1e-9 * np.sqrt(np.mean(force**2))


def test_one_entry_species_list_is_the_scalar_system():
    scalar = validate_config({"system": {"n_atoms": 100}, "simulate": {"replicas": 3}})
    listed = validate_config({"system": {"n_atoms": 100, "species": [
        {"name": "Ar", "count": 100, "mass_amu": MASS, "sigma_nm": SIG,
         "epsilon_kJ_mol": EPS}]}, "simulate": {"replicas": 3}})
    lj0, lj1 = lj_system_from_config(scalar), lj_system_from_config(listed)
    assert lj1.box_nm == lj0.box_nm and lj1.species_names == ("Ar",)
    assert np.array_equal(lj1.species, lj0.species)
    assert np.array_equal(lj1.masses_amu, lj0.masses_amu)
    (force,) = build_system(lj1).getForces()
    assert isinstance(force, openmm.NonbondedForce)  # today's path, not the custom force
    rng = np.random.default_rng(2)
    frames = np.stack([lattice_positions_nm(lj0, rng) for _ in range(2)])
    assert np.array_equal(frames[0], lattice_positions_nm(lj1, np.random.default_rng(2)))
    for platform in ("Reference", "CPU"):
        e0, f0 = energy_and_forces(lj0, frames, lj0.box_nm, platform=platform)
        e1, f1 = energy_and_forces(lj1, frames, lj1.box_nm, platform=platform)
        assert np.array_equal(e0, e1) and np.array_equal(f0, f1)


def test_identical_species_match_the_one_species_force():
    """Two species with the same σ, ε: CustomNonbondedForce equals NonbondedForce (pair part
    and long-range correction), an independent check of the mixture path's switch."""
    config = validate_config({"system": {"n_atoms": 100, "species": [
        {"name": name, "count": count, "mass_amu": MASS, "sigma_nm": SIG,
         "epsilon_kJ_mol": EPS} for name, count in (("A", 70), ("B", 30))]},
        "simulate": {"replicas": 3}})
    mix = lj_system_from_config(config)
    one = lj_system_from_config(validate_config({"system": {"n_atoms": 100},
                                                 "simulate": {"replicas": 3}}))
    frame = lattice_positions_nm(one, np.random.default_rng(4))
    frame += np.random.default_rng(5).normal(scale=0.02, size=frame.shape)
    for correction in (False, True):
        e_mix, f_mix = energy_and_forces(
            dataclasses.replace(mix, dispersion_correction=correction), frame, mix.box_nm)
        e_one, f_one = energy_and_forces(
            dataclasses.replace(one, dispersion_correction=correction), frame, one.box_nm)
        assert e_mix == pytest.approx(e_one, rel=1e-6 if correction else 1e-12)
        np.testing.assert_allclose(f_mix, f_one, rtol=0, atol=1e-10 * np.abs(f_one).max())
    assert tail_correction_pressure_bar(mix) == pytest.approx(
        tail_correction_pressure_bar(one), rel=1e-5)


def test_lattice_spreads_every_species():
    """108 atoms fill the 3x3x3 fcc lattice: 22 B atoms in lattice order would all sit in
    the last cells; shuffled, each half of the box holds some along every axis."""
    species = [dict(KA_SPECIES[0], count=86), dict(KA_SPECIES[1], count=22)]
    config = validate_config({"system": {"n_atoms": 108, "species": species,
                                         "density_g_cm3": 1.3137},
                              "simulate": {"replicas": 3}})
    lj = lj_system_from_config(config)
    pos = lattice_positions_nm(lj, np.random.default_rng(9))
    assert np.array_equal(pos, lattice_positions_nm(lj, np.random.default_rng(9)))
    lower_half = pos[lj.species == 1] < lj.box_nm / 2  # [22, 3]
    assert np.all((lower_half.sum(0) >= 4) & (lower_half.sum(0) <= 18))
    d = pos[:, None] - pos[None]
    d -= lj.box_nm * np.round(d / lj.box_nm)
    nearest = lj.box_nm / 3 / math.sqrt(2)  # fcc neighbours, before the 0.005 nm jitter
    assert np.sqrt((d**2).sum(-1))[np.triu_indices(108, 1)].min() > nearest - 0.05


@pytest.fixture(scope="module")
def ka_replicas(tmp_path_factory):
    paths = [tmp_path_factory.mktemp(f"ka{k}") / "replica_0.h5" for k in range(2)]
    for path in paths:
        run_replica(KA_CONFIG, 0, path, progress=None)
    return paths


def test_mixture_replica_writes_species_and_masses(ka, ka_replicas):
    first, second = (read_h5md(p) for p in ka_replicas)
    assert first.n_frames == 4 and first.n_atoms == 40
    assert np.array_equal(first.species, ka.species) and first.species.dtype == np.int32
    assert np.array_equal(first.masses_amu, np.full(40, MASS))
    for field in ("positions_nm", "forces_kJ_mol_nm", "potential_energy_kJ_mol", "box_nm"):
        assert np.array_equal(getattr(first, field), getattr(second, field)), field
    np.testing.assert_allclose(first.box_nm, ka.box_nm, rtol=1e-12)
    mixture = read_parameters(ka_replicas[0])["lj"]["mixture"]
    assert mixture["names"] == ["A", "B"] and mixture["counts"] == [32, 8]
    # the stored (CPU platform) energies and forces are the mixture's, per the Reference
    energies, forces = energy_and_forces(ka, first.positions_nm, first.box_nm)
    # single-precision CPU platform: float32 round-off of the sum over the N(N-1)/2 pairs
    n = first.n_atoms
    np.testing.assert_allclose(first.potential_energy_kJ_mol, energies, rtol=0,
                               atol=float32_atol(energies, n_terms=n * (n - 1) // 2))
    assert np.abs(first.forces_kJ_mol_nm - forces).max() < 1e-4 * np.abs(forces).max()


def test_engine_uses_per_atom_masses():
    """NVE of the Ar–Kr mixture (Reference platform): the total momentum with per-atom masses
    is conserved; with the mean mass it would not be."""
    lj = lj_system_from_config(_lb_config())
    engine = OpenMMEngine(lj, platform="Reference")
    assert np.array_equal(engine.masses_amu, np.repeat([MASS, 83.798], [32, 8]))
    start = lattice_positions_nm(lj, np.random.default_rng(1))
    segment = engine.run("nve", start, None, 100.0, 2.0, 200, 50, seed=3,
                         friction_per_ps=1.0, limits=LIMITS)
    assert segment.failure is None
    p_scale = np.sum(engine.masses_amu[:, None] * np.abs(segment.velocities_nm_ps[-1]))
    assert np.abs(segment.momentum_amu_nm_ps).max() < 1e-10 * p_scale
    mean_mass = np.einsum("snk->sk", engine.masses_amu.mean() * segment.velocities_nm_ps)
    assert np.abs(mean_mass[-1] - mean_mass[0]).max() > 1e-3 * p_scale


def test_ka_strain_derivative_is_the_pair_virial(ka, ka_frames):
    box = np.full(3, ka.box_nm)
    fd = strain_derivative_kJ_mol(ka, ka_frames, box)  # correction on in `ka`: ignored
    exact = [switched_lj(f, box, ka.species, ka.sigma_table_nm, ka.epsilon_table_kJ_mol)[2]
             for f in ka_frames]
    np.testing.assert_allclose(fd, exact, rtol=1e-6)


def _tail_integral(sigma: float, epsilon: float) -> float:
    """I = ∫_{r_c}^∞ r² φ dr + ∫_{r_s}^{r_c} r² φ (1 − S) dr (nm³ kJ/mol) of one pair."""
    nodes, weights = np.polynomial.legendre.leggauss(64)
    r = R_SWITCH + (R_CUT - R_SWITCH) * (nodes + 1) / 2
    x = (r - R_SWITCH) / (R_CUT - R_SWITCH)
    phi = 4 * epsilon * ((sigma / r) ** 12 - (sigma / r) ** 6)
    switched_off = np.sum(weights * (R_CUT - R_SWITCH) / 2 * r**2 * phi
                          * (10 * x**3 - 15 * x**4 + 6 * x**5))
    return 4 * epsilon * (sigma**12 / (9 * R_CUT**9) - sigma**6 / (3 * R_CUT**3)) + switched_off


def test_ka_tail_correction_pressure(ka):
    """OpenMM's mixture correction E = 2πN² Σ_{a≤b} n_ab I_ab / (N(N+1)/2) / V (n_aa =
    N_a(N_a+1)/2, n_ab = N_a N_b), so P = E/V (measured: 2e-7 relative); the textbook
    2πN² Σ_ab x_a x_b I_ab, its N → ∞ limit, differs by 0.2 % at N = 40."""
    counts, n = np.array([32, 8]), 40
    integral = np.array([[_tail_integral(ka.sigma_table_nm[a, b], ka.epsilon_table_kJ_mol[a, b])
                          for b in range(2)] for a in range(2)])
    pairs = np.array([[counts[0] * (counts[0] + 1) / 2, counts[0] * counts[1]],
                      [0.0, counts[1] * (counts[1] + 1) / 2]])
    coefficient = 2 * math.pi * n**2 * np.sum(pairs * integral) / (n * (n + 1) / 2)
    volume = ka.box_nm**3
    expected_bar = coefficient / volume**2 * KJ_MOL_NM3_TO_BAR
    pressure = tail_correction_pressure_bar(ka)
    assert pressure < 0
    assert pressure == pytest.approx(expected_bar, rel=2e-5)  # OpenMM integrates to ~1e-5
    x = counts / n
    textbook_bar = 2 * math.pi * n**2 * (x @ integral @ x) / volume**2 * KJ_MOL_NM3_TO_BAR
    assert pressure == pytest.approx(textbook_bar, rel=0.01)
    assert pressure != pytest.approx(textbook_bar, rel=1e-3)  # the counting is OpenMM's
    bigger = dataclasses.replace(ka, box_nm=ka.box_nm * 1.1)
    assert tail_correction_pressure_bar(bigger) == pytest.approx(pressure / 1.1**6, rel=1e-5)


def test_reference_validation_has_no_argon_value_for_a_mixture():
    """The argon U/N applies to one species only: a mixture at the argon state gets none (with
    the reason), and U/N is in units of species 0's ε."""
    from forcematch.data.frames import Frames
    from forcematch.validation.validate import (
        MIXTURE_NO_REFERENCE,
        has_u_reference,
        u_per_atom_metrics,
    )

    argon = validate_config({"system": {"n_atoms": 100}, "simulate": {"replicas": 3}})["system"]
    assert has_u_reference(argon)
    kr, ar = (dict(KA_SPECIES[0], name="Kr", epsilon_kJ_mol=1.4133, sigma_nm=0.3636,
                   mass_amu=83.798), dict(KA_SPECIES[0], name="Ar"))
    assert has_u_reference(argon | {"species": [dict(ar, count=100)]})
    assert not has_u_reference(argon | {"species": [dict(kr, count=100)]})
    mixture = argon | {"species": [dict(kr, count=20), dict(ar, count=80)]}
    assert not has_u_reference(mixture)
    frames = Frames(np.zeros((2, 100, 3)), np.zeros((2, 100, 3)), np.array([-500.0, -520.0]),
                    np.ones(3), np.repeat(np.int32([0, 1]), [20, 80]))
    lines = []
    metrics = u_per_atom_metrics([frames], mixture, lines.append)
    assert metrics["u_per_atom_eps"] == pytest.approx(-510.0 / 100 / 1.4133, rel=1e-12)
    assert metrics["u_per_atom_eps_expected"] is None
    assert metrics["u_per_atom_within_tolerance"] is None
    assert metrics["u_per_atom_note"] == MIXTURE_NO_REFERENCE and "mixture" in lines[-1]
