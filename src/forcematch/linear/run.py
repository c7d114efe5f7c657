"""`fit_spline`: one spline (MS-CG) run, the linear counterpart of the `Trainer`.

`fit_spline_run` claims the run directory as training does (`training.run.claimed_run`) and
fits (`forcematch.fit.fit` hands `spline` runs here). It writes
what a trained run writes, so every later stage treats it like the other families: model/
(config.json + state.msgpack, loaded by `potential.load_model`), metrics.csv (one row: there
are no epochs), final_metrics.json (with a `fit` entry: solve time, condition number,
effective rank, penalty), and fit.csv: φ(r) and F(r) = −dφ/dr per species pair on a 0.001 nm
grid with their standard errors from `model.spline.blocks` independent blocks of frames.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from forcematch import __version__
from forcematch.config import model_settings
from forcematch.data.pairs import closest_pairs_nm
from forcematch.data.sources import FrameSource, as_source
from forcematch.data.stats import DensestFrame, check_normalisation, scan
from forcematch.errors import ForcematchError
from forcematch.io.atomic import write_csv, write_json
from forcematch.io.model_files import model_info
from forcematch.linear.design import SplineDesign, accumulate
from forcematch.linear.fit import (
    Weights,
    active_columns,
    pair_columns,
    smoothness_penalty,
    solve,
)
from forcematch.models import (
    Normalisation,
    build,
    cutoff_of,
    energy_fn,
    predict_fn,
    with_data_species,
)
from forcematch.models.spline import bspline_pieces, full_coefficients
from forcematch.potential import MODEL_FORMAT
from forcematch.progress import bar as progress_bar
from forcematch.training import checkpoint
from forcematch.training.batches import seeded_subset
from forcematch.training.evaluate import evaluate, metrics_row, refit_offset
from forcematch.training.run import claimed_run

TABLE_SPACING_NM = 0.001  # fit.csv's grid


def fit_grid_r_lo(closest_nm: np.ndarray, cutoff_nm: float, spacing_nm: float) -> list[float]:
    """Per species pair, the closest training pair rounded down to the knot grid that ends at
    the cutoff (nm)."""
    steps = np.ceil((cutoff_nm - closest_nm) / spacing_nm - 1e-9)
    return [round(float(cutoff_nm - s * spacing_nm), 12) for s in steps]


def fit_spline_run(train_data, val_data, settings, model_config, cutoff_nm, out_dir, *,
                   stats: dict | None = None, provenance: dict | None = None,
                   progress: Callable[[str], object] = print, species_names=None) -> dict:
    """`fit_spline` in the run directory `out_dir`, claimed for the fit (arguments as
    `training.run.train`); returns the final metrics."""
    with claimed_run(train_data, settings, out_dir, stats) as (settings, stats, out):
        train_src, val_src = as_source(train_data), as_source(val_data)
        return fit_spline(train_src, val_src, settings,
                          with_data_species(model_config, train_src.species),
                          float(cutoff_nm), out, stats=stats, provenance=provenance,
                          progress=progress, species_names=species_names)


def fit_spline(train_src: FrameSource, val_src: FrameSource, settings: Mapping,
               model_config: dict, cutoff_nm: float, out: Path, *, stats: dict,
               provenance: dict | None, progress: Callable[[str], object],
               species_names=None) -> dict:
    """Fit the spline model (settings: the resolved `train` options; model_config: the
    `model.spline` options with the data's `n_species`); returns the final metrics."""
    t_start = time.perf_counter()
    if settings["stress_weight"] > 0:
        raise ForcematchError(
            f"train.stress_weight = {settings['stress_weight']}: the spline fit has no virial "
            "rows (a pair potential's virial follows from its forces); set it for the network "
            "families only (train_by_model) or to 0 for spline (train_by_model.spline)")
    if settings["n_train"] is not None:
        if settings["n_train"] > train_src.n_frames:
            raise ForcematchError(f"n_train = {settings['n_train']} but the training data has "
                                  f"{train_src.n_frames} frames")
        train_src = train_src.subset(seeded_subset(settings["seed"], 0, train_src.n_frames,
                                                   settings["n_train"]))
    stats = check_normalisation(stats, "training")
    config = model_settings("spline", model_config, source="spline model")
    species = np.asarray(train_src.species)
    index = species if config["n_species"] > 1 else np.zeros_like(species)
    pairs = [(a, b) for a in range(config["n_species"]) for b in range(a, config["n_species"])]
    closest = closest_pairs_nm(train_src, index, pairs)
    if not np.all(np.isfinite(closest) & (closest < cutoff_nm)):
        missing = [f"{a}-{b}" for (a, b), c in zip(pairs, closest, strict=True)
                   if not c < cutoff_nm]
        raise ForcematchError(f"species pair(s) {', '.join(missing)} never come within the "
                              f"cutoff ({cutoff_nm} nm) in the training frames: the spline fit "
                              "has no data for their table")
    config["r_lo_nm"] = fit_grid_r_lo(closest, cutoff_nm, config["knot_spacing_nm"])
    densest = DensestFrame(cutoff_nm)
    fingerprints = {"train_sha256": scan(train_src, "training", on_positions=densest),
                    "val_sha256": scan(val_src, "validation", on_positions=densest)}
    model = build("spline", config, cutoff_of("spline", config, cutoff_nm), densest.capacity())
    norm = Normalisation.from_stats(stats, settings["output_scale"], train_src.n_atoms)
    progress(f"fitting spline model {json.dumps(config)} on {train_src.n_frames} frames of "
             f"{train_src.n_atoms} atoms: {model.grid.n_intervals} intervals of "
             f"{config['knot_spacing_nm']} nm per species pair from r_lo {config['r_lo_nm']} "
             f"nm (closest training pairs {np.round(closest, 4).tolist()} nm)")
    t0 = time.perf_counter()
    result = _solve_blocks(train_src, model, index, settings, stats, config)
    fit_s = time.perf_counter() - t0
    params = _params(model, result["solution"].coefficients, norm, settings)
    final = _finish(model, params, norm, train_src, val_src, settings, out, result, fit_s,
                    t_start, _describe(model, settings, train_src, stats, norm, fingerprints,
                                       provenance, species_names), progress)
    return final


def _solve_blocks(source, model, index, settings, stats, config) -> dict:
    """The fit to all frames and to each block alone (same penalty weight)."""
    design = SplineDesign(model.grid, index, config["n_species"])
    with progress_bar(source.n_frames, "normal equations", "frame") as bar:
        blocks = accumulate(source, design, config["blocks"], bar.update)
    forces = sum((b.forces for b in blocks[1:]), blocks[0].forces)
    energies = sum((b.energies for b in blocks[1:]), blocks[0].energies)
    weights = Weights.of(settings, source.n_atoms, source.n_frames,
                         float(stats["force_std_kJ_mol_nm"]) or 1.0,
                         float(stats["energy_per_atom_std_kJ_mol"]) or 1.0)
    penalty, groups = smoothness_penalty(design), pair_columns(design)
    cols = active_columns(design, settings["energy_weight"] > 0)
    solution = solve(forces, energies, weights, penalty, groups, cols, config["smoothness"])
    per_block = [solve(b.forces, b.energies, weights.scaled(source.n_frames, b.forces.frames),
                       penalty, groups, cols, config["smoothness"], solution.penalty_weights)
                 for b in blocks]
    # the force loss of predicting zero forces (normalised, unweighted): the collapse level
    zero = forces.sum_sq / (3 * source.n_atoms * source.n_frames
                            * (float(stats["force_std_kJ_mol_nm"]) or 1.0) ** 2)
    return {"solution": solution, "blocks": per_block, "zero_force_loss": zero}


def _params(model, coefficients: np.ndarray, norm: Normalisation, settings) -> dict:
    """Model parameters (float32, model units) from the solved columns (kJ/mol)."""
    n_pairs, n = model.n_pairs, model.grid.n_coefficients
    c = coefficients[: n_pairs * n].reshape(n_pairs, n) / norm.energy_scale
    atom = np.zeros(model.config["n_species"])
    if settings["energy_weight"] > 0:
        atom = (coefficients[n_pairs * n:] - norm.energy_shift_per_atom) / norm.energy_scale
    return {"coefficients": jnp.asarray(c, jnp.float32),
            "atom_energy": jnp.asarray(atom, jnp.float32)}


def spline_table(grid, coefficients: np.ndarray, pair: int, r_nm: np.ndarray):
    """(φ [M] kJ/mol, F = −dφ/dr [M] kJ/mol/nm) of species pair `pair` at r [M] inside
    [r_lo, cutoff], from solved columns (kJ/mol) laid out as `SplineDesign`'s."""
    width = grid.n_coefficients
    c = full_coefficients(coefficients[pair * width:(pair + 1) * width], grid.n_intervals)
    k, u = grid.locate(np.minimum(r_nm, grid.cutoff_nm))
    phi = sum(c[k + m] * b for m, b in enumerate(bspline_pieces(u)))
    dphi = sum(c[k + m] * b for m, b in enumerate(bspline_pieces(u, 1))) / grid.spacing_nm
    return phi, -dphi


def _fit_table(model, result) -> dict[str, list]:
    """fit.csv's columns: φ and F with block standard errors, per species pair."""
    grid, s = model.grid, model.config["n_species"]
    pairs = [(a, b) for a in range(s) for b in range(a, s)]
    columns: dict[str, list] = {k: [] for k in (
        "species_a", "species_b", "r_nm", "phi_kJ_mol", "phi_se_kJ_mol", "force_kJ_mol_nm",
        "force_se_kJ_mol_nm")}
    n_blocks = len(result["blocks"])
    for t, (a, b) in enumerate(pairs):
        r = np.arange(grid.r_lo_nm()[t], grid.cutoff_nm + 1e-12, TABLE_SPACING_NM)
        phi, force = spline_table(grid, result["solution"].coefficients, t, r)
        per_block = [spline_table(grid, blk.coefficients, t, r) for blk in result["blocks"]]
        se = [np.std([p[q] for p in per_block], axis=0, ddof=1) / math.sqrt(n_blocks)
              for q in (0, 1)]
        columns["species_a"] += [a] * len(r)
        columns["species_b"] += [b] * len(r)
        for key, values in zip(list(columns)[2:], (r, phi, se[0], force, se[1]), strict=True):
            columns[key] += np.asarray(values).tolist()
    return columns


def _describe(model, settings, source, stats, norm, fingerprints, provenance,
              species_names) -> dict:
    """config.json of the run (`model_files.model_info`, as the Trainer's)."""
    return model_info(model_format=MODEL_FORMAT, version=__version__, model=model,
                      train_config=settings, source=source, stats=stats, norm=norm,
                      fingerprints=fingerprints, provenance=provenance,
                      species_names=species_names)


def _finish(model, params, norm, train_src, val_src, settings, out, result, fit_s, t_start,
            info, progress) -> dict:
    """Refit the energy constant (forces-only fits), evaluate, write the run's files."""
    species = jnp.asarray(train_src.species)
    predict = jax.jit(predict_fn(model, norm))
    energies = jax.jit(jax.vmap(energy_fn(model, norm), in_axes=(None, 0, 0, None)))
    shift = refit_offset(energies, params, species, train_src, norm, model.capacity)
    m = evaluate(predict, params, species, val_src, norm, shift, model.capacity)
    sol = result["solution"]
    fit = {"fit_s": fit_s, "condition_number": sol.condition_number,
           "effective_rank": sol.effective_rank, "n_coefficients": sol.n_solved,
           "free_directions": sol.n_free,
           "penalty_weights": sol.penalty_weights, "smoothness": model.config["smoothness"],
           "blocks": len(result["blocks"]), "r_lo_nm": model.config["r_lo_nm"]}
    wall_s = time.perf_counter() - t_start
    final = {"model": model.name, "epochs": 1, "steps": 1,
             "n_train_frames": train_src.n_frames, "n_val_frames": val_src.n_frames,
             **{f"val_{k}": v for k, v in m.items()},
             "energy_shift_per_atom_trained_kJ_mol": norm.energy_shift_per_atom,
             "energy_shift_per_atom_refit_kJ_mol": shift, "wall_s": wall_s, "train_s": fit_s,
             "frames_per_s": train_src.n_frames / fit_s, "devices": 1, "streamed": False,
             "provenance": info["provenance"], "fit": fit}
    checkpoint.write_model_dir(out / "model", dict(
        info, norm=Normalisation(norm.energy_scale, shift).to_dict(), final_metrics=final),
        params)
    write_csv(out / "fit.csv", _fit_table(model, result))
    # the one metrics.csv row: no epochs, no learning rate; the fit's own loss terms
    row = metrics_row(1, 1, lambda _: 0.0,
                      (sol.loss, sol.energy_loss, sol.force_loss, 0.0, 1.0), m,
                      result["zero_force_loss"], wall_s)
    write_csv(out / "metrics.csv", {k: [row[k]] for k in checkpoint.METRICS_COLUMNS})
    write_json(out / "final_metrics.json", final)
    progress(f"done: spline fitted in {fit_s:.2f} s (condition number "
             f"{sol.condition_number:.3g}, effective rank {sol.effective_rank} of "
             f"{sol.n_solved}, {sol.n_free} free directions); val force RMSE "
             f"{m['force_rmse']:.4g} kJ/mol/nm "
             f"({100 * m['force_rmse_rel']:.4f} % of std), E MAE "
             f"{m['energy_mae_per_atom_meV']:.3g} meV/atom on {val_src.n_frames} frames; model "
             f"in {out / 'model'}")
    return final

