"""Throughput of `forcematch simulate` against a bare OpenMM loop on the same system.

Both run in this process, alternated, on the CPU platform with one thread (a Snakemake simulate
job's promise): the ratio is what matters on a noisy machine, not the absolute steps/s.

    python benchmarks/simulate_throughput.py [--frames 2000] [--stride 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import openmm

from forcematch.config import validate_config
from forcematch.reference import (
    build_system,
    lattice_positions_nm,
    lj_system_from_config,
    make_context,
    replica_seed,
    run_replica,
)


def bare_openmm(config: dict, frames: int, stride: int, read_state: bool) -> float:
    """Seconds for a minimise + `frames` x `stride` steps loop written directly against OpenMM."""
    sim = config["simulate"]
    lj = lj_system_from_config(config)
    seed = replica_seed(sim["seed"], 0)
    t0 = time.perf_counter()
    context = make_context(build_system(lj), config["system"]["temperature_K"],
                           sim["timestep_fs"], sim["friction_per_ps"], seed, "CPU", 1)
    context.setPositions(lattice_positions_nm(lj, np.random.default_rng(seed)))
    openmm.LocalEnergyMinimizer.minimize(context)
    context.setVelocitiesToTemperature(config["system"]["temperature_K"], seed)
    integrator = context.getIntegrator()
    for _ in range(frames):
        integrator.step(stride)
        if read_state:
            context.getState(getPositions=True, getForces=True, getEnergy=True,
                             enforcePeriodicBox=True)
    return time.perf_counter() - t0


def forcematch_replica(config: dict, out: Path) -> float:
    t0 = time.perf_counter()
    run_replica(config, 0, out, threads=1, platform="CPU", progress=None)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--stride", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    config = validate_config({"simulate": {"frames_per_replica": args.frames,
                                           "steps_between_frames": args.stride,
                                           "equilibration_steps": 0}})
    steps = args.frames * args.stride
    times = {"bare step loop": [], "bare loop + getState": [], "forcematch simulate": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            times["bare step loop"].append(bare_openmm(config, args.frames, args.stride, False))
            times["bare loop + getState"].append(
                bare_openmm(config, args.frames, args.stride, True))
            times["forcematch simulate"].append(forcematch_replica(config, Path(tmp) / "r.h5"))
    print(f"100 atoms, CPU platform, 1 thread, {args.frames} frames x {args.stride} steps "
          f"= {steps} steps; median of {args.repeats}")
    base = statistics.median(times["bare step loop"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:22s} {steps / median:8.0f} steps/s   throughput ratio vs bare step loop "
              f"{base / median:.3f}")


if __name__ == "__main__":
    main()
