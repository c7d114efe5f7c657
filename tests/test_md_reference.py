"""The OpenMM side of the MD checks (`forcematch.md.reference`), with real OpenMM.

One 100-atom liquid argon (the config's default system: 100 K, 1.3137 g/cm3, cutoff 0.8 nm,
switch 0.7 nm) is equilibrated once from the fcc lattice by a short NVT run; the tests start
from its final state. CPU platform, 1 thread.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from forcematch.config import validate_config
from forcematch.errors import ForcematchError
from forcematch.md import checks
from forcematch.md.record import Segment, StabilityLimits
from forcematch.md.reference import (
    OpenMMEngine,
    strain_derivative_kJ_mol,
    tail_correction_pressure_bar,
)
from forcematch.reference.system import lattice_positions_nm, lj_system_from_config
from forcematch.units import BOLTZMANN_KJ_MOL_K, KJ_MOL_NM3_TO_BAR

T_K = 100.0
LIMITS = StabilityLimits(min_distance_nm=0.25, runaway_factor=2.0)


@pytest.fixture(scope="module")
def lj():
    return lj_system_from_config(validate_config({"system": {"n_atoms": 100}}))


@pytest.fixture(scope="module")
def engine(lj):
    return OpenMMEngine(lj, platform="CPU", threads=1)


@pytest.fixture(scope="module")
def liquid(lj, engine) -> Segment:
    """5 ps of NVT (friction 5/ps) from the lattice: an equilibrated liquid."""
    start = lattice_positions_nm(lj, np.random.default_rng(0))
    segment = engine.run("nvt", start, None, T_K, 5.0, 1000, 50, seed=11,
                         friction_per_ps=5.0, limits=LIMITS)
    assert segment.failure is None
    return segment


def _run(engine, liquid, ensemble="nve", timestep_fs=5.0, n_steps=400, record_every=10,
         seed=3, friction_per_ps=5.0, limits=LIMITS, velocities="liquid", positions=None):
    pos, vel = liquid.final_state()
    return engine.run(ensemble, pos if positions is None else positions,
                      vel if velocities == "liquid" else velocities, T_K, timestep_fs, n_steps,
                      record_every, seed=seed, friction_per_ps=friction_per_ps, limits=limits)


def test_drawn_velocities_have_no_net_momentum(engine, liquid):
    segment = _run(engine, liquid, n_steps=0, velocities=None)
    thermal = math.sqrt(engine.masses_amu.sum() * BOLTZMANN_KJ_MOL_K * T_K)
    assert segment.time_ps.tolist() == [0.0]
    assert np.abs(segment.momentum_amu_nm_ps[0]).max() < 1e-10 * thermal
    assert 50.0 < segment.temperature_inst_K[0] < 150.0


def test_nve_conserves_momentum(engine, liquid):
    segment = _run(engine, liquid, n_steps=400, record_every=10)
    assert segment.failure is None
    assert segment.time_ps.shape == (41,) and segment.positions_nm.shape == (41, 100, 3)
    np.testing.assert_allclose(segment.time_ps[-1], 2.0)
    thermal = math.sqrt(engine.masses_amu.sum() * BOLTZMANN_KJ_MOL_K * T_K)
    change = segment.momentum_amu_nm_ps - segment.momentum_amu_nm_ps[0]
    assert np.linalg.norm(change, axis=1).max() < 1e-5 * thermal
    # NVE starts from zero total momentum, whatever the velocities it was given had
    assert np.abs(liquid.momentum_amu_nm_ps[-1]).max() > 1e-3 * thermal  # Langevin's drift
    assert np.linalg.norm(segment.momentum_amu_nm_ps, axis=1).max() < 1e-5 * thermal


def test_nve_energy_fluctuation_scales_as_dt_squared(engine, liquid):
    """Velocity Verlet is symplectic: the total energy fluctuates by O(Δt²) about a
    conserved shadow energy, so halving Δt cuts the fluctuation by about 4."""
    fluctuation = {}
    for dt, steps in ((5.0, 400), (2.5, 800)):
        segment = _run(engine, liquid, timestep_fs=dt, n_steps=steps, record_every=steps // 100)
        assert segment.failure is None
        fluctuation[dt] = float(np.std(segment.total_kJ_mol))
    assert 2.5 < fluctuation[5.0] / fluctuation[2.5] < 6.0, fluctuation


def test_nvt_mean_temperature_is_the_target(engine, liquid):
    segment = _run(engine, liquid, ensemble="nvt", n_steps=2000, record_every=10)
    assert segment.failure is None
    assert abs(float(np.mean(segment.temperature_inst_K[1:])) - T_K) < 5.0


def test_langevin_ideal_gas_has_the_target_temperature_with_3n_degrees_of_freedom(lj):
    """Langevin dynamics kicks every momentum, the total included (it does not conserve it):
    with no forces <K> = 3N kT/2, and 3N - 3 degrees of freedom would read T 1 % high."""
    gas = dataclasses.replace(lj, sigma_nm=1e-3, epsilon_kJ_mol=1e-9)  # forces ~ 0
    engine = OpenMMEngine(gas, platform="CPU", threads=1)
    start = lattice_positions_nm(gas, np.random.default_rng(0))
    # friction 20/ps: the kinetic energy decorrelates in 1/(2 x 20) ps, the record interval
    segment = engine.run("nvt", start, None, T_K, 5.0, 20_000, 10, seed=5,
                         friction_per_ps=20.0, limits=StabilityLimits(0.0, 1e9))
    assert segment.failure is None and np.abs(segment.forces_kJ_mol_nm).max() < 1e-6
    t = checks.block_mean(segment.temperature_inst_K[1:], n_blocks=20)
    assert t["error"] < 0.3  # K: the check below can tell 3N from 3N - 3 (1 K)
    assert abs(t["mean"] - T_K) < 3 * t["error"], t
    assert abs(t["mean"] * 300 / 297 - T_K) > 3 * t["error"], t


def _assert_identical(a: Segment, b: Segment) -> None:
    for field in dataclasses.fields(Segment):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if isinstance(x, np.ndarray):
            assert np.array_equal(x, y), field.name
        else:
            assert x == y, field.name


def test_nvt_same_seed_is_bitwise_reproducible(engine, liquid):
    kwargs = {"ensemble": "nvt", "n_steps": 200, "record_every": 20, "velocities": None}
    first = _run(engine, liquid, seed=123, **kwargs)
    _assert_identical(first, _run(engine, liquid, seed=123, **kwargs))
    other = _run(engine, liquid, seed=124, **kwargs)
    assert not np.array_equal(first.positions_nm[-1], other.positions_nm[-1])
    assert not np.array_equal(first.velocities_nm_ps[0], other.velocities_nm_ps[0])


def test_huge_time_step_is_a_failure_not_an_exception(engine, liquid):
    """100 fs blows up within a few steps (50 fs still runs 100 ps stably in this argon)."""
    segment = _run(engine, liquid, timestep_fs=100.0, n_steps=2000, record_every=10)
    assert segment.failure is not None
    assert segment.time_to_failure_ps is not None
    assert 0.0 < segment.time_to_failure_ps < segment.duration_ps
    assert len(segment.time_ps) == len(segment.kinetic_kJ_mol) == len(segment.positions_nm)
    assert segment.time_ps[-1] == segment.time_to_failure_ps
    assert np.all(segment.temperature_inst_K[:-1] <= LIMITS.runaway_factor * T_K)


def test_overlapping_atoms_fail_at_the_start(engine, liquid):
    pos = liquid.final_state()[0].copy()
    pos[1] = pos[0] + np.array([0.1, 0.0, 0.0])
    segment = _run(engine, liquid, positions=pos)
    assert segment.failure is not None and segment.time_to_failure_ps == 0.0
    assert segment.positions_nm.shape == (1, 100, 3)


def test_openmm_nan_exception_becomes_a_failure_record(engine, liquid):
    """Atoms 0.001 nm apart blow up to NaN coordinates within a block of 100 steps; with
    limits that never trip, OpenMM's exception itself is the failure."""
    pos = liquid.final_state()[0].copy()
    pos[1] = pos[0] + np.array([0.001, 0.0, 0.0])
    lax = StabilityLimits(min_distance_nm=0.0, runaway_factor=math.inf)
    segment = _run(engine, liquid, positions=pos, n_steps=1000, record_every=100, limits=lax)
    assert segment.failure is not None and segment.failure.startswith("OpenMM: "), segment.failure
    assert segment.time_ps.tolist() == [0.0, 0.5]
    assert np.isnan(segment.potential_kJ_mol[-1])


