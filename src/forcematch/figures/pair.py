"""The pair-potential figure: φ(r) and F(r) = −dφ/dr of the pair families (`spline`, `pair`),
one run each (most frames, force loss first), with the spline's block uncertainty band, on
the exact switched Lennard-Jones pair potential that made the data (simulated data only;
imported data have none), and |F − F_exact| on a log scale: how far each fit is from the
truth at each distance.

Each fitted function comes from its run's model/pair_table.csv, which training writes
(`calculators.tables.write_pair_table`: float64 autodiff, the exporters' path), so that the
figures never load a model; the band from the spline run's fit.csv; the exact one from the
dataset's own config (`reference.system`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from forcematch.calculators.tables import PAIR_FAMILIES, PAIR_TABLE
from forcematch.errors import ForcematchError
from forcematch.figures.inputs import Inputs, read_csv

PAIR_FIGURE = "pair_potential"
LOSS_PREFERENCE = ("force", "joint", "energy")  # one run per family: the first loss found
SPARSE_EDGE_NM = 0.02  # the headline's numbers start this far above the closest pairs


def pair_runs(inputs: Inputs) -> dict[str, Path]:
    """Training directories of one run per pair family: its most training frames, then force
    loss first (the loss that pins φ down best)."""
    chosen: dict[str, tuple[int, int, str]] = {}
    for name, m in inputs.models.items():
        if m["model"] in PAIR_FAMILIES and name in inputs.trains:
            rank = (-int(m["n_train"]), LOSS_PREFERENCE.index(m["loss"]), name)
            chosen[m["model"]] = min(chosen.get(m["model"], rank), rank)
    return {name: inputs.trains[name] for _, _, name in sorted(chosen.values())}


def exact_pair(dataset_dir: Path | None):
    """f(a, b, r) -> (φ, F) of the switched LJ the dataset was simulated with, or None
    (no dataset given, imported data, or CG data, whose pair potential of mean force is not
    the atoms' LJ)."""
    if dataset_dir is None:
        return None
    from forcematch.config import validate_config
    from forcematch.io.h5md import read_parameters
    from forcematch.reference.system import lj_system_from_config, switched_lj_pair

    config = read_parameters(Path(dataset_dir) / "train.h5").get("config") or {}
    if config.get("import") is not None or config.get("cg") is not None \
            or "system" not in config:
        return None
    lj = lj_system_from_config(validate_config({"system": config["system"]},
                                               source=f"{dataset_dir}/train.h5"))
    return lambda a, b, r: switched_lj_pair(lj, a, b, r)


def _pair_table(train_dir: Path) -> dict[tuple[int, int], tuple[np.ndarray, ...]]:
    """(r, φ, F) [M] per species pair (a, b) of a run's model/pair_table.csv."""
    path = train_dir / "model" / PAIR_TABLE
    if not path.is_file():
        raise ForcematchError(f"{path}: missing; a pair-family run writes it when it finishes "
                              "training (rerun the run's training)")
    t = read_csv(path, ["species_a", "species_b", "r_nm", "phi_kJ_mol", "force_kJ_mol_nm"])
    keys = sorted({(int(a), int(b)) for a, b in zip(t["species_a"], t["species_b"],
                                                    strict=True)})
    return {(a, b): tuple(t[k][(t["species_a"] == a) & (t["species_b"] == b)]
                          for k in ("r_nm", "phi_kJ_mol", "force_kJ_mol_nm"))
            for a, b in keys}


def _band(train_dir: Path, a: int, b: int):
    """(r, F, σ_F) of a spline run's fit.csv for species pair (a, b), or None."""
    path = train_dir / "fit.csv"
    if not path.exists():
        return None
    t = read_csv(path, ["species_a", "species_b", "r_nm", "force_kJ_mol_nm",
                        "force_se_kJ_mol_nm"])
    sel = (t["species_a"] == a) & (t["species_b"] == b)
    return t["r_nm"][sel], t["force_kJ_mol_nm"][sel], t["force_se_kJ_mol_nm"][sel]


def pair_potential_figure(inputs: Inputs, dataset_dir: Path | None,
                          save: Callable) -> str | None:
    """Draw the figure (module docstring) if a pair family was trained; its headline numbers
    (median and max |F − F_exact| per run from SPARSE_EDGE_NM above the lowest table start
    on), or None when there is no exact potential or no pair family."""
    runs = pair_runs(inputs)
    if not runs:
        return None
    tables = {name: _pair_table(d) for name, d in runs.items()}
    exact = exact_pair(dataset_dir)
    pairs = list(next(iter(tables.values())))
    fig, axes = plt.subplots(len(pairs), 3 if exact else 2, figsize=(13 if exact else 9,
                             3.6 * len(pairs)), layout="constrained", squeeze=False)
    columns: dict[str, list] = {k: [] for k in ("series", "species_a", "species_b", "r_nm",
                                                "phi_kJ_mol", "force_kJ_mol_nm")}
    gaps: dict[str, list] = {}
    for row, (a, b) in zip(axes, pairs, strict=True):
        bands = {name: _band(runs[name], a, b) for name in runs}
        r_lo = min((band[0][0] for band in bands.values() if band is not None),
                   default=0.35 * next(iter(tables.values()))[(a, b)][0][-1])
        curves = {name: tuple(v[table[(a, b)][0] >= r_lo - 1e-9] for v in table[(a, b)])
                  for name, table in tables.items()}
        if exact:
            r = next(iter(curves.values()))[0]
            curves["exact switched LJ"] = (r, *exact(a, b, r))
        for name, (r, phi, force) in curves.items():
            row[0].plot(r, phi, label=name, lw=1)
            row[1].plot(r, force, label=name, lw=1)
            columns["series"] += [name] * len(r)
            columns["species_a"] += [a] * len(r)
            columns["species_b"] += [b] * len(r)
            for key, values in (("r_nm", r), ("phi_kJ_mol", phi), ("force_kJ_mol_nm", force)):
                columns[key] += np.asarray(values).tolist()
            if exact and name in runs:
                gap = np.abs(force - exact(a, b, r)[1])
                gaps.setdefault(name, []).append(gap[r >= r_lo + SPARSE_EDGE_NM])
                row[2].semilogy(r, np.maximum(gap, 1e-12), label=f"{name}", lw=1)
        for name, band in bands.items():
            if band is not None:
                rb, fb, se = band
                row[1].fill_between(rb, fb - 2 * se, fb + 2 * se, alpha=0.3, lw=0,
                                    label=f"{name} ±2σ (blocks)")
                if exact:
                    row[2].semilogy(rb, np.maximum(2 * se, 1e-12), ls=":", lw=1,
                                    label=f"{name} 2σ (blocks)")
        _label(row, a, b, bool(exact), curves)
    save(fig, PAIR_FIGURE, columns)
    return "; ".join(
        f"{name} median {np.median(np.concatenate(g)):.3g}, max {np.concatenate(g).max():.3g}"
        for name, g in gaps.items()) or None


def _label(row, a: int, b: int, exact: bool, curves: dict) -> None:
    """Axes labels; the y ranges show the well and the force minimum, not the wall."""
    title = f"species {a}-{b}"
    wells = [min(float(np.nanmin(np.concatenate([v[q] for v in curves.values()]))), -1e-6)
             for q in (1, 2)]  # curves: name -> (r, φ, F)
    row[0].set(xlabel="r (nm)", ylabel="φ(r) (kJ/mol)", title=title,
               ylim=(1.3 * wells[0], -3 * wells[0]))
    row[1].set(xlabel="r (nm)", ylabel="F(r) = −dφ/dr (kJ/mol/nm)", title=title,
               ylim=(1.3 * wells[1], -4 * wells[1]))
    row[0].legend(fontsize=7)
    row[1].legend(fontsize=7)
    if exact:
        row[2].set(xlabel="r (nm)", ylabel="|F − F_exact| (kJ/mol/nm)", title=title)
        row[2].legend(fontsize=7)
