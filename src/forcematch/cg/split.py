"""The force-matching loss of a CG model, split (Noid et al., J. Chem. Phys. 128, 244114, 2008):

    ⟨|F_map − F_θ|²⟩ = ⟨|F_map − F_mean|²⟩ + ⟨|F_mean − F_θ|²⟩ + 2⟨(F_map − F_mean)·(F_mean − F_θ)⟩
         loss               noise floor            the model's error        → 0 over many frames

The cross term vanishes in expectation because F_mean is the conditional mean of F_map at each
CG configuration; what is left of it on a finite set of frames is the closure. With F_mean
estimated from samples (standard error s per component) both the floor and the error are each
biased up by ⟨s²⟩; `split` reports them corrected. Means over frames, sites and components,
in (kJ/mol/nm)², and as fractions of the labels' variance.
"""

from __future__ import annotations

import numpy as np


def split(labels, mean_force, mean_force_se, predicted) -> dict[str, float]:
    """labels F_map, mean_force F_mean, its standard error and a model's predicted forces, all
    [T,S,3] kJ/mol/nm: loss, noise floor and error (each corrected for the sampling error of
    F_mean), the closure loss − floor − error, the sampling variance ⟨s²⟩, and each of them
    over the labels' variance (`*_rel`)."""
    labels, mean, predicted = (np.asarray(a, np.float64) for a in (labels, mean_force,
                                                                     predicted))
    sampling = float(np.mean(np.asarray(mean_force_se, np.float64) ** 2))
    loss = float(np.mean((labels - predicted) ** 2))
    floor = float(np.mean((labels - mean) ** 2)) - sampling
    error = float(np.mean((mean - predicted) ** 2)) - sampling
    result = {"loss": loss, "noise_floor": floor, "model_error": error,
              "closure": loss - floor - error, "sampling_variance": sampling}
    variance = float(labels.var())
    return result | {f"{k}_rel": v / variance for k, v in result.items()} | {
        "label_variance": variance}


def split_over_frames(labels, mean_force, mean_force_se, predicted) -> dict[str, float]:
    """`split` of [T,S,3] arrays, with each quantity's standard error over the T frames
    (`<key>_se`, from the per-frame values: the frames are far enough apart to be treated as
    independent) and T; every key also relative to the labels' variance."""
    labels, mean, se, predicted = (np.asarray(a, np.float64) for a in (
        labels, mean_force, mean_force_se, predicted))
    total = split(labels, mean, se, predicted)
    variance = total["label_variance"]
    per_frame = [split(labels[t], mean[t], se[t], predicted[t]) for t in range(len(labels))]
    out = dict(total) | {"frames": len(labels)}
    for key in ("loss", "noise_floor", "model_error", "closure"):
        values = np.array([frame[key] for frame in per_frame])
        out[f"{key}_se"] = float(values.std(ddof=1) / np.sqrt(len(values)))
        out[f"{key}_rel_se"] = out[f"{key}_se"] / variance
    return out
