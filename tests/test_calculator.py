"""The ASE calculator (forcematch.calculators.ase) on real models trained on the tiny dataset.

Agreement with the model's own `Potential` in ASE units, forces and stress against finite
differences of the calculator's own energy (the stress convention checked first against ASE's
own LennardJones calculator), an ASE velocity-Verlet run that conserves energy, and what the
calculator refuses. Units: ASE's Å, eV, eV/Å, eV/Å³ at the calculator; nm, kJ/mol inside.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from ase import Atoms, units
from ase.calculators.fd import calculate_numerical_stress
from ase.calculators.lj import LennardJones
from ase.md.verlet import VelocityVerlet
from precision import float32_atol

from forcematch.calculators.ase import ForcematchCalculator
from forcematch.errors import ForcematchError
from forcematch.io.h5md import read_h5md
from forcematch.potential import Potential, load_model
from forcematch.units import (
    ARGON_EPSILON_KJ_MOL,
    ARGON_SIGMA_NM,
    KJ_MOL_NM3_TO_BAR,
    KJ_MOL_PER_EV_SI,
)

TRAIN = {"model": "pair", "energy_weight": 0.01, "force_weight": 1.0}
EPSILON_EV = ARGON_EPSILON_KJ_MOL / KJ_MOL_PER_EV_SI  # ε of argon, 0.010323 eV
BAR_PER_EV_A3 = KJ_MOL_PER_EV_SI * 1e3 * KJ_MOL_NM3_TO_BAR  # 1 eV/Å³ = 1.6e6 bar
N_ATOMS = 32  # the tiny data's
N_PAIRS = N_ATOMS * (N_ATOMS - 1) // 2  # the most terms of a frame's sum over pairs


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    """A one-species pair model fitted to the tiny data (20 epochs), a two-species one (the
    same frames, atoms 16..31 relabelled species 1; 2 epochs) and the test frames."""
    from forcematch.training.run import train

    root = tmp_path_factory.mktemp("calculator")
    tr, val = read_h5md(tiny_data.dataset / "train.h5"), read_h5md(tiny_data.dataset / "val.h5")
    train(tr, val, TRAIN | {"epochs": 20, "max_epochs": 20}, None, 0.55, root / "one",
          progress=lambda _: None)
    two = np.repeat(np.int32([0, 1]), 16)
    train(dataclasses.replace(tr, species=two), dataclasses.replace(val, species=two),
          TRAIN | {"epochs": 2, "max_epochs": 2}, None, 0.55, root / "two",
          progress=lambda _: None)
    return {"one": load_model(root / "one" / "model"), "two": load_model(root / "two" / "model"),
            "test": read_h5md(tiny_data.dataset / "test.h5")}


def atoms_of(test, k: int = 0, symbols="Ar32") -> Atoms:
    """Test frame k as ASE atoms (Å), the file's masses."""
    return Atoms(symbols, positions=test.positions_nm[k] * 10, cell=np.diag(test.box_nm[k] * 10),
                 pbc=True, masses=test.masses_amu)


def test_energy_and_forces_are_the_models_own(trained):
    potential, test = trained["one"], trained["test"]
    energy, forces = potential.predict(test.positions_nm[:4], test.box_nm[:4])
    calc = ForcematchCalculator(potential)
    for k in range(4):
        # One frame against the batch: float32 round-off of the energy's sum over the pairs,
        # of each force's over the atom's N - 1 partners.
        e_atol = float32_atol(energy[k], n_terms=N_PAIRS)
        atoms = atoms_of(test, k)
        atoms.calc = calc
        assert atoms.get_potential_energy() * KJ_MOL_PER_EV_SI == pytest.approx(
            energy[k], abs=e_atol)
        assert atoms.get_potential_energy() == atoms.get_potential_energy(force_consistent=True)
        np.testing.assert_allclose(atoms.get_forces() * KJ_MOL_PER_EV_SI * 10, forces[k],
                                   rtol=0, atol=float32_atol(forces[k], n_terms=N_ATOMS - 1))
        # Periodic images and translations change nothing but the float32 rounding of the
        # positions (1 ulp of 1 nm moves a force by ~1e-5 of the largest): measured 6e-6.
        atoms.positions += atoms.cell[1] - 3.7
        assert atoms.get_potential_energy() * KJ_MOL_PER_EV_SI == pytest.approx(
            energy[k], abs=e_atol)
        np.testing.assert_allclose(atoms.get_forces() * KJ_MOL_PER_EV_SI * 10, forces[k],
                                   rtol=0, atol=5e-5 * np.abs(forces[k]).max())
    # Two species, in another order than in training: the species map decides.
    two = trained["two"]
    species = np.arange(32, dtype=np.int32) % 2
    atoms = atoms_of(test, 0, ["Ar", "Kr"] * 16)
    atoms.calc = ForcematchCalculator(two, species_map={"Ar": 0, "Kr": 1})
    expected = two.predict(test.positions_nm[:1], test.box_nm[:1], species)[0][0]
    assert atoms.get_potential_energy() * KJ_MOL_PER_EV_SI == pytest.approx(
        expected, abs=float32_atol(expected, n_terms=N_PAIRS))  # as above
    assert expected != pytest.approx(two.predict(test.positions_nm[:1], test.box_nm[:1])[0][0])


