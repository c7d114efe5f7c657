"""The MD figures, drawn from md.json files (`forcematch md`) and validation metrics; nothing is
recomputed here.

    md_drift     |energy drift| and fluctuation against time step, log-log, with a Δt² guide
    md_rdf       g(r) of the reference's NVT run and of each model trained on all frames
    md_summary   test force error, time to failure (T and stress T), |drift| and pressure
                 error side by side for every run: which test errors predict a usable potential

`save(fig, name, columns)` writes PNG, PDF and the CSV of the plotted points (figures._save).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import NullFormatter

from forcematch.figures.styles import legend_outside, style_of

MD_FIGURES = ("md_drift", "md_rdf", "md_summary")


def _nve_rows(summary: dict) -> list[dict]:
    return [r for r in summary.get("energy", {}).get("nve", []) if r.get("stable")]


def drift_figure(md: dict[str, dict], save) -> None:
    """|Drift| (ε/atom/ns) and fluctuation (ε/atom) of NVE against the time step (fs)."""
    fig, (ax_d, ax_f) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    cols: dict[str, list] = {"series": [], "timestep_fs": [], "abs_drift_eps_per_atom_per_ns": [],
                             "fluctuation_eps_per_atom": []}
    for name, summary in md.items():
        rows = _nve_rows(summary)
        if not rows:
            continue
        dt = np.array([r["timestep_fs"] for r in rows])
        drift = np.abs([r.get("drift_eps_per_atom_per_ns") or np.nan for r in rows])
        fluct = np.array([r.get("fluctuation_eps_per_atom") or np.nan for r in rows])
        style = style_of(name)
        ax_d.loglog(dt, drift, label=name, **style)
        ax_f.loglog(dt, fluct, label=name, **style)
        cols["series"] += [name] * len(dt)
        cols["timestep_fs"] += dt.tolist()
        cols["abs_drift_eps_per_atom_per_ns"] += drift.tolist()
        cols["fluctuation_eps_per_atom"] += fluct.tolist()
    if cols["timestep_fs"]:
        dt = np.array(sorted(set(cols["timestep_fs"])))
        top = np.nanmax(cols["fluctuation_eps_per_atom"])
        ax_f.loglog(dt, top * (dt / dt.max()) ** 2, color="0.6", ls="--", label="∝ Δt²")
        for ax in (ax_d, ax_f):  # the time steps run, as plain numbers
            ax.set_xticks(dt, labels=[f"{t:g}" for t in dt])
            ax.xaxis.set_minor_formatter(NullFormatter())
    ax_d.set(xlabel="time step (fs)", ylabel="|NVE energy drift| (ε per atom per ns)")
    ax_f.set(xlabel="time step (fs)", ylabel="NVE energy fluctuation (ε per atom)")
    legend_outside(fig, ax_f)
    save(fig, "md_drift", cols)


def rdf_figure(md: dict[str, dict], shown: list[str], save) -> None:
    """g(r) of the reference's NVT run and of the runs in `shown` (left), and each run's
    max|Δg| against the reference beside the reference's replica-to-replica noise floor
    (right): an overlay of many runs is one band, the difference panel says which differ."""
    fig, (ax, diff) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained",
                                   width_ratios=(3, 2))
    cols: dict[str, list] = {"series": [], "r_A": [], "g": [], "max_abs_delta_g": []}
    runs = []
    for name in ["reference", *shown]:
        liquid = md.get(name, {}).get("liquid")
        if liquid is None:
            continue
        r, g = np.array(liquid["rdf"]["r_A"]), np.array(liquid["rdf"]["g"])
        style = {"lw": 1.0} | {k: v for k, v in style_of(name).items() if k != "marker"}
        ax.plot(r, g, label=name, **style)
        delta = md[name].get("against_reference", {}).get("rdf_max_abs_delta_g", np.nan)
        cols["series"] += [name] * len(r)
        cols["r_A"] += r.tolist()
        cols["g"] += g.tolist()
        cols["max_abs_delta_g"] += [delta] * len(r)
        if name != "reference":
            runs.append((name, delta))
    floor = md.get("reference", {}).get("rdf_noise_floor")
    ax.set(xlabel="r (Å)", ylabel="g(r)", title="NVT at T")
    for k, (name, delta) in enumerate(runs):
        if np.isfinite(delta):
            style = {key: v for key, v in style_of(name).items() if key != "linestyle"}
            diff.plot([k], [delta], linestyle="none", **style)
    if floor:
        diff.axhline(floor, color="k", lw=1.5, ls="--")
        diff.axhspan(0, floor, color="0.9", zorder=0)
        diff.text(0.02, floor, " reference noise floor (replicas)", va="top", fontsize=8,
                  transform=diff.get_yaxis_transform())
    diff.set_xticks(range(len(runs)), [name for name, _ in runs], rotation=90, fontsize=7)
    diff.set(ylabel="max |g(r) − g_reference(r)|", ylim=(0, None),
             title="difference against the reference")
    legend_outside(fig, ax)
    save(fig, "md_rdf", cols)


def _summary_columns(md: dict[str, dict], metrics: dict[str, dict]) -> dict[str, list]:
    cols: dict[str, list] = {k: [] for k in (
        "series", "test_force_rmse_percent_of_std", "time_to_failure_T_ps",
        "time_to_failure_stress_ps", "duration_ps", "abs_drift_eps_per_atom_per_ns",
        "pressure_error_bar", "pressure_combined_error_bar")}
    for name, summary in md.items():
        if name == "reference" or name not in metrics:
            continue
        stab = summary.get("stability", {})
        eq = summary["equilibration"]
        duration = stab.get("nvt", eq)["duration_ps"]
        # A run never started (failed equilibration) counts as failing when that did.
        ttf = {key: (np.nan if s["stable"] else s["time_to_failure_ps"])
               for key in ("nvt", "nvt_stress") for s in [stab.get(key, eq)]}
        rows = _nve_rows(summary)
        against = summary.get("against_reference", {}).get("pressure_bar") or {}
        cols["series"].append(name)
        cols["test_force_rmse_percent_of_std"].append(100 * metrics[name]["force_rmse_rel"])
        cols["time_to_failure_T_ps"].append(ttf["nvt"])
        cols["time_to_failure_stress_ps"].append(ttf["nvt_stress"])
        cols["duration_ps"].append(duration)
        cols["abs_drift_eps_per_atom_per_ns"].append(
            abs(rows[0]["drift_eps_per_atom_per_ns"]) if rows else np.nan)
        cols["pressure_error_bar"].append(against.get("difference", np.nan))
        cols["pressure_combined_error_bar"].append(against.get("combined_error", np.nan))
    return cols


def _x_scale(ax, x) -> None:
    """A log x axis labelled at decades where the errors span more than a decade, else linear
    (a narrow log range shows no labelled tick)."""
    x = x[np.isfinite(x) & (x > 0)]
    if x.size and x.max() > 10 * x.min():
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())


def _each_run(ax, names, x, y, yerr=None) -> None:
    """One point per run in its style (`figures.styles`: family colour, loss marker), labelled
    by the run's name for the figure's legend; NaN points are left out."""
    for k, name in enumerate(names):
        if not (np.isfinite(x[k]) and np.isfinite(y[k])):
            continue
        style = {key: v for key, v in style_of(name).items() if key not in ("linestyle",)}
        ax.errorbar(x[k], y[k], yerr=None if yerr is None else yerr[k], label=name,
                    linestyle="none", **style)


def summary_figure(md: dict[str, dict], metrics: dict[str, dict], save) -> None:
    """Four panels against the test force error, one point per run (legend): time to failure
    (the run's length where stable; failures crossed), |drift| at the production step, and the
    pressure error with its error bar."""
    cols = _summary_columns(md, metrics)
    names = cols["series"]
    x = np.array(cols["test_force_rmse_percent_of_std"], float)
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), layout="constrained")
    dur = np.array(cols["duration_ps"], float)
    for ax, key, label in ((axes[0, 0], "time_to_failure_T_ps", "NVT at T"),
                           (axes[0, 1], "time_to_failure_stress_ps", "NVT at stress T")):
        ttf = np.array(cols[key], float)
        failed = np.isfinite(ttf)
        _each_run(ax, names, x, np.where(failed, ttf, dur))
        ax.scatter(x[failed], ttf[failed], marker="x", s=90, color="k", zorder=3,
                   label="failed at" if key == "time_to_failure_T_ps" and failed.any() else None)
        _x_scale(ax, x)
        ax.set(xlabel="test force RMSE (% of std)",
               ylabel=f"time to failure, {label} (ps; run length if stable)")
    drift = np.array(cols["abs_drift_eps_per_atom_per_ns"], float)
    if np.isfinite(drift).any():
        _each_run(axes[1, 0], names, x, drift)
        axes[1, 0].set_yscale("log")
    else:
        axes[1, 0].text(0.5, 0.5, "no run stable in NVE", ha="center", va="center",
                        transform=axes[1, 0].transAxes)
    _x_scale(axes[1, 0], x)
    axes[1, 0].set(xlabel="test force RMSE (% of std)",
                   ylabel="|NVE drift| at the production step (ε/atom/ns)")
    dp = np.array(cols["pressure_error_bar"], float)
    if np.isfinite(dp).any():
        _each_run(axes[1, 1], names, x, dp,
                  yerr=2 * np.array(cols["pressure_combined_error_bar"], float))
    else:
        axes[1, 1].text(0.5, 0.5, "no run stable in NVT at T", ha="center", va="center",
                        transform=axes[1, 1].transAxes)
    _x_scale(axes[1, 1], x)
    axes[1, 1].axhline(0.0, color="0.6", lw=1)
    axes[1, 1].set(xlabel="test force RMSE (% of std)",
                   ylabel="pressure − reference (bar, ±2 combined errors)")
    legend_outside(fig, axes[0, 0])
    save(fig, "md_summary", cols)
