"""Validation of the reference data and of trained models.

Checks, each written to `metrics.json` (values in the units listed under its `units` key) and to
the CSV files that the figures are drawn from:
- finite differences: central differences of the energy, in float64, against the forces, over a
  range of step sizes;
- momentum: the net force |sum_i F_i| per frame, zero for a translation-invariant energy;
- accuracy on the held-out test replicas (models), or of the stored single-precision forces
  against OpenMM's double-precision Reference platform (reference data);
- physics (reference data): mean potential energy per atom in units of epsilon, against the
  equation of state where a reference value exists (`U_REFERENCE_STATE`: the default argon
  state); any other state reports its U/N with "no reference value for this state".

The output directory is written whole (`atomic.atomic_directory`): a failed run leaves the
previous one, never new files beside old ones. It may hold only validation outputs
(`OUTPUT_FILES`), since it is replaced whole. Numbers that would be undefined are refused
with a message instead of written as NaN (constant reference forces: no relative errors).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from forcematch.config import config_hash, species_names, stage_config
from forcematch.config.sweep import loss_label
from forcematch.data.frames import Frames
from forcematch.errors import ForcematchError
from forcematch.io.atomic import atomic_directory, check_replaceable, output_errors, write_json
from forcematch.io.h5md import read_h5md, read_parameters
from forcematch.io.provenance import provenance, require_same_origin
from forcematch.metrics import UNITS as METRIC_UNITS
from forcematch.metrics import accuracy, force_accuracy_by_species, virial_accuracy
from forcematch.validation.equation_of_state import (  # noqa: F401 (re-exported)
    MIXTURE_NO_REFERENCE,
    NO_REFERENCE,
    U_PER_ATOM_EPS_EXPECTED,
    U_PER_ATOM_EPS_TOLERANCE,
    U_REFERENCE_STATE,
    has_u_reference,
    u_per_atom_eps,
    u_per_atom_metrics,
)

# Every file validation writes: the output directory may hold these and nothing else.
OUTPUT_FILES = ("metrics.json", "fd.csv", "net_force.csv", "parity_energy.csv",
                "parity_force.csv")

UNITS = METRIC_UNITS | {
    "fd_max_rel_error": "1 (max over samples of |F_fd - F| / rms F, at the best step)",
    "fd_best_step_nm": "nm",
    "net_force_max": "kJ mol-1 nm-1",
    "net_force_mean": "kJ mol-1 nm-1",
    "u_per_atom_eps": "epsilon (LJ well depth) per atom",
    "u_per_atom_eps_sem": "epsilon per atom (null with fewer than 2 frames)",
    "u_per_atom_eps_expected": "epsilon per atom (null: no reference value for this state)",
    "u_per_atom_eps_tolerance": "epsilon per atom",
    "n_test_frames": "1",
    "by_species": "one row per species: the force keys above over that species' atoms",
    "cg": "CG data: loss, noise_floor, model_error, closure, sampling_variance in "
          "(kJ mol-1 nm-1)^2, *_rel over label_variance, *_se over the sampled frames",
}


# ---------------------------------------------------------------------------------------------
# Pure functions on arrays


def net_force(forces: np.ndarray) -> np.ndarray:
    """|sum_i F_i| per frame (kJ/mol/nm) for forces [T, N, 3]."""
    return np.linalg.norm(np.asarray(forces, dtype=np.float64).sum(axis=1), axis=-1)


def finite_difference_errors(
    energies: Callable[[np.ndarray], np.ndarray],
    positions_nm: np.ndarray,
    forces: np.ndarray,
    samples: np.ndarray,
    steps_nm: Sequence[float],
) -> np.ndarray:
    """Relative error of central-difference forces for every sample and step size.

    energies: maps a stack of configurations [M, N, 3] (nm) to energies [M] (kJ/mol), float64.
    positions_nm [N, 3]; forces [N, 3] the forces to check at `positions_nm`.
    samples [S, 2]: (atom, component) pairs. Returns [len(steps_nm), S]:
    |F_fd - F| / rms(F over the samples), where F_fd = -(E(x + h) - E(x - h)) / 2h.
    """
    steps = np.asarray(steps_nm, dtype=np.float64)
    n_steps, n_samples = len(steps), len(samples)
    displaced = np.repeat(positions_nm[None].astype(np.float64), 2 * n_steps * n_samples, axis=0)
    displaced = displaced.reshape(n_steps, n_samples, 2, *positions_nm.shape)
    for s, (atom, component) in enumerate(samples):
        displaced[:, s, 0, atom, component] += steps
        displaced[:, s, 1, atom, component] -= steps
    e = np.asarray(energies(displaced.reshape(-1, *positions_nm.shape)), dtype=np.float64)
    e = e.reshape(n_steps, n_samples, 2)
    f_fd = -(e[..., 0] - e[..., 1]) / (2 * steps[:, None])
    f_ref = forces[samples[:, 0], samples[:, 1]]
    scale = np.sqrt(np.mean(f_ref**2))
    # Forces that vanish identically (a collapsed model) are compared in absolute terms.
    return np.abs(f_fd - f_ref[None]) / (scale if scale > 0 else 1.0)


def fd_samples(rng: np.random.Generator, n_atoms: int, n_samples: int) -> np.ndarray:
    """[S, 2] distinct (atom, component) pairs drawn with `rng`."""
    flat = rng.choice(n_atoms * 3, size=min(n_samples, n_atoms * 3), replace=False)
    return np.stack([flat // 3, flat % 3], axis=1)


def summarise_fd(steps_nm: Sequence[float], errors: np.ndarray) -> tuple[dict, list[dict]]:
    """errors [H, S_total] -> (metrics at the best step, one CSV row per step)."""
    worst = errors.max(axis=1)
    best = int(np.argmin(worst))
    rows = [
        {
            "step_nm": float(h),
            "max_rel_error": float(worst[k]),
            "median_rel_error": float(np.median(errors[k])),
        }
        for k, h in enumerate(steps_nm)
    ]
    return {"fd_max_rel_error": float(worst[best]), "fd_best_step_nm": float(steps_nm[best])}, rows


# ---------------------------------------------------------------------------------------------
# I/O at the edges


def _net_force_rows(forces: np.ndarray) -> tuple[dict, list[dict]]:
    net = net_force(forces)
    rows = [{"frame": t, "net_force_kJ_mol_nm": float(v)} for t, v in enumerate(net)]
    return {"net_force_max": float(net.max()), "net_force_mean": float(net.mean())}, rows


def _parity_rows(traj: Frames, energy_pred: np.ndarray, forces_pred: np.ndarray, rng):
    n = traj.n_atoms
    energy_rows = [
        {"energy_true_kJ_mol_per_atom": float(t / n), "energy_pred_kJ_mol_per_atom": float(p / n)}
        for t, p in zip(traj.potential_energy_kJ_mol, energy_pred, strict=True)
    ]
    f_true, f_pred = traj.forces_kJ_mol_nm.ravel(), np.asarray(forces_pred).ravel()
    keep = np.sort(rng.choice(f_true.size, size=min(20000, f_true.size), replace=False))
    force_rows = [
        {"force_true_kJ_mol_nm": float(t), "force_pred_kJ_mol_nm": float(p)}
        for t, p in zip(f_true[keep], f_pred[keep], strict=True)
    ]
    return energy_rows, force_rows


def _write_outputs(out_dir: Path, metrics: dict, tables: dict[str, list[dict]],
                   progress: Callable[[str], None]) -> None:
    """metrics.json and one CSV per table, written as one directory that replaces `out_dir`
    whole: a failed run never leaves new files beside old ones. `write_json` refuses NaN and
    infinity, naming the key."""
    with output_errors(out_dir.parent, own_name=True):
        out_dir.parent.mkdir(parents=True, exist_ok=True)
    with atomic_directory(out_dir) as tmp:
        write_json(tmp / "metrics.json", metrics)
        for name, rows in tables.items():
            with open(tmp / f"{name}.csv", "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
    progress(f"net force max {metrics['net_force_max']:.2e} kJ/mol/nm; "
             f"wrote {out_dir / 'metrics.json'}")


def _require_force_spread(metrics: dict, what: str) -> None:
    """Refuse reference forces without spread: every relative force number would be NaN."""
    if not metrics["force_std_ref"] > 0:
        raise ForcematchError(
            f"{what}: the reference forces are all equal (std 0 kJ/mol/nm), so relative force "
            "errors (force_rmse_rel, force_std_ratio, force_corr) are undefined; check the "
            "dataset")


def _fd_summary(energies_of_frame, frames: Frames, frame_ids, rng, vcfg: dict,
                what: str, progress: Callable[[str], None]) -> tuple[dict, list[dict]]:
    """FD errors over `frame_ids` of `frames`; `energies_of_frame(t)` gives (forces [N,3],
    energies(stack [M,N,3]) -> [M]) of frame t, float64."""
    errors = []
    for t in frame_ids:
        forces, energies = energies_of_frame(t)
        samples = fd_samples(rng, frames.n_atoms, vcfg["fd_samples_per_frame"])
        errors.append(finite_difference_errors(energies, frames.positions_nm[t], forces,
                                               samples, vcfg["fd_steps_nm"]))
    fd_metrics, fd_rows = summarise_fd(vcfg["fd_steps_nm"], np.concatenate(errors, axis=1))
    progress(f"FD ({what}): best max rel error {fd_metrics['fd_max_rel_error']:.2e} "
             f"at h = {fd_metrics['fd_best_step_nm']:g} nm")
    return fd_metrics, fd_rows


def validate_reference(
    config: dict[str, Any],
    split_paths: Sequence[str | Path],
    out_dir: str | Path,
    *,
    n_accuracy_frames: int = 50,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Validate the reference data (the dataset splits) against physics and OpenMM's Reference
    platform. The last path is taken as the test split for the per-frame checks."""
    from forcematch.reference import energy_and_forces, lj_system_from_config

    vcfg = config["validate"]
    check_replaceable(out_dir, OUTPUT_FILES, "--out-dir")
    rng = np.random.default_rng(vcfg["seed"])
    lj = lj_system_from_config(config)
    dataset_hash = require_same_origin(
        [(str(p), read_parameters(p)) for p in split_paths],
        expected=config_hash(stage_config(config, "dataset")))
    splits = [read_h5md(p) for p in split_paths]
    test = splits[-1]
    u_metrics = u_per_atom_metrics(splits, config["system"], progress)

    # Stored (CPU platform, single-precision forces) against the double-precision Reference.
    frames = np.sort(rng.choice(test.n_frames, size=min(n_accuracy_frames, test.n_frames),
                                replace=False))
    sub = test.select(frames)
    e_ref, f_ref = energy_and_forces(lj, sub.positions_nm, sub.box_nm, platform="Reference")
    metrics: dict[str, Any] = {"name": "reference", "n_test_frames": int(test.n_frames)}
    metrics |= accuracy(e_ref, sub.potential_energy_kJ_mol, f_ref, sub.forces_kJ_mol_nm)
    _require_force_spread(metrics, f"{split_paths[-1]} (OpenMM Reference platform forces)")

    def reference_frame(t):
        box = test.box_nm[t]
        forces = energy_and_forces(lj, test.positions_nm[t], box, platform="Reference")[1]
        return forces, lambda stack: energy_and_forces(
            lj, stack, np.broadcast_to(box, (len(stack), 3)), platform="Reference")[0]

    fd_metrics, fd_rows = _fd_summary(reference_frame, test, frames[: vcfg["fd_frames"]], rng,
                                      vcfg, "Reference platform", progress)
    net_metrics, net_rows = _net_force_rows(test.forces_kJ_mol_nm)
    metrics |= fd_metrics | net_metrics | u_metrics | {
        "accuracy_compared_with": "OpenMM Reference platform (double precision), "
        f"{len(frames)} test frames",
        "units": UNITS,
        "provenance": provenance("validate", config_hash(stage_config(config, "validate")),
                                 seeds={"validate.seed": vcfg["seed"]},
                                 inputs={"dataset_config_hash": dataset_hash}),
    }
    energy_rows, force_rows = _parity_rows(sub, e_ref, f_ref, rng)
    _write_outputs(Path(out_dir), metrics, {"fd": fd_rows, "net_force": net_rows,
                                            "parity_energy": energy_rows,
                                            "parity_force": force_rows}, progress)
    return metrics


