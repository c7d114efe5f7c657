"""The study behind "my force-only training collapses to zero forces — why?", run on the
seed's own model: JAX MD's graph network (`models.graph_network`) with the recipe of JAX MD's
`neural_networks.ipynb` (the config's `train_by_model.graph_network`: raw output in eV, loss
on raw total energies in eV plus per-frame summed squared force errors in (eV/Å)², Adam 10⁻³
after global-norm clipping at 1, batch 128, 20 epochs).

Under a mean-squared force loss the best rescaling of predicted forces that correlate with the
labels only by ρ is ρ times the label spread, so every run logs, per epoch, the spread ratio
std(F̂)/std(F) and the correlation (metrics.csv): a collapse shows as both ≪ 1. Each run also
keeps the checks before training (`forcematch.validation.preflight`: neighbours within the
cutoff, the labels' sign against the energies, the energy and force gradient norms at
initialisation).

Runs (`RUNS`), all on the same training frames and budget (`diagnose` in the config):
- the graph network with the notebook's joint loss, force-only, and three ablations of the
  joint loss (energy weight 10⁻³; the 2020 notebook's output × std(E) + mean(E); JAX MD 0.2.29's
  initialisers, whose forces start small);
- the graph network at the notebook's own 3 Å cutoff: no argon pair within it, refused before
  training (forces are exactly zero under any loss);
- the graph network's joint loss checked but not trained: the energy and force gradient norms
  at initialisation, the cheap evidence of the default experiment (config/config.yaml), whose
  graph-network training is config/collapse.yaml's;
- the `pair` model force-only: the invariant, smooth reference;
- force labels of the wrong sign, joint and force-only;
- a coarse-grained case: every second atom integrated out, the labels the kept atoms' full
  forces, so the best model reproduces the mean force: spread = correlation < 1, correctly.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from forcematch.config import config_hash, stage_config
from forcematch.config.sweep import run_config
from forcematch.data.frames import Frames
from forcematch.data.stats import statistics
from forcematch.io.atomic import write_json
from forcematch.io.h5md import read_h5md
from forcematch.io.provenance import provenance
from forcematch.metrics import accuracy


@dataclasses.dataclass(frozen=True)
class Run:
    """One diagnostic run: a model family and loss as in the sweep (`sweep.run_config`), the
    labels it is given, and what it changes on top of the config."""

    model: str
    loss: str
    what: str
    labels: str = "reference"  # "reference", "flipped" (F = +dE/dx) or "decimated"
    train: dict = dataclasses.field(default_factory=dict)  # train settings overridden
    model_options: dict = dataclasses.field(default_factory=dict)  # model options overridden
    trained: bool = True  # False: the checks before training only


RUNS = {
    "graph_network-joint": Run(
        "graph_network", "joint", "JAX MD graph network, notebook recipe, joint loss"),
    "graph_network-force": Run(
        "graph_network", "force", "JAX MD graph network, notebook recipe, force-only"),
    "graph_network-joint-w1e-3": Run(
        "graph_network", "joint", "as joint, energy weight 1e-3",
        train={"energy_weight": 1e-3}),
    "graph_network-joint-energy_std": Run(
        "graph_network", "joint", "as joint, output x std(E) + mean(E) (2020 notebook)",
        train={"output_scale": "energy_std"}),
    "graph_network-joint-nnx": Run(
        "graph_network", "joint", "as joint, JAX MD 0.2.29's NNX initialisers",
        model_options={"initialisation": "jax_md_nnx"}),
    "graph_network-joint-checks": Run(
        "graph_network", "joint", "notebook recipe, joint loss: the checks before training only",
        trained=False),
    "graph_network-force-3A": Run(
        "graph_network", "force", "the notebook's 3 Å cutoff", model_options={"cutoff_nm": 0.3},
        trained=False),
    "pair-force": Run("pair", "force", "pair model (invariant, smooth cutoff), force-only"),
    "pair-joint-flipped": Run("pair", "joint", "pair, joint (energy weight 1), labels +dE/dx",
                              labels="flipped", train={"energy_weight": 1.0}),
    "pair-force-flipped": Run("pair", "force", "pair, force-only, labels +dE/dx",
                              labels="flipped"),
    "pair-force-decimated": Run("pair", "force",
                                "pair, force-only, every second atom integrated out",
                                labels="decimated"),
}


def relabel(frames: Frames, labels: str) -> Frames:
    """`frames` as a run sees them: unchanged, forces of the wrong sign, or every second atom
    kept with its full force (energies stay those of the whole system)."""
    if labels == "reference":
        return frames
    if labels == "flipped":
        return dataclasses.replace(frames, forces_kJ_mol_nm=-frames.forces_kJ_mol_nm)
    if labels == "decimated":
        kept = slice(0, None, 2)
        velocities = frames.velocities_nm_ps
        return dataclasses.replace(
            frames, positions_nm=frames.positions_nm[:, kept],
            forces_kJ_mol_nm=frames.forces_kJ_mol_nm[:, kept], species=frames.species[kept],
            masses_amu=frames.masses_amu[kept],
            velocities_nm_ps=None if velocities is None else velocities[:, kept])
    raise ValueError(f"unknown labels {labels!r}")


def _settings(config: dict, run: Run, n_train: int) -> tuple[dict, dict]:
    """(train settings, model options) of `run`: the sweep's run config, then its changes."""
    cfg = run_config(config, run.model, run.loss, n_train)
    train = cfg["train"] | {"val_frames": config["diagnose"]["val_frames"]} | run.train
    return train, cfg["model"][run.model] | run.model_options


