"""Coarse-graining: the linear map and its force map, the mean-force sampler against an analytic
mean force, and the split of a CG model's loss into noise floor and error."""

from __future__ import annotations

import numpy as np
import openmm
import pytest

from forcematch.cg.mapping import LinearMap, decimation, map_frames
from forcematch.cg.mean_force import MeanForceSettings, sample_mean_force
from forcematch.cg.split import split
from forcematch.data.frames import Frames
from forcematch.errors import ForcematchError
from forcematch.units import BOLTZMANN_KJ_MOL_K


def test_decimation_keeps_the_kept_atoms():
    rng = np.random.default_rng(0)
    frames = Frames(rng.uniform(0, 2, (4, 6, 3)), rng.normal(size=(4, 6, 3)), rng.normal(size=4),
                    np.full(3, 2.0), species=[0, 1, 0, 1, 0, 1], masses_amu=np.arange(1.0, 7.0))
    cg = map_frames(decimation(6, [0, 2, 4], frames.species), frames)
    np.testing.assert_array_equal(cg.positions_nm, frames.positions_nm[:, [0, 2, 4]])
    np.testing.assert_array_equal(cg.forces_kJ_mol_nm, frames.forces_kJ_mol_nm[:, [0, 2, 4]])
    np.testing.assert_array_equal(cg.masses_amu, [1.0, 3.0, 5.0])
    np.testing.assert_array_equal(cg.species, [0, 0, 0])
    with pytest.raises(ForcematchError, match="distinct indices"):
        decimation(6, [0, 0])


def test_a_centre_of_mass_map_across_the_box_edge():
    """A two-atom molecule split by the periodic boundary maps to its centre, not the box's
    middle; its force map sums the molecule's forces."""
    box = np.full(3, 2.0)
    positions = np.array([[[1.95, 1.0, 1.0], [0.05, 1.0, 1.0]]])  # 0.1 nm apart across x = 0
    forces = np.array([[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]])
    com = LinearMap([[0.25, 0.75]], [[1.0, 1.0]], [0])  # masses 1 : 3
    cg = map_frames(com, Frames(positions, forces, [0.0], box, masses_amu=[1.0, 3.0]))
    np.testing.assert_allclose(cg.positions_nm[0, 0], [0.025, 1.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(cg.forces_kJ_mol_nm[0, 0], [5.0, 7.0, 9.0])
    assert cg.masses_amu[0] == 4.0
    with pytest.raises(ForcematchError, match="sum to 1"):
        LinearMap([[0.5, 0.6]], [[1.0, 1.0]], [0])


def _springs(k_kJ_mol_nm2: float) -> openmm.System:
    """Atoms A (0), C (1) held fixed and B (2) free, B tied to both by ½k|r|² springs (periodic
    minimum image): B is Gaussian about the midpoint of A and C, variance kT/(2k) per axis, and
    the mean force on A is k (x_C − x_A)/2 exactly."""
    system = openmm.System()
    for mass in (40.0, 40.0, 40.0):
        system.addParticle(mass)
    bonds = openmm.CustomBondForce("0.5*k*r^2")
    bonds.addGlobalParameter("k", k_kJ_mol_nm2)
    bonds.setUsesPeriodicBoundaryConditions(True)
    bonds.addBond(0, 2, [])
    bonds.addBond(1, 2, [])
    system.addForce(bonds)
    return system


def test_the_sampled_mean_force_equals_the_analytic_one():
    k, temperature = 1000.0, 100.0
    positions = np.array([[1.0, 1.0, 1.0], [1.5, 1.0, 1.0], [1.25, 1.0, 1.0]])
    box = np.full(3, 3.0)
    settings = MeanForceSettings(temperature_K=temperature, timestep_fs=2.0, samples=4000,
                                 steps_between_samples=5, blocks=20, seed=3)
    result = sample_mean_force(_springs(k), positions, box, decimation(3, [0, 1]), settings,
                               platform="Reference")
    exact = np.array([[k * 0.25, 0, 0], [-k * 0.25, 0, 0]])
    deviation = np.abs(result.mean - exact)
    assert np.all(deviation < 4 * result.standard_error + 1e-9), (result.mean,
                                                                  result.standard_error)
    assert result.standard_error.max() < 0.01 * k * 0.25  # the answer to 1 %
    # the labels' spread about the mean force: k² Var(x_B) = k·kT/2 per component
    kT = BOLTZMANN_KJ_MOL_K * temperature
    assert result.label_variance == pytest.approx(k * kT / 2, rel=0.1)
    with pytest.raises(ForcematchError, match="decimation maps"):
        sample_mean_force(_springs(k), positions, box, LinearMap([[0.5, 0.5, 0.0]],
                          [[1.0, 1.0, 0.0]], [0]), settings, platform="Reference")


def test_the_split_closes_and_corrects_for_the_sampling_error():
    """Labels = mean force + noise, a model = mean force + its own error, the mean force known
    to a standard error s: floor and error come out as the noise's and the model's variances,
    and the closure is the cross term only."""
    rng = np.random.default_rng(1)
    shape = (400, 10, 3)
    mean = rng.normal(0, 3.0, shape)
    labels = mean + rng.normal(0, 2.0, shape)  # noise floor 4
    model = mean + rng.normal(0, 1.0, shape)  # the model's error 1
    se = np.full(shape, 0.3)
    estimate = mean + rng.normal(0, 0.3, shape)
    result = split(labels, estimate, se, model)
    assert result["noise_floor"] == pytest.approx(4.0, rel=0.03)
    assert result["model_error"] == pytest.approx(1.0, rel=0.05)
    assert abs(result["closure"]) < 0.03 * result["loss"]
    assert result["noise_floor_rel"] == pytest.approx(4.0 / labels.var(), rel=0.03)


def test_the_mean_force_on_decimated_argon_has_no_net_force(tiny_data):
    """Every second argon atom of a test frame kept: with the others sampled, the mapped forces
    sum to minus the free atoms' forces, whose Boltzmann average is zero in a periodic box, so
    the sites' mean forces sum to zero within their errors; the frame's own mapped forces (one
    sample) scatter about the mean by the sampled spread."""
    from forcematch.config import load_config
    from forcematch.io.h5md import read_h5md
    from forcematch.reference.system import build_system, lj_system_from_config

    lj = lj_system_from_config(load_config(tiny_data.config))
    frame = read_h5md(tiny_data.dataset / "test.h5", [5])
    mapping = decimation(lj.n_atoms, np.arange(0, lj.n_atoms, 2))
    settings = MeanForceSettings(temperature_K=100.0, samples=600, blocks=10,
                                 steps_between_samples=10, seed=5)
    result = sample_mean_force(build_system(lj), frame.positions_nm[0], frame.box_nm[0], mapping,
                               settings)
    net = result.mean.sum(axis=0)
    net_se = np.sqrt((result.standard_error**2).sum(axis=0))
    assert np.all(np.abs(net) < 4 * net_se), (net, net_se)
    label = map_frames(mapping, frame).forces_kJ_mol_nm[0]
    spread = np.mean((label - result.mean) ** 2)
    assert 0.2 * result.label_variance < spread < 5 * result.label_variance
    assert np.mean(result.standard_error**2) < 0.05 * result.label_variance
