"""Training on synthetic Lennard-Jones data: learning, metrics, checkpoints, resume, failures."""

import csv
import errno
import itertools
import json
import math
import os

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from precision import float32_atol

from forcematch.config import schema, train_settings
from forcematch.data.frames import Frames
from forcematch.data.stats import statistics
from forcematch.errors import ForcematchError
from forcematch.io import atomic
from forcematch.io.atomic import OutputError
from forcematch.potential import load_model
from forcematch.training import train
from forcematch.training.optim import make_optimizer, make_schedule

BOX = 1.2  # nm, 32 atoms: close to liquid argon's density
CUTOFF = 0.55  # nm
SIGMA, EPS = 0.3405, 0.99607  # argon, nm and kJ/mol
N = 32


def lj_energy_forces(pos, box, r_on=0.45, r_c=CUTOFF):
    """Lennard-Jones with OpenMM's switch on [r_on, r_c]; O(N²) minimum image, numpy float64.

    pos [N,3] nm, box [3] nm -> (energy kJ/mol, forces [N,3] kJ/mol/nm).
    """
    d = pos[:, None, :] - pos[None, :, :]
    d -= box * np.round(d / box)
    r = np.linalg.norm(d, axis=-1)
    pair = ~np.eye(len(pos), dtype=bool) & (r < r_c)
    r = np.where(pair, r, 1.0)
    s6 = (SIGMA / r) ** 6
    u = 4 * EPS * (s6 * s6 - s6)
    du = 4 * EPS * (-12 * s6 * s6 + 6 * s6) / r
    x = np.clip((r - r_on) / (r_c - r_on), 0.0, 1.0)
    sw = 1 - 10 * x**3 + 15 * x**4 - 6 * x**5
    dsw = (-30 * x**2 + 60 * x**3 - 30 * x**4) / (r_c - r_on)
    phi = np.where(pair, u * sw, 0.0)
    dphi = np.where(pair, du * sw + u * dsw, 0.0)
    energy = 0.5 * phi.sum()
    forces = -np.sum((dphi / r)[:, :, None] * d, axis=1)
    return energy, forces


def lj_frames(n_frames: int, seed: int) -> Frames:
    """Jittered FCC frames of 32 atoms in a 1.2 nm box with their LJ energies and forces."""
    cell = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    lattice = (np.array(list(itertools.product(range(2), repeat=3)))[:, None] + cell).reshape(
        -1, 3) * BOX / 2
    rng = np.random.default_rng(seed)
    box = np.full(3, BOX)
    pos = (lattice + rng.normal(0, 0.025, (n_frames, N, 3))) % BOX
    ef = [lj_energy_forces(p, box) for p in pos]
    return Frames(pos, np.array([f for _, f in ef]), np.array([e for e, _ in ef]), box,
                  np.zeros(N, np.int32))


TRAIN_CFG = {"epochs": 24, "batch_size": 8, "learning_rate": 1e-2, "val_frames": 16,
             "checkpoint_every_steps": 5, "energy_weight": 0.01}
MODEL_CFG = {"n_basis": 12, "hidden": [16, 16]}


@pytest.fixture(scope="module")
def data():
    return lj_frames(64, 0), lj_frames(24, 1)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    lines = []
    metrics = train(*data, TRAIN_CFG, MODEL_CFG, CUTOFF, out, progress=lines.append)
    return out, metrics, lines