def validate_model(
    config: dict[str, Any],
    model_dir: str | Path,
    test_path: str | Path,
    out_dir: str | Path,
    *,
    mean_force: str | Path | None = None,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Validate a trained model on the test split: accuracy, FD in float64, net force; with a
    `mean_force` file (CG data), the split of its loss into noise floor and error (`cg`).

    Runs with 64-bit JAX enabled (finite differences need float64 energies; predictions stay
    float32) and restores the caller's setting afterwards.
    """
    import jax

    with jax.enable_x64(True):
        return _validate_model(config, Path(model_dir), test_path, Path(out_dir), mean_force,
                               progress)


def _model_description(model, model_dir: Path) -> dict:
    final = model.info.get("final_metrics")
    n_train = final.get("n_train_frames") if isinstance(final, dict) else None
    if not (isinstance(n_train, int) and not isinstance(n_train, bool) and n_train > 0):
        raise ForcematchError(
            f"{model_dir / 'config.json'} has no final_metrics.n_train_frames: not a finished "
            "model (a checkpoint directory? validate the run's model/ directory)")
    return {
        "name": model_dir.parent.name if model_dir.name == "model" else model_dir.name,
        **model.describe(),
        "loss": loss_label(model.train_config),
        "n_train": n_train,
        # Training refits the per-atom energy constant by least squares on the training
        # energies: forces (and the centred energy loss) leave it undetermined.
        "energy_offset_fitted": True,
    }


def _load_model_and_test(model_dir: Path, test_path):
    """The model and the test frames, refused when they do not belong together."""
    from forcematch.potential import load_model

    model = load_model(model_dir)
    trained_on = ((model.info.get("provenance") or {}).get("inputs") or {}).get(
        "dataset_config_hash")
    dataset_hash = require_same_origin(
        [(f"the training data of the model in {model_dir}", {"config_hash": trained_on}),
         (str(test_path), read_parameters(test_path))])
    test = read_h5md(test_path)
    if test.n_atoms != model.n_atoms:
        raise ForcematchError(
            f"{test_path}: holds {test.n_atoms} atoms but the model in {model_dir} was trained "
            f"on {model.n_atoms}")
    return model, test, dataset_hash


def _virial_metrics(model, test: Frames, rng, n_frames: int, progress) -> dict[str, Any]:
    """`metrics.virial_accuracy` on `n_frames` test frames drawn with `rng` ({} where the test
    data hold no virial)."""
    if test.virial_kJ_mol is None:
        return {}
    ids = np.sort(rng.choice(test.n_frames, size=min(n_frames, test.n_frames), replace=False))
    predicted = -model.strain_derivative(test.positions_nm[ids], test.box_nm[ids])
    result = virial_accuracy(test.virial_kJ_mol[ids], predicted, test.box_nm[ids],
                             test.n_atoms) | {"n_virial_frames": int(ids.size)}
    progress(f"test virial RMSE {result['virial_rmse_per_atom']:.4f} kJ/mol per atom "
             f"({100 * result['virial_rmse_rel']:.2f} % of its spread), pressure offset "
             f"{result['virial_pressure_offset_bar']:+.1f} ± "
             f"{result['virial_pressure_offset_se_bar']:.1f} bar on {ids.size} frames")
    return result


def _cg_split(mean_force_path, test, test_path, forces_pred, progress) -> dict[str, Any]:
    """The loss on the sampled CG test frames split into noise floor and the model's error
    against the exact mean force (`forcematch.cg.split`), each with its standard error."""
    from forcematch.cg.run import read_mean_force
    from forcematch.cg.split import split_over_frames

    sampled = read_mean_force(mean_force_path, test.n_atoms, test.n_frames)
    expected = read_parameters(test_path).get("config_hash")
    if sampled.parameters.get("test_parameters_hash") != expected:
        raise ForcematchError(f"{mean_force_path} was sampled on another dataset than "
                              f"{test_path}: rerun cg-mean-force")
    ids = sampled.frame_index
    result = split_over_frames(test.forces_kJ_mol_nm[ids], sampled.mean,
                               sampled.standard_error, forces_pred[ids])
    progress(f"CG split on {len(ids)} frames (of the label variance): loss "
             f"{result['loss_rel']:.4f} = noise floor {result['noise_floor_rel']:.4f} "
             f"+ error {result['model_error_rel']:.4f} ± {result['model_error_rel_se']:.4f} "
             f"+ closure {result['closure_rel']:+.4f}")
    return {"cg": result}


def _validate_model(config, model_dir: Path, test_path, out_dir: Path, mean_force,
                    progress) -> dict[str, Any]:
    import jax

    vcfg = config["validate"]
    check_replaceable(out_dir, OUTPUT_FILES, "--out-dir")
    rng = np.random.default_rng(vcfg["seed"])
    model, test, dataset_hash = _load_model_and_test(model_dir, test_path)
    description = _model_description(model, model_dir)  # refuses an unfinished model first
    energy_pred, forces_pred = model.predict(test.positions_nm, test.box_nm)
    metrics: dict[str, Any] = {"n_test_frames": int(test.n_frames)}
    metrics |= description
    metrics |= accuracy(test.potential_energy_kJ_mol, energy_pred, test.forces_kJ_mol_nm,
                        forces_pred)
    _require_force_spread(metrics, str(test_path))
    metrics["by_species"] = force_accuracy_by_species(
        test.forces_kJ_mol_nm, forces_pred, test.species, species_names(config))
    metrics |= _virial_metrics(model, test, np.random.default_rng([vcfg["seed"], 2]),
                               vcfg["virial_frames"], progress)
    if mean_force is not None:
        metrics |= _cg_split(mean_force, test, test_path, forces_pred, progress)
    progress(f"test force RMSE {metrics['force_rmse']:.4f} kJ/mol/nm "
             f"({100 * metrics['force_rmse_rel']:.3f} % of the force std), energy MAE "
             f"{metrics['energy_mae_per_atom_meV']:.4f} meV/atom")

    # the model's state an argument, not a constant: one compilation serves every model
    energy, state64 = model.energy_function(), model.params_as(np.float64)
    species = np.asarray(test.species, np.int32)
    energies64 = jax.jit(jax.vmap(energy, in_axes=(None, 0, None, None)))
    forces64 = jax.jit(jax.grad(energy, argnums=1))

    def model_frame(t):
        box = np.asarray(test.box_nm[t], dtype=np.float64)
        forces = -np.asarray(forces64(state64, test.positions_nm[t].astype(np.float64), box,
                                      species))
        return forces, lambda stack: np.asarray(energies64(state64, stack, box, species))

    fd_ids = rng.choice(test.n_frames, size=min(vcfg["fd_frames"], test.n_frames),
                        replace=False)
    fd_metrics, fd_rows = _fd_summary(model_frame, test, fd_ids, rng, vcfg, "float64",
                                      progress)
    net_metrics, net_rows = _net_force_rows(forces_pred)
    metrics |= fd_metrics | net_metrics | {"units": UNITS}
    metrics["provenance"] = provenance(
        "validate", config_hash(stage_config(config, "validate")),
        seeds={"validate.seed": vcfg["seed"]},
        inputs={"dataset_config_hash": dataset_hash,
                "model": (model.info.get("provenance") or {}).get("config_hash")})
    energy_rows, force_rows = _parity_rows(test, energy_pred, forces_pred, rng)
    _write_outputs(out_dir, metrics, {"fd": fd_rows, "net_force": net_rows,
                                      "parity_energy": energy_rows, "parity_force": force_rows},
                   progress)
    return metrics