def test_forces_are_minus_the_gradient_of_the_energy(trained):
    atoms = atoms_of(trained["test"], 1)
    atoms.calc = ForcematchCalculator(trained["one"], float64=True)
    forces, h = atoms.get_forces(), 1e-4  # eV/Å, Å
    for atom, axis in ((0, 0), (5, 1), (17, 2), (31, 0)):
        energies = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.calc = atoms.calc
            moved.positions[atom, axis] += sign * h
            energies.append(moved.get_potential_energy())
        fd = -(energies[0] - energies[1]) / (2 * h)
        assert fd == pytest.approx(forces[atom, axis], abs=1e-6 * np.abs(forces).max())


def test_stress_is_ases_convention_and_the_models_strain_derivative(trained):
    test = trained["test"]
    # ASE's finite-difference stress (normal and shear strains of cell and positions)
    # reproduces ASE's own analytic LJ stress: the convention the calculator must follow.
    atoms = atoms_of(test, 2)
    atoms.calc = LennardJones(sigma=ARGON_SIGMA_NM * 10, epsilon=EPSILON_EV, rc=5.5, ro=4.5,
                              smooth=True)
    lj = atoms.get_stress()
    np.testing.assert_allclose(calculate_numerical_stress(atoms, eps=1e-5), lj, rtol=1e-5,
                               atol=1e-6 * np.abs(lj).max())
    # All six components of the calculator against the same differences (float64): the
    # sheared cells of the differences are evaluated as they are (triclinic).
    atoms.calc = ForcematchCalculator(trained["one"], float64=True)
    stress = atoms.get_stress()
    np.testing.assert_allclose(calculate_numerical_stress(atoms, eps=1e-5), stress, rtol=1e-6,
                               atol=1e-6 * np.abs(stress).max())
    # A liquid's instantaneous shear stress is not zero (its average is), nor is it the LJ's.
    assert np.abs(stress[3:]).min() > 1e-3 * np.abs(stress[:3]).max()
    # The model mimics argon: its virial pressure has the reference's sign and magnitude.
    assert np.sign(stress[:3].sum()) == np.sign(lj[:3].sum())
    # Float32: the stress is `Potential.strain_derivative` / V, component by component.
    atoms.calc = ForcematchCalculator(trained["one"])
    strain = trained["one"].strain_derivative(test.positions_nm[2:3], test.box_nm[2])[0]
    volume_nm3 = float(np.prod(test.box_nm[2]))
    expected = strain[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]] / volume_nm3  # kJ/mol/nm³
    stress_kJ_mol_nm3 = atoms.get_stress() * KJ_MOL_PER_EV_SI * 1e3
    # float32 round-off of Σ_pairs d_a d_b φ'(r)/r, by the same strain function
    np.testing.assert_allclose(stress_kJ_mol_nm3, expected,
                               atol=float32_atol(expected, n_terms=N_PAIRS))


def test_a_triclinic_cell_is_evaluated_with_its_own_minimum_image(trained):
    """A sheared cell (b tilted by 2 Å along x): moving an atom by any cell vector, or
    changing which of the cell's equivalent images it is given in, changes nothing."""
    calc = ForcematchCalculator(trained["one"], float64=True)
    atoms = atoms_of(trained["test"], 3)
    atoms.cell[1, 0] = 2.0
    atoms.calc = calc
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    assert np.abs(forces.sum(axis=0)).max() < 1e-9 * np.abs(forces).max()
    moved = atoms.copy()
    moved.calc = calc
    moved.positions[[3, 7, 11]] += atoms.cell[1] - 2 * atoms.cell[2] + atoms.cell[0]
    assert moved.get_potential_energy() == pytest.approx(energy, rel=1e-12)
    np.testing.assert_allclose(moved.get_forces(), forces, atol=1e-9 * np.abs(forces).max())
    # and the shear changed the configuration: the energy is not the orthorhombic cell's
    square = atoms_of(trained["test"], 3)
    square.calc = calc
    assert abs(square.get_potential_energy() - energy) > 1e-6 * abs(energy)


