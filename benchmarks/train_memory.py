"""Peak memory of training, in memory vs streamed from HDF5, at 1x and 10x the frames.

Simulates one replica of the default system (100 argon atoms, OpenMM) for `--frames` + 200
frames: the first `--frames` are the 1x training set, the last 200 the validation set. The 10x
set repeats the 1x frames `--factor` times, each copy rigidly translated by a random vector
(positions wrapped into the box): forces and energies are unchanged by a translation, so every
label stays exact. Each case trains the default pair model for one epoch in a fresh process
(as `forcematch train` does: the H5MD files read whole into `Frames`, or opened as
`data.sources.H5MDSource` with `--stream-from-hdf5`) and reports its peak resident memory
(getrusage ru_maxrss: arrays of JAX's CPU backend live in the process, so they count). On Linux
a process starts with its parent's peak as its ru_maxrss (kept across fork and exec), so the
datasets are made in a subprocess too and this script's own process stays small (printed).

    python benchmarks/train_memory.py [--frames 2000] [--factor 10]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child(mode: str, train_path: str, val_path: str, out_dir: str) -> None:
    """One training run in this (fresh) process; prints a JSON line of its memory and time."""
    from forcematch.cli import limit_threads

    limit_threads(1)
    from forcematch.config import validate_config
    from forcematch.data.sources import H5MDSource
    from forcematch.io.h5md import read_h5md
    from forcematch.training import train

    config = validate_config({})
    cfg = config["train"] | {"epochs": 1}
    imported = peak_rss_mib()
    t0 = time.perf_counter()
    # Computed once beside the data, as the dataset stage writes stats.json.
    stats = json.loads(Path(train_path).with_suffix(".stats.json").read_text())
    if mode == "streamed":
        with H5MDSource(train_path) as tr, H5MDSource(val_path) as va:
            final = train(tr, va, cfg, {}, config["system"]["cutoff_nm"], out_dir,
                          stats=stats, progress=lambda _: None)
    else:
        splits = [read_h5md(path) for path in (train_path, val_path)]
        final = train(*splits, cfg, {}, config["system"]["cutoff_nm"], out_dir, stats=stats,
                      progress=lambda _: None)
    print(json.dumps({"imported_mib": imported, "peak_mib": peak_rss_mib(),
                      "wall_s": time.perf_counter() - t0,
                      "frames_per_s": final["frames_per_s"],
                      "val_force_rmse_kJ_mol_nm": final["val_force_rmse"]}))


def make_datasets(tmp: Path, frames: int, factor: int) -> None:
    """train_1x.h5, train_{factor}x.h5 and val.h5 in `tmp` (run in a subprocess)."""
    import numpy as np

    from forcematch.config import validate_config
    from forcematch.data.frames import Frames
    from forcematch.data.stats import statistics
    from forcematch.io.h5md import read_h5md, write_h5md
    from forcematch.reference import run_replica

    config = validate_config({"simulate": {"frames_per_replica": frames + 200,
                                           "equilibration_steps": 2000}})
    run_replica(config, 0, tmp / "replica.h5", progress=None)
    traj = read_h5md(tmp / "replica.h5")
    base, val = traj.select(slice(0, frames)), traj.select(slice(frames, None))
    rng = np.random.default_rng(0)
    copies = []
    for k in range(factor):
        shift = rng.uniform(0, 1, 3) * base.box_nm[0] if k else np.zeros(3)
        copies.append(Frames(
            positions_nm=(base.positions_nm + shift) % base.box_nm[:, None, :],
            forces_kJ_mol_nm=base.forces_kJ_mol_nm,
            potential_energy_kJ_mol=base.potential_energy_kJ_mol, box_nm=base.box_nm,
            step=base.step + k * (base.step[-1] + 1), time_ps=base.time_ps,
            species=base.species, masses_amu=base.masses_amu))
    big = Frames.concatenate(copies)
    for name, frames_ in (("train_1x", base), (f"train_{factor}x", big)):
        write_h5md(tmp / f"{name}.h5", frames_, {})
        (tmp / f"{name}.stats.json").write_text(json.dumps(statistics(frames_)))
    write_h5md(tmp / "val.h5", val, {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--factor", type=int, default=10)
    parser.add_argument("--child", nargs=4, metavar=("MODE", "TRAIN", "VAL", "OUT"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--make-data", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    if args.make_data:
        make_datasets(Path(args.make_data), args.frames, args.factor)
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run([sys.executable, __file__, "--make-data", str(tmp), "--frames",
                        str(args.frames), "--factor", str(args.factor)], check=True)
        sizes = ("1x", f"{args.factor}x")
        paths = {size: tmp / f"train_{size}.h5" for size in sizes} | {"val": tmp / "val.h5"}
        print(f"pair model (defaults), 100 atoms, one epoch; training sets of {args.frames} and "
              f"{args.frames * args.factor} frames, 200 validation frames")
        print(f"{'mode':9s} {'size':>5s} {'frames':>7s} {'RSS after imports':>18s} "
              f"{'peak RSS':>9s} {'peak - imports':>15s} {'wall':>7s} {'train frames/s':>15s}")
        peaks: dict[tuple[str, str], float] = {}
        for mode in ("memory", "streamed"):
            for size in sizes:
                out = tmp / f"run_{mode}_{size}"
                result = subprocess.run(
                    [sys.executable, __file__, "--child", mode, str(paths[size]),
                     str(paths["val"]), str(out)],
                    capture_output=True, text=True, check=True)
                r = json.loads(result.stdout.strip().splitlines()[-1])
                peaks[mode, size] = r["peak_mib"]
                frames = args.frames * (1 if size == "1x" else args.factor)
                print(f"{mode:9s} {size:>5s} {frames:7d} {r['imported_mib']:14.0f} MiB "
                      f"{r['peak_mib']:5.0f} MiB {r['peak_mib'] - r['imported_mib']:11.0f} MiB "
                      f"{r['wall_s']:6.1f}s {r['frames_per_s']:15.0f}", flush=True)
        for mode in ("memory", "streamed"):
            print(f"{mode}: peak RSS {sizes[1]} / {sizes[0]} = "
                  f"{peaks[mode, sizes[1]] / peaks[mode, sizes[0]]:.2f}")
        print(f"(this script's own peak RSS: {peak_rss_mib():.0f} MiB)")


if __name__ == "__main__":
    main()
