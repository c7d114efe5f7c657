"""OpenMM reference system: LJ physics against closed forms, seeds, and short real replicas."""

import json
import subprocess
import sys

import numpy as np
import pytest

from forcematch.errors import ForcematchError
from forcematch.h5md import read_h5md, read_parameters
from forcematch.simulate import (
    LJSystem,
    build_system,
    energy_and_forces,
    lattice_positions_nm,
    lj_system_from_config,
    make_context,
    replica_seed,
    run_replica,
)
from forcematch.units import ARGON_EPSILON_KJ_MOL, ARGON_SIGMA_NM

SIGMA, EPS = ARGON_SIGMA_NM, ARGON_EPSILON_KJ_MOL
R_SWITCH, R_CUT = 0.7, 0.8

CONFIG = {
    "system": {
        "n_atoms": 100,
        "temperature_K": 100.0,
        "density_g_cm3": 1.3137,
        "cutoff_nm": R_CUT,
        "switch_nm": R_SWITCH,
    },
    "simulate": {
        "frames_per_replica": 20,
        "steps_between_frames": 10,
        "timestep_fs": 5.0,
        "seed": 2024,
        "equilibration_steps": 500,
    },
}


def dimer() -> LJSystem:
    return LJSystem(
        n_atoms=2,
        box_nm=5.0,
        cutoff_nm=R_CUT,
        switch_nm=R_SWITCH,
        sigma_nm=SIGMA,
        epsilon_kJ_mol=EPS,
        mass_amu=39.948,
        dispersion_correction=False,
    )


def lj(r):
    """LJ energy (kJ/mol) and dE/dr (kJ/mol/nm)."""
    s6 = (SIGMA / r) ** 6
    return 4 * EPS * (s6 * s6 - s6), 4 * EPS * (-12 * s6 * s6 + 6 * s6) / r


def switch(r):
    """OpenMM's switch S(x) = 1 - 10x^3 + 15x^4 - 6x^5 and dS/dr."""
    x = (r - R_SWITCH) / (R_CUT - R_SWITCH)
    s = 1 - 10 * x**3 + 15 * x**4 - 6 * x**5
    ds_dx = -30 * x**2 + 60 * x**3 - 30 * x**4
    return s, ds_dx / (R_CUT - R_SWITCH)


def dimer_frames(distances):
    pos = np.zeros((len(distances), 2, 3))
    pos[:, 0] = [1.0, 1.2, 1.4]
    pos[:, 1] = pos[:, 0] + np.asarray(distances)[:, None] * np.array([1.0, 0.0, 0.0])
    return pos


def assert_dimer(distances, energy_ref, dedr_ref):
    energy, forces = energy_and_forces(dimer(), dimer_frames(distances), 5.0)
    np.testing.assert_allclose(energy, energy_ref, rtol=1e-10, atol=1e-13)
    # atom 1 sits at +r x: F1 = -dE/dr x, F0 = -F1
    expected = np.zeros((len(distances), 2, 3))
    expected[:, 1, 0] = -np.asarray(dedr_ref)
    expected[:, 0, 0] = np.asarray(dedr_ref)
    np.testing.assert_allclose(forces, expected, rtol=1e-10, atol=1e-12)


def test_dimer_below_switch_is_plain_lj():
    r = np.array([0.31, 0.3405 * 2 ** (1 / 6), 0.4, 0.5, 0.65, 0.699])
    e, dedr = lj(r)
    assert_dimer(r, e, dedr)


def test_dimer_in_switching_region():
    r = np.array([0.705, 0.73, 0.75, 0.79])
    e, dedr = lj(r)
    s, dsdr = switch(r)
    assert_dimer(r, e * s, dedr * s + e * dsdr)


def test_dimer_beyond_cutoff_is_zero():
    energy, forces = energy_and_forces(dimer(), dimer_frames([0.801, 1.0, 2.4]), 5.0)
    assert np.all(energy == 0.0) and np.all(forces == 0.0)


