"""The `spline` model: E = Σ_{i<j} φ_ab(r_ij) + Σ_i b_{s_i}, φ_ab a B-spline per species pair.

This is the pair potential of multiscale coarse-graining (MS-CG: Izvekov & Voth 2005; Noid et
al. 2008; VOTCA's csg_fmatch): φ is linear in its coefficients, so energies and forces are
linear in them and the best fit is one least-squares solve (`forcematch.linear`), not an
optimisation. The model itself is an `EnergyModel` like every family: validation, MD, the
calculators and export use it through the same interface.

The grid (`SplineGrid`) is uniform with spacing h and ends at the cutoff: knots at
r0 + k·h, r0 = cutoff − n·h. On the interval [r0 + k·h, r0 + (k+1)·h), with u the fraction
across it,

    φ(r) = Σ_{m=0..4} c_{k+m} b_m(u),   b_m: the uniform quartic B-spline's pieces (`PIECES`)

so φ is C³ and the force F = −φ′ a C² cubic spline, as the force splines of MS-CG codes
(VOTCA fits F directly; a cubic φ would leave F only C¹ and its error one order of h higher).
The four coefficients past the last interval are one free coefficient times `TAIL`, the
combination with φ, φ′ and φ″ zero at the cutoff and φ‴ free (a switched potential such as
OpenMM's has φ‴ ≠ 0 there). Each species pair t has its own lower end r_lo,t on the grid
(the fit puts it at the closest training pair, rounded down: `model.spline.r_lo_nm`). Below
r_lo there is no data; there φ continues as an exponential wall that matches φ, φ′, φ″ and φ‴
at r_lo where they allow (`calculators.tables`' continuation, in model units), d = r_lo − r:

    φ(r) = φ0 + F0·d + (k/κ²)(e^{κd} − 1 − κd),   F(r) = −φ′(r) = F0 + (k/κ)(e^{κd} − 1)
    F0 = −φ′(r_lo),  k = max(φ″(r_lo), 10 / r_lo),  κ = −φ‴(r_lo)/k within [6, 25] / r_lo

(the force scale is 1 in model units; a wall φ ∝ r⁻ⁿ has κ·r = n + 2 locally, LJ's 14), so the
force always grows as r falls: the table is never left at zero below the data. Matching φ‴
rather than fixing κ·r_lo = 14 took the validation force error of a 300-frame, 128-atom argon
dataset, 3 of whose 150 validation frames hold a pair below the closest training pair, from
4.5e-5 to 5.4e-6 of the force std.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from forcematch import space
from forcematch.errors import ForcematchError
from forcematch.models.base import NeighbourListModel, poison_on_overflow

WALL_CURVATURE_FLOOR = 10.0  # k >= this / r_lo (model units, force scale 1)
WALL_STEEPNESS = (6.0, 25.0)  # bounds of κ · r_lo (r⁻⁴ to r⁻²³ locally; LJ's r⁻¹²: 14)
UNFITTED_R_LO_FRACTION = 0.4  # r_lo of an unfitted model, as a fraction of the cutoff


# The five pieces of the uniform quartic B-spline on one interval, as polynomial coefficients
# in u (ascending powers) × 1/24: b_0 = (1 − u)⁴/24 … b_4 = u⁴/24. They sum to 1.
DEGREE = 4
PIECES = np.array([[1, -4, 6, -4, 1], [11, -12, -6, 12, -4], [11, 12, -6, -12, 6],
                   [1, 4, 6, 4, -4], [0, 0, 0, 0, 1]], np.float64) / 24


def bspline_pieces(u, derivative: int = 0):
    """The B-spline pieces b_0..b_4 at u ∈ [0, 1] (an array, NumPy or JAX), or their
    `derivative`-th derivative in u (divide by h^derivative for d/dr): a list of five."""
    out = []
    for coefficients in PIECES:
        c = np.polynomial.polynomial.polyder(coefficients, derivative) if derivative else (
            coefficients)
        value = float(c[-1]) + 0 * u
        for a in c[-2::-1]:  # Horner
            value = value * u + float(a)
        out.append(value)
    return out


# Past-cutoff coefficients (c_n … c_{n+3}) per unit of the last free coefficient: the null
# space of φ, φ′, φ″ at u = 1 of the last interval (pieces 1–4 there: (1, 11, 11, 1)/24,
# (−4, −12, 12, 4)/24, (12, −12, −12, 12)/24).
TAIL = np.array([1.0, -1.0 / 3.0, 1.0 / 3.0, -1.0])


def full_coefficients(free, n_intervals: int, xp=np):
    """All n + 4 coefficients [..., n+4] from the n + 1 free ones [..., n+1] (NumPy or JAX)."""
    tail = free[..., n_intervals:n_intervals + 1] * xp.asarray(TAIL, free.dtype)
    return xp.concatenate([free[..., :n_intervals], tail], axis=-1)


def species_pair_index(a, b, n_species: int, xp=np):
    """Index of the unordered species pair (a, b) in the triangle (0,0), (0,1) … (S−1,S−1)
    (the `pair` model's output order); arrays of NumPy (xp=np) or JAX (xp=jnp)."""
    lo, hi = xp.minimum(a, b), xp.maximum(a, b)
    return lo * n_species - lo * (lo - 1) // 2 + (hi - lo)


@dataclass(frozen=True)
class SplineGrid:
    """The knot grid of a spline model: `n_intervals` of `spacing_nm` ending at `cutoff_nm`,
    and per species pair t the first interval of its table, `first[t]` (r_lo,t = r0 + first·h).
    Per pair there are n + 1 free coefficients: c_0 … c_{n−1} and the `TAIL` weight."""

    cutoff_nm: float
    spacing_nm: float
    n_intervals: int
    first: tuple[int, ...]

    @classmethod
    def from_config(cls, config: dict, cutoff_nm: float) -> SplineGrid:
        h, n_pairs = config["knot_spacing_nm"], config["n_species"] * (config["n_species"] + 1) // 2
        r_lo = config["r_lo_nm"] or [UNFITTED_R_LO_FRACTION * cutoff_nm] * n_pairs
        if len(r_lo) != n_pairs:
            raise ForcematchError(f"spline model: r_lo_nm lists {len(r_lo)} values for "
                                  f"{n_pairs} species pairs")
        steps = [math.floor((cutoff_nm - r) / h + 1e-6) for r in r_lo]
        if min(steps) < 1:
            raise ForcematchError(f"spline model: r_lo_nm {r_lo} leaves less than one knot "
                                  f"interval ({h} nm) below the cutoff {cutoff_nm} nm")
        n = max(steps)
        return cls(float(cutoff_nm), float(h), n, tuple(n - s for s in steps))

    @property
    def n_coefficients(self) -> int:
        """Free coefficients per species pair."""
        return self.n_intervals + 1

    @property
    def r0_nm(self) -> float:
        return self.cutoff_nm - self.n_intervals * self.spacing_nm

    def r_lo_nm(self) -> np.ndarray:
        """r_lo per species pair (nm), [T]."""
        return self.r0_nm + self.spacing_nm * np.asarray(self.first, np.float64)

    def locate(self, r, xp=np):
        """(interval index k, fraction u) of distances r inside [r0, cutoff] (NumPy or JAX)."""
        t = (r - self.r0_nm) / self.spacing_nm
        k = xp.clip(xp.floor(t), 0, self.n_intervals - 1)
        return k.astype(xp.int32), t - k


class SplineModel(NeighbourListModel):
    """Cubic B-spline pair potential; see the module docstring. Implements `EnergyModel`."""

    name = "spline"

    def __init__(self, config: dict, cutoff_nm: float, capacity: int | None = None):
        super().__init__(config, cutoff_nm, capacity)
        self.grid = SplineGrid.from_config(config, self.cutoff_nm)
        self.n_pairs = config["n_species"] * (config["n_species"] + 1) // 2

    def init(self, rng, positions_nm, box_nm, species):
        """Parameters {'coefficients' [T, n+1], 'atom_energy' [S]} (float32): small random
        coefficients (a fitted model replaces them; `forcematch.linear`)."""
        del positions_nm, box_nm, species
        shape = (self.n_pairs, self.grid.n_coefficients)
        return {"coefficients": 0.01 * jax.random.normal(rng, shape, jnp.float32),
                "atom_energy": jnp.zeros(self.config["n_species"], jnp.float32)}

    def pair_potential(self, params, r, pair_type=None):
        """φ(r) (model units) for distances r [P] (nm) of species pairs pair_type [P]."""
        if pair_type is None:
            pair_type = jnp.zeros(r.shape, jnp.int32)
        coefficients = full_coefficients(params["coefficients"], self.grid.n_intervals, jnp)
        first = jnp.asarray(self.grid.first, jnp.int32)[pair_type]
        r_lo = self.grid.r0_nm + self.grid.spacing_nm * first.astype(r.dtype)
        # `where`, not `clip` or `maximum`: their gradient at a tie is halved, which made F at
        # exactly r = r_lo half its value on either side (hit by table grids with a node there)
        inside = jnp.where(r < r_lo, r_lo, jnp.where(r > self.cutoff_nm, self.cutoff_nm, r))
        k, u = self.grid.locate(inside, jnp)
        spline = sum(coefficients[pair_type, k + m] * b
                     for m, b in enumerate(bspline_pieces(u)))
        h = self.grid.spacing_nm
        phi0, dphi0, d2phi0, d3phi0 = (
            sum(coefficients[pair_type, first + m] * b / h**d
                for m, b in enumerate(bspline_pieces(0.0, d))) for d in range(4))
        force0 = -dphi0
        curvature = jnp.maximum(d2phi0, WALL_CURVATURE_FLOOR / r_lo)
        kappa = jnp.clip(-d3phi0 / curvature, WALL_STEEPNESS[0] / r_lo, WALL_STEEPNESS[1] / r_lo)
        d = jnp.where(r < r_lo, r_lo - r, 0.0)
        wall = phi0 + force0 * d + curvature / kappa**2 * (jnp.expm1(kappa * d) - kappa * d)
        return jnp.where(r < r_lo, wall, spline)

    def energy(self, params, positions_nm, box_nm, species, pairs=None):
        """Σ_{i<j} φ(r_ij) + Σ_i b_{s_i} (model units); NaN (and NaN gradient) on overflow."""
        i, j, mask, overflow = self._pairs(positions_nm, box_nm, pairs)
        r = space.pair_distances(positions_nm, box_nm, i, j, mask, fill_nm=self.cutoff_nm)
        atom_type = self._species_index(species, positions_nm.shape[0])
        pair_type = species_pair_index(atom_type[i], atom_type[j], self.config["n_species"],
                                       jnp)
        phi = self.pair_potential(params, r, pair_type)
        e = jnp.sum(jnp.where(mask, phi, jnp.zeros_like(phi)))
        e = e + jnp.sum(params["atom_energy"][atom_type])
        return poison_on_overflow(e, overflow, positions_nm)

