"""Paper figures, drawn from the CSV and JSON files that training and validation wrote.

Every figure is saved as PNG and PDF together with the CSV of exactly the data it shows. The
whole output directory is drawn in a temporary directory and renamed into place when complete
(`atomic.atomic_directory`), so a failed run leaves the previous figures, never new files
beside old ones; it may hold only the files written here (`output_names`). Nothing here
recomputes a result: the parity panels state the RMSE of metrics.json (all test frames), not
one of the points drawn (the force CSV of validation holds a sample of components). Every input
is checked first, naming the directory or file that is missing, empty or malformed.
Units are those of the CSV columns they plot: forces kJ/mol/nm, energies kJ/mol per atom
(parity) or meV/atom (accuracy vs size), finite-difference steps nm; errors are relative.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from forcematch.config import config_hash  # noqa: E402
from forcematch.figures.captions import HEADLINE_SUFFIX, headline  # noqa: E402
from forcematch.figures.cg import CG_FIGURE, cg_split_figure  # noqa: E402
from forcematch.figures.inputs import Inputs, load_inputs, read_csv  # noqa: E402
from forcematch.figures.pair import PAIR_FIGURE, pair_potential_figure, pair_runs  # noqa: E402
from forcematch.figures.styles import legend_outside, run_style, style_of  # noqa: E402
from forcematch.io.atomic import (  # noqa: E402
    atomic_directory,
    check_replaceable,
    output_errors,
    write_csv,
    write_json,
)
from forcematch.io.provenance import provenance  # noqa: E402
from forcematch.md import figures as md_figures  # noqa: E402

FIGURES = ("parity_force", "parity_energy", "learning_curve", "accuracy_vs_size", "fd_error",
           "net_force")


def output_names() -> list[str]:
    """Every file `make_figures` may write (the output directory holds these and no other)."""
    names = (*FIGURES, "collapse", *md_figures.MD_FIGURES, PAIR_FIGURE, CG_FIGURE)
    return ([f"{name}.{ext}" for name in names for ext in ("png", "pdf", "csv")]
            + [f"{name}{HEADLINE_SUFFIX}" for name in names] + ["provenance.json"])


def _save(fig, out_dir: Path, name: str, columns: dict[str, Sequence]) -> None:
    """Write name.png, name.pdf and name.csv (long format, one row per plotted point) into the
    directory being drawn; the figure is closed."""
    try:
        for suffix in ("png", "pdf"):
            fig.savefig(out_dir / f"{name}.{suffix}", format=suffix, dpi=150,
                        bbox_inches="tight")
    finally:
        plt.close(fig)
    write_csv(out_dir / f"{name}.csv", columns)


def _long(tables: dict[str, dict[str, np.ndarray]], keys: Sequence[str]) -> dict[str, list]:
    """Stack {series: {column: values}} into long-format columns with a 'series' column."""
    out: dict[str, list] = {"series": []} | {k: [] for k in keys}
    for series, table in tables.items():
        n = len(table[keys[0]])
        out["series"] += [series] * n
        for k in keys:
            out[k] += [float(v) for v in table[k]]
    return out


def parity_figure(runs: dict[str, Path], metrics: dict[str, dict], out_dir: Path,
                  quantity: str) -> None:
    """Predicted against reference forces or energies per atom, one panel per model. Each
    panel states the RMSE of metrics.json (over every test frame), whatever sample is drawn."""
    x_key, y_key, unit, plain_unit, rmse_key = {
        "force": ("force_true_kJ_mol_nm", "force_pred_kJ_mol_nm", "kJ mol$^{-1}$ nm$^{-1}$",
                  "kJ/mol/nm", "force_rmse"),
        "energy": ("energy_true_kJ_mol_per_atom", "energy_pred_kJ_mol_per_atom",
                   "kJ mol$^{-1}$ per atom", "kJ/mol per atom", "energy_rmse_per_atom"),
    }[quantity]
    tables = {name: read_csv(d / f"parity_{quantity}.csv", (x_key, y_key))
              for name, d in runs.items()}
    n_cols = min(3, len(tables))
    n_rows = -(-len(tables) // n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4 * n_cols, 4 * n_rows), squeeze=False,
                             layout="constrained")
    for ax in axes.ravel()[len(tables):]:
        ax.set_visible(False)
    for ax, (name, table) in zip(axes.ravel(), tables.items(), strict=False):
        x, y, m = table[x_key], table[y_key], metrics[name]
        lo, hi = min(x.min(), y.min()), max(x.max(), y.max())
        ax.plot([lo, hi], [lo, hi], color="0.6", lw=1)
        ax.scatter(x, y, s=2, alpha=0.4, rasterized=True)
        total = m["n_test_frames"] * (3 * m["n_atoms"] if quantity == "force" else 1)
        shown = f"; {len(x)} of {total} points shown" if len(x) < total else ""
        ax.set(title=f"{name}\nRMSE {m[rmse_key]:.3g} {plain_unit}\n"
                     f"({m['n_test_frames']} test frames{shown})",
               xlabel=f"reference {quantity} ({unit})", ylabel=f"predicted {quantity} ({unit})")
        ax.title.set_fontsize(9)  # three lines: the panels' titles must not overlap
        ax.set_aspect("equal")
    _save(fig, out_dir, f"parity_{quantity}", _long(tables, [x_key, y_key]))


def learning_curve_figure(train_dirs: dict[str, Path], out_dir: Path) -> None:
    """Validation force RMSE (fraction of the force std) and training loss per epoch."""
    keys = ["epoch", "train_loss", "val_force_rmse_rel", "val_force_std_ratio", "val_force_corr"]
    tables = {name: read_csv(d / "metrics.csv", keys) for name, d in train_dirs.items()}
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    for name, t in tables.items():
        style = style_of(name)
        ax_loss.semilogy(t["epoch"], t["train_loss"], ms=3, label=name, **style)
        ax_err.loglog(t["epoch"], 100 * t["val_force_rmse_rel"], ms=3, label=name, **style)
    ax_loss.set(xlabel="epoch", ylabel="training loss (normalised)")
    ax_err.set(xlabel="epoch", ylabel="validation force RMSE (% of force std)")
    legend_outside(fig, ax_err)
    _save(fig, out_dir, "learning_curve", _long(tables, keys))


def accuracy_vs_size_figure(metrics: dict[str, dict], out_dir: Path) -> None:
    """Test force RMSE (% of the force std) and energy MAE against training-set size, per model
    and loss; with one training-set size, against the model family (one marker per loss)."""
    groups: dict[str, list[tuple[int, float, float]]] = {}
    for m in metrics.values():
        groups.setdefault(f"{m['model']} {m['loss']}", []).append(
            (int(m["n_train"]), 100 * m["force_rmse_rel"], m["energy_mae_per_atom_meV"]))
    sizes = sorted({n for points in groups.values() for n, _, _ in points})
    families = list(dict.fromkeys(label.split(" ")[0] for label in sorted(
        groups, key=lambda label: _family_order(label.split(" ")[0]))))
    losses = list(dict.fromkeys(label.split(" ")[1] for label in groups))
    fig, (ax_f, ax_e) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    columns: dict[str, list] = {"series": [], "n_train": [], "force_rmse_percent_of_std": [],
                                "energy_mae_meV_per_atom": []}
    for label, points in sorted(groups.items(), key=lambda item: (
            _family_order(item[0].split(" ")[0]), item[0])):
        n, f, e = (np.array(v) for v in zip(*sorted(points), strict=True))
        family, loss = label.split(" ")
        style = run_style(family, loss)
        if len(sizes) == 1:  # one size: the family on the x axis, the losses side by side
            x = families.index(family) + 0.15 * (losses.index(loss) - (len(losses) - 1) / 2)
            x = np.full(len(n), x)
            style["linestyle"] = "none"
        else:
            x = n
        ax_f.plot(x, f, label=label, **style)
        ax_e.plot(x, e, label=label, **style)
        columns["series"] += [label] * len(n)
        columns["n_train"] += n.tolist()
        columns["force_rmse_percent_of_std"] += f.tolist()
        columns["energy_mae_meV_per_atom"] += e.tolist()
    for ax, values in ((ax_f, columns["force_rmse_percent_of_std"]),
                       (ax_e, columns["energy_mae_meV_per_atom"])):
        if max(values) > 10 * min(values) > 0:  # log only where the values span a decade
            ax.set_yscale("log")
        if len(sizes) == 1:
            ax.set_xticks(range(len(families)), families)
            ax.set_xlim(-0.5, len(families) - 0.5)
            ax.set_xlabel(f"model family ({sizes[0]:,} training frames)")
            ax.grid(axis="y", which="major", alpha=0.3)
        else:
            ax.set_xscale("log")
            ax.set_xlabel("training frames")
    ax_f.set(ylabel="test force RMSE (% of force std)")
    ax_e.set(ylabel="test energy MAE (meV/atom)")
    legend_outside(fig, ax_f)
    _save(fig, out_dir, "accuracy_vs_size", columns)


def _family_order(family: str) -> tuple[int, str]:
    """The sweep's order of families (the MS-CG baseline first), unknown ones after."""
    order = ("spline", "pair", "atomic", "mpnn", "graph_network")
    return (order.index(family) if family in order else len(order), family)


