"""Evaluation during training: predictions over a frame source in chunks, the energy constant
refitted by least squares, the accuracy metrics (`forcematch.metrics`), and what an evaluated
epoch writes (a metrics.csv row) and reports (a progress line)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from forcematch.data.frames import Frames
from forcematch.data.sources import FrameSource, chunked
from forcematch.errors import ForcematchError
from forcematch.metrics import Accuracy
from forcematch.models import Normalisation
from forcematch.potential import eval_chunk, pad_frames


def predicted(fn: Callable, params, species, source: FrameSource, capacity: int
              ) -> Iterator[tuple[Frames, list[np.ndarray]]]:
    """(frames, outputs of the jitted batched `fn(params, positions, box, species)` as float64)
    over `source` in chunks of one compiled size (the last chunk padded) that suits a model of
    `capacity` pair slots per frame (`potential.eval_chunk`)."""
    chunk = eval_chunk(capacity, source.n_frames)
    for _, frames in chunked(source, chunk):
        pos, box = pad_frames(frames.positions_nm.astype(np.float32),
                              frames.box_nm.astype(np.float32), chunk)
        res = fn(params, pos, box, species)
        res = res if isinstance(res, tuple) else (res,)
        yield frames, [np.asarray(r, np.float64)[: frames.n_frames] for r in res]


def refit_offset(energies_fn: Callable, params, species, source: FrameSource,
                 norm: Normalisation, capacity: int) -> float:
    """Least-squares energy per atom (kJ/mol): the normalisation's shift + mean((E − Ê)/N) over
    `source`; `energies_fn` is the jitted batched total energy (kJ/mol) of a model of `capacity`
    pair slots per frame."""
    chunks = predicted(energies_fn, params, species, source, capacity)
    pred = np.concatenate([res[0] for _, res in chunks])
    residual = (source.potential_energy_kJ_mol - pred) / source.n_atoms
    return norm.energy_shift_per_atom + float(np.mean(residual))


def evaluate(predict_fn: Callable, params, species, source: FrameSource, norm: Normalisation,
             shift: float, capacity: int) -> dict:
    """`metrics.Accuracy` of `params` on `source` with the energy constant `shift` (kJ/mol per
    atom) in place of the normalisation's; `predict_fn` gives (E [B], F [B,N,3])."""
    correction = source.n_atoms * (shift - norm.energy_shift_per_atom)
    acc = Accuracy(source.n_atoms)
    for frames, (pe, pf) in predicted(predict_fn, params, species, source, capacity):
        acc.add(pe + correction, pf, frames.potential_energy_kJ_mol, frames.forces_kJ_mol_nm)
    result = acc.result()
    if not result["force_std_ref"] > 0:
        raise ForcematchError(
            f"validation frames ({source.n_frames}): the reference forces are all equal (std "
            "0 kJ/mol/nm), so relative force errors are undefined; check the dataset")
    return result


MAX_EVALUATIONS = 50  # evaluated epochs of a run, at most (plus the last)


def evaluation_interval(epochs: int) -> int:
    """Epochs between evaluations: 1 up to MAX_EVALUATIONS epochs, then every
    ceil(epochs / MAX_EVALUATIONS)-th (the last epoch is evaluated as well)."""
    return max(1, math.ceil(epochs / MAX_EVALUATIONS))


def metrics_row(epoch: int, step: int, schedule: Callable, sums: Sequence[float], m: dict,
                zero_force_loss: float, wall_s: float) -> dict:
    """The metrics.csv row (`checkpoint.METRICS_COLUMNS`) of an evaluated epoch ending at
    optimiser step `step`: `sums` are the training-loss sums (total, energy, force, stress,
    steps) since the previous row, `m` the accuracy on the per-epoch validation frames,
    `schedule` the learning-rate schedule."""
    return {
        "epoch": epoch, "step": step,
        # the rate of the epoch's last step: Optax's count before that step was step - 1
        "learning_rate": float(schedule(step - 1)),
        "train_loss": sums[0] / sums[4], "train_energy_loss": sums[1] / sums[4],
        "train_force_loss": sums[2] / sums[4], "train_stress_loss": sums[3] / sums[4],
        "val_force_rmse_kJ_mol_nm": m["force_rmse"], "val_force_rmse_rel": m["force_rmse_rel"],
        "val_energy_mae_per_atom_kJ_mol": m["energy_mae_per_atom"],
        "val_force_std_ratio": m["force_std_ratio"], "val_force_corr": m["force_corr"],
        "zero_force_loss": zero_force_loss, "wall_s": wall_s,
    }


def progress_line(row: dict, epochs: int, frames_per_s: float) -> str:
    """The progress line of an evaluated epoch, from its `metrics_row` (`epochs`: of the run)."""
    return (
        f"epoch {row['epoch']}/{epochs} step {row['step']} "
        f"lr {row['learning_rate']:.2e} loss {row['train_loss']:.3e} "
        f"(E {row['train_energy_loss']:.3e}, F {row['train_force_loss']:.3e}, "
        f"W {row['train_stress_loss']:.3e}; zero forces "
        f"{row['zero_force_loss']:.3e}) "
        f"val force RMSE {row['val_force_rmse_kJ_mol_nm']:.4g} kJ/mol/nm "
        f"({100 * row['val_force_rmse_rel']:.2f} %), E MAE "
        f"{row['val_energy_mae_per_atom_kJ_mol']:.2e} kJ/mol/atom, {frames_per_s:.0f} frames/s")


def final_line(m: dict, n_frames: int, model_dir: Path) -> str:
    """The progress line of a finished run: its accuracy `m` on all `n_frames` validation
    frames, and where the model is."""
    return (f"done: val force RMSE {m['force_rmse']:.4g} kJ/mol/nm "
            f"({100 * m['force_rmse_rel']:.2f} % of std, {m['force_rmse_meV_A']:.3g} meV/Å), "
            f"E MAE {m['energy_mae_per_atom_meV']:.3g} meV/atom on {n_frames} frames; model in "
            f"{model_dir}")
