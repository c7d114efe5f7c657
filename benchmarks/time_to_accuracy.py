"""Time for each training run of a finished workflow to reach a force error target.

Reads results/train/*/metrics.csv (per-epoch wall time and validation force RMSE) and
final_metrics.json, and prints frames/s, the wall time at the first epoch whose validation
force RMSE is at or below the target, and the speed-up over the anchor: MACE 0.3.16 (32
channels, max_ell 2, 45k parameters) on 4,000 frames of the same 100-atom argon and the same
2 cores reached 1.9 % of the force std after about 500 s (an external figure, not re-measured).

    python benchmarks/time_to_accuracy.py [--results results] [--target 0.02]
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

MACE_SECONDS_TO_2_PERCENT = 500.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results")
    parser.add_argument("--target", type=float, default=0.02, help="fraction of the force std")
    args = parser.parse_args()
    print(f"{'run':24s} {'frames/s':>9s} {'final val':>9s} {'s to target':>11s} "
          f"{'vs MACE':>8s}")
    for run in sorted(Path(args.results, "train").glob("*/metrics.csv")):
        rows = list(csv.DictReader(run.open()))
        final = json.loads((run.parent / "final_metrics.json").read_text())
        reached = [float(r["wall_s"]) for r in rows
                   if float(r["val_force_rmse_rel"]) <= args.target]
        seconds = f"{reached[0]:.1f}" if reached else "not reached"
        speedup = f"{MACE_SECONDS_TO_2_PERCENT / reached[0]:.0f}x" if reached else "-"
        print(f"{run.parent.name:24s} {final['frames_per_s']:9.0f} "
              f"{100 * final['val_force_rmse_rel']:8.2f}% {seconds:>11s} {speedup:>8s}")


if __name__ == "__main__":
    main()