@pytest.mark.parametrize("change, match", [
    ({"n_steps": 105}, "multiple of record_every"),
    ({"seed": 2**31}, "outside 0"),
    ({"seed": -1}, "outside 0"),
    ({"ensemble": "npt"}, "ensemble"),
    ({"timestep_fs": 0.0}, "timestep_fs"),
])
def test_bad_arguments_are_refused(engine, liquid, change, match):
    with pytest.raises(ForcematchError, match=match):
        _run(engine, liquid, **change)


def _switched_lj_strain_derivative(lj, frame: np.ndarray, box: np.ndarray) -> float:
    """Σ_pairs r φ'(r) for OpenMM's switched LJ over minimum-image pairs (numpy)."""
    d = frame[:, None, :] - frame[None, :, :]
    d -= box * np.round(d / box)
    r = np.sqrt((d**2).sum(-1))[np.triu_indices(len(frame), 1)]
    r = r[r < lj.cutoff_nm]
    sr6 = (lj.sigma_nm / r) ** 6
    phi = 4 * lj.epsilon_kJ_mol * (sr6**2 - sr6)
    dphi = 4 * lj.epsilon_kJ_mol * (-12 * sr6**2 + 6 * sr6) / r
    width = lj.cutoff_nm - lj.switch_nm
    x = np.clip((r - lj.switch_nm) / width, 0.0, 1.0)
    s = 1 - 6 * x**5 + 15 * x**4 - 10 * x**3
    ds = (-30 * x**4 + 60 * x**3 - 30 * x**2) / width
    return float(np.sum(r * (dphi * s + phi * ds)))


