"""OpenMM reference system: LJ physics against closed forms, seeds, short real replicas, and
the atomic writes its checkpoints and outputs go through."""

import json
import subprocess
import sys

import numpy as np
import pytest

from forcematch.atomic import (
    atomic_directory,
    atomic_open,
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
    write_json,
)
from forcematch.config import validate_config
from forcematch.errors import ForcematchError
from forcematch.h5md import read_h5md, read_parameters
from forcematch.reference import (
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

CONFIG = validate_config({
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
})


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
        "import json, sys; from forcematch.reference import run_replica; "
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


def test_stopped_and_resumed_replica_equals_uninterrupted(tmp_path):
    config = {**CONFIG, "simulate": {**CONFIG["simulate"], "checkpoint_every_frames": 7}}
    run_replica(config, 0, tmp_path / "whole.h5", progress=None)
    lines = []
    run_replica(config, 0, tmp_path / "resumed.h5", progress=None, stop_after_frames=14)
    assert not (tmp_path / "resumed.h5").exists()
    state = json.loads((tmp_path / ".resumed.h5.partial" / "state.json").read_text())
    assert state["frames_done"] == 14 and len(state["chunks"]) == 2
    run_replica(config, 0, tmp_path / "resumed.h5", progress=lines.append)
    assert any("resuming from" in line and "frame 14/20" in line for line in lines)
    a, b = read_h5md(tmp_path / "whole.h5"), read_h5md(tmp_path / "resumed.h5")
    for name in ("positions_nm", "forces_kJ_mol_nm", "potential_energy_kJ_mol", "box_nm"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert read_parameters(tmp_path / "resumed.h5")["resumed_at_frames"] == [14]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["resumed.h5", "whole.h5"]


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


# Atomic writes (forcematch.provenance), which the checkpoint and every output on this side use.


def test_atomic_writes_replace_whole_files_and_leave_no_temporaries(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"b": 1, "a": [1.5]})
    assert target.read_text() == '{\n  "a": [\n    1.5\n  ],\n  "b": 1\n}\n'
    atomic_write_text(target, "größe")
    assert target.read_bytes() == "größe".encode()
    with pytest.raises(RuntimeError), atomic_open(target, "w") as handle:
        handle.write("half")
        raise RuntimeError("killed")
    assert target.read_text() == "größe"
    with atomic_path(tmp_path / "named.bin") as tmp:
        assert tmp.parent == tmp_path and tmp.stat().st_size == 0
        tmp.write_bytes(b"by name")
    assert (tmp_path / "named.bin").read_bytes() == b"by name"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["named.bin", "out.json"]


def test_atomic_write_replaces_a_planted_symlink_without_following_it(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (tmp_path / "out.txt").symlink_to(victim)
    atomic_write_bytes(tmp_path / "out.txt", b"new")
    assert victim.read_text() == "keep"
    assert not (tmp_path / "out.txt").is_symlink()
    assert (tmp_path / "out.txt").read_bytes() == b"new"


def test_atomic_directory_appears_whole(tmp_path):
    target = tmp_path / "model"
    with atomic_directory(target) as tmp:
        assert not target.exists()
        (tmp / "a.txt").write_text("one")
    assert [p.name for p in target.iterdir()] == ["a.txt"]
    with pytest.raises(RuntimeError), atomic_directory(target) as tmp:
        (tmp / "b.txt").write_text("two")
        raise RuntimeError("killed")
    assert [p.name for p in target.iterdir()] == ["a.txt"]
    with atomic_directory(target) as tmp:
        (tmp / "b.txt").write_text("two")
    assert [p.name for p in target.iterdir()] == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
