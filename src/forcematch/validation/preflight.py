"""Checks before training, for any user's data and model: what makes a force fit fail before
the first step, each measured and reported with its numbers.

- `neighbour_check`: pairs within the model's cutoff. None in any frame: the energy does not
  depend on the positions, so the forces are exactly zero under any loss (refused). Atoms with
  no neighbour get zero force (warned).
- `label_sign_check`: the force labels against the energies along the trajectory. Between
  adjacent frames, E(t+1) − E(t) ≈ −Σ_i ½ (F_i(t) + F_i(t+1)) · Δx_i (trapezoid rule for
  the work), so ΔE and this work correlate near +1 for F = −dE/dx and near −1 for labels of
  the wrong sign (refused). On the default argon data (100 fs between frames) ρ = 0.983; the
  slope of ΔE on the work (0.82 there), 1 in the limit of close frames, exposes a unit
  mix-up of ×4.184 or ×10 as a slope far from 1.
- `gradient_balance`: the norms of the energy and force terms' parameter gradients at
  initialisation. A term whose gradient is more than `GRADIENT_RATIO_WARN` times the other's
  sets the direction of every (clipped) step: warned, with the weight that balances them.
- `zero_force_loss`: the force loss of predicting zero forces, the baseline that training
  must beat (logged with every epoch).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from forcematch.data.sources import FrameSource
from forcematch.errors import ForcematchError

GRADIENT_RATIO_WARN = 100.0
SIGN_CORR_REFUSE = -0.5  # below: labels of the wrong sign
SIGN_CORR_PASS = 0.5  # above: labels consistent with the energies
NEIGHBOUR_FRAMES = 20  # frames sampled (evenly) for the neighbour counts
NEIGHBOUR_CENTRES = 500  # atoms (evenly) whose neighbours are counted
SIGN_PAIRS = 200  # consecutive-frame pairs sampled for the sign check


@dataclass(frozen=True)
class Finding:
    """One check's verdict: level "ok", "warning" or "refused", and what it measured."""

    check: str
    level: str
    message: str


def _minimum_image(d: np.ndarray, box: np.ndarray) -> np.ndarray:
    return d - box * np.round(d / box)


def _even(n_total: int, n: int) -> np.ndarray:
    return np.unique(np.linspace(0, n_total - 1, min(n, n_total)).round().astype(int))


def neighbour_check(source: FrameSource, cutoff_nm: float) -> tuple[dict, Finding]:
    """Neighbours within `cutoff_nm` of up to `NEIGHBOUR_CENTRES` atoms, over
    `NEIGHBOUR_FRAMES` evenly spaced frames."""
    frames = source.read(_even(source.n_frames, NEIGHBOUR_FRAMES))
    counts, closest = [], np.inf
    centres = _even(source.n_atoms, NEIGHBOUR_CENTRES)  # bounds the memory for large N
    for x, box in zip(frames.positions_nm, frames.box_nm, strict=True):
        d = _minimum_image(x[centres, None, :] - x[None, :, :], box)
        r = np.sqrt(np.sum(d**2, axis=-1))
        r[np.arange(centres.size), centres] = np.inf
        counts.append(np.sum(r < cutoff_nm, axis=1))
        closest = min(closest, float(r.min()))
    counts = np.concatenate(counts)
    stats = {"cutoff_nm": cutoff_nm, "frames": int(frames.n_frames),
             "neighbours_min": int(counts.min()), "neighbours_mean": float(counts.mean()),
             "neighbours_max": int(counts.max()),
             "isolated_atom_fraction": float(np.mean(counts == 0)),
             "closest_pair_nm": closest}
    if counts.max() == 0:
        return stats, Finding("neighbours", "refused", (
            f"no pair of atoms lies within the model's cutoff of {cutoff_nm:g} nm in "
            f"{frames.n_frames} frames (the closest pair is {closest:.4g} nm apart): the "
            "energy cannot depend on the positions, so the forces are exactly zero under any "
            f"loss; use a cutoff above {closest:.4g} nm"))
    if stats["isolated_atom_fraction"] > 0:
        return stats, Finding("neighbours", "warning", (
            f"{100 * stats['isolated_atom_fraction']:.1f} % of atoms have no neighbour within "
            f"{cutoff_nm:g} nm (mean {stats['neighbours_mean']:.1f} per atom): their forces "
            "are exactly zero"))
    return stats, Finding("neighbours", "ok", (
        f"{stats['neighbours_min']}-{stats['neighbours_max']} neighbours per atom within "
        f"{cutoff_nm:g} nm (mean {stats['neighbours_mean']:.1f})"))


