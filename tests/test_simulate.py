"""OpenMM reference system: LJ physics against closed forms, seeds, short real replicas, and
the atomic writes its checkpoints and outputs go through."""

import json
import subprocess
import sys

import numpy as np
import openmm
import pytest

from forcematch.config import validate_config
from forcematch.errors import ForcematchError
from forcematch.io.atomic import (
    atomic_directory,
    atomic_open,
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
    write_json,
)
from forcematch.io.h5md import read_h5md, read_parameters
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


# Atomic writes (forcematch.io.provenance), which the checkpoint and every output on this side use.


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


# Failures on the OpenMM side: one line each, and only a blow-up discards committed work.

SHORT = {**CONFIG, "simulate": {**CONFIG["simulate"], "checkpoint_every_frames": 7}}


def partial_state(out) -> dict:
    return json.loads((out.parent / f".{out.name}.partial" / "state.json").read_text())


def fail_once_at(monkeypatch, frame: int, error: Exception) -> None:
    """Make frame `frame` of the next run raise `error` once, as a GPU or disk might."""
    from forcematch.reference import sampler

    original = sampler._ReplicaRun._sample_frame
    calls = {"n": 0}

    def sample_frame(self, i):
        if i == frame and calls["n"] == 0:
            calls["n"] += 1
            raise error
        return original(self, i)

    monkeypatch.setattr(sampler._ReplicaRun, "_sample_frame", sample_frame)


