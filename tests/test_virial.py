"""Virial labels: the reference's W = −∂U/∂ε against finite differences of OpenMM's own energy
under normal and shear strains, stored by simulate in the H5MD observables, carried by the
dataset splits, the frame sources and the fingerprint."""

from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import openmm
import pytest
from conftest import TINY

from forcematch.config import load_config
from forcematch.data.frames import Frames
from forcematch.data.sources import ArraySource, H5MDSource
from forcematch.data.stats import scan, statistics
from forcematch.errors import ForcematchError
from forcematch.io.h5md import read_h5md, write_h5md
from forcematch.md.reference import strain_derivative_kJ_mol
from forcematch.metrics import virial_accuracy
from forcematch.reference.system import (
    build_system,
    lattice_positions_nm,
    lj_system_from_config,
)
from forcematch.reference.virial import virial_kJ_mol


def _liquid_like(lj, seed=0):
    rng = np.random.default_rng(seed)
    return np.mod(lattice_positions_nm(lj, rng) + rng.normal(scale=0.02, size=(lj.n_atoms, 3)),
                  lj.box_nm)


def _openmm_strain_fd(lj, positions, box, a, b, h=1e-5):
    """−dU/dF_ab of OpenMM's Reference-platform energy (no tail correction) under the
    deformation x' = F x, F = I + h e_ab with a <= b (upper triangular keeps OpenMM's reduced
    box form), by central differences."""
    system = build_system(dataclasses.replace(lj, dispersion_correction=False))
    context = openmm.Context(system, openmm.VerletIntegrator(1e-3),
                             openmm.Platform.getPlatformByName("Reference"))

    def energy(step):
        deform = np.eye(3)
        deform[a, b] += step
        cell = np.diag(box) @ deform.T  # rows: the box vectors, each deformed
        context.setPeriodicBoxVectors(*[openmm.Vec3(*row) for row in cell])
        context.setPositions(positions @ deform.T)
        return context.getState(getEnergy=True).getPotentialEnergy()._value

    return -(energy(h) - energy(-h)) / (2 * h)


@pytest.mark.parametrize("config_path", ["config/config.yaml", "config/kob_andersen.yaml"])
def test_virial_equals_openmm_strain_derivatives(config_path):
    """Every component of W against OpenMM's energy under a normal or shear strain (the pair
    virial is symmetric, so the upper triangle holds all six), 1e-6 relative to |W|."""
    lj = lj_system_from_config(load_config(config_path))
    positions = _liquid_like(lj)
    box = np.full(3, lj.box_nm)
    virial = virial_kJ_mol(lj, positions[None], box)[0]
    np.testing.assert_allclose(virial, virial.T, rtol=0, atol=1e-12 * np.abs(virial).max())
    scale = np.abs(virial).max()
    for a in range(3):
        for b in range(a, 3):
            fd = _openmm_strain_fd(lj, positions, box, a, b)
            assert abs(fd - virial[a, b]) < 1e-6 * scale, (a, b, fd, virial[a, b])
    # and the trace against the pressure's own strain derivative (uniform scaling)
    trace_fd = -strain_derivative_kJ_mol(lj, positions[None], box)[0]
    assert abs(np.trace(virial) - trace_fd) < 1e-6 * abs(trace_fd)


def test_simulate_stores_each_frames_virial(tiny_data):
    """The replica file holds observables/virial [T,3,3] in kJ mol-1, equal to W of its own
    stored positions; the dataset's splits carry it, and stats.json its scale."""
    lj = lj_system_from_config(load_config(TINY))
    replica = read_h5md(tiny_data.replicas[0])
    with h5py.File(tiny_data.replicas[0]) as f:
        assert f["observables/virial/value"].attrs["unit"] == "kJ mol-1"
    np.testing.assert_allclose(replica.virial_kJ_mol,
                               virial_kJ_mol(lj, replica.positions_nm, replica.box_nm),
                               rtol=1e-12, atol=1e-9)
    train = read_h5md(tiny_data.dataset / "train.h5")
    assert train.virial_kJ_mol.shape == (train.n_frames, 3, 3)
    scale = statistics(train)["virial_per_atom_std_kJ_mol"]
    assert 0 < scale < np.abs(train.virial_kJ_mol / train.n_atoms).max()


def _frames_with_virial(n_frames=5, n_atoms=4, seed=1) -> Frames:
    rng = np.random.default_rng(seed)
    return Frames(rng.uniform(0, 2, (n_frames, n_atoms, 3)),
                  rng.normal(size=(n_frames, n_atoms, 3)), rng.normal(size=n_frames),
                  np.full(3, 2.0), virial_kJ_mol=rng.normal(size=(n_frames, 3, 3)))


def test_sources_and_fingerprint_carry_the_virial(tmp_path):
    """In memory or streamed from the file, the same virial rows; the fingerprint (Frames and
    scan alike) changes with the virial, and data without one keep their fingerprint."""
    frames = _frames_with_virial()
    path = tmp_path / "f.h5"
    write_h5md(path, frames, {})
    idx = np.array([3, 0, 4])
    with H5MDSource(path) as streamed:
        np.testing.assert_array_equal(streamed.read(idx).virial_kJ_mol,
                                      frames.virial_kJ_mol[idx])
        np.testing.assert_array_equal(streamed.subset([1, 2]).virial_kJ_mol,
                                      frames.virial_kJ_mol[1:3])
        assert scan(streamed, "f") == frames.fingerprint()
    in_memory = ArraySource(frames)
    np.testing.assert_array_equal(in_memory.read(idx).virial_kJ_mol, frames.virial_kJ_mol[idx])
    without = dataclasses.replace(frames, virial_kJ_mol=None)
    assert without.fingerprint() != frames.fingerprint()
    assert scan(ArraySource(without), "f") == without.fingerprint()
    assert statistics(without)["virial_per_atom_std_kJ_mol"] is None
    with pytest.raises(ForcematchError, match="some parts have virial_kJ_mol"):
        Frames.concatenate([frames, without])


def test_a_bad_virial_in_a_file_is_named(tmp_path):
    frames = _frames_with_virial()
    path = tmp_path / "f.h5"
    write_h5md(path, frames, {})
    with h5py.File(path, "a") as f:
        f["observables/virial/value"][2, 0, 1] = np.nan
    with pytest.raises(ForcematchError, match=r"non-finite virial at frame 2"):
        read_h5md(path)
    with h5py.File(path, "a") as f:
        f["observables/virial/value"].attrs["unit"] = "bar"
    with pytest.raises(ForcematchError, match="virial"):
        read_h5md(path)


def test_virial_accuracy_turns_an_isotropic_error_into_its_pressure():
    """A virial error of δ on each diagonal component is a pressure offset δ/V (kJ/mol/nm³,
    16.6054 bar each); the per-atom RMSE over the nine components is δ·sqrt(3/9)/N."""
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(50, 3, 3))
    box = np.array([1.5, 2.0, 2.5])
    delta = 3.0
    result = virial_accuracy(ref, ref + delta * np.eye(3), box, n_atoms=10)
    assert result["virial_pressure_offset_bar"] == pytest.approx(
        delta / box.prod() * 16.605390666, rel=1e-12)
    assert result["virial_pressure_offset_se_bar"] == pytest.approx(0, abs=1e-9)
    assert result["virial_rmse_per_atom"] == pytest.approx(delta * np.sqrt(3 / 9) / 10)