def nve_energies(atoms: Atoms, timestep_fs: float, duration_fs: float) -> np.ndarray:
    """Total energy per atom (eV) after every velocity-Verlet step over `duration_fs`,
    from Maxwell–Boltzmann momenta at 100 K (seed 0, zero net momentum)."""
    rng = np.random.default_rng(0)
    masses = atoms.get_masses()[:, None]
    momenta = rng.standard_normal((len(atoms), 3)) * np.sqrt(masses * units.kB * 100.0)
    atoms.set_momenta(momenta - masses * momenta.sum(0) / masses.sum())
    dynamics = VelocityVerlet(atoms, timestep=timestep_fs * units.fs)
    energies = []
    dynamics.attach(lambda: energies.append(atoms.get_total_energy() / len(atoms)))
    dynamics.run(round(duration_fs / timestep_fs))
    return np.asarray(energies)


def drift_and_fluctuation(energies: np.ndarray, timestep_fs: float) -> tuple[float, float]:
    """Least-squares slope (eV/atom/ps) and standard deviation about it (eV/atom)."""
    t_ps = np.arange(len(energies)) * timestep_fs * 1e-3
    fit = np.polyfit(t_ps, energies, 1)
    return float(fit[0]), float(np.std(energies - np.polyval(fit, t_ps)))


def test_ase_nve_conserves_energy(trained):
    """0.4 ps of ASE velocity Verlet at 2 fs, float32. Measured: drift −3e-7 eV/atom/ps,
    fluctuation 9e-8 eV/atom, 1e-5 of the kinetic energy (≈0.01 eV/atom); the OpenMM
    reference's 4.7e-5 ε/atom at 5 fs (design.md) scaled by Δt² to 2 fs is 8e-8 eV/atom."""
    test = trained["test"]
    atoms = atoms_of(test)
    atoms.calc = ForcematchCalculator(trained["one"])
    energies = nve_energies(atoms, 2.0, 400.0)
    drift, fluctuation = drift_and_fluctuation(energies, 2.0)
    kinetic = atoms.get_kinetic_energy() / len(atoms)
    bound = 4.7e-5 * EPSILON_EV * (2.0 / 5.0) ** 2 * 5  # the reference's, with a margin of 5
    assert fluctuation < bound and fluctuation < 1e-4 * kinetic
    assert abs(drift) * 0.4 < bound  # the change over the run
    # Float64: the error is the integrator's, O(Δt²): half the step, a quarter.
    by_step = {}
    for dt in (2.0, 1.0):
        atoms = atoms_of(test)
        atoms.calc = ForcematchCalculator(trained["one"], float64=True)
        by_step[dt] = drift_and_fluctuation(nve_energies(atoms, dt, 400.0), dt)[1]
    assert 3.0 < by_step[2.0] / by_step[1.0] < 5.5


def test_a_full_pair_list_is_enlarged_not_truncated(trained):
    """A model whose pair list holds fewer pairs than the frame (as if trained on sparser
    data): the calculator rebuilds it larger and gives the full model's energy."""
    full = trained["one"]
    small = Potential(full.path, full.info | {"capacity": 150}, full.params)
    test = trained["test"]
    atoms = atoms_of(test)
    atoms.calc = ForcematchCalculator(small)
    expected = full.predict(test.positions_nm[:4], test.box_nm[:4])[0][0]
    # float32 round-off of the sum over the pairs, in another pair list and order
    assert atoms.get_potential_energy() * KJ_MOL_PER_EV_SI == pytest.approx(
        expected, abs=float32_atol(expected, n_terms=N_PAIRS))
    assert sorted(small._evaluators) == [150, 225]  # enlarged once, by 1.5x


