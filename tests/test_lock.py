"""One live trainer per checkpoint: two real processes, one refused, naming the other.

The failure this guards against: Snakemake's recovery recipe (`snakemake --unlock`, then
`--rerun-incomplete`) run while the first training job was still alive put two trainers on one
checkpoint; both exited 0 and metrics.csv held every epoch twice.
"""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from catalogue import config_with
from test_train import CUTOFF, MODEL_CFG, lj_frames

from forcematch import cli
from forcematch.errors import ForcematchError
from forcematch.training import train
from forcematch.training.lock import LOCK_NAME, CheckpointLock

HOST = socket.gethostname()
HOLDER = """
import sys
from forcematch.training.lock import CheckpointLock
with CheckpointLock(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.read()  # until the test closes the pipe (or the process is killed)
"""
FAST = {"epochs": 1, "batch_size": 8, "val_frames": 8}


@pytest.fixture(autouse=True)
def _keep_environment(keep_environment):
    """Every test here runs `forcematch` in-process (conftest.keep_environment)."""


def hold(ckpt: Path) -> subprocess.Popen:
    """Another process that holds the lock of `ckpt` until its stdin closes."""
    ckpt.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(ckpt)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def wait_for(condition, timeout: float = 600.0, what: str = "") -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_second_trainer_is_refused_naming_the_first(tmp_path):
    data = lj_frames(16, 0), lj_frames(8, 1)
    holder = hold(tmp_path / "checkpoint")
    try:
        message = (rf"{tmp_path / 'checkpoint'} is in use by another training run: pid "
                   rf"{holder.pid} on host {HOST} holds {tmp_path / 'checkpoint' / LOCK_NAME}")
        with pytest.raises(ForcematchError, match=message):
            train(*data, FAST, MODEL_CFG, CUTOFF, tmp_path, progress=lambda _: None)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]
        assert sorted(p.name for p in (tmp_path / "checkpoint").iterdir()) == [LOCK_NAME]
    finally:
        holder.stdin.close()
        assert holder.wait(timeout=60) == 0
    # The first process has ended: its lock went with it.
    metrics = train(*data, FAST, MODEL_CFG, CUTOFF, tmp_path, progress=lambda _: None)
    assert metrics["epochs"] == 1
    assert (tmp_path / "checkpoint" / LOCK_NAME).read_text() == ""  # released, name cleared


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    holder = hold(tmp_path)
    assert (tmp_path / LOCK_NAME).read_text() == f"{holder.pid}@{HOST}\n"
    with pytest.raises(ForcematchError, match=f"pid {holder.pid} on host"):
        CheckpointLock(tmp_path).acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=60)
    with CheckpointLock(tmp_path):  # the kernel released it: nothing to clean up by hand
        assert (tmp_path / LOCK_NAME).read_text() == f"{os.getpid()}@{HOST}\n"


def test_two_real_trainers_on_one_run(tiny_data, tmp_path, capsys):
    """`forcematch train` as a real process, and the same command again while it runs: the
    second is refused with exit status 2 naming the first, which ends normally; the metrics
    hold each epoch once. Once the first has ended, the same command resumes and finishes."""
    config = config_with(tmp_path, train={"epochs": 12})
    out = tmp_path / "run"
    argv = ["train", "--config", str(config), "--dataset-dir", str(tiny_data.dataset),
            "--out-dir", str(out)]
    exe = Path(sys.executable).parent / "forcematch"
    first = subprocess.Popen([str(exe), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    lock = out / "checkpoint" / LOCK_NAME
    try:
        wait_for(lambda: lock.is_file() and lock.read_text().startswith(f"{first.pid}@"),
                 what="the first trainer to take the lock")
        capsys.readouterr()
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert err.startswith("forcematch train: error: "), err
        assert f"is in use by another training run: pid {first.pid} on host {HOST}" in err
        _, stderr = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, stderr[-3000:]
    with open(out / "metrics.csv", newline="") as fh:
        epochs = [int(row["epoch"]) for row in csv.DictReader(fh)]
    assert epochs == list(range(1, 13))
    assert cli.main(argv) == 0  # the first has ended: the run is complete, nothing retrained
    assert "resuming from" in capsys.readouterr().out


def test_restart_stale_keeps_the_lock_in_place(tmp_path):
    data = lj_frames(16, 0), lj_frames(8, 1)
    train(*data, FAST, MODEL_CFG, CUTOFF, tmp_path, progress=lambda _: None)
    train(*data, dict(FAST, epochs=2), MODEL_CFG, CUTOFF, tmp_path, restart_stale=True,
          progress=lambda _: None)
    assert (tmp_path / "checkpoint" / LOCK_NAME).is_file()
    assert sorted(p.name for p in (tmp_path / "checkpoint.stale").iterdir()) == [
        "config.json", "metrics.csv", "state.msgpack"]
