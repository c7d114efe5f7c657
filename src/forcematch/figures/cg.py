"""The coarse-graining figure: every CG model's held-out loss split into the noise floor (the
labels against the exact mean force, the same for every model) and the model's own error
against the mean force (`forcematch.cg.split`, written by validation as metrics.json `cg`).
Values are fractions of the labels' variance; error bars are standard errors over the sampled
frames.
"""

from __future__ import annotations

from collections.abc import Callable

import matplotlib.pyplot as plt
import numpy as np

from forcematch.figures.styles import FAMILY_COLOURS

CG_FIGURE = "cg_split"


def cg_runs(metrics: dict[str, dict]) -> list[str]:
    """The runs whose validation split their loss (CG data with a sampled mean force)."""
    return sorted(name for name, m in metrics.items() if isinstance(m.get("cg"), dict))


def cg_split_figure(metrics: dict[str, dict], save: Callable) -> dict | None:
    """Left: each run's loss, stacked as noise floor + its error; right: the error alone, with
    its standard error. None (nothing drawn) without CG runs."""
    runs = cg_runs(metrics)
    if not runs:
        return None
    split = {name: metrics[name]["cg"] for name in runs}
    y = np.arange(len(runs))
    colours = [FAMILY_COLOURS.get(metrics[name].get("model"), "tab:blue") for name in runs]
    floor = np.array([split[n]["noise_floor_rel"] for n in runs])
    error = np.array([split[n]["model_error_rel"] for n in runs])
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(11, 0.5 * len(runs) + 2),
                                          layout="constrained")
    ax_loss.barh(y, floor, color="0.8", label="noise floor (labels vs exact mean force)")
    ax_loss.barh(y, error, left=floor, color=colours, label="model error vs mean force")
    ax_loss.errorbar([split[n]["loss_rel"] for n in runs], y,
                     xerr=[split[n]["loss_rel_se"] for n in runs], fmt="k|", ms=14,
                     label="loss against the labels")
    ax_loss.set(yticks=y, yticklabels=runs, xlabel="fraction of the label variance",
                title="held-out loss = noise floor + model error")
    fig.legend(*ax_loss.get_legend_handles_labels(), loc="outside lower center", ncols=3,
               fontsize=8)
    ax_err.barh(y, error, xerr=[split[n]["model_error_rel_se"] for n in runs], color=colours,
                capsize=3)
    ax_err.set(yticks=y, yticklabels=[], xlabel="model error vs exact mean force "
               "(fraction of the label variance)",
               title=f"which model is closest to the mean force ({split[runs[0]]['frames']} "
                     "frames)")
    ax_err.set_xlim(left=0)
    columns = {"run": runs, **{key: [split[n][key] for n in runs] for key in (
        "loss_rel", "loss_rel_se", "noise_floor_rel", "noise_floor_rel_se", "model_error_rel",
        "model_error_rel_se", "closure_rel", "sampling_variance_rel", "frames")}}
    save(fig, CG_FIGURE, columns)
    return split
