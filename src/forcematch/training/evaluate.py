"""Evaluation during training: predictions over a frame source in chunks, the energy constant
refitted by least squares, and the accuracy metrics (`forcematch.metrics`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from forcematch.data.frames import Frames
from forcematch.data.sources import FrameSource, chunked
from forcematch.errors import ForcematchError
from forcematch.metrics import Accuracy
from forcematch.models import Normalisation
from forcematch.potential import EVAL_CHUNK, pad_frames


def predicted(fn: Callable, params, species, source: FrameSource
              ) -> Iterator[tuple[Frames, list[np.ndarray]]]:
    """(frames, outputs of the jitted batched `fn(params, positions, box, species)` as float64)
    over `source` in chunks of one compiled size (the last chunk padded)."""
    chunk = min(EVAL_CHUNK, source.n_frames)
    for _, frames in chunked(source, chunk):
        pos, box = pad_frames(frames.positions_nm.astype(np.float32),
                              frames.box_nm.astype(np.float32), chunk)
        res = fn(params, pos, box, species)
        res = res if isinstance(res, tuple) else (res,)
        yield frames, [np.asarray(r, np.float64)[: frames.n_frames] for r in res]


def refit_offset(energies_fn: Callable, params, species, source: FrameSource,
                 norm: Normalisation) -> float:
    """Least-squares energy per atom (kJ/mol): the normalisation's shift + mean((E − Ê)/N) over
    `source`; `energies_fn` is the jitted batched total energy (kJ/mol)."""
    pred = np.concatenate([res[0] for _, res in predicted(energies_fn, params, species, source)])
    residual = (source.potential_energy_kJ_mol - pred) / source.n_atoms
    return norm.energy_shift_per_atom + float(np.mean(residual))


def evaluate(predict_fn: Callable, params, species, source: FrameSource, norm: Normalisation,
             shift: float) -> dict:
    """`metrics.Accuracy` of `params` on `source` with the energy constant `shift` (kJ/mol per
    atom) in place of the normalisation's; `predict_fn` gives (E [B], F [B,N,3])."""
    correction = source.n_atoms * (shift - norm.energy_shift_per_atom)
    acc = Accuracy(source.n_atoms)
    for frames, (pe, pf) in predicted(predict_fn, params, species, source):
        acc.add(pe + correction, pf, frames.potential_energy_kJ_mol, frames.forces_kJ_mol_nm)
    result = acc.result()
    if not result["force_std_ref"] > 0:
        raise ForcematchError(
            f"validation frames ({source.n_frames}): the reference forces are all equal (std "
            "0 kJ/mol/nm), so relative force errors are undefined; check the dataset")
    return result
