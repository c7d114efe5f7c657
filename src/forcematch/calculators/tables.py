"""A trained pair potential (`pair` or `spline` family) tabulated in float64, and what each
engine's interpolation costs.

    tables = export_pair_tables(potential, r_min_nm, dr_nm)   # PairTables
    errors = tabulation_errors(PairFunctions(potential), tables, lammps_points)
    tables, points, errors = automatic_grids(PairFunctions(potential), r_min_nm, None, None)

`forcematch.calculators.export` writes the tables for OpenMM and LAMMPS.

The energy of both families (`models.pair`, `models.spline`, `models.Normalisation`) is
    E = Σ_{i<j} φ_ab(r_ij) + Σ_i o_{s_i},  φ_ab(r) = energy_scale · pair_potential(r, ab)  (kJ/mol)
    o_s = energy_scale · b_s + energy_shift_per_atom                                      (kJ/mol)
with ab the unordered species pair of i and j (one function when n_species is 1) and r in nm.
The per-atom offsets o_s are constants: they change no force, so the engines leave them out and
export.json records them (energy of the model = engine energy + Σ_i o_{s_i}).

φ_ab and F_ab = −dφ_ab/dr come from the model by autodiff in float64 on a grid of spacing dr from
r_lo to the cutoff. Below r_min_ab, the closest pair of species ab in the training data, the
model never saw a pair and is unconstrained; there the tables hold an exponential wall that
continues φ_ab with its value, slope, curvature and third derivative at r_min (d = r_min − r):
    F(r) = F0 + (k/κ)(e^{κd} − 1),   φ(r) = φ0 + F0·d + (k/κ²)(e^{κd} − 1 − κd)
    F0 = F(r_min), k = φ''(r_min), κ = F''(r_min) / k   (so dF/dr = −k, d²F/dr² = kκ there)
with k ≥ 10 · force scale / r_min and 6 ≤ κ·r_min ≤ 25. A wall φ ∝ r⁻ⁿ has κ·r_min = n + 2
locally (Lennard-Jones: 14), so the lower bound makes the wall at least as steep as r⁻⁴ (a
learned force often flattens at the edge of its data), and the upper one keeps e^{κ(r_min −
r_lo)} below 3e5. Where a bound applies fewer derivatives match (export.json says how many;
where only F is continuous, the kink in F at r_min needs a finer grid, which
`automatic_grids` finds). F grows exponentially as r falls, and a model that is not repulsive
at r_min turns repulsive below it. The tables start at r_lo ≈ ½ r_min, far up such a wall
(hundreds of kJ/mol for the tiny argon model); OpenMM continues below r_lo linearly with the
force at r_lo (never zero), while LAMMPS stops with "Pair distance < table inner cutoff".

Engines: OpenMM's Continuous1DFunction is a natural cubic spline of the tabulated φ, in r;
LAMMPS's `pair_style table linear N` (file in RSQ spacing with exactly N points: used as is)
interpolates φ and F/r linearly in r², `spline N` by cubic splines in r². `tabulation_errors`
evaluates each against the model at the midpoints of the grids over [r_min, cutoff].
Units: nm, kJ/mol, kJ/mol/nm, amu; LAMMPS files in Å with kcal/mol (real) or eV (metal).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from forcematch.data.pairs import species_pairs
from forcematch.errors import ForcematchError
from forcematch.units import KJ_MOL_PER_EV_SI, KJ_MOL_PER_KCAL_MOL, NM_TO_A

PAIR_FAMILIES = ("pair", "spline")
# Measured max |ΔF| / force RMS of trained argon models at the defaults: OpenMM's spline at
# 0.001 nm 1.5e-5 (tiny config) and 1.4e-5 (0.8 nm cutoff), mostly where the wall joins at
# r_min; LAMMPS linear 2.9e-5 at 2,000 points (tiny) and 2.6e-5 at 8,000 (0.8 nm).
DEFAULT_DR_NM = 1e-3  # nm
TARGET_REL_FORCE_ERROR = 1e-4  # max |ΔF| / force scale that the automatic grids reach
MAX_REFINEMENTS = 6  # halvings of dr (doublings of the LAMMPS points) before giving up
LAMMPS_START_POINTS = 2000
R_LO_FRACTION = 0.5  # the tables start at about this fraction of r_min
CURVATURE_FLOOR = 10.0  # k >= CURVATURE_FLOOR · force scale / r_min in the continuation
KAPPA_RANGE = (6.0, 25.0)  # bounds of κ · r_min (see the module docstring)
EVAL_CHUNK = 4096  # distances per jitted evaluation (one compiled shape)
LAMMPS_UNITS = {"real": (KJ_MOL_PER_KCAL_MOL, "kcal/mol"), "metal": (KJ_MOL_PER_EV_SI, "eV")}


@dataclass(frozen=True)
class PairTable:
    """φ_ab on r_nm [M] (uniform, r_lo .. cutoff): phi [M] kJ/mol, force [M] kJ/mol/nm."""

    a: int
    b: int
    index: int  # the model's output for (a, b): the upper triangle, row by row
    r_min_nm: float
    r_nm: np.ndarray
    phi: np.ndarray
    force: np.ndarray
    continuation: dict  # phi0 kJ/mol, force0 kJ/mol/nm, k kJ/mol/nm², kappa 1/nm, matched

    @property
    def r_lo_nm(self) -> float:
        return float(self.r_nm[0])


@dataclass(frozen=True)
class PairTables:
    """The tables of every species pair, with what the engines need besides them."""

    pairs: list[PairTable]
    cutoff_nm: float
    dr_nm: float
    n_species: int
    force_scale: float  # kJ/mol/nm: the training force RMS, the scale of relative errors
    atom_offset_kJ_mol: np.ndarray  # [n_species] o_s, energy per atom of species s
    notes: list[str] = field(default_factory=list)


def require_pair_model(potential) -> None:
    """ForcematchError unless `potential` is of a pairwise family (only those tabulate)."""
    if potential.model_name not in PAIR_FAMILIES:
        raise ForcematchError(
            f"the {potential.model_name} model in {potential.path} is not a pair potential and "
            "cannot be tabulated: use the ASE calculator (forcematch.calculators.ase) or "
            "`forcematch md` instead")


class PairFunctions:
    """φ_ab(r), F_ab(r) = −dφ/dr, dF/dr and d²F/dr² of a pair model in float64 (kJ/mol, nm)."""

    def __init__(self, potential):
        import jax
        import jax.numpy as jnp

        require_pair_model(potential)
        self.potential = potential
        pair_energy = potential.pair_energy_function()
        multi = potential.n_species > 1

        def phi(params, r, k):
            pair_type = jnp.full((1,), k, jnp.int32) if multi else None
            return pair_energy(params, r[None], pair_type)[0]

        d1 = jax.grad(phi, argnums=1)
        d2 = jax.grad(d1, argnums=1)
        d3 = jax.grad(d2, argnums=1)
        self._fn = jax.jit(jax.vmap(lambda p, r, k: (phi(p, r, k), -d1(p, r, k), -d2(p, r, k),
                                                     -d3(p, r, k)), in_axes=(None, 0, None)))
        self._params = potential.params_as(np.float64)

    def __call__(self, r_nm, index: int) -> tuple[np.ndarray, ...]:
        """(φ [M] kJ/mol, F [M] kJ/mol/nm, dF/dr [M], d²F/dr² [M]) of pair `index` at r [M] nm."""
        import jax

        r = np.asarray(r_nm, np.float64).reshape(-1)
        out = [np.empty(r.shape[0]) for _ in range(4)]
        with jax.enable_x64(True):
            for start in range(0, r.shape[0], EVAL_CHUNK):
                part = r[start:start + EVAL_CHUNK]
                padded = np.pad(part, (0, EVAL_CHUNK - part.shape[0]), constant_values=part[-1])
                for dest, res in zip(out, self._fn(self._params, padded, np.int32(index)),
                                     strict=True):
                    dest[start:start + part.shape[0]] = np.asarray(res)[: part.shape[0]]
        return tuple(out)


def continuation(at_r_min, scale: float, r_min: float) -> dict:
    """The repulsive wall below r_min (module docstring) from (φ, F, dF/dr, d²F/dr²) at r_min:
    {phi0, force0, k, kappa, matched: how many derivatives of φ it continues (1 to 3)}."""
    phi0, force0, dforce0, d2force0 = (float(x) for x in at_r_min)
    k_model, k_floor = -dforce0, CURVATURE_FLOOR * scale / r_min
    k = max(k_model, k_floor)
    kappa_model = d2force0 / k
    kappa = min(max(kappa_model, KAPPA_RANGE[0] / r_min), KAPPA_RANGE[1] / r_min)
    matched = 1 if k != k_model else 2 if kappa != kappa_model else 3
    return {"phi0": phi0, "force0": force0, "k": k, "kappa": kappa, "matched": matched}


def exported_values(functions: PairFunctions, table: PairTable, r_nm):
    """(φ, F, dF/dr) of what the export holds for `table` at r [M] nm: the model at r >= r_min,
    the continuation below (the model is evaluated only where it saw data)."""
    r = np.asarray(r_nm, np.float64)
    phi, force, dforce, _ = functions(np.maximum(r, table.r_min_nm), table.index)
    c, d = table.continuation, np.maximum(table.r_min_nm - r, 0.0)
    k, kappa, below = c["k"], c["kappa"], d > 0
    grow = np.expm1(kappa * d)  # e^{κd} − 1
    phi = np.where(below, c["phi0"] + c["force0"] * d + k / kappa**2 * (grow - kappa * d), phi)
    force = np.where(below, c["force0"] + k / kappa * grow, force)
    return phi, force, np.where(below, -k * (grow + 1.0), dforce)


def _one_table(functions, a, b, index, r_min, cutoff, dr, scale) -> PairTable:
    n = math.ceil((cutoff - R_LO_FRACTION * r_min) / dr - 1e-9)
    r = cutoff - dr * np.arange(n, -1, -1, dtype=np.float64)  # uniform, ending at the cutoff
    table = PairTable(a, b, index, float(r_min), r, np.empty(0), np.empty(0),
                      continuation([x[0] for x in functions(np.array([r_min]), index)],
                                   scale, r_min))
    phi, force, _ = exported_values(functions, table, r)
    phi[-1] = force[-1] = 0.0  # the envelope is exactly 0 there; round-off aside
    return PairTable(a, b, index, float(r_min), r, phi, force, table.continuation)


def export_pair_tables(potential, r_min_nm, dr_nm: float = DEFAULT_DR_NM,
                       functions: PairFunctions | None = None) -> PairTables:
    """φ_ab and F_ab of the pair model `potential` on grids of spacing `dr_nm` (nm) from about
    ½ r_min to the cutoff. `r_min_nm`: one distance (nm) or one per species pair [P] (in
    `species_pairs` order), below which the continuation replaces the model."""
    require_pair_model(potential)
    functions = functions or PairFunctions(potential)
    s = potential.n_species
    pairs = species_pairs(s)
    r_min = np.broadcast_to(np.asarray(r_min_nm, np.float64), (len(pairs),))
    cutoff = potential.cutoff_nm
    if not (np.all(r_min > 0) and np.all(r_min < cutoff)):
        raise ForcematchError(f"r_min {r_min.tolist()} nm must lie in (0, cutoff {cutoff} nm)")
    if not (math.isfinite(dr_nm) and 0 < dr_nm < (cutoff - r_min.max()) / 4):
        raise ForcematchError(f"table spacing dr {dr_nm} nm must be positive and under "
                              f"(cutoff - r_min) / 4 = {(cutoff - r_min.max()) / 4:.4g} nm")
    scale = potential.force_scale_kJ_mol_nm()
    tables = [_one_table(functions, a, b, k, r_min[k], cutoff, dr_nm, scale)
              for k, (a, b) in enumerate(pairs)]
    notes = [f"pair {t.a}-{t.b}: F(r_min) = {t.continuation['force0']:.4g} kJ/mol/nm is not "
             "repulsive; the continuation turns repulsive below it" for t in tables
             if t.continuation["force0"] <= 0]
    notes += [f"pair {t.a}-{t.b}: the wall below r_min continues only "
              f"{t.continuation['matched']} derivative(s) of phi (a bound on k or kappa "
              "applied)" for t in tables if t.continuation["matched"] < 3]
    return PairTables(tables, cutoff, float(dr_nm), s, scale, potential.atom_offsets_kJ_mol(),
                      notes)


# -- what the engines' interpolation costs -------------------------------------------------------
def lammps_grid(table: PairTable, cutoff_nm: float, points: int) -> tuple[str, str, np.ndarray]:
    """(r_lo text, cutoff text (Å), r [points] nm): the RSQ grid as LAMMPS recomputes it from
    the text it reads, so that file and engine hold the same distances."""
    lo, hi = f"{table.r_lo_nm * NM_TO_A:.10g}", f"{cutoff_nm * NM_TO_A:.10g}"
    rsq = float(lo) ** 2 + (float(hi) ** 2 - float(lo) ** 2) * np.arange(points) / (points - 1)
    return lo, hi, np.sqrt(rsq) / NM_TO_A


def _midpoint_errors(model_phi, model_force, phi, force, scale) -> dict:
    return {"max_force_error_rel": float(np.max(np.abs(force - model_force)) / scale),
            "max_phi_error_kJ_mol": float(np.max(np.abs(phi - model_phi)))}


def openmm_error(functions, table: PairTable, scale: float) -> dict:
    """OpenMM's natural cubic spline of φ (force: its derivative) against the model at the
    grid midpoints in [r_min, cutoff]."""
    from scipy.interpolate import CubicSpline

    spline = CubicSpline(table.r_nm, table.phi, bc_type="natural")
    mid = 0.5 * (table.r_nm[1:] + table.r_nm[:-1])
    mid = mid[mid >= table.r_min_nm]
    phi, force, _ = exported_values(functions, table, mid)
    return _midpoint_errors(phi, force, spline(mid), -spline(mid, 1), scale)


def lammps_errors(functions, table: PairTable, cutoff_nm: float, points: int,
                  scale: float) -> dict:
    """LAMMPS `table linear` (φ and F/r linear in r²) and `table spline` (clamped cubic
    splines in r², end slopes from F and dF/dr as the file's FPRIME gives them) against the
    model at the r² midpoints in [r_min, cutoff]: {"linear": {...}, "spline": {...}}."""
    from scipy.interpolate import CubicSpline

    r = lammps_grid(table, cutoff_nm, points)[2]
    phi, force, dforce = exported_values(functions, table, r)
    rsq, g = r * r, force / r  # LAMMPS interpolates F/r
    mid_sq = 0.5 * (rsq[1:] + rsq[:-1])
    mid_sq = mid_sq[mid_sq >= table.r_min_nm ** 2]
    mid = np.sqrt(mid_sq)
    m_phi, m_force, _ = exported_values(functions, table, mid)
    linear = _midpoint_errors(m_phi, m_force, np.interp(mid_sq, rsq, phi),
                              np.interp(mid_sq, rsq, g) * mid, scale)
    e_spline = CubicSpline(rsq, phi, bc_type=((1, -force[0] / (2 * r[0])),
                                              (1, -force[-1] / (2 * r[-1]))))
    slopes = [(dforce[i] / r[i] - force[i] / r[i] ** 2) / (2 * r[i]) for i in (0, -1)]
    g_spline = CubicSpline(rsq, g, bc_type=((1, slopes[0]), (1, slopes[1])))
    spline = _midpoint_errors(m_phi, m_force, e_spline(mid_sq), g_spline(mid_sq) * mid, scale)
    return {"linear": linear, "spline": spline}


def _worst(rows: list[dict]) -> dict:
    return {key: max(row[key] for row in rows) for key in rows[0]}


def tabulation_errors(functions, tables: PairTables, lammps_points: int) -> dict:
    """Max over species pairs of each engine's interpolation error (see the module
    docstring): {"openmm_spline", "lammps_linear", "lammps_spline"} -> {max_force_error_rel,
    max_phi_error_kJ_mol}."""
    scale = tables.force_scale
    lammps = [lammps_errors(functions, t, tables.cutoff_nm, lammps_points, scale)
              for t in tables.pairs]
    return {"openmm_spline": _worst([openmm_error(functions, t, scale) for t in tables.pairs]),
            "lammps_linear": _worst([row["linear"] for row in lammps]),
            "lammps_spline": _worst([row["spline"] for row in lammps])}


def automatic_grids(functions: PairFunctions, r_min_nm, dr_nm: float | None,
                    lammps_points: int | None, lammps_style: str = "linear"
                    ) -> tuple[PairTables, int, dict]:
    """(tables, LAMMPS points, errors) of `functions.potential`: `dr_nm` and `lammps_points`
    as given, or (None) the defaults refined (dr halved, points doubled) until the max force
    error is below TARGET_REL_FORCE_ERROR of the force scale, at most MAX_REFINEMENTS times
    each; the errors are `tabulation_errors` of the result."""
    potential = functions.potential
    dr = DEFAULT_DR_NM if dr_nm is None else dr_nm
    tables = export_pair_tables(potential, r_min_nm, dr, functions)
    for _ in range(MAX_REFINEMENTS if dr_nm is None else 0):
        worst = _worst([openmm_error(functions, t, tables.force_scale) for t in tables.pairs])
        if worst["max_force_error_rel"] < TARGET_REL_FORCE_ERROR:
            break
        dr /= 2
        tables = export_pair_tables(potential, r_min_nm, dr, functions)
    points = LAMMPS_START_POINTS if lammps_points is None else lammps_points
    for _ in range(MAX_REFINEMENTS if lammps_points is None else 0):
        rows = [lammps_errors(functions, t, tables.cutoff_nm, points, tables.force_scale)
                for t in tables.pairs]
        if _worst([r[lammps_style] for r in rows])["max_force_error_rel"] < TARGET_REL_FORCE_ERROR:
            break
        points *= 2
    return tables, points, tabulation_errors(functions, tables, points)


PAIR_TABLE = "pair_table.csv"  # a pair-family run's φ and F, in its model/ (figures read it)
PAIR_TABLE_START = 0.3  # its first r as a fraction of the cutoff: below any liquid's pairs
PAIR_TABLE_DR_NM = 0.001


def write_pair_table(model_dir, path) -> None:
    """φ (kJ/mol) and F = −dφ/dr (kJ/mol/nm) of the pair model in `model_dir` on the grid
    r = PAIR_TABLE_START·cutoff, ... cutoff (PAIR_TABLE_DR_NM), per species pair (float64
    autodiff, `PairFunctions`), written atomically to the CSV `path`: what the figures plot,
    so that they never load a model."""
    from forcematch.io.atomic import write_csv
    from forcematch.potential import load_model

    functions = PairFunctions(load_model(model_dir))
    cutoff = functions.potential.cutoff_nm
    r = np.arange(round(PAIR_TABLE_START * cutoff, 3), cutoff + 1e-12, PAIR_TABLE_DR_NM)
    columns: dict[str, list] = {k: [] for k in ("species_a", "species_b", "r_nm",
                                                "phi_kJ_mol", "force_kJ_mol_nm")}
    for index, (a, b) in enumerate(species_pairs(functions.potential.n_species)):
        phi, force = functions(r, index)[:2]
        for key, values in (("species_a", [a] * r.size), ("species_b", [b] * r.size),
                            ("r_nm", r), ("phi_kJ_mol", phi), ("force_kJ_mol_nm", force)):
            columns[key] += np.asarray(values).tolist()
    write_csv(path, columns)
