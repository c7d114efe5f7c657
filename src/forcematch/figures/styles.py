"""How a run is drawn in every figure with one line per run: colour by model family, line style
and marker by loss, faint for a run on a subset of the training frames; the reference black.

Matplotlib's colour cycle repeats after 10 lines and the default sweep draws 24: without a
scheme, `spline-force-nall` and `mpnn-force-nall` share a colour. Joint markers are hollow, so
that a joint run lying on its force-only twin still shows.
"""

from __future__ import annotations

# Okabe & Ito's colour-blind-safe palette (blue, bluish green, vermillion, reddish purple; grey
# for the baseline), so that no family pair is told apart by red against green alone.
FAMILY_COLOURS = {"spline": "#999999", "pair": "#0072B2", "atomic": "#009E73",
                  "mpnn": "#D55E00", "graph_network": "#CC79A7"}
LOSS_STYLES = {"energy": (":", "s"), "force": ("-", "o"), "joint": ("--", "^")}
SUBSET_ALPHA = 0.45  # runs on fewer than all training frames ('-n100')
REFERENCE = {"color": "k", "lw": 2, "marker": "o"}


def run_style(model: str, loss: str, subset: bool = False) -> dict:
    """Plot keywords of a run of `model` trained on `loss` (unknown ones: matplotlib's own)."""
    style: dict = {"marker": "o"}
    if model in FAMILY_COLOURS:
        style["color"] = FAMILY_COLOURS[model]
    if loss in LOSS_STYLES:
        style["linestyle"], style["marker"] = LOSS_STYLES[loss]
    if loss == "joint":
        style["markerfacecolor"] = "none"
    if subset:
        style["alpha"] = SUBSET_ALPHA
    return style


def style_of(name: str) -> dict:
    """`run_style` of a run named '<model>-<loss>-<n_train>' (a sweep's), REFERENCE for
    'reference', matplotlib's own for any other name."""
    if name == "reference":
        return dict(REFERENCE)
    parts = name.split("-")
    if len(parts) < 2:
        return {"marker": "o"}
    return run_style(parts[0], parts[1], subset=len(parts) > 2 and parts[2] != "nall")


def legend_outside(fig, ax) -> None:
    """The legend of `ax`'s lines to the right of the figure (constrained layout), off the
    data."""
    fig.legend(*ax.get_legend_handles_labels(), loc="outside right upper", fontsize=7)
