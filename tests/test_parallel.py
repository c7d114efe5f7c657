"""Data-parallel training: two devices follow the same loss trajectory as one.

XLA must be told how many host devices to make before JAX starts, so the training runs in a
fresh process with XLA_FLAGS=--xla_force_host_platform_device_count=2 (two CPU devices).
Real data: the tiny config simulated with OpenMM and split by `forcematch.dataset`. Each batch
is split over the devices and the gradients summed across them, so the sums run in another
order than on one device: the losses agree to float32 round-off, not bit for bit.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from precision import float32_atol

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "config" / "tiny.yaml"
# Relative tolerances, float32 round-off grown over 20 Adam steps: the gradient is a sum over a
# batch's 8 frames x 32 atoms x 3 force components, split over the devices (a relative
# tolerance: float32_atol of a unit scale, 5.3e-5). Measured: total and force loss, force
# metrics <= 8e-7; the energy terms 9e-6 (the centred energy loss subtracts nearly equal
# float32 energies, so its rounding is relatively larger): 1e-4, 30x the float32 round-off
# of that sum, eps * sqrt(8 * 32 * 3).
RTOL = float32_atol(1.0, n_terms=8 * 32 * 3)
RTOL_ENERGY = 1e-4

CHILD = textwrap.dedent("""
    import json, sys
    import jax
    from forcematch.data.sources import H5MDSource
    from forcematch.errors import ForcematchError
    from forcematch.io.h5md import read_h5md
    from forcematch.training import train

    dataset, out = sys.argv[1], sys.argv[2]
    assert jax.device_count() == 2, jax.devices()
    stats = json.load(open(f"{dataset}/stats.json"))["train"]

    def load(name):
        return read_h5md(f"{dataset}/{name}.h5")

    cfg = {"epochs": 4, "batch_size": 8, "val_frames": 16, "energy_weight": 0.1,
           "checkpoint_every_steps": 100}
    model = {"n_basis": 8, "hidden": [8, 8]}
    lines = {}
    for run, devices in (("two", None), ("one", 1)):  # None: all local devices
        lines[run] = []
        train(load("train"), load("val"), cfg, model, 0.55, f"{out}/{run}", stats=stats,
              devices=devices, progress=lines[run].append)
    with H5MDSource(f"{dataset}/train.h5") as tr, H5MDSource(f"{dataset}/val.h5") as va:
        lines["two_streamed"] = []
        train(tr, va, cfg, model, 0.55, f"{out}/two_streamed", stats=stats,
              progress=lines["two_streamed"].append)
    errors = []
    for bad, devices in (({"batch_size": 7}, None), ({}, 3)):
        try:
            train(load("train"), load("val"), dict(cfg, **bad), model, 0.55, f"{out}/bad",
                  stats=stats, devices=devices)
        except ForcematchError as exc:
            errors.append(str(exc))
    json.dump({"lines": lines, "errors": errors}, open(f"{out}/child.json", "w"))
""")


@pytest.fixture(scope="module")
def dataset(tiny_data) -> Path:
    return tiny_data.dataset


def read_rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_two_devices_follow_one_device(dataset, tmp_path):
    # Only this flag: XLA ignores flags after a token it cannot parse, and `forcematch train`
    # run in-process by other tests leaves such XLA_FLAGS behind (cli.limit_threads).
    env = os.environ | {"XLA_FLAGS": "--xla_force_host_platform_device_count=2",
                        "JAX_PLATFORMS": "cpu"}
    child = subprocess.run([sys.executable, "-c", CHILD, str(dataset), str(tmp_path)],
                           capture_output=True, text=True, env=env, timeout=600, check=False)
    assert child.returncode == 0, child.stderr[-4000:]
    report = json.loads((tmp_path / "child.json").read_text())

    # The runs really used 2 devices and 1 device.
    assert "batch 8 over 2 cpu devices" in report["lines"]["two"][0]
    assert "batch 8 over 1 cpu device," in report["lines"]["one"][0]
    finals = {run: json.loads((tmp_path / run / "final_metrics.json").read_text())
              for run in ("two", "one", "two_streamed")}
    assert [finals[r]["devices"] for r in ("two", "one", "two_streamed")] == [2, 1, 2]

    # Same loss trajectory and validation metrics, epoch by epoch, to float32 round-off.
    two, one = read_rows(tmp_path / "two"), read_rows(tmp_path / "one")
    assert len(two) == len(one) == 4
    for a, b in zip(two, one, strict=True):
        for key in a:
            if key != "wall_s":
                rtol = RTOL_ENERGY if "energy" in key else RTOL
                assert float(a[key]) == pytest.approx(float(b[key]), rel=rtol), key
    for key, value in finals["one"].items():
        if key.startswith("val_"):
            rtol = RTOL_ENERGY if "energy" in key else RTOL
            assert finals["two"][key] == pytest.approx(value, rel=rtol), key
    # Streaming composes with data parallelism: the same run, bit for bit.
    assert [r | {"wall_s": ""} for r in read_rows(tmp_path / "two_streamed")] == [
        r | {"wall_s": ""} for r in two]

    assert report["errors"] == [
        "train.batch_size: a batch of 7 frames cannot be split evenly over 2 devices for "
        "data-parallel training; use a multiple of 2 or fewer devices (--devices)",
        "--devices 3 but only 2 local JAX device(s) are available "
        "(cpu:0, cpu:1)",
    ]
