"""No run loses work, and the same config gives the same bits.

Kill-and-resume: a Snakemake job is killed with SIGKILL (Snakemake and the job together, as a
node failure or an out-of-time kill on a cluster does), the workflow is unlocked and rerun
with --rerun-incomplete, and the result must equal an uninterrupted run in another process,
bit for bit on the CPU.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import flax.serialization
import jax
import numpy as np
import pytest
from conftest import tiny_config
from test_workflow import ROOT, TINY, snakemake

from forcematch.io.h5md import read_h5md, read_parameters

ARRAYS = ("positions_nm", "forces_kJ_mol_nm", "potential_energy_kJ_mol", "box_nm", "step")
# Keys of final_metrics.json that measure the run rather than the model.
RUN_KEYS = ("wall_s", "train_s", "frames_per_s", "provenance")


def only_slice(directory: Path, pattern: str) -> Path:
    """The one config slice (content-addressed: `<name>-<hash>.json`) matching `pattern`."""
    found = sorted(directory.glob(pattern))
    assert len(found) == 1, found
    return found[0]


def env() -> dict:
    return os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def start_snakemake(workdir: Path, configfile: Path, *args: str) -> subprocess.Popen:
    """Snakemake in its own process group (so one killpg takes it and its jobs)."""
    log = open(workdir / "killed_run.log", "w")  # noqa: SIM115 - closed by the OS on kill
    return subprocess.Popen(
        [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
         "--directory", str(workdir), "--configfile", str(configfile), "--cores", "1", *args],
        stdout=log, stderr=subprocess.STDOUT, env=env(), start_new_session=True)


def kill_when(proc: subprocess.Popen, ready, timeout_s: float = 300.0) -> None:
    """SIGKILL the process group of `proc` as soon as `ready()` is true."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (status {proc.returncode}) before it could be killed")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("the run never reached the point to kill it at")
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def rerun(workdir: Path, configfile: Path, target: str) -> subprocess.CompletedProcess:
    """What a user does after a killed run: unlock, then rerun the incomplete job."""
    unlock = snakemake(workdir, "--unlock", configfile=configfile)
    assert unlock.returncode == 0, unlock.stderr[-3000:]
    result = snakemake(workdir, "--cores", "1", "--rerun-incomplete", target,
                       configfile=configfile)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def forcematch(*args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "forcematch.cli", *args], capture_output=True,
                            text=True, env=env(), check=False, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def assert_same_trajectory(a: Path, b: Path) -> None:
    ta, tb = read_h5md(a), read_h5md(b)
    for name in ARRAYS:
        np.testing.assert_array_equal(getattr(ta, name), getattr(tb, name), err_msg=name)


def params_of(model_dir: Path):
    return flax.serialization.msgpack_restore((model_dir / "state.msgpack").read_bytes())["params"]


def assert_same_training(a: Path, b: Path) -> None:
    """Same parameters (bitwise), final metrics and per-epoch metrics, wall times aside."""
    for x, y in zip(jax.tree.leaves(params_of(a / "model")), jax.tree.leaves(params_of(
            b / "model")), strict=True):
        np.testing.assert_array_equal(x, y)
    fa, fb = (json.loads((d / "final_metrics.json").read_text()) for d in (a, b))
    assert {k: v for k, v in fa.items() if k not in RUN_KEYS} == {
        k: v for k, v in fb.items() if k not in RUN_KEYS}
    rows_a, rows_b = ((d / "metrics.csv").read_text().splitlines() for d in (a, b))
    assert len(rows_a) == len(rows_b) > 2
    for ra, rb in zip(rows_a, rows_b, strict=True):
        assert ra.rsplit(",", 1)[0] == rb.rsplit(",", 1)[0]  # the last column is wall_s


@pytest.mark.slow
def test_simulate_killed_and_rerun_equals_uninterrupted(tmp_path):
    config = tiny_config(tmp_path, simulate={"frames_per_replica": 600,
                                             "steps_between_frames": 20,
                                             "checkpoint_every_frames": 50})
    target = "results/simulate/replica_0.h5"
    partial = tmp_path / "results" / "simulate" / ".replica_0.h5.partial" / "state.json"

    def two_chunks_saved():
        try:
            return json.loads(partial.read_text())["frames_done"] >= 100
        except (OSError, ValueError):
            return False

    kill_when(start_snakemake(tmp_path, config, target), two_chunks_saved)
    assert not (tmp_path / target).exists()
    result = rerun(tmp_path, config, target)
    log = (tmp_path / "results" / "logs" / "simulate" / "replica_0.log").read_text()
    assert "resuming from" in log, log
    assert not partial.parent.exists()  # removed once the output is complete
    resumed_at = read_parameters(tmp_path / target)["resumed_at_frames"]
    assert len(resumed_at) == 1 and resumed_at[0] >= 100, result.stdout

    # The same replica without interruption, in another process.
    stage = only_slice(tmp_path / "results" / "config", "simulate-*.json")
    forcematch("simulate", "--config", str(stage), "--replica", "0", "--out",
               str(tmp_path / "uninterrupted.h5"))
    assert read_parameters(tmp_path / "uninterrupted.h5")["resumed_at_frames"] == []
    assert_same_trajectory(tmp_path / target, tmp_path / "uninterrupted.h5")