def test_strain_derivative_is_the_pair_virial(lj, liquid):
    """The finite difference equals Σ r φ'(r) of the switched pair potential (no tail:
    `lj` has the dispersion correction on, and it must be ignored)."""
    assert lj.dispersion_correction
    frames = liquid.positions_nm[[-3, -2, -1]]
    fd = strain_derivative_kJ_mol(lj, frames, liquid.box_nm)
    exact = [_switched_lj_strain_derivative(lj, f, liquid.box_nm) for f in frames]
    np.testing.assert_allclose(fd, exact, rtol=1e-6)


def _openmm_tail_pressure_bar(lj) -> float:
    """OpenMM's dispersion correction E = C/V with C = 8πN²ε[σ¹²/(9r_c⁹) − σ⁶/(3r_c³)
    + ∫_{r_s}^{r_c} r²(σ¹²/r¹² − σ⁶/r⁶)(1 − S(r)) dr] (the part the switch removes);
    E ∝ 1/V, so P = −dE/dV = E/V."""
    sigma, rc, rs = lj.sigma_nm, lj.cutoff_nm, lj.switch_nm
    nodes, weights = np.polynomial.legendre.leggauss(64)
    r = rs + (rc - rs) * (nodes + 1) / 2
    x = (r - rs) / (rc - rs)
    s = 1 - 6 * x**5 + 15 * x**4 - 10 * x**3
    removed = np.sum(weights * (rc - rs) / 2 * r**2 * ((sigma / r) ** 12 - (sigma / r) ** 6)
                     * (1 - s))
    c = 8 * math.pi * lj.n_atoms**2 * lj.epsilon_kJ_mol * (
        sigma**12 / (9 * rc**9) - sigma**6 / (3 * rc**3) + removed)
    volume = lj.box_nm**3
    return c / volume**2 * KJ_MOL_NM3_TO_BAR


def test_tail_correction_pressure_is_openmms_formula(lj):
    pressure = tail_correction_pressure_bar(lj)
    assert pressure < 0
    assert pressure == pytest.approx(_openmm_tail_pressure_bar(lj), rel=1e-6)
    bigger = dataclasses.replace(lj, box_nm=lj.box_nm * 1.1)
    assert tail_correction_pressure_bar(bigger) == pytest.approx(pressure / 1.1**6, rel=1e-5)
