"""Accuracy of predicted energies and forces: one streaming accumulator for every number reported.

Training (per-epoch and final validation), validation of the test split and the collapse
diagnostic all report the same keys, computed the same way, from running float64 sums over
chunks of frames:

    force_rmse, force_mae            kJ mol-1 nm-1 (over all force components)
    force_rmse_meV_A, force_mae_meV_A
    force_rmse_rel                   force_rmse / std of the reference components
    force_std_ref                    std of the reference force components (kJ mol-1 nm-1)
    force_std_ratio                  std(predicted) / std(reference) components
    force_corr                       Pearson r of the components; 0 for constant predictions
                                     (a collapsed model: no correlation), NaN for constant
                                     reference forces

The relative numbers (force_rmse_rel, force_std_ratio, force_corr) are NaN when the reference
forces are constant: undefined, never a number to report. Validation and training refuse such
data by name, and `atomic.write_json` refuses to write a NaN.
    energy_mae_per_atom, energy_rmse_per_atom     kJ mol-1 per atom (|ΔE| / N)
    energy_mae_per_atom_meV

Where the data hold a virial, `virial_accuracy` adds the virial's error and the pressure it
puts on the frames (validation of the test split).
"""

from __future__ import annotations

import math

import numpy as np

from forcematch.units import KJ_MOL_NM3_TO_BAR, KJ_MOL_NM_TO_MEV_A, KJ_MOL_TO_MEV

UNITS = {
    "force_rmse": "kJ mol-1 nm-1",
    "force_mae": "kJ mol-1 nm-1",
    "force_rmse_rel": "1 (fraction of the reference force std)",
    "force_rmse_meV_A": "meV A-1",
    "force_mae_meV_A": "meV A-1",
    "force_std_ref": "kJ mol-1 nm-1",
    "force_std_ratio": "1 (std of predicted / reference force components)",
    "force_corr": "1 (Pearson correlation of force components)",
    "energy_mae_per_atom": "kJ mol-1 (per atom)",
    "energy_mae_per_atom_meV": "meV (per atom)",
    "energy_rmse_per_atom": "kJ mol-1 (per atom)",
    "virial_rmse_per_atom": "kJ mol-1 (per atom, over the nine components)",
    "virial_rmse_rel": "1 (fraction of the reference's spread of W/N about its mean)",
    "virial_pressure_offset_bar": "bar (mean of tr(W_pred - W)/(3V) over the frames)",
    "virial_pressure_offset_se_bar": "bar (standard error of that mean)",
}

_SUMS = ("frames", "values", "sq_err", "abs_err", "f", "f2", "p", "p2", "pf", "abs_e", "sq_e")


class Accuracy:
    """Running sums of prediction errors over chunks of frames of N atoms.

    `add` chunks in any order and size; `result()` gives the metrics of all frames added
    (equal to the one-shot numpy formulas to round-off, ~1e-12 relative).
    """

    def __init__(self, n_atoms: int):
        self.n_atoms = int(n_atoms)
        self.sums = dict.fromkeys(_SUMS, 0.0)

    def add(self, energy_pred, forces_pred, energy_ref, forces_ref) -> Accuracy:
        """Energies [B] (kJ/mol, totals per frame), forces [B,N,3] (kJ/mol/nm)."""
        p = np.asarray(forces_pred, np.float64)
        f = np.asarray(forces_ref, np.float64)
        de = (np.asarray(energy_pred, np.float64) - np.asarray(energy_ref, np.float64))
        de = de / self.n_atoms
        df = p - f
        s = self.sums
        s["frames"] += de.size
        s["values"] += f.size
        for key, value in (("sq_err", df * df), ("abs_err", np.abs(df)), ("f", f),
                           ("f2", f * f), ("p", p), ("p2", p * p), ("pf", p * f),
                           ("abs_e", np.abs(de)), ("sq_e", de * de)):
            s[key] += float(np.sum(value))
        return self

    def result(self) -> dict[str, float]:
        """The metrics (module docstring) of every frame added so far."""
        s, m = self.sums, max(self.sums["values"], 1.0)
        rmse, mae = math.sqrt(s["sq_err"] / m), s["abs_err"] / m
        f_std = math.sqrt(max(s["f2"] / m - (s["f"] / m) ** 2, 0.0))
        p_std = math.sqrt(max(s["p2"] / m - (s["p"] / m) ** 2, 0.0))
        cov = s["pf"] / m - (s["p"] / m) * (s["f"] / m)
        frames = max(s["frames"], 1.0)
        e_mae, e_rmse = s["abs_e"] / frames, math.sqrt(s["sq_e"] / frames)
        if f_std == 0:
            corr = math.nan
        else:
            corr = cov / (p_std * f_std) if p_std > 0 else 0.0
        return {
            "force_rmse": rmse,
            "force_mae": mae,
            "force_rmse_rel": rmse / f_std if f_std > 0 else math.nan,
            "force_rmse_meV_A": rmse * KJ_MOL_NM_TO_MEV_A,
            "force_mae_meV_A": mae * KJ_MOL_NM_TO_MEV_A,
            "force_std_ref": f_std,
            "force_std_ratio": p_std / f_std if f_std > 0 else math.nan,
            "force_corr": corr,
            "energy_mae_per_atom": e_mae,
            "energy_mae_per_atom_meV": e_mae * KJ_MOL_TO_MEV,
            "energy_rmse_per_atom": e_rmse,
        }


