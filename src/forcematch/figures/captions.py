"""The headline of each figure: the config it came from and the numbers it shows, one short
reStructuredText paragraph per figure, from the inputs the figures were drawn from (nothing is
recomputed). `forcematch figures` writes them as `<figure>.headline.rst`; the report caption of
each figure (workflow/report/<figure>.rst) includes its file, so `snakemake --report` shows them
under the figure.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from forcematch.figures.inputs import Inputs

HEADLINE_SUFFIX = ".headline.rst"


def _pct(value: float) -> str:
    return f"{100 * value:.3g} %"


def _join(items: list[str]) -> str:
    return "; ".join(items) if items else "none"


def _models(inputs: Inputs, key: str, fmt: Callable[[float], str], runs=None) -> str:
    names = inputs.full if runs is None else runs
    return _join([f"{name} {fmt(inputs.metrics[name][key])}" for name in names
                  if isinstance(inputs.metrics[name].get(key), int | float)])


def _parity_force(inputs: Inputs) -> str:
    return ("Test force RMSE, % of the force std (meV/Å): " + _join([
        f"{name} {_pct(m['force_rmse_rel'])} ({m.get('force_rmse_meV_A', math.nan):.3g})"
        for name, m in ((n, inputs.metrics[n]) for n in inputs.full)]) + ".")


def _parity_energy(inputs: Inputs) -> str:
    return ("Test energy MAE per atom (meV): "
            + _models(inputs, "energy_mae_per_atom_meV", lambda v: f"{v:.3g}") + ".")


def _learning_curve(inputs: Inputs) -> str:
    return ("Runs trained on all frames; their test force RMSE: "
            + _models(inputs, "force_rmse_rel", _pct) + ".")


def _accuracy_vs_size(inputs: Inputs) -> str:
    by_run: dict[str, list[tuple[int, float]]] = {}
    for m in inputs.models.values():
        by_run.setdefault(f"{m['model']}-{m['loss']}", []).append(
            (int(m["n_train"]), float(m["force_rmse_rel"])))
    parts = []
    for run, points in by_run.items():
        points.sort()
        parts.append(f"{run} " + ", ".join(f"{_pct(e)} at {n} frames" for n, e in points))
    return "Test force RMSE (% of the force std): " + _join(parts) + "."


def _fd_error(inputs: Inputs) -> str:
    runs = (["reference"] if "reference" in inputs.metrics else []) + list(inputs.full)
    return ("Finite differences against forces, max relative error at the best step: "
            + _models(inputs, "fd_max_rel_error", lambda v: f"{v:.2g}", runs) + ".")


def _net_force(inputs: Inputs) -> str:
    runs = (["reference"] if "reference" in inputs.metrics else []) + list(inputs.full)
    return ("Largest net force per frame (kJ/mol/nm): "
            + _models(inputs, "net_force_max", lambda v: f"{v:.2g}", runs) + ".")


def _collapse(inputs: Inputs) -> str:
    runs = (inputs.summary or {}).get("runs", {})
    parts = [f"{name} {_pct(r['force_rmse_rel'])}, spread {r['force_std_ratio']:.3g}, "
             f"correlation {r['force_corr']:.3g}" for name, r in runs.items()
             if all(isinstance(r.get(k), int | float)
                    for k in ("force_rmse_rel", "force_std_ratio", "force_corr"))]
    return "Test force RMSE, spread and correlation of each run: " + _join(parts) + "."


def _md_drift(inputs: Inputs) -> str:
    parts = []
    for name, summary in inputs.md.items():
        rows = [r for r in summary.get("energy", {}).get("nve", [])
                if r.get("stable") and r.get("drift_eps_per_atom_per_ns") is not None]
        if rows:
            row = max(rows, key=lambda r: r["timestep_fs"])
            parts.append(f"{name} {row['drift_eps_per_atom_per_ns']:.2g} at "
                         f"{row['timestep_fs']:g} fs")
    return "NVE energy drift (ε per atom per ns): " + _join(parts) + "."


def _md_rdf(inputs: Inputs) -> str:
    floor = inputs.md.get("reference", {}).get("rdf_noise_floor")
    parts = [f"{name} {summary['against_reference']['rdf_max_abs_delta_g']:.3g}"
             for name, summary in inputs.md.items()
             if (summary.get("against_reference") or {}).get("available")]
    floor_text = f" (reference noise floor {floor:.3g})" if floor is not None else ""
    return f"Max abs Δg against the reference{floor_text}: " + _join(parts) + "."


def _md_summary(inputs: Inputs) -> str:
    runs = {name: s for name, s in inputs.md.items() if name != "reference"}
    failing = [f"{name} ({s.get('equilibration', {}).get('failure') or _first_failure(s)})"
               for name, s in runs.items() if not s.get("stable")]
    return (f"{len(runs) - len(failing)} of {len(runs)} runs stable in every MD run; failing: "
            + _join(failing) + ".")


def _first_failure(summary: dict) -> str:
    for key, stability in summary.get("stability", {}).items():
        if not stability.get("stable"):
            return f"{key} after {stability.get('time_to_failure_ps', math.nan):.3g} ps"
    return "NVE"


def _pair_potential(inputs: Inputs) -> str:
    return ("Pair families against the exact switched LJ, /F − F_exact/ in kJ/mol/nm from "
            "0.02 nm above the closest training pairs to the cutoff: "
            f"{inputs.drawn.get('pair_potential', 'none')}.")


def _cg_split(inputs: Inputs) -> str:
    parts = [f"{name} loss {c['loss_rel']:.3f} = floor {c['noise_floor_rel']:.3f} + error "
             f"{c['model_error_rel']:.4f} ± {c['model_error_rel_se']:.4f} (closure "
             f"{c['closure_rel']:+.4f})"
             for name, m in inputs.metrics.items() if isinstance(c := m.get("cg"), dict)]
    return ("Held-out loss of each CG model against the labels, split into the noise floor and "
            "its error against the exact mean force (fractions of the label variance): "
            + _join(parts) + ".")


HEADLINES: dict[str, Callable[[Inputs], str]] = {
    "parity_force": _parity_force, "parity_energy": _parity_energy,
    "learning_curve": _learning_curve, "accuracy_vs_size": _accuracy_vs_size,
    "fd_error": _fd_error, "net_force": _net_force, "collapse": _collapse,
    "md_drift": _md_drift, "md_rdf": _md_rdf, "md_summary": _md_summary,
    "pair_potential": _pair_potential, "cg_split": _cg_split,
}


def headline(name: str, inputs: Inputs, config_label: str | None) -> str:
    """The headline paragraph of figure `name` (reStructuredText, no markup characters from
    the data): the config it came from, then its numbers."""
    hashes = sorted({str((m.get("provenance") or {}).get("config_hash"))
                     for m in inputs.metrics.values()})
    source = (f"Config: {config_label}, validation" if config_label else "Config: validation")
    source += f" slice {', '.join(hashes)} (results/config/validate-<hash>.json). "
    text = source + HEADLINES[name](inputs)
    return text.replace("|", "/").replace("*", "x").replace("`", "'") + "\n"
