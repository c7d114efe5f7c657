"""Training throughput (frames/s inside the jitted training step) of the pair model.

Simulates one short replica of the default system, then trains each model size for one epoch in
this process, with the loss through the pair table (`train.pair_table_dr_nm`, the default) and
with the network at every pair slot (null), and prints frames/s with the ratio to the first
(baseline) configuration, plus the frames/s of plain inference (energies and forces) of the
same model (always the network itself).

    python benchmarks/train_throughput.py [--frames 1200] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from forcematch.config import validate_config
from forcematch.io.h5md import read_h5md
from forcematch.potential import load_model
from forcematch.reference import run_replica
from forcematch.training import train

SIZES = {"hidden [16, 16]": [16, 16], "hidden [32, 32]": [32, 32], "hidden [64, 64]": [64, 64]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1200)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    config = validate_config({"simulate": {"frames_per_replica": args.frames + 200,
                                           "equilibration_steps": 2000}})
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run_replica(config, 0, tmp / "replica.h5", progress=None)
        data = read_h5md(tmp / "replica.h5")
        train_data, val_data = data.select(slice(0, args.frames)), data.select(slice(-200, None))
        print(f"{args.frames} frames of 100 atoms, batch {args.batch_size}, one epoch, "
              f"force + energy loss")
        baseline = None
        runs = [(f"{label}, {loss}", hidden, dr_nm) for label, hidden in SIZES.items()
                for loss, dr_nm in (("network", None), ("table", 0.001))]
        for label, hidden, dr_nm in runs:
            out = tmp / label.replace(" ", "_").replace(",", "")
            final = train(train_data, val_data,
                          config["train"] | {"epochs": 1, "batch_size": args.batch_size,
                                             "val_frames": 64, "pair_table_dr_nm": dr_nm},
                          config["model"]["pair"] | {"hidden": hidden},
                          config["system"]["cutoff_nm"], out, progress=lambda _: None)
            model = load_model(out / "model")
            model.predict(val_data.positions_nm[:64], val_data.box_nm[:64])  # compile
            t0 = time.perf_counter()
            model.predict(train_data.positions_nm, train_data.box_nm)
            inference = args.frames / (time.perf_counter() - t0)
            baseline = baseline or final["frames_per_s"]
            print(f"  pair {label:25s} train {final['frames_per_s']:7.0f} frames/s "
                  f"(x{final['frames_per_s'] / baseline:.2f} vs first)   "
                  f"inference {inference:7.0f} frames/s   "
                  f"val force RMSE {100 * final['val_force_rmse_rel']:.2f} % after 1 epoch")


if __name__ == "__main__":
    main()