def force_accuracy_by_species(forces_ref, forces_pred, species,
                              names: list[str] | None = None) -> list[dict]:
    """Force errors of each species' atoms: one row per species index s present in `species`
    [N] (forces [T,N,3] kJ/mol/nm): species, name (`names[s]`, else str(s)), n_atoms and the
    force keys of `Accuracy.result` (force_rmse, force_rmse_rel, force_rmse_meV_A, ...)."""
    species = np.asarray(species)
    forces_ref, forces_pred = np.asarray(forces_ref), np.asarray(forces_pred)
    rows = []
    for s in np.unique(species):
        atoms = species == s
        ref, pred = forces_ref[:, atoms], forces_pred[:, atoms]
        zeros = np.zeros(ref.shape[0])
        result = Accuracy(int(atoms.sum())).add(zeros, pred, zeros, ref).result()
        name = names[s] if names is not None and s < len(names) else str(int(s))
        rows.append({"species": int(s), "name": name, "n_atoms": int(atoms.sum())}
                    | {k: v for k, v in result.items() if k.startswith("force_")})
    return rows


def accuracy(energy_ref, energy_pred, forces_ref, forces_pred) -> dict[str, float]:
    """The metrics of one set of frames: energies [T] kJ/mol, forces [T,N,3] kJ/mol/nm."""
    n_atoms = np.shape(forces_ref)[1]
    return Accuracy(n_atoms).add(energy_pred, forces_pred, energy_ref, forces_ref).result()


def virial_accuracy(virial_ref, virial_pred, box_nm, n_atoms: int) -> dict[str, float]:
    """The virial's error on frames of `n_atoms` atoms: W = −dU/dε [T,3,3] kJ/mol, reference
    and predicted, in orthorhombic boxes [T,3] nm (`UNITS`): RMSE per atom and relative to the
    reference's spread, and the pressure the error adds, tr(ΔW)/(3V), as its mean over frames
    (bar) and that mean's standard error (frames as independent: a lower bound for correlated
    frames)."""
    ref, pred = np.asarray(virial_ref, np.float64), np.asarray(virial_pred, np.float64)
    n_frames = ref.shape[0]
    volume_nm3 = np.prod(np.broadcast_to(np.asarray(box_nm, np.float64), (n_frames, 3)), axis=1)
    error = pred - ref
    rmse = float(np.sqrt(np.mean(error**2))) / n_atoms
    spread = float(np.sqrt(np.mean(ref.var(axis=0)))) / n_atoms
    offset_bar = np.trace(error, axis1=1, axis2=2) / (3 * volume_nm3) * KJ_MOL_NM3_TO_BAR
    se = float(offset_bar.std(ddof=1) / math.sqrt(n_frames)) if n_frames > 1 else math.nan
    return {"virial_rmse_per_atom": rmse, "virial_rmse_rel": rmse / spread if spread > 0
            else math.nan, "virial_pressure_offset_bar": float(offset_bar.mean()),
            "virial_pressure_offset_se_bar": se}