def _train_run(config: dict, name: str, splits: dict[str, Frames], stats: dict, n_train: int,
               out_dir: Path, progress: Callable[[str], None]) -> dict:
    """Check and (unless `trained` is False) train run `name`; returns its preflight report."""
    from forcematch.training import train
    from forcematch.training.run import check_training

    run = RUNS[name]
    train_cfg, model_cfg = _settings(config, run, n_train)
    budget = (f"{train_cfg['epochs']} epochs" if train_cfg.get("steps") is None else
              f"{train_cfg['steps']} steps (at most {train_cfg['max_epochs']} epochs)")
    progress(f"{name}: {run.what}; {n_train} frames, {budget}")
    data = [relabel(splits[s], run.labels) for s in ("train", "val")]
    if run.labels == "decimated":
        stats = statistics(data[0])
    cutoff = config["system"]["cutoff_nm"]
    if not run.trained:
        return check_training(*data, train_cfg, model_cfg, cutoff, stats=stats,
                              progress=progress)
    train(*data, train_cfg, model_cfg, cutoff, out_dir / name, stats=stats,
          restart_stale=True, progress=progress, preflight="warn")
    return json.loads((out_dir / name / "preflight.json").read_text())


def _test_result(name: str, model_dir: Path, test: Frames) -> dict:
    """What the trained run `name` predicts on the test frames."""
    from forcematch.potential import load_model

    energy_pred, forces_pred = load_model(model_dir).predict(test.positions_nm, test.box_nm)
    true = accuracy(test.potential_energy_kJ_mol, energy_pred, test.forces_kJ_mol_nm,
                    forces_pred)
    energy_corr = np.corrcoef(test.potential_energy_kJ_mol, energy_pred)[0, 1]
    return {"force_rmse_rel": true["force_rmse_rel"],
            "force_std_ratio": true["force_std_ratio"], "force_corr": true["force_corr"],
            "energy_corr": float(energy_corr) if np.isfinite(energy_corr) else None}


def _validation_subset(val: Frames, n_frames: int, seed: int) -> Frames:
    """The `n_frames` validation frames every run evaluates, per epoch and at the end: the
    subset training itself would draw (`seeded_subset`, tag 1), so a run's final validation
    costs one epoch's, not the whole split's (the study's headline is the test frames)."""
    from forcematch.training.batches import seeded_subset

    if n_frames >= val.n_frames:
        return val
    return val.select(seeded_subset(seed, 1, val.n_frames, n_frames))


def collapse_study(
    config: dict[str, Any],
    dataset_dir: str | Path,
    out_dir: str | Path,
    *,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the entries of `RUNS` that `diagnose.runs` names (default: all); write
    `summary.json` and one directory per trained run."""
    dcfg = config["diagnose"]
    out_dir, dataset_dir = Path(out_dir), Path(dataset_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    splits = {name: read_h5md(dataset_dir / f"{name}.h5") for name in ("train", "val", "test")}
    splits["val"] = _validation_subset(splits["val"], dcfg["val_frames"], config["train"]["seed"])
    stats = json.loads((dataset_dir / "stats.json").read_text())["train"]
    test = splits["test"].select(slice(0, min(dcfg["test_frames"], splits["test"].n_frames)))
    n_train = min(dcfg["n_train"], splits["train"].n_frames)
    summary: dict[str, Any] = {"n_train": n_train, "runs": {}}
    for name in dcfg["runs"] or RUNS:
        run = RUNS[name]
        checks = _train_run(config, name, splits, stats, n_train, out_dir, progress)
        result = {"what": run.what, "model": run.model, "loss": run.loss,
                  "labels": run.labels, "trained": run.trained, "checks": checks}
        if run.trained:
            result |= _test_result(name, out_dir / name / "model", relabel(test, run.labels))
            result["epochs"] = json.loads((out_dir / name / "final_metrics.json")
                                          .read_text())["epochs"]
            progress(f"{name}: test force RMSE {100 * result['force_rmse_rel']:.2f} % of std, "
                     f"spread ratio {result['force_std_ratio']:.3f}, correlation "
                     f"{result['force_corr']:.3f}")
        summary["runs"][name] = result
    summary["provenance"] = provenance("diagnose", config_hash(stage_config(config, "diagnose")),
                                       seeds={"train.seed": config["train"]["seed"]})
    write_json(out_dir / "summary.json", summary)
    return summary