def test_a_replicated_box_is_the_same_liquid(trained):
    """The model of the 32-atom box on its 2x2x4 replica (512 atoms: the cell-list pair
    search, a pair list sized for 16x the atoms): energy per atom, forces and stress equal the
    box's own to float64 round-off."""
    calc = ForcematchCalculator(trained["one"], float64=True)
    box = atoms_of(trained["test"], 4)
    box.calc = calc
    big = box.repeat((2, 2, 4))  # 16 copies of the 32 atoms, one after the other
    big.calc = calc
    assert big.get_potential_energy() / len(big) == pytest.approx(
        box.get_potential_energy() / len(box), rel=1e-12)
    forces = box.get_forces()
    np.testing.assert_allclose(big.get_forces(), np.tile(forces, (16, 1)),
                               atol=1e-10 * np.abs(forces).max())
    np.testing.assert_allclose(big.get_stress(), box.get_stress(), rtol=1e-10,
                               atol=1e-10 * np.abs(box.get_stress()).max())


def refused(calc, atoms: Atoms, match: str) -> None:
    atoms.calc = calc
    with pytest.raises(ForcematchError, match=match):
        atoms.get_potential_energy()


def test_what_the_calculator_refuses(trained):
    test, one = trained["test"], trained["one"]
    calc = ForcematchCalculator(one)
    for pbc in (False, [True, True, False]):
        atoms = atoms_of(test)
        atoms.pbc = pbc
        refused(calc, atoms, r"periodic in x, y and z; atoms.pbc is \[True, True, False\]"
                if pbc else r"atoms.pbc is \[False, False, False\]")
    small = atoms_of(test)
    small.set_cell(small.cell[:] * 0.9, scale_atoms=True)  # 10.5 Å < 2 × 5.5 Å
    refused(calc, small, r"10.5\d* Å wide .* not wider than twice the model cutoff \(11 Å\)")
    thin = atoms_of(test)  # edges 11.67 Å, but b tilted by 8 Å: 9.6 Å between the x faces
    thin.cell[1, 0] = 8.0
    refused(calc, thin, r"9.6\d* Å wide between two faces")
    flipped = atoms_of(test)
    flipped.cell[2] *= -1
    refused(calc, flipped, "right-handed cell of positive volume")
    refused(calc, atoms_of(test, 0, ["Ar", "Kr"] * 16), r"one species but the atoms hold")
    two = trained["two"]
    with pytest.raises(ForcematchError, match="trained on 2 species .* give species_map"):
        ForcematchCalculator(two)
    with pytest.raises(ForcematchError, match=r"species_map\['Kr'\] = 2: .* 0..1"):
        ForcematchCalculator(two, species_map={"Ar": 0, "Kr": 2})
    refused(ForcematchCalculator(two, species_map={"Ar": 0, "Kr": 1}),
            atoms_of(test, 0, ["Ar", "Xe"] * 16), r"elements \['Xe'\] are not in species_map")
    assert math.isfinite(ForcematchCalculator(one, species_map={"Kr": 0}).get_potential_energy(
        atoms_of(test, 0, "Kr32")))


def test_atoms_on_top_of_each_other_are_refused_not_given_nan_forces(trained):
    """Two atoms at one place: the pair model's energy stays finite but −∇E is not (0/0 in the
    pair direction); the calculator says so, naming the atoms, instead of returning NaN."""
    potential, test = trained["one"], trained["test"]
    atoms = atoms_of(test, 0)
    positions = atoms.get_positions()
    positions[5] = positions[3]
    atoms.set_positions(positions)
    atoms.calc = ForcematchCalculator(potential)
    with pytest.raises(ForcematchError, match=r"forces are not finite on atoms \[3, 5\]"):
        atoms.get_forces()


def test_positions_not_finite_are_refused_naming_the_atoms(trained):
    """NaN or infinite coordinates: refused before the model sees them (wrapped into the cell
    they would be NaN, and the model's energy NaN), naming the atoms; coordinates 1e20 Å
    outside the cell are wrapped and evaluated."""
    test = trained["test"]
    calc = ForcematchCalculator(trained["one"])
    for value, atom in ((np.nan, 7), (np.inf, 12)):
        atoms = atoms_of(test, 0)
        positions = atoms.get_positions()
        positions[atom, 1] = value
        atoms.set_positions(positions)
        refused(calc, atoms, rf"positions are not finite \(NaN or infinite\) on atoms \[{atom}\]$")
    far = atoms_of(test, 0)
    far.positions[3] += 1e20
    far.calc = calc
    assert np.isfinite(far.get_forces()).all()