@pytest.fixture(scope="module")
def whole_short(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "whole.h5"
    run_replica(SHORT, 0, out, progress=None)
    return read_h5md(out)


def assert_same_frames(a, b):
    for name in ("positions_nm", "forces_kJ_mol_nm", "potential_energy_kJ_mol"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


@pytest.mark.parametrize("error, says", [
    (openmm.OpenMMException("Error launching CUDA kernel: CUDA_ERROR_LAUNCH_FAILED"),
     r"replica 0: OpenMM failed at MD step \d+ \(frame 16\): Error launching CUDA kernel"),
    (ForcematchError("cannot write x.npz: No space left on device; free some disk space"),
     r"replica 0: cannot write x.npz: No space left on device"),
])
def test_transient_errors_keep_the_checkpoint_and_a_rerun_continues(tmp_path, monkeypatch,
                                                                    whole_short, error, says):
    out = tmp_path / "r.h5"
    fail_once_at(monkeypatch, 16, error)
    with pytest.raises(ForcematchError, match=says + r".*; kept the checkpoint "
                       r".*\.r\.h5\.partial \(14 frames committed\): rerun to continue from it"):
        run_replica(SHORT, 0, out, progress=None)
    assert partial_state(out)["frames_done"] == 14
    run_replica(SHORT, 0, out, progress=None)
    assert_same_frames(read_h5md(out), whole_short)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.h5"]


def test_nan_from_openmm_is_a_blow_up_and_discards_the_checkpoint(tmp_path, monkeypatch):
    fail_once_at(monkeypatch, 16, openmm.OpenMMException(
        "Particle coordinate is NaN.  For more information, see https://github.com/openmm"))
    with pytest.raises(ForcematchError, match=r"replica 0: OpenMM failed at MD step \d+ "
                       r"\(frame 16\): Particle coordinate is NaN. For more") as info:
        run_replica(SHORT, 0, tmp_path / "r.h5", progress=None)
    assert "kept" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_no_space_while_checkpointing_keeps_the_last_commit(tmp_path, monkeypatch, whole_short):
    import errno

    from forcematch.reference import checkpoint

    original, calls = checkpoint.atomic_write_bytes, {"n": 0}

    def write(path, data):
        calls["n"] += 1
        if calls["n"] == 3:  # the commits after equilibration, frame 7, then frame 14
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(path, data)

    monkeypatch.setattr(checkpoint, "atomic_write_bytes", write)
    out = tmp_path / "r.h5"
    with pytest.raises(ForcematchError, match=r"^replica 0: cannot write .*openmm_00000014.chk: "
                       r"No space left on device; kept the checkpoint .* \(7 frames committed\)"):
        run_replica(SHORT, 0, out, progress=None)
    assert partial_state(out)["frames_done"] == 7
    monkeypatch.undo()
    run_replica(SHORT, 0, out, progress=None)
    assert_same_frames(read_h5md(out), whole_short)


def test_no_space_for_the_output_keeps_the_checkpoint(tmp_path, monkeypatch):
    from forcematch.reference import sampler

    def full(path, *args, **kwargs):
        raise ForcematchError(f"cannot write {path}: No space left on device")

    monkeypatch.setattr(sampler, "write_h5md", full)
    out = tmp_path / "r.h5"
    with pytest.raises(ForcematchError, match=r"^replica 0: cannot write .*r.h5: No space left "
                       r"on device; kept the checkpoint .* \(14 frames committed\): a rerun "
                       r"samples only the frames after it$"):
        run_replica(SHORT, 0, out, progress=None)
    assert partial_state(out)["frames_done"] == 14 and not out.exists()


@pytest.mark.parametrize("damage, says", [
    (lambda d: (d / "frames_00000000_00000007.npz").write_bytes(b"PK\x03\x04 garbage"),
     r"frames_00000000_00000007.npz: unreadable checkpoint chunk"),
    (lambda d: (d / "frames_00000007_00000014.npz").write_bytes(
        (d / "frames_00000007_00000014.npz").read_bytes()[:200]),
     r"frames_00000007_00000014.npz: unreadable checkpoint chunk"),
    (lambda d: np.savez(d / "frames_00000000_00000007.npz", positions_nm=np.zeros((7, 3, 3)),
                        forces_kJ_mol_nm=np.zeros((7, 3, 3)), energy_kJ_mol=np.zeros(7)),
     r"frames_00000000_00000007.npz: checkpoint chunk holds arrays of shapes \(7, 3, 3\)"),
    (lambda d: (d / "openmm_00000014.chk").write_bytes(b"not a checkpoint"),
     r"replica 0: OpenMM cannot load the checkpoint in .*\.r\.h5\.partial"),
])
def test_damaged_checkpoints_are_named_not_tracebacks(tmp_path, damage, says):
    out = tmp_path / "r.h5"
    run_replica(SHORT, 0, out, progress=None, stop_after_frames=14)
    damage(tmp_path / ".r.h5.partial")
    with pytest.raises(ForcematchError, match=says + ".*delete .* afresh"):
        run_replica(SHORT, 0, out, progress=None)
    assert partial_state(out)["frames_done"] == 14  # kept for the user to look at


def test_state_of_the_wrong_shape_is_ignored(tmp_path):
    out = tmp_path / "r.h5"
    run_replica(SHORT, 0, out, progress=None, stop_after_frames=7)
    state = tmp_path / ".r.h5.partial" / "state.json"
    state.write_text(json.dumps({**json.loads(state.read_text()), "frames_done": "7"}))
    lines: list[str] = []
    run_replica(SHORT, 0, out, progress=lines.append)
    assert any("ignoring unreadable partial replica" in line for line in lines)
    assert read_h5md(out).n_frames == 20


def test_seeds_beyond_openmm_are_refused():
    from forcematch.reference import SamplingSettings

    big = {**CONFIG, "simulate": {**CONFIG["simulate"], "seed": 2**31}}
    with pytest.raises(ForcematchError, match=r"simulate.seed = 2147483648 is outside "
                       r"0..2147483647: OpenMM seeds are 32-bit signed integers"):
        SamplingSettings.from_config(big)
    with pytest.raises(ForcematchError, match="simulate.seed = 2147483648 is outside"):
        replica_seed(2**31, 0)
    assert 1 <= replica_seed(2**31 - 1, 10**6) < 2**31 - 1  # derived seeds always fit
    sys_ = lj_system_from_config(CONFIG)
    with pytest.raises(ForcematchError, match="OpenMM seed 4294967296 is outside"):
        make_context(build_system(sys_), 100.0, 5.0, 1.0, 2**32)


def test_non_finite_parameters_are_refused_before_openmm_sees_them():
    from forcematch.reference import SamplingSettings

    for key in ("sigma_nm", "epsilon_kJ_mol", "mass_amu"):
        bad = {**CONFIG, "system": {**CONFIG["system"], key: float("nan")}}
        with pytest.raises(ForcematchError, match=f"system.{key} = nan must be a finite number"):
            lj_system_from_config(bad)
    bad = {**CONFIG, "simulate": {**CONFIG["simulate"], "timestep_fs": float("inf")}}
    with pytest.raises(ForcematchError, match="simulate.timestep_fs = inf must be a finite"):
        SamplingSettings.from_config(bad)


def test_minimiser_failure_is_one_line(tmp_path):
    """ε = 1e300 overflows the LJ energy: OpenMM's minimiser raises, forcematch names it."""
    huge = {**CONFIG, "system": {**CONFIG["system"], "epsilon_kJ_mol": 1e300}}
    with pytest.raises(ForcematchError, match=r"^replica 0: energy minimisation failed at MD "
                       r"step 0: .*(NaN|infinite)"):
        run_replica(huge, 0, tmp_path / "r.h5", progress=None)
    assert list(tmp_path.iterdir()) == []
