"""The noise floor of decimated argon's CG force labels, and the MS-CG spline against the exact
mean force (issue: CG mean force; the numbers the issue measured independently).

Keep every second atom of the default data; the labels are the kept atoms' full forces. For
held-out test frames the exact mean force is sampled by the CG stage's sampler
(`forcematch.cg.run.sample_frame`: the kept atoms massless, the other 50 by Langevin at 100 K,
in independent runs), the MS-CG spline is fitted to the decimated
training split (force loss), and its loss splits into noise floor and error (`cg.split`).

    python benchmarks/cg_noise_floor.py results/dataset --frames 40 --runs 2 --sample-ps 20

Needs a dataset of the default config (`snakemake --cores 2 results/dataset/stats.json`).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from forcematch.cg.mapping import decimation, map_frames
from forcematch.cg.run import sample_frame
from forcematch.cg.split import split
from forcematch.config import load_config
from forcematch.data.stats import statistics
from forcematch.fit import fit
from forcematch.io.h5md import read_h5md
from forcematch.potential import load_model
from forcematch.reference.system import build_system, lj_system_from_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--runs", type=int, default=2,
                        help="independent runs per frame (cg_mean_force.runs)")
    parser.add_argument("--sample-ps", type=float, default=20.0,
                        help="sampling per frame, all runs together (cg_mean_force.sample_ps)")
    parser.add_argument("--equilibration-ps", type=float, default=10.0,
                        help="relaxation of the free atoms about the fixed ones, per run")
    parser.add_argument("--cutoff-nm", type=float, default=0.85)
    parser.add_argument("--knot-spacing-nm", type=float, default=0.005)
    parser.add_argument("--models", nargs="+", default=["spline"],
                        help="families fitted to the decimated training split (force loss; the "
                             "networks with the default experiment's train_by_model steps)")
    args = parser.parse_args()

    # The CG stage's own sampler (`cg.run.sample_frame`) with these settings laid over the
    # config's cg_mean_force section, as `--config` would lay them.
    config = load_config(args.config, {"cg_mean_force": {
        "runs": args.runs, "sample_ps": args.sample_ps, "equilibration_ps": args.equilibration_ps}})
    lj = lj_system_from_config(config)
    mapping = decimation(lj.n_atoms, np.arange(0, lj.n_atoms, 2))
    test = read_h5md(args.dataset / "test.h5")
    ids = np.linspace(0, test.n_frames - 1, args.frames).round().astype(int)
    frames = test.select(ids)
    system = build_system(lj)
    t0 = time.perf_counter()
    sampled = [sample_frame(system, frames.positions_nm[k], frames.box_nm[k], mapping, config,
                            frame=k, threads=1) for k in range(frames.n_frames)]
    sample_s = time.perf_counter() - t0
    labels = map_frames(mapping, frames)
    mean_force, mean_se = (np.stack([frame[k] for frame in sampled]) for k in (0, 1))

    train = map_frames(mapping, read_h5md(args.dataset / "train.h5"))
    val = map_frames(mapping, read_h5md(args.dataset / "val.h5"))
    variance = float(labels.forces_kJ_mol_nm.var())
    print(json.dumps({
        "mean_force_variance_rel": float(mean_force.var()) / variance,
        "label_std_kJ_mol_nm": float(np.sqrt(variance)), "frames": int(frames.n_frames),
        "runs": args.runs, "sample_ps": args.sample_ps,
        "equilibration_ps_per_run": args.equilibration_ps, "sample_s": sample_s}, indent=2))
    for family in args.models:
        t0 = time.perf_counter()
        predicted = _fitted_forces(family, config, train, val, labels, args)
        result = split(labels.forces_kJ_mol_nm, mean_force, mean_se, predicted)
        print(json.dumps({"model": family, "fit_s": time.perf_counter() - t0} | result,
                         indent=2))


def _fitted_forces(family: str, config: dict, train, val, labels, args) -> np.ndarray:
    """Forces [T,S,3] on the CG frames `labels` of the family fitted to the CG training split
    with force loss (spline: `--knot-spacing-nm`; networks: the default's settings)."""
    settings = (config["train"] | config["train_by_model"].get(family, {})
                | {"model": family, "energy_weight": 0.0, "force_weight": 1.0,
                   "stress_weight": 0.0})
    options = ({"knot_spacing_nm": args.knot_spacing_nm} if family == "spline"
               else config["model"][family])
    with tempfile.TemporaryDirectory() as out:
        fit(train, val, settings, options, args.cutoff_nm, Path(out),
            stats=statistics(train), progress=lambda _: None)
        return load_model(Path(out) / "model").predict(labels.positions_nm, labels.box_nm)[1]


if __name__ == "__main__":
    main()