@pytest.mark.slow
def test_train_killed_and_rerun_equals_uninterrupted(tmp_path):
    config = tiny_config(tmp_path, train={"epochs": 300, "checkpoint_every_steps": 2})
    dataset = snakemake(tmp_path, "--cores", "2", "results/dataset/train.h5", configfile=config)
    assert dataset.returncode == 0, dataset.stderr[-3000:]
    run = "pair-joint-nall"
    target = f"results/train/{run}/final_metrics.json"
    epochs_log = tmp_path / "results" / "train" / run / "checkpoint" / "metrics.csv"

    def some_epochs_done():
        try:
            return len(epochs_log.read_text().splitlines()) > 3
        except OSError:
            return False

    kill_when(start_snakemake(tmp_path, config, target), some_epochs_done)
    assert not (tmp_path / target).exists()
    assert not (tmp_path / "results" / "train" / run / "metrics.csv").exists()
    rerun(tmp_path, config, target)
    log = (tmp_path / "results" / "logs" / "train" / f"{run}.log").read_text()
    assert "resuming from" in log, log

    stage = only_slice(tmp_path / "results" / "config" / "train", "pair-joint-*.json")
    forcematch("train", "--config", str(stage), "--dataset-dir",
               str(tmp_path / "results" / "dataset"), "--out-dir", str(tmp_path / "uninterrupted"),
               "--model", "pair", "--loss", "joint", "--n-train", "all")
    assert_same_training(tmp_path / "results" / "train" / run, tmp_path / "uninterrupted")


def test_same_config_same_bits(tmp_path):
    """Two independent runs of simulate → dataset → train from one config, each in its own
    processes: bit-identical dataset arrays, parameters and training metrics."""
    config = tiny_config(tmp_path, train={"epochs": 2})
    for run in ("a", "b"):
        out = tmp_path / run
        replicas = [str(out / f"replica_{k}.h5") for k in range(3)]
        for k, path in enumerate(replicas):
            forcematch("simulate", "--config", str(config), "--replica", str(k), "--out", path)
        forcematch("dataset", "--config", str(config), "--inputs", *replicas, "--out-dir",
                   str(out / "dataset"))
        forcematch("train", "--config", str(config), "--dataset-dir", str(out / "dataset"),
                   "--out-dir", str(out / "train"))
    for split in ("train", "val", "test"):
        assert_same_trajectory(tmp_path / "a" / "dataset" / f"{split}.h5",
                               tmp_path / "b" / "dataset" / f"{split}.h5")
    assert_same_training(tmp_path / "a" / "train", tmp_path / "b" / "train")
    # Provenance: config hash, seeds, versions and commit recorded; identical but for the time.
    pa = read_parameters(tmp_path / "a" / "dataset" / "train.h5")["provenance"]
    pb = read_parameters(tmp_path / "b" / "dataset" / "train.h5")["provenance"]
    assert pa["config_hash"] == pb["config_hash"] and len(pa["config_hash"]) == 16
    assert pa["versions"]["numpy"] == np.__version__
    assert "git_commit" in pa and "created_utc" in pa
    final = json.loads((tmp_path / "a" / "train" / "final_metrics.json").read_text())
    assert final["provenance"]["seeds"] == {"train.seed": 0}
    assert final["provenance"]["inputs"]["dataset_config_hash"] == pa["config_hash"]


def test_nothing_on_a_load_path_can_run_code():
    """No pickle, eval or exec in the package; YAML only through safe_load or the BaseLoader
    (strings, lists and mappings only: how Snakemake reads --config); NumPy files only with
    allow_pickle=False."""
    source = Path(__file__).resolve().parents[1] / "src" / "forcematch"
    for path in source.rglob("*.py"):
        text = path.read_text()
        for banned in ("import pickle", "pickle.", "cloudpickle", "eval(", "exec(",
                       "allow_pickle=True", "yaml.unsafe_load", "marshal."):
            assert banned not in text, f"{path.name}: {banned}"
        for call, required in (("np.load(", "allow_pickle=False"),
                               ("yaml.load(", "Loader=yaml.BaseLoader")):
            for line in text.splitlines():
                if call in line:
                    assert required in line, f"{path.name}: {line.strip()}"


def test_a_partial_replica_holding_pickled_objects_is_refused(tmp_path):
    """A checkpoint chunk replaced by a pickled object array is not unpickled: the replica
    stops with a clear message instead of running the file's code."""
    from forcematch.config import load_config
    from forcematch.errors import ForcematchError
    from forcematch.reference import run_replica

    config = load_config(TINY)
    config["simulate"]["checkpoint_every_frames"] = 10
    out = tmp_path / "replica_0.h5"
    run_replica(config, 0, out, progress=None, stop_after_frames=20)
    partial = tmp_path / ".replica_0.h5.partial"
    chunk = sorted(partial.glob("frames_*.npz"))[0]
    np.savez(chunk, positions_nm=np.array([object()], dtype=object))
    with pytest.raises(ForcematchError, match=r"frames_00000000_00000010.npz: unreadable "
                                              r"checkpoint chunk .*allow_pickle=False"):
        run_replica(config, 0, out, progress=None)
    assert not out.exists()
