"""Prediction over many frames (`Potential.predict`): frames per jitted call, and what large
calls cost in page faults.

The config's liquid (`--config`, default config/config.yaml; melted from the lattice by
OpenMM as `md_speed.py` does) gives `--frames` frames 100 fs apart (OpenMM NVT). Each family of
`--models`, with initialised parameters (prediction cost does not depend on their values),
predicts energies and forces of all frames in calls of `--chunks` frames each and of the
default (`potential.eval_chunk`: EVAL_PAIR_SLOTS pair slots per call), each size compiled once
and then timed `--repeats` times, alternated. Reported per size: wall seconds (median), the
ratio to the default, and the process's user and system CPU seconds and minor page faults per
repeat (`resource.getrusage`).

    python benchmarks/eval_chunk.py --threads 1
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from pathlib import Path

import numpy as np
from md_speed import CONFIG, NO_LIMITS, lj_at, make_potential, melted_start

from forcematch.cli import limit_threads
from forcematch.config import load_config


def liquid_frames(lj, n_frames: int, threads: int, md: dict, temperature_K: float,
                  seed: int) -> np.ndarray:
    """positions [n_frames, N, 3] nm: OpenMM NVT from the melted liquid, every 20 steps."""
    from forcematch.md.reference import OpenMMEngine

    positions, velocities, _ = melted_start(lj, threads, md, temperature_K, seed)
    dt_fs, every = md["timesteps_fs"][0], 20
    segment = OpenMMEngine(lj, "CPU", threads).run(
        "nvt", positions, velocities, temperature_K, dt_fs, n_frames * every, every,
        seed + 2, 1.0, NO_LIMITS)
    return segment.positions_nm[1:]


def timed(potential, positions, box, chunk: int | None) -> tuple[float, float, float, int]:
    """(wall s, user s, system s, minor page faults) of one `predict` over all frames."""
    before, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    potential.predict(positions, box, batch_size=chunk)
    wall, after = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    return (wall, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime,
            after.ru_minflt - before.ru_minflt)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--models", nargs="+", default=["pair", "atomic", "mpnn"])
    parser.add_argument("--chunks", nargs="+", type=int, default=[64, 32, 16, 8, 4])
    parser.add_argument("--frames", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    limit_threads(args.threads)
    from forcematch.potential import eval_chunk
    from forcematch.reference.system import lj_system_from_config

    config = load_config(args.config)
    lj = lj_at(lj_system_from_config(config), config["system"]["n_atoms"],
               config["system"]["density_g_cm3"])
    temperature_K = config["system"]["temperature_K"]
    positions = liquid_frames(lj, args.frames, args.threads, config["md"], temperature_K,
                              config["simulate"]["seed"])
    box = np.full(3, lj.box_nm)
    print(f"{args.frames} frames of {lj.n_atoms} atoms; --threads {args.threads}")
    print(f"{'model':8s} {'frames/call':>11s} {'wall s':>7s} {'ratio':>6s} {'user s':>7s} "
          f"{'sys s':>6s} {'faults':>9s}")
    for name in args.models:
        potential = make_potential(name, lj, positions[0], config.get("model", {}).get(name))
        default = eval_chunk(potential.capacity, args.frames)
        sizes = [None] + [c for c in args.chunks if c != default]
        for chunk in sizes:  # compile each size once
            timed(potential, positions, box, chunk)
        runs = [[timed(potential, positions, box, chunk) for chunk in sizes]
                for _ in range(args.repeats)]
        per_size = {chunk: [run[i] for run in runs] for i, chunk in enumerate(sizes)}
        base = statistics.median(r[0] for r in per_size[None])
        for chunk in sizes:
            rows = per_size[chunk]
            wall = statistics.median(r[0] for r in rows)
            label = f"{default} (default)" if chunk is None else str(chunk)
            print(f"{name:8s} {label:>11s} {wall:7.3f} {wall / base:6.2f} "
                  f"{statistics.median(r[1] for r in rows):7.3f} "
                  f"{statistics.median(r[2] for r in rows):6.3f} "
                  f"{statistics.median(r[3] for r in rows):9.0f}")


if __name__ == "__main__":
    main()
