"""The least-squares solve of a spline pair potential: regulariser, conditioning, uncertainty.

The fit minimises the training loss of every family (`forcematch.losses`, normalised form),
which for a linear model is a quadratic form in the coefficients c (kJ/mol):

    L(c) = w_F/(3N·T·σ_F²) ‖A_F c − F‖² + w_E/(N²·T·σ_E²) ‖A_E c − E‖² + λ·cᵀPc

T training frames of N atoms, σ_F the force std, σ_E the energy-per-atom std, w the
`train.force_weight` and `train.energy_weight`. P is the smoothness penalty ∫φ″(r)² dr summed
over the species pairs (exact: Gauss–Legendre on each interval), each pair's term scaled so
that λ_t = `model.spline.smoothness` × tr(its data matrix) / tr(its P): the penalty is a fixed
fraction of the data's curvature whatever the units, the data size, the knot spacing or how
rarely the species pair occurs. It only matters where the data do not pin φ down (few frames,
the sparsely sampled short range, a rare species pair). The solve is by eigendecomposition:
directions whose eigenvalue is at float64 round-off of the largest (no data and too little
penalty: the "singular system" of MS-CG codes) are left at zero and counted
(`Solution.n_free`), never divided by.

Columns below a species pair's r_lo never meet data and are not solved for (their
coefficients are 0 and unused; the wall of `models.spline` replaces φ there); the per-atom
energies are solved for only when energies are fitted (else the trainer's refit on the
training energies sets the constant, as for every family).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from forcematch.linear.design import NormalEquations, SplineDesign
from forcematch.models.spline import DEGREE, TAIL, bspline_pieces

# Relative eigenvalue below which a direction of the data matrix counts as unconstrained
# (the effective rank); NumPy's matrix_rank uses K·eps, too small for accumulated sums.
RANK_RTOL = 1e-12


def smoothness_penalty(design: SplineDesign) -> np.ndarray:
    """P [K,K] with cᵀPc = Σ_t ∫_{r_lo,t}^{cutoff} φ_t″(r)² dr (nm⁻³ × coefficient units²)."""
    grid, n, width = design.grid, design.grid.n_intervals, design.grid.n_coefficients
    nodes, gauss_weights = np.polynomial.legendre.leggauss(DEGREE)  # exact for φ″²
    nodes = (nodes + 1) / 2
    second = np.stack(bspline_pieces(nodes, 2))  # b_m″(u) at the nodes [DEGREE + 1, nodes]
    # ∫ b_m″ b_l″ du · h / h⁴, [DEGREE + 1, DEGREE + 1]
    local = (second * gauss_weights / 2) @ second.T / grid.spacing_nm**3
    to_free = np.zeros((n + DEGREE, width))  # full coefficients from the free ones
    to_free[np.arange(n), np.arange(n)] = 1.0
    to_free[n:, n] = TAIL
    penalty = np.zeros((design.n_columns, design.n_columns))
    for t, first in enumerate(grid.first):
        full = np.zeros((n + DEGREE, n + DEGREE))
        for k in range(first, n):
            full[k:k + DEGREE + 1, k:k + DEGREE + 1] += local
        cols = t * width + np.arange(width)
        penalty[np.ix_(cols, cols)] = to_free.T @ full @ to_free
    return penalty


def pair_columns(design: SplineDesign) -> list[np.ndarray]:
    """The coefficient columns of each species pair (its table), from its first interval."""
    width = design.grid.n_coefficients
    return [t * width + np.arange(first, width) for t, first in enumerate(design.grid.first)]


def active_columns(design: SplineDesign, fit_energies: bool) -> np.ndarray:
    """Indices of the columns solved for: each species pair's coefficients from its first
    interval on, and the per-atom energies when energies are fitted."""
    cols = pair_columns(design)
    if fit_energies:
        cols.append(design.n_coefficients + np.arange(design.n_species))
    return np.concatenate(cols)


@dataclass(frozen=True)
class Weights:
    """Row weights of the loss: force and energy terms (1 / (kJ/mol)² units)."""

    force: float
    energy: float

    @classmethod
    def of(cls, settings, n_atoms: int, n_frames: int, force_std: float,
           energy_per_atom_std: float) -> Weights:
        return cls(settings["force_weight"] / (3 * n_atoms * n_frames * force_std**2),
                   settings["energy_weight"] / (n_atoms**2 * n_frames * energy_per_atom_std**2))

    def scaled(self, n_frames_total: int, n_frames: int) -> Weights:
        """The weights for a block of `n_frames` out of `n_frames_total` (same per-frame
        normalisation, so a block's solution is the fit to that block alone)."""
        f = n_frames_total / n_frames
        return Weights(self.force * f, self.energy * f)


@dataclass
class Solution:
    """Coefficients of every column [K] (0 where not solved for) and what the solve says."""

    coefficients: np.ndarray
    loss: float  # L at the solution (penalty included)
    force_loss: float  # the force term alone (normalised: a fraction of σ_F², weighted)
    energy_loss: float
    condition_number: float  # of the regularised matrix, over the directions solved for
    effective_rank: int  # of the data matrix, eigenvalues above RANK_RTOL × the largest
    n_solved: int
    n_free: int  # directions of the regularised matrix at round-off level, left at 0
    penalty_weights: list[float]  # λ per species pair (absolute)


def penalty_weights(data: np.ndarray, penalty: np.ndarray, groups: list[np.ndarray],
                    smoothness: float) -> list[float]:
    """λ_t = smoothness × tr(data_tt) / tr(P_tt) for each species pair's columns `groups[t]`
    (a rare species pair gets a penalty in proportion to its own data, not the others')."""
    return [smoothness * float(np.trace(data[np.ix_(g, g)]))
            / max(float(np.trace(penalty[np.ix_(g, g)])), 1e-300) for g in groups]


def solve(forces: NormalEquations, energies: NormalEquations, weights: Weights,
          penalty: np.ndarray, groups: list[np.ndarray], cols: np.ndarray, smoothness: float,
          lambdas: list[float] | None = None) -> Solution:
    """Minimise L (module docstring) over the columns `cols`; the penalty of species pair t
    (columns `groups[t]`) weighted by `lambdas[t]`, or by `penalty_weights` of this data."""
    data = weights.force * forces.matrix + weights.energy * energies.matrix
    rhs = weights.force * forces.vector + weights.energy * energies.vector
    if lambdas is None:
        lambdas = penalty_weights(data, penalty, groups, smoothness)
    scaled = np.zeros_like(penalty)
    for g, lam in zip(groups, lambdas, strict=True):
        scaled[np.ix_(g, g)] = lam * penalty[np.ix_(g, g)]
    m, p, b = data[np.ix_(cols, cols)], scaled[np.ix_(cols, cols)], rhs[cols]
    data_eig = np.linalg.eigvalsh(m)
    eig, vectors = np.linalg.eigh(m + p)
    # directions below float64 round-off of the largest are numerically free: left at 0
    # (the minimum-norm solution) and counted, never divided by
    kept = eig > len(eig) * np.finfo(float).eps * eig[-1]
    x = vectors[:, kept] @ ((vectors[:, kept].T @ b) / eig[kept])
    coefficients = np.zeros(data.shape[0])
    coefficients[cols] = x
    f_loss = weights.force * _residual(forces, coefficients)
    e_loss = weights.energy * _residual(energies, coefficients)
    return Solution(
        coefficients, f_loss + e_loss + float(x @ p @ x), f_loss, e_loss,
        float(eig[-1] / eig[kept][0]), int(np.sum(data_eig > RANK_RTOL * data_eig[-1])),
        len(cols), int(np.sum(~kept)), list(lambdas))


def _residual(eqs: NormalEquations, c: np.ndarray) -> float:
    """‖A c − y‖² from the normal equations: cᵀAᵀAc − 2cᵀAᵀy + yᵀy (≥ 0)."""
    return max(float(c @ eqs.matrix @ c - 2 * c @ eqs.vector + eqs.sum_sq), 0.0)