def test_energy_and_forces_single_frame_and_per_frame_box():
    sys_ = lj_system_from_config(CONFIG)
    rng = np.random.default_rng(0)
    frames = np.stack([lattice_positions_nm(sys_, rng) for _ in range(3)])
    boxes = np.array([[sys_.box_nm] * 3, [1.75, 1.8, 1.85], [sys_.box_nm] * 3])
    energies, forces = energy_and_forces(sys_, frames, boxes)
    assert energies.shape == (3,) and forces.shape == (3, 100, 3)
    e1, f1 = energy_and_forces(sys_, frames[1], boxes[1])
    assert isinstance(e1, float) and e1 == energies[1] and np.array_equal(f1, forces[1])
    e0, _ = energy_and_forces(sys_, frames[0], sys_.box_nm)
    assert e0 == energies[0]
    with pytest.raises(ForcematchError, match="frame 1"):
        energy_and_forces(sys_, frames, [[2.0] * 3, [1.5] * 3, [2.0] * 3])


def test_net_force_of_liquid_frame_vanishes():
    sys_ = lj_system_from_config(CONFIG)
    rng = np.random.default_rng(1)
    pos = lattice_positions_nm(sys_, rng) + rng.normal(scale=0.02, size=(100, 3))
    energy, forces = energy_and_forces(sys_, pos, sys_.box_nm)
    assert np.abs(forces).max() > 10.0  # a frame with real forces
    assert np.abs(forces.sum(axis=0)).max() < 1e-9
    assert np.isfinite(energy)


def test_system_from_config_and_build():
    sys_ = lj_system_from_config(CONFIG)
    assert sys_.box_nm == pytest.approx(1.7156, abs=1e-4)
    assert sys_.sigma_nm == SIGMA and sys_.dispersion_correction
    system = build_system(sys_)
    assert system.getNumParticles() == 100
    nb = system.getForce(0)
    assert nb.getUseSwitchingFunction() and nb.getUseDispersionCorrection()
    assert nb.getSwitchingDistance()._value == R_SWITCH and nb.getCutoffDistance()._value == R_CUT
    with pytest.raises(ForcematchError, match="cutoff_nm"):
        lj_system_from_config({"system": {**CONFIG["system"], "cutoff_nm": 0.9}})
    with pytest.raises(ForcematchError, match="switch_nm"):
        lj_system_from_config({"system": {**CONFIG["system"], "switch_nm": 0.85}})
    with pytest.raises(ForcematchError, match="density_g_cm3"):
        lj_system_from_config({"system": {"n_atoms": 10}})


def test_lattice_positions():
    sys_ = lj_system_from_config(CONFIG)
    pos = lattice_positions_nm(sys_, np.random.default_rng(5))
    assert pos.shape == (100, 3) and np.all((pos >= 0) & (pos < sys_.box_nm))
    assert np.array_equal(pos, lattice_positions_nm(sys_, np.random.default_rng(5)))
    d = pos[:, None] - pos[None]
    d -= sys_.box_nm * np.round(d / sys_.box_nm)
    r = np.sqrt((d**2).sum(-1))[np.triu_indices(100, 1)]
    assert r.min() > 0.9 * SIGMA  # no overlaps


def test_replica_seed():
    seeds = [replica_seed(2024, k) for k in range(200)]
    assert len(set(seeds)) == 200
    assert all(1 <= s < 2**31 - 1 for s in seeds)
    assert seeds == [replica_seed(2024, k) for k in range(200)]
    assert replica_seed(0, 0) != 0 and replica_seed(2025, 0) != seeds[0]


def test_make_context_platforms():
    sys_ = lj_system_from_config(CONFIG)
    ctx = make_context(build_system(sys_), 100.0, 5.0, 1.0, 7, platform="CPU", threads=1)
    assert ctx.getPlatform().getPropertyValue(ctx, "Threads") == "1"
    assert ctx.getIntegrator().getRandomNumberSeed() == 7
    ref = make_context(build_system(sys_), 100.0, 5.0, 1.0, 7, platform="Reference")
    assert ref.getPlatform().getName() == "Reference"
    with pytest.raises(ForcematchError, match="platform"):
        make_context(build_system(sys_), 100.0, 5.0, 1.0, 7, platform="NoSuch")


