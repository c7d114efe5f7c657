"""What MD says about a potential: pure functions of recorded runs (`record.Segment`).

    momentum_change(segment)                 largest |P(t) − P(0)| / √(N m̄ k_B T)
    energy_drift(segment, epsilon)           fitted drift (ε/atom/ns) and fluctuation (ε/atom)
    power_law_exponent(x, y)                 slope of log y against log x (Δt² → 2)
    rdf(positions, box)                      g(r) with MDAnalysis's InterRDF
    first_peak(r, g)                         position and height of the first peak
    rdf_noise_floor(blocks)                  max |Δg| between independent reference blocks
    pressure_bar(kinetic, dU/dλ, box)        P = (2K/3 − dU/dλ / 3) / V per frame
    block_mean(values, n_blocks)             mean and its block-averaged standard error

Units: nm, ps, kJ/mol, amu, K in; Å for RDF distances (MDAnalysis's unit), bar for pressure.
"""

from __future__ import annotations

import itertools

import numpy as np

from forcematch.md.record import Segment
from forcematch.units import BOLTZMANN_KJ_MOL_K, KJ_MOL_NM3_TO_BAR, NM_TO_A

RDF_BINS = 200
PEAK_HALF_WIDTH_BINS = 4  # of 0.043 Å at the default box: ±0.17 Å about the top
RDF_NOISE_QUANTILE = 0.95  # of max |Δg| over pairs of independent reference blocks


def momentum_change(segment: Segment) -> float:
    """Largest change of the total momentum over the run, relative to the thermal momentum
    scale √(N m̄ k_B T) of the run's temperature (dimensionless)."""
    p = segment.momentum_amu_nm_ps
    change = np.max(np.linalg.norm(p - p[0], axis=1))
    scale = np.sqrt(segment.n_atoms * np.mean(segment.masses_amu)
                    * BOLTZMANN_KJ_MOL_K * segment.temperature_K)
    return float(change / scale)


def energy_drift(segment: Segment, epsilon_kJ_mol: float) -> dict:
    """Drift and fluctuation of the total energy per atom, in units of ε.

    drift: least-squares slope of E_total/N against time (ε per atom per ns);
    fluctuation: standard deviation of E_total/N about that line (ε per atom).
    """
    e = segment.total_kJ_mol / segment.n_atoms / epsilon_kJ_mol
    t_ns = segment.time_ps * 1e-3
    slope, intercept = np.polyfit(t_ns, e, 1)
    residual = e - (slope * t_ns + intercept)
    return {"drift_eps_per_atom_per_ns": float(slope),
            "fluctuation_eps_per_atom": float(np.std(residual))}


def power_law_exponent(x, y) -> float:
    """Least-squares slope of log|y| against log x (NaN with fewer than two positive points)."""
    x, y = np.asarray(x, float), np.abs(np.asarray(y, float))
    ok = (x > 0) & (y > 0) & np.isfinite(y)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0])


def rdf(positions_nm: np.ndarray, box_nm, r_max_A: float | None = None,
        n_bins: int = RDF_BINS) -> tuple[np.ndarray, np.ndarray]:
    """Radial distribution function of all atoms: (r [n_bins] Å, g [n_bins]).

    Through `MDAnalysis.analysis.rdf.InterRDF` on an in-memory trajectory (positions [S,N,3]
    nm), self-pairs excluded; r_max defaults to just under half the shortest box edge.
    """
    import MDAnalysis as mda
    from MDAnalysis.analysis.rdf import InterRDF
    from MDAnalysis.coordinates.memory import MemoryReader

    pos = np.asarray(positions_nm, np.float32) * NM_TO_A
    box_A = np.asarray(box_nm, float).reshape(3) * NM_TO_A
    if r_max_A is None:
        r_max_A = 0.499 * float(box_A.min())
    universe = mda.Universe.empty(pos.shape[1], trajectory=True)
    dims = np.tile(np.concatenate([box_A, [90.0, 90.0, 90.0]]), (pos.shape[0], 1))
    universe.load_new(pos, format=MemoryReader, dimensions=dims)
    analysis = InterRDF(universe.atoms, universe.atoms, nbins=n_bins, range=(0.0, r_max_A),
                        exclusion_block=(1, 1))
    analysis.run()
    return np.asarray(analysis.results.bins), np.asarray(analysis.results.rdf)


def first_peak(r_A, g, half_width: int = PEAK_HALF_WIDTH_BINS) -> tuple[float, float]:
    """(position Å, height) of the first peak of g(r): the vertex of a parabola fitted by least
    squares to the `half_width` bins either side of the highest bin (less noisy than the
    highest bin alone, whose position jumps by whole bins)."""
    r_A, g = np.asarray(r_A, float), np.asarray(g, float)
    k = int(np.argmax(g))
    lo, hi = max(0, k - half_width), min(len(g), k + half_width + 1)
    if hi - lo >= 3:
        a, b, c = np.polyfit(r_A[lo:hi] - r_A[k], g[lo:hi], 2)
        if a < 0 and abs(b / (2 * a)) <= r_A[hi - 1] - r_A[lo]:
            x = -b / (2 * a)
            return float(r_A[k] + x), float(c - b * b / (4 * a))
    return float(r_A[k]), float(g[k])


def rdf_noise_floor(blocks: list[tuple[int, np.ndarray]]) -> float:
    """The 95th percentile of max_r |g_a(r) − g_b(r)| over pairs of blocks from different
    replicas: what two independent reference runs of one block's length disagree by.
    `blocks` holds (replica index, g [n_bins]) on one r grid."""
    diffs = [float(np.max(np.abs(ga - gb)))
             for (ra, ga), (rb, gb) in itertools.combinations(blocks, 2) if ra != rb]
    if not diffs:
        raise ValueError("the RDF noise floor needs blocks from at least two replicas")
    return float(np.quantile(diffs, RDF_NOISE_QUANTILE))


def pressure_bar(kinetic_kJ_mol, strain_derivative_kJ_mol, box_nm) -> np.ndarray:
    """Instantaneous pressure (bar) per frame: P = (2K/3 − (dU/dλ)/3) / V, where dU/dλ is the
    derivative of the potential energy under a uniform strain of box and positions by λ
    (so −dU/dλ / 3V = −∂U/∂V) and K the kinetic energy."""
    volume_nm3 = float(np.prod(np.asarray(box_nm, float)))
    virial = 2.0 * np.asarray(kinetic_kJ_mol) - np.asarray(strain_derivative_kJ_mol)
    return virial / (3.0 * volume_nm3) * KJ_MOL_NM3_TO_BAR


def block_mean(values, n_blocks: int = 10) -> dict:
    """Mean of a correlated series and its standard error from `n_blocks` contiguous blocks."""
    v = np.asarray(values, float)
    n_blocks = max(2, min(n_blocks, len(v)))
    means = [b.mean() for b in np.array_split(v, n_blocks)]
    return {"mean": float(v.mean()),
            "error": float(np.std(means, ddof=1) / np.sqrt(n_blocks))}