def fd_figure(runs: dict[str, Path], out_dir: Path) -> None:
    """Finite-difference error against step size: truncation (large h) meets round-off (small h)."""
    keys = ["step_nm", "max_rel_error", "median_rel_error"]
    tables = {name: read_csv(d / "fd.csv", keys) for name, d in runs.items()}
    fig, (ax_max, ax_median) = plt.subplots(1, 2, figsize=(11, 4), sharey=True,
                                            layout="constrained")
    for name, t in tables.items():
        style = style_of(name)
        ax_max.loglog(t["step_nm"], t["max_rel_error"], ms=3, label=name, **style)
        ax_median.loglog(t["step_nm"], t["median_rel_error"], ms=3, label=name, **style)
    ax_max.set(xlabel="finite-difference step h (nm)", ylabel="|F$_{FD}$ − F| / rms F",
               title="largest over the checked atoms")
    ax_median.set(xlabel="finite-difference step h (nm)", title="median")
    fig.suptitle("central differences of the energy against the forces (float64)")
    legend_outside(fig, ax_max)
    _save(fig, out_dir, "fd_error", _long(tables, keys))


def net_force_figure(runs: dict[str, Path], out_dir: Path) -> None:
    """Histogram of |sum_i F_i| per frame on a log axis."""
    keys = ["frame", "net_force_kJ_mol_nm"]
    tables = {name: read_csv(d / "net_force.csv", keys) for name, d in runs.items()}
    values = [np.maximum(t["net_force_kJ_mol_nm"], 1e-300) for t in tables.values()]
    lo = np.log10(max(min(v.min() for v in values), 1e-16))
    hi = np.log10(max(v.max() for v in values)) + 0.1
    bins = np.logspace(lo - 0.1, hi, 50)
    fig, ax = plt.subplots(figsize=(7, 3.8), layout="constrained")
    for (name, _), v in zip(tables.items(), values, strict=True):
        style = {k: w for k, w in style_of(name).items()
                 if k in ("color", "linestyle", "alpha")}
        ax.hist(v, bins=bins, histtype="step", lw=1.5, label=name, **style)
    ax.set(xscale="log", xlabel="net force per frame |Σ F$_i$| (kJ mol$^{-1}$ nm$^{-1}$)",
           ylabel="frames")
    legend_outside(fig, ax)
    _save(fig, out_dir, "net_force", _long(tables, keys))


