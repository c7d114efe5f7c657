"""Diagnostic training runs that answer "my force-only training collapses to zero forces — why?".

Under a mean-squared force loss, the best rescaling of predicted forces that correlate with the
labels only by ρ is ρ times the label spread: a model that cannot fit the forces shrinks them
towards their mean, zero. Every run here logs, per epoch, the ratio of predicted to true force
spread and their correlation (metrics.csv), so the collapse shows as ratio ≈ correlation ≪ 1.

Runs, all on the same training subset and budget:
- `pair-force`: an invariant pair sum with a smooth cutoff, force-only: no collapse.
- `global_readout-force`: raw displacement features, hard cutoff, one global readout
  (`models.global_readout`) and no output scaling (raw output in kJ/mol), force-only.
- `pair-joint-flipped`: joint loss (energy weight 1) on force labels of the wrong sign
  (F = +dE/dx): energies and forces contradict each other.
- `pair-force-flipped`: force-only on flipped labels: fits them by learning -E (energy
  correlation -1 with the reference).
For each, finite differences of the reference energy against the labels given: a relative error
of 2 exposes flipped labels before any training.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from forcematch.atomic import write_json
from forcematch.config import config_hash, stage_config
from forcematch.data.frames import Frames
from forcematch.h5md import read_h5md
from forcematch.metrics import accuracy
from forcematch.provenance import provenance
from forcematch.sweep import run_config
from forcematch.validate import fd_samples, finite_difference_errors, summarise_fd

RUNS = {
    # name: (model, loss, sign of the force labels, normalised output, energy weight or None)
    "pair-force": ("pair", "force", 1.0, True, None),
    "global_readout-force": ("global_readout", "force", 1.0, False, None),
    "pair-joint-flipped": ("pair", "joint", -1.0, True, 1.0),
    "pair-force-flipped": ("pair", "force", -1.0, True, None),
}


def _with_force_sign(frames: Frames, sign: float) -> Frames:
    """`frames` with force labels multiplied by `sign`."""
    return dataclasses.replace(frames, forces_kJ_mol_nm=sign * frames.forces_kJ_mol_nm)


def _fd_of_reference_vs_labels(config: dict, test: Frames, sign: float, rng) -> float:
    """Finite differences of the reference energy (OpenMM, double precision) against the force
    labels a run was given, on the first test frame: the check that catches a sign error."""
    from forcematch.reference import energy_and_forces, lj_system_from_config

    lj = lj_system_from_config(config)
    box = np.asarray(test.box_nm[0], np.float64)
    samples = fd_samples(rng, test.n_atoms, config["validate"]["fd_samples_per_frame"])
    errors = finite_difference_errors(
        lambda stack: energy_and_forces(lj, stack, np.broadcast_to(box, (len(stack), 3)),
                                        platform="Reference")[0],
        test.positions_nm[0], sign * test.forces_kJ_mol_nm[0], samples,
        config["validate"]["fd_steps_nm"])
    return summarise_fd(config["validate"]["fd_steps_nm"], errors)[0]["fd_max_rel_error"]


def _train_run(config: dict, name: str, splits: dict[str, Frames], stats: dict, n_train: int,
               out_dir: Path, progress: Callable[[str], None]) -> dict:
    """Train the diagnostic run `name` (`RUNS`); returns its train settings."""
    from forcematch.training import train

    model_name, loss, sign, normalised, energy_weight = RUNS[name]
    dcfg = config["diagnose"]
    cfg = run_config(config, model_name, loss, n_train)
    train_cfg = cfg["train"] | {"epochs": dcfg["epochs"]}
    if energy_weight is not None:
        train_cfg["energy_weight"] = energy_weight
    # The dataset's statistics (force spreads do not depend on the labels' sign); "no output
    # scaling": the network's raw output is the energy in kJ/mol.
    stats = stats if normalised else stats | {"force_rms_kJ_mol_nm": 1.0}
    progress(f"{name}: {model_name}, {loss} loss (energy weight "
             f"{train_cfg['energy_weight']}), force labels x {sign:+.0f}, output "
             f"{'scaled by the force RMS' if normalised else 'unscaled'}, {n_train} frames, "
             f"{dcfg['epochs']} epochs")
    train(_with_force_sign(splits["train"], sign), _with_force_sign(splits["val"], sign),
          train_cfg, cfg["model"][model_name], cfg["system"]["cutoff_nm"],
          out_dir / name, stats=stats, restart_stale=True, progress=progress)
    return train_cfg


def _run_result(name: str, train_cfg: dict, model_dir: Path, test: Frames) -> dict:
    """What the trained run `name` predicts on the test frames."""
    from forcematch.potential import load_model

    model_name, loss, sign, normalised, _ = RUNS[name]
    energy_pred, forces_pred = load_model(model_dir).predict(test.positions_nm, test.box_nm)
    true = accuracy(test.potential_energy_kJ_mol, energy_pred, test.forces_kJ_mol_nm,
                    forces_pred)
    return {
        "model": model_name,
        "loss": loss,
        "energy_weight": train_cfg["energy_weight"],
        "force_label_sign": sign,
        "output_scaled_by_force_rms": normalised,
        "force_rmse_rel": true["force_rmse_rel"],
        "force_std_ratio": true["force_std_ratio"],
        "force_corr": true["force_corr"],
        "energy_corr": float(np.corrcoef(test.potential_energy_kJ_mol, energy_pred)[0, 1]),
    }


def collapse_study(
    config: dict[str, Any],
    dataset_dir: str | Path,
    out_dir: str | Path,
    *,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train the diagnostic runs and write `summary.json` and one directory per run."""
    dcfg = config["diagnose"]
    out_dir, dataset_dir = Path(out_dir), Path(dataset_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    splits = {name: read_h5md(dataset_dir / f"{name}.h5") for name in ("train", "val", "test")}
    stats = json.loads((dataset_dir / "stats.json").read_text())["train"]
    test = splits["test"].select(slice(0, min(dcfg["test_frames"], splits["test"].n_frames)))
    rng = np.random.default_rng(config["validate"]["seed"])
    n_train = min(dcfg["n_train"], splits["train"].n_frames)
    summary: dict[str, Any] = {"n_train": n_train, "epochs": dcfg["epochs"], "runs": {}}
    for name in RUNS:
        train_cfg = _train_run(config, name, splits, stats, n_train, out_dir, progress)
        result = _run_result(name, train_cfg, out_dir / name / "model", test)
        result["fd_reference_energy_vs_labels"] = _fd_of_reference_vs_labels(
            config, test, RUNS[name][2], rng)
        summary["runs"][name] = result
        progress(f"{name}: test force RMSE {100 * result['force_rmse_rel']:.2f} % of std, "
                 f"spread ratio {result['force_std_ratio']:.3f}, correlation "
                 f"{result['force_corr']:.3f}, energy correlation {result['energy_corr']:+.3f}, "
                 f"FD of the reference energy vs the labels "
                 f"{result['fd_reference_energy_vs_labels']:.2e}")
    summary["provenance"] = provenance("diagnose", config_hash(stage_config(config, "diagnose")),
                                       seeds={"train.seed": config["train"]["seed"],
                                              "validate.seed": config["validate"]["seed"]})
    write_json(out_dir / "summary.json", summary)
    return summary