def label_sign_check(source: FrameSource) -> tuple[dict, Finding]:
    """Correlation and slope of ΔE against the trapezoid work −Σ ½(F(t)+F(t+1))·Δx over
    `SIGN_PAIRS` pairs of adjacent frames, evenly spaced; pairs that moved more than 3× the
    median (the joins between replicas or source files) are left out."""
    if source.n_frames < 3:
        return {}, Finding("label_sign", "warning", "fewer than 3 frames: sign not checked")
    first = _even(source.n_frames - 1, SIGN_PAIRS)
    a, b = source.read(first), source.read(first + 1)
    dx = _minimum_image(b.positions_nm - a.positions_nm, a.box_nm[:, None, :])
    moved = np.sqrt(np.mean(np.sum(dx**2, axis=-1), axis=-1))  # rms per frame pair, nm
    keep = moved <= 3 * np.median(moved)
    work = -np.sum(0.5 * (a.forces_kJ_mol_nm + b.forces_kJ_mol_nm) * dx, axis=(1, 2))[keep]
    d_e = (b.potential_energy_kJ_mol - a.potential_energy_kJ_mol)[keep]
    if keep.sum() < 3 or np.std(d_e) == 0 or np.std(work) == 0:
        return {}, Finding("label_sign", "warning",
                           "energies or forces constant between frames: sign not checked")
    corr = float(np.corrcoef(d_e, work)[0, 1])
    slope = float(np.cov(d_e, work)[0, 1] / np.var(work, ddof=1))
    stats = {"pairs": int(keep.sum()), "median_rms_displacement_nm": float(np.median(moved)),
             "correlation": corr, "slope": slope}
    said = (f"energy change between adjacent frames against the work of the force labels: "
            f"correlation {corr:+.3f}, slope {slope:.3g} over {keep.sum()} pairs")
    if corr < SIGN_CORR_REFUSE:
        return stats, Finding("label_sign", "refused", (
            f"{said}: the force labels have the wrong sign (they must be −dE/dx; flip them)"))
    if corr < SIGN_CORR_PASS:
        return stats, Finding("label_sign", "warning", (
            f"{said}: forces and energies barely agree (frames far apart or shuffled, forces "
            "of a subset of atoms, or labels from different calculations)"))
    return stats, Finding("label_sign", "ok", said)


def term_gradient_norms(loss_terms: Callable, params) -> tuple[float, float]:
    """Global norms of the parameter gradients of the unweighted energy and force terms,
    `loss_terms(params)` -> {"energy": scalar, "force": scalar} (one jitted evaluation)."""
    import jax
    import optax

    def norms(p):
        def term(name):
            return jax.grad(lambda q: loss_terms(q)[name])(p)

        return optax.tree.norm(term("energy")), optax.tree.norm(term("force"))

    e_norm, f_norm = jax.jit(norms)(params)
    return float(e_norm), float(f_norm)


def gradient_balance(energy_norm: float | None, force_norm: float | None,
                     energy_weight: float) -> tuple[dict, Finding]:
    """Compare the weighted energy and force terms' parameter-gradient norms (None: a term
    with weight 0) at initialisation."""
    stats = {"energy_grad_norm": _finite_or_none(energy_norm),
             "force_grad_norm": _finite_or_none(force_norm)}
    if energy_norm is None or force_norm is None:
        return stats, Finding("gradient_balance", "ok", "one loss term only: nothing to balance")
    if not (np.isfinite(energy_norm) and np.isfinite(force_norm)) or min(energy_norm,
                                                                          force_norm) <= 0:
        return stats, Finding("gradient_balance", "warning", (
            f"at initialisation the energy term's gradient norm is {energy_norm:.3g} and the "
            f"force term's {force_norm:.3g}: one term cannot move the parameters"))
    ratio = energy_norm / force_norm
    balanced = energy_weight / ratio
    stats |= {"energy_over_force": float(ratio), "balancing_energy_weight": float(balanced)}
    said = (f"at initialisation the energy term's gradient norm is {energy_norm:.3g} and the "
            f"force term's {force_norm:.3g} (ratio {ratio:.3g})")
    if ratio > GRADIENT_RATIO_WARN or ratio < 1 / GRADIENT_RATIO_WARN:
        big = "energy" if ratio > 1 else "force"
        return stats, Finding("gradient_balance", "warning", (
            f"{said}: the {big} term dominates every step; energy_weight {balanced:.3g} (now "
            f"{energy_weight:g}) would balance them"))
    return stats, Finding("gradient_balance", "ok", said)


def _finite_or_none(x: float | None) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None


def zero_force_loss(source: FrameSource, loss_of_zero: Callable[[np.ndarray], float]) -> float:
    """The force term of predicting zero forces, averaged over up to 1,000 training frames
    (`loss_of_zero(forces [B,N,3])`, e.g. `losses.zero_force_loss`)."""
    frames = source.read(_even(source.n_frames, 1000))
    return float(loss_of_zero(frames.forces_kJ_mol_nm))


def report(findings: list[tuple[dict, Finding]], mode: str,
           progress: Callable[[str], object]) -> dict:
    """Print every finding; with `mode` "refuse", raise ForcematchError on a refusal (all of
    them named). Returns {check: {level, message, **numbers}}."""
    out = {}
    for stats, finding in findings:
        out[finding.check] = asdict(finding) | stats
        if finding.level != "ok":
            progress(f"check before training: {finding.level}: {finding.message}")
    refused = [f.message for _, f in findings if f.level == "refused"]
    if refused and mode == "refuse":
        raise ForcematchError("refused before training: " + "; ".join(refused))
    return out