COLLAPSE_MARKERS = "os^vDxP<>"


def collapse_figure(diagnose_dir: Path, summary: dict, out_dir: Path) -> None:
    """Force spread ratio (log scale) and correlation per epoch of the trained runs of the
    collapse study, and spread against correlation."""
    keys = ["epoch", "val_force_std_ratio", "val_force_corr", "val_force_rmse_rel"]
    tables = {name: read_csv(diagnose_dir / name / "metrics.csv", keys)
              for name, run in summary["runs"].items() if run.get("trained", True)}
    fig, (ax_s, ax_c, ax_r) = plt.subplots(1, 3, figsize=(14, 4.2), layout="constrained")
    for k, (name, t) in enumerate(tables.items()):
        # open markers of different shapes: runs whose curves coincide (a model trained on
        # sign-flipped labels learns -E, with the same force metrics) stay visible
        style = {"ls": "-" if name.startswith("graph_network") else "--",
                 "marker": COLLAPSE_MARKERS[k % len(COLLAPSE_MARKERS)], "ms": 5, "mfc": "none"}
        (line,) = ax_s.plot(t["epoch"], np.maximum(t["val_force_std_ratio"], 1e-4), label=name,
                            **style)
        ax_c.plot(t["epoch"], t["val_force_corr"], color=line.get_color(), **style)
        ax_r.plot(t["val_force_corr"], t["val_force_std_ratio"], color=line.get_color(), **style)
        ax_r.plot(t["val_force_corr"][-1:], t["val_force_std_ratio"][-1:], marker="*", ms=10,
                  color=line.get_color())
    ax_s.set(xlabel="epoch", ylabel="spread ratio std(F pred) / std(F label)", yscale="log",
             title=f"{summary['n_train']} training frames; validation labels")
    ax_s.axhline(1.0, color="0.6", lw=1)
    ax_c.set(xlabel="epoch", ylabel="correlation of F pred with F label", ylim=(-1.05, 1.05))
    ax_r.plot([0, 1], [0, 1], color="0.6", lw=1, label="ratio = correlation")
    ax_r.set(xlabel="correlation (star: last epoch)", ylabel="spread ratio", xlim=(-1.05, 1.05),
             ylim=(-0.05, 1.5))
    ax_s.legend(fontsize=7)
    ax_r.legend(fontsize=7)
    if not any(name.startswith("graph_network") for name in tables):
        fig.suptitle(_untrained_graph_network_note(summary), fontsize=9)
    _save(fig, out_dir, "collapse", _long(tables, keys))