def read_metrics(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def params_of(directory):
    return flax.serialization.msgpack_restore((directory / "state.msgpack").read_bytes())["params"]


def test_reference_forces_are_minus_energy_gradient():
    frames = lj_frames(1, 5)
    pos, box = frames.positions_nm[0], frames.box_nm[0]
    h = 1e-6
    for atom, axis in ((0, 0), (7, 2), (31, 1)):
        p, m = pos.copy(), pos.copy()
        p[atom, axis] += h
        m[atom, axis] -= h
        fd = -(lj_energy_forces(p, box)[0] - lj_energy_forces(m, box)[0]) / (2 * h)
        assert abs(fd - frames.forces_kJ_mol_nm[0, atom, axis]) < 1e-5 * np.abs(
            frames.forces_kJ_mol_nm).max()


def test_dataset_stats(data):
    stats = statistics(data[0])
    f = data[0].forces_kJ_mol_nm
    assert stats["force_std_kJ_mol_nm"] == pytest.approx(f.std())
    assert stats["force_rms_kJ_mol_nm"] == pytest.approx(np.sqrt((f**2).mean()))
    energy = data[0].potential_energy_kJ_mol
    assert stats["energy_per_atom_mean_kJ_mol"] == pytest.approx(energy.mean() / N)
    assert stats["energy_per_atom_std_kJ_mol"] == pytest.approx(energy.std() / N)
    assert stats["n_frames"] == 64 and stats["n_atoms"] == N


def test_train_config_defaults_and_errors(tmp_path):
    cfg = train_settings({})
    options = schema()["$defs"]["train_options"]["properties"]
    assert dict(cfg) == {key: spec["default"] for key, spec in options.items()}
    with pytest.raises(TypeError):
        cfg["epochs"] = 3  # frozen: training receives a read-only, fully resolved mapping
    with pytest.raises(ForcematchError, match="known.*batch_size"):
        train_settings({"batchsize": 4})
    with pytest.raises(ForcematchError, match="learning_rate"):
        train_settings({"learning_rate": -1.0})
    with pytest.raises(ForcematchError, match="both 0"):
        train(lj_frames(8, 0), lj_frames(4, 1), {"energy_weight": 0, "force_weight": 0},
              MODEL_CFG, CUTOFF, tmp_path)


def test_training_reduces_force_error_and_writes_metrics(trained, data):
    out, metrics, lines = trained
    rows = read_metrics(out / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == list(range(1, 25))
    for r in rows:
        assert all(math.isfinite(float(v)) for v in r.values())
    # untrained: zero forces (the output layer starts at 0), so RMSE/std ≈ 1
    first, last = float(rows[0]["val_force_rmse_rel"]), float(rows[-1]["val_force_rmse_rel"])
    assert last < 0.3 and last < 0.5 * first  # reached about 0.1 when written
    assert float(rows[-1]["val_force_corr"]) > 0.95
    assert metrics["val_force_rmse_rel"] < 0.3
    assert json.loads((out / "final_metrics.json").read_text()) == metrics
    assert any(line.startswith("epoch 24/24") for line in lines)


def test_checkpoint_round_trip_predictions(trained, data):
    out, metrics, _ = trained
    val = data[1]
    model = load_model(out / "model")
    assert model.model_name == "pair" and model.model_config["hidden"] == [16, 16]
    assert model.train_config["epochs"] == 24 and model.n_atoms == N
    e, f = model.predict(val.positions_nm, val.box_nm)
    assert e.shape == (24,) and f.shape == (24, N, 3)
    # the metrics computed in training from in-memory parameters, reproduced from disk
    rmse = np.sqrt(np.mean((f - val.forces_kJ_mol_nm) ** 2))
    assert rmse == pytest.approx(metrics["val_force_rmse"], rel=1e-6)
    mae = np.mean(np.abs(e - val.potential_energy_kJ_mol)) / N
    assert mae == pytest.approx(metrics["val_energy_mae_per_atom"], rel=1e-4, abs=1e-7)
    # single-frame functions agree with the batched ones; the last checkpoint holds the same
    # parameters (the model differs only by the refitted energy shift)
    # float32 round-off of sums in another order: each atom's force over its N - 1 pairs, the
    # energy over all N (N - 1) / 2 pairs
    np.testing.assert_allclose(model.forces(val.positions_nm[3], val.box_nm[3]), f[3],
                               rtol=0, atol=float32_atol(f[3], n_terms=N - 1))
    np.testing.assert_allclose(float(model.energy(val.positions_nm[3], val.box_nm[3])), e[3],
                               rtol=0, atol=float32_atol(e[3], n_terms=N * (N - 1) // 2))
    last = load_model(out / "checkpoint")
    _, f2 = last.predict(val.positions_nm, val.box_nm)
    np.testing.assert_array_equal(f2, f)
    assert model.norm.energy_scale == last.norm.energy_scale


def test_float64_energy_matches_and_finite_differences(trained, data):
    out, _, _ = trained
    model = load_model(out / "model")
    pos, box = data[1].positions_nm[0], data[1].box_nm[0]
    with pytest.raises(ForcematchError, match="x64"):
        model.energy_float64(pos, box)
    with jax.enable_x64(True):
        e64 = model.energy_float64(pos, box)
        assert e64.dtype == jnp.float64
        # float32 round-off of the sum over all N(N-1)/2 pairs
        assert float(e64) == pytest.approx(float(model.energy(pos, box)),
                                           abs=float32_atol(e64, n_terms=N * (N - 1) // 2))
        grad = np.asarray(jax.grad(model.energy_float64)(jnp.asarray(pos), jnp.asarray(box)))
        h = 1e-5
        step = np.zeros_like(pos)
        step[4, 1] = h
        fd = (float(model.energy_float64(pos + step, box))
              - float(model.energy_float64(pos - step, box))) / (2 * h)
        assert fd == pytest.approx(grad[4, 1], rel=1e-6, abs=1e-9 * np.abs(grad).max())


class Killed(Exception):
    """Stands in for a job killed after the end-of-epoch checkpoint."""


def test_resume_after_kill_equals_uninterrupted_run(trained, data, tmp_path):
    out_full, metrics_full, _ = trained

    def kill_after_epoch_5(line):
        if line.startswith("epoch 5/"):
            raise Killed

    with pytest.raises(Killed):
        train(*data, TRAIN_CFG, MODEL_CFG, CUTOFF, tmp_path, progress=kill_after_epoch_5)
    assert not (tmp_path / "model").exists()
    assert not (tmp_path / "metrics.csv").exists()  # an output appears only when complete
    assert len(read_metrics(tmp_path / "checkpoint" / "metrics.csv")) == 5
    lines = []
    metrics = train(*data, TRAIN_CFG, MODEL_CFG, CUTOFF, tmp_path, progress=lines.append)
    assert lines[0].startswith("resuming") and "step 40/192" in lines[0]
    # bitwise equal parameters: same batches, same compiled step, same optimiser state on CPU
    full, resumed = params_of(out_full / "model"), params_of(tmp_path / "model")
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)
    assert metrics["val_force_rmse"] == metrics_full["val_force_rmse"]
    rows_full, rows = read_metrics(out_full / "metrics.csv"), read_metrics(tmp_path / "metrics.csv")
    assert len(rows) == 24
    for a, b in zip(rows_full, rows, strict=True):
        assert {k: v for k, v in a.items() if k != "wall_s"} == {
            k: v for k, v in b.items() if k != "wall_s"}


def test_resume_refuses_other_config(data, tmp_path):
    cfg = dict(TRAIN_CFG, epochs=1)
    train(*data, cfg, MODEL_CFG, CUTOFF, tmp_path, progress=lambda _: None)
    with pytest.raises(ForcematchError, match="model_config"):
        train(*data, cfg, {"n_basis": 8, "hidden": [16, 16]}, CUTOFF, tmp_path)
    with pytest.raises(ForcematchError, match="train_config.epochs"):
        train(*data, dict(cfg, epochs=2), MODEL_CFG, CUTOFF, tmp_path)
    with pytest.raises(ForcematchError, match="data"):
        train(lj_frames(64, 7), data[1], cfg, MODEL_CFG, CUTOFF, tmp_path)
    # a setting that does not change the parameters may differ
    metrics = train(*data, dict(cfg, checkpoint_every_steps=3), MODEL_CFG, CUTOFF, tmp_path,
                    progress=lambda _: None)
    assert math.isfinite(metrics["val_force_rmse_rel"])
    # The workflow's choice: a changed config starts afresh, keeping the old checkpoint aside.
    metrics = train(*data, dict(cfg, epochs=2), MODEL_CFG, CUTOFF, tmp_path,
                    restart_stale=True, progress=lambda _: None)
    assert metrics["epochs"] == 2
    assert (tmp_path / "checkpoint.stale" / "config.json").is_file()


def test_divergence_raises_naming_epoch_and_step(data, tmp_path):
    cfg = dict(TRAIN_CFG, epochs=2, learning_rate=1e6, grad_clip_norm=None,
               checkpoint_every_steps=100)
    with pytest.raises(ForcematchError, match=r"epoch 1, step \d+"):
        train(*data, cfg, MODEL_CFG, CUTOFF, tmp_path, progress=lambda _: None)
    assert not (tmp_path / "model").exists()


def test_non_finite_data_raises_naming_frame(data, tmp_path):
    bad = data[0].select(slice(None))  # a copy
    bad.forces_kJ_mol_nm[17, 3, 1] = np.inf
    with pytest.raises(ForcematchError, match="training data: non-finite forces in frame 17"):
        train(bad, data[1], TRAIN_CFG, MODEL_CFG, CUTOFF, tmp_path)


def test_n_train_subset_is_seeded(data, tmp_path):
    cfg = dict(TRAIN_CFG, epochs=1, n_train=20, batch_size=4)
    m1 = train(*data, cfg, MODEL_CFG, CUTOFF, tmp_path / "a", progress=lambda _: None)
    m2 = train(*data, cfg, MODEL_CFG, CUTOFF, tmp_path / "b", progress=lambda _: None)
    assert m1["n_train_frames"] == 20 and m1["steps"] == 5
    assert m1["val_force_rmse"] == m2["val_force_rmse"]
    with pytest.raises(ForcematchError, match="n_train"):
        train(*data, dict(cfg, n_train=65), MODEL_CFG, CUTOFF, tmp_path / "c")


def test_a_step_budget_trains_whole_epochs_and_evaluates_at_most_51_times(data, tmp_path,
                                                                            monkeypatch):
    """steps 105 on 16 frames in batches of 8 (2 steps/epoch): 53 epochs, 106 steps; rows every
    2nd epoch and the last. Killed after the checkpoint of epoch 7 (between rows), the rerun
    resumes the training-loss sums and writes the uninterrupted run's rows."""
    from forcematch.training import checkpoint

    cfg = dict(TRAIN_CFG, steps=105, epochs=1, n_train=16, checkpoint_every_steps=1000)
    full = train(*data, cfg, MODEL_CFG, CUTOFF, tmp_path / "full", progress=lambda _: None)
    assert (full["epochs"], full["steps"]) == (53, math.ceil(105 / 2) * 2)
    rows = read_metrics(tmp_path / "full" / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [*range(2, 53, 2), 53] and len(rows) <= 51
    assert [int(r["step"]) for r in rows] == [2 * int(r["epoch"]) for r in rows]
    save_state = checkpoint.save_state

    def killed_after_step_14(ckpt, state):
        save_state(ckpt, state)
        if state["step"] == 14:
            raise Killed

    monkeypatch.setattr(checkpoint, "save_state", killed_after_step_14)
    with pytest.raises(Killed):
        train(*data, cfg, MODEL_CFG, CUTOFF, tmp_path / "resumed", progress=lambda _: None)
    monkeypatch.undo()
    assert len(read_metrics(tmp_path / "resumed" / "checkpoint" / "metrics.csv")) == 3
    lines = []
    train(*data, cfg, MODEL_CFG, CUTOFF, tmp_path / "resumed", progress=lines.append)
    assert "step 14/106" in lines[0] and "2 steps/epoch x 53 epochs" in lines[1]
    resumed = read_metrics(tmp_path / "resumed" / "metrics.csv")
    for a, b in zip(rows, resumed, strict=True):
        assert {k: v for k, v in a.items() if k != "wall_s"} == {
            k: v for k, v in b.items() if k != "wall_s"}


def test_learning_rate_row_is_the_rate_of_the_epochs_last_step(trained):
    """metrics.csv's learning_rate is what the epoch's last optimiser step used."""
    out, _, _ = trained
    steps_per_epoch, total = 8, 192
    schedule = make_schedule(train_settings(TRAIN_CFG), total)
    for row in read_metrics(out / "metrics.csv"):
        last = int(row["step"]) - 1  # Optax's count before the epoch's last step
        assert float(row["learning_rate"]) == pytest.approx(float(schedule(last)), rel=1e-6)
    assert int(read_metrics(out / "metrics.csv")[0]["step"]) == steps_per_epoch
    # What Optax does with that count: Adam's first steps on a constant gradient move each
    # parameter by the rate of the step's count (m/sqrt(v) = 1), schedule(0), schedule(1), ...
    optimizer = make_optimizer(train_settings(dict(TRAIN_CFG, grad_clip_norm=None)), total)
    params = {"w": jnp.zeros(3)}
    state = optimizer.init(params)
    for count in range(3):
        updates, state = optimizer.update({"w": jnp.ones(3)}, state, params)
        assert float(-updates["w"][0]) == pytest.approx(float(schedule(count)), rel=1e-4)


@pytest.mark.parametrize("seed", [2**32, 2**63, 2**64])
def test_a_seed_jax_cannot_hold_is_refused(data, tmp_path, seed):
    with pytest.raises(ForcematchError, match=rf"train.seed = {seed} is outside 0..4294967295"):
        train(*data, dict(TRAIN_CFG, seed=seed), MODEL_CFG, CUTOFF, tmp_path)
    assert not (tmp_path / "checkpoint").exists()  # refused before anything was written


@pytest.mark.parametrize("error, hint", [
    (OSError(errno.ENOSPC, "No space left on device"),
     "free some disk space"),
    (PermissionError(errno.EACCES, "Permission denied"),
     "make the output directory writable or choose another --out-dir"),
])
def test_a_refused_write_keeps_the_checkpoint_and_says_what_to_do(data, tmp_path, monkeypatch,
                                                                   error, hint):
    """The disk fills (or the directory turns read-only) at the 4th checkpoint: one message
    naming the file, the 3rd checkpoint kept; a rerun resumes from it."""
    cfg = dict(TRAIN_CFG, epochs=3)
    saves = []
    original = atomic._new_temp_file  # where a full or read-only disk first refuses a write

    def failing(path):
        if path.name == "state.msgpack":
            saves.append(path)
            if len(saves) == 4:  # steps 5, 8, 13 saved; step 16 refused
                raise error
        return original(path)

    monkeypatch.setattr(atomic, "_new_temp_file", failing)
    with pytest.raises(OutputError) as refused:
        train(*data, cfg, MODEL_CFG, CUTOFF, tmp_path, progress=lambda _: None)
    message = str(refused.value)
    assert message.startswith(f"cannot write {tmp_path / 'checkpoint' / 'state.msgpack'}: ")
    assert f"{hint}, then rerun: training resumes from step 13 of 24" in message
    assert "\n" not in message
    monkeypatch.undo()
    lines = []
    train(*data, cfg, MODEL_CFG, CUTOFF, tmp_path, progress=lines.append)
    assert lines[0].startswith("resuming") and "step 13/24" in lines[0]


def damage_checkpoint(run, how):
    ckpt = run / "checkpoint"
    if how == "shape":
        state = flax.serialization.msgpack_restore((ckpt / "state.msgpack").read_bytes())
        leaf = state["params"]
        while "kernel" not in leaf:
            leaf = next(v for _, v in sorted(leaf.items()) if isinstance(v, dict))
        leaf["kernel"] = leaf["kernel"][:-1]
        (ckpt / "state.msgpack").write_bytes(flax.serialization.msgpack_serialize(state))
    elif how == "step":
        state = flax.serialization.msgpack_restore((ckpt / "state.msgpack").read_bytes())
        state["step"] = 10**6
        (ckpt / "state.msgpack").write_bytes(flax.serialization.msgpack_serialize(state))
    elif how == "metrics":
        (ckpt / "metrics.csv").write_text("epoch,step\nnot,a number\n")
    elif how == "config-fifo":
        (ckpt / "config.json").unlink()
        os.mkfifo(ckpt / "config.json")
    elif how == "truncated":
        data = (ckpt / "state.msgpack").read_bytes()
        (ckpt / "state.msgpack").write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("how, message", [
    ("shape", r"cannot restore checkpoint .*state.msgpack: \S+kernel has shape \(\d+, 16\) "
              r"where \(\d+, 16\) is needed; remove .*checkpoint to start afresh"),
    ("step", r"cannot restore checkpoint .*state.msgpack: step 1000000 is outside 0..8"),
    ("metrics", r"metrics.csv: damaged metrics file .*; remove .*checkpoint to start afresh"),
    ("config-fifo", r"cannot read checkpoint: .*config.json is a FIFO"),
    ("truncated", r"state.msgpack: not a readable msgpack state"),
])
def test_a_damaged_checkpoint_is_refused_by_name(data, tmp_path, how, message):
    cfg = dict(TRAIN_CFG, epochs=1)
    train(*data, cfg, MODEL_CFG, CUTOFF, tmp_path, progress=lambda _: None)
    damage_checkpoint(tmp_path, how)
    with pytest.raises(ForcematchError, match=message):
        train(*data, cfg, MODEL_CFG, CUTOFF, tmp_path, progress=lambda _: None)
