"""The linear spline fit (MS-CG, `spline`) against the networks at equal training frames.

For each training-set size of `--sizes` (a seeded subset of the dataset's training frames, as
`--n-train` takes it) and each family of `--models`, one force-only run of `forcematch.training.
train` with the run settings of `--config` (`sweep.run_config`: the family's step budget,
batch, learning rate; the spline's knots and penalty), in this process, one after another, on
`--threads` threads. It prints the held-out validation replica's force RMSE (% of the force
std, all its frames) and the fit or training time (`train_s`: seconds inside the solve or the
optimiser steps, no compilation, evaluation or I/O), and for each network its time and error
as ratios to the first of `--models` (the spline by default) at the same size. The machine's
noise cancels in the ratios only roughly (runs are minutes apart): read the times as ±30 %.

    python benchmarks/spline_baseline.py --dataset-dir results/dataset
        [--config config/config.yaml] [--sizes 100 300 1000 all] [--models spline pair]
        [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from forcematch.cli import limit_threads

CONFIG = Path(__file__).resolve().parents[1] / "config" / "config.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset-dir", type=Path, required=True)
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--sizes", nargs="+", default=["100", "300", "1000", "all"])
    parser.add_argument("--models", nargs="+", default=["spline", "pair"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    limit_threads(args.threads)
    from forcematch.config import load_config
    from forcematch.config.sweep import run_config
    from forcematch.io.h5md import read_h5md
    from forcematch.training import train

    config = load_config(args.config)
    train_frames, val = (read_h5md(args.dataset_dir / f"{s}.h5") for s in ("train", "val"))
    stats = json.loads((args.dataset_dir / "stats.json").read_text())["train"]
    print(f"{'frames':>6s} {'model':8s} {'val force RMSE':>15s} {'train_s':>8s} "
          f"{'time / spline':>13s} {'error / spline':>14s}")
    for size in args.sizes:
        base = None
        for model in args.models:
            run = run_config(config, model, "force", size)
            with tempfile.TemporaryDirectory() as out:
                final = train(train_frames, val, run["train"], run["model"][model],
                              config["system"]["cutoff_nm"], out, stats=stats,
                              progress=lambda _: None)
            error, seconds = final["val_force_rmse_rel"], final["train_s"]
            base = base or (error, seconds)
            print(f"{final['n_train_frames']:6d} {model:8s} {100 * error:14.5f}% "
                  f"{seconds:8.2f} {seconds / base[1]:12.1f}x {error / base[0]:13.0f}x",
                  flush=True)


if __name__ == "__main__":
    main()