def _untrained_graph_network_note(summary: dict) -> str:
    """The figure's pointer to the graph network's trained runs, with the gradient balance of
    its joint loss where the study checked it without training."""
    note = ("graph network (JAX MD notebook) not trained here: snakemake --cores 2 "
            "--configfile config/collapse.yaml")
    for name, run in summary["runs"].items():
        ratio = (run.get("checks", {}).get("gradient_balance") or {}).get("energy_over_force")
        if name.startswith("graph_network") and run.get("loss") == "joint" and ratio:
            note = (f"graph network, notebook joint loss at initialisation: energy-term gradient "
                    f"{ratio:.2g} x the force term's\n{note}")
            break
    return note


def make_figures(
    validate_dirs: Sequence[str | Path],
    train_dirs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    diagnose_dir: str | Path | None = None,
    md_dirs: Sequence[str | Path] = (),
    dataset_dir: str | Path | None = None,
    config_label: str | None = None,
    progress: Callable[[str], None] = print,
) -> list[Path]:
    """All figures. Series are named after their directories; 'reference' is the reference data.

    Per-run panels (parity, learning curves, FD, net force) show the runs trained on all frames;
    the accuracy-vs-size figure shows every run. Every input is checked before anything is
    drawn; `out_dir` is replaced whole when every figure is drawn. Each figure also gets
    `<name>.headline.rst` (`forcematch.figures.captions`: `config_label`, the config it came
    from, and its numbers), which its report caption includes.
    """
    out_dir = Path(out_dir)
    inputs = load_inputs(validate_dirs, train_dirs, diagnose_dir, md_dirs)
    check_replaceable(out_dir, output_names(), "--out-dir")
    with output_errors(out_dir.parent, own_name=True):
        out_dir.parent.mkdir(parents=True, exist_ok=True)
    with atomic_directory(out_dir) as tmp:
        names = _draw(inputs, tmp, None if dataset_dir is None else Path(dataset_dir))
        for name in names:
            (tmp / f"{name}{HEADLINE_SUFFIX}").write_text(headline(name, inputs, config_label))
        written = [out_dir / f"{name}{ext}" for name in names
                   for ext in (".png", ".pdf", ".csv", HEADLINE_SUFFIX)]
        # The figures' provenance: the records of every input they were drawn from.
        records = {f"validate/{name}": m.get("provenance") for name, m in inputs.metrics.items()}
        if inputs.summary is not None:
            records["diagnose"] = inputs.summary.get("provenance")
        records |= {f"md/{name}": m.get("provenance") for name, m in inputs.md.items()}
        write_json(tmp / "provenance.json",
                   provenance("figures", config_hash(records), inputs=records)
                   | {"files": [p.name for p in written]})
    progress(f"wrote {len(written)} files and provenance.json to {out_dir}")
    return written


def _draw(inputs: Inputs, out_dir: Path, dataset_dir: Path | None) -> list[str]:
    """Draw every figure of `inputs` into `out_dir`; the names drawn. `dataset_dir`: where
    the exact pair potential of simulated data comes from (the pair-potential figure)."""
    full, metrics = inputs.full, inputs.metrics
    parity_figure(full, metrics, out_dir, "force")
    parity_figure(full, metrics, out_dir, "energy")
    learning_curve_figure({name: inputs.trains[name] for name in full}, out_dir)
    accuracy_vs_size_figure(inputs.models, out_dir)
    with_reference = ({"reference": inputs.runs["reference"]} if "reference" in inputs.runs
                      else {}) | full
    fd_figure(with_reference, out_dir)
    # Net force: the reference, the per-atom energy model trained on energies only (the user's
    # question) and every joint model; every run where the sweep has none of them.
    net_runs = {name: d for name, d in with_reference.items() if name == "reference"
                or metrics[name]["loss"] == "joint"
                or (metrics[name]["model"], metrics[name]["loss"]) == ("atomic", "energy")}
    net_force_figure(net_runs or with_reference, out_dir)
    names = list(FIGURES)

    def save(fig, name, columns):
        _save(fig, out_dir, name, columns)

    pair_numbers = pair_potential_figure(inputs, dataset_dir, save)
    if pair_numbers is not None or pair_runs(inputs):
        inputs.drawn[PAIR_FIGURE] = pair_numbers or ("no exact pair potential (imported or "
                                                     "coarse-grained data)")
        names.append(PAIR_FIGURE)
    if cg_split_figure(metrics, save) is not None:
        names.append(CG_FIGURE)
    if inputs.diagnose_dir is not None:
        collapse_figure(inputs.diagnose_dir, inputs.summary, out_dir)
        names.append("collapse")
    if inputs.md:
        md_figures.drift_figure(inputs.md, save)
        md_figures.rdf_figure(inputs.md, [name for name in full if name in inputs.md], save)
        md_figures.summary_figure(inputs.md, metrics, save)
        names += md_figures.MD_FIGURES
    return names