@pytest.fixture(scope="module")
def replica0(tmp_path_factory):
    path = tmp_path_factory.mktemp("sim") / "replica_0.h5"
    lines = []
    run_replica(CONFIG, 0, path, progress=lines.append)
    return path, lines


def test_run_replica_writes_valid_file(replica0):
    path, lines = replica0
    traj = read_h5md(path)
    assert traj.positions_nm.shape == (20, 100, 3) and traj.forces_kJ_mol_nm.shape == (20, 100, 3)
    assert traj.potential_energy_kJ_mol.shape == (20,)
    assert np.all(np.isfinite(traj.positions_nm)) and np.all(np.isfinite(traj.forces_kJ_mol_nm))
    np.testing.assert_allclose(traj.box_nm, 1.7156, atol=1e-4)
    assert np.all((traj.positions_nm >= 0) & (traj.positions_nm <= traj.box_nm[:, None, :]))
    assert np.array_equal(traj.step, 500 + 10 * np.arange(1, 21))
    np.testing.assert_allclose(traj.time_ps, traj.step * 0.005)
    np.testing.assert_allclose(traj.masses_amu, 39.948)
    # a liquid near the reference energy, -5.59 eps per atom (short run: loose bound)
    u_per_atom = traj.potential_energy_kJ_mol.mean() / 100 / EPS
    assert -5.9 < u_per_atom < -5.3
    # single-precision CPU forces: net force ~ 1e-5 kJ/mol/nm
    assert np.abs(traj.forces_kJ_mol_nm.sum(axis=1)).max() < 1e-3
    params = read_parameters(path)
    assert params["config"] == CONFIG and params["replica"] == 0
    assert params["seed"] == replica_seed(2024, 0) and params["threads"] == 1
    assert params["platform"] == "CPU" and params["lj"]["n_atoms"] == 100
    assert params["provenance"]["versions"]["openmm"] and params["provenance"]["config_hash"]
    assert sum("frame " in line and "steps/s" in line for line in lines) == 10
    assert [p.name for p in path.parent.iterdir()] == ["replica_0.h5"]


def test_run_replica_is_bitwise_reproducible_across_processes(replica0, tmp_path):
    path, _ = replica0
    again = tmp_path / "again.h5"
    code = (
        "import json, sys; from forcematch.simulate import run_replica; "
        "run_replica(json.loads(sys.argv[1]), 0, sys.argv[2], progress=None)"
    )
    subprocess.run([sys.executable, "-c", code, json.dumps(CONFIG), str(again)], check=True)
    a, b = read_h5md(path), read_h5md(again)
    assert np.array_equal(a.positions_nm, b.positions_nm)
    assert np.array_equal(a.forces_kJ_mol_nm, b.forces_kJ_mol_nm)
    assert np.array_equal(a.potential_energy_kJ_mol, b.potential_energy_kJ_mol)


def test_other_replica_differs(replica0, tmp_path):
    path, _ = replica0
    other = tmp_path / "replica_1.h5"
    run_replica(CONFIG, 1, other, progress=None)
    a, b = read_h5md(path), read_h5md(other)
    assert not np.array_equal(a.positions_nm, b.positions_nm)
    assert not np.array_equal(a.potential_energy_kJ_mol, b.potential_energy_kJ_mol)
    assert read_parameters(other)["seed"] != read_parameters(path)["seed"]


@pytest.mark.parametrize("platform", ["Reference", "CPU"])
def test_blow_up_names_replica_and_step(tmp_path, platform):
    """A 200 fs step blows up: NaN energy (Reference) or NaN coordinates (CPU)."""
    config = {
        **CONFIG,
        "simulate": {**CONFIG["simulate"], "timestep_fs": 200.0, "equilibration_steps": 0},
    }
    out = tmp_path / "blown.h5"
    with pytest.raises(ForcematchError, match=r"replica 2: .*MD step \d+ \(frame \d+\)"):
        run_replica(config, 2, out, platform=platform, progress=None)
    assert list(tmp_path.iterdir()) == []
