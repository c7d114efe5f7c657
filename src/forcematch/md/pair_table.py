"""Pair families (`pair`, `spline`) in MD through a table of φ(r), as OpenMM and LAMMPS run them.

    table = PairTable.build(potential, r_min_nm)          # the grid refined to the error bound
    engine = ModelEngine(table, masses_amu, box_nm, ...)  # in place of the Potential

A pair family's energy is E = Σ_{i<j} φ_ab(r_ij) + Σ_i o_{s_i} (`calculators.tables`): a
function of r alone per species pair. MD evaluates the network (or spline) once per grid point
here instead of at every pair of every step. The tables are the export's
(`calculators.tables.export_pair_tables`: φ and F = −dφ/dr by float64 autodiff of the model on a
uniform grid from about ½ r_min to the cutoff, the exponential wall below r_min, the closest
pair of the training data), interpolated by cubic Hermite polynomials in r on each interval:
φ and F are matched at every node, so φ is C¹ and the engine's forces (−∇E by autodiff of the
interpolant) are its exact derivative, which keeps NVE energy conserving. Below the first node
φ continues linearly with the force there (as OpenMM's tables do); the stability limit fails a
run long before (0.9 r_min against ½ r_min).

The grid spacing starts at the export's default and is halved until the largest force error
against the model, at the midpoints and quarter points of the intervals over [r_min, cutoff],
is below `MAX_FORCE_ERROR_REL` of the training force RMS; `bound()` reports what was reached
(md.json). Units: nm, kJ/mol, kJ/mol/nm.
"""

from __future__ import annotations

import numpy as np

from forcematch.calculators.tables import (
    DEFAULT_DR_NM,
    PairFunctions,
    PairTables,
    export_pair_tables,
    exported_values,
)
from forcematch.errors import ForcematchError

# Of the training force RMS, per pair. The per-atom error sums ~40 neighbours' in argon and
# float32 round-off: measured on 20 test frames of the default run's pair, spline and
# pair-energy-n100 models, 1.2e-5, 9.2e-6, 1.2e-5 per atom at 7e-6 per pair (dr 1e-3 nm);
# 1.0e-5, 5.2e-6, 8.5e-6 at 1e-6 (dr 5e-4, 5e-4, 6.25e-5 nm).
MAX_FORCE_ERROR_REL = 1e-6
MAX_HALVINGS = 6  # of the grid spacing before giving up on the bound


def hermite_coefficients(phi_lower, phi_upper, force_lower, force_upper, dr):
    """c [..., 4] of the cubic p(t) = c0 + c1 t + c2 t² + c3 t³ on an interval of width dr
    (t = 0 at its lower end, 1 at its upper) with p = φ and −p′/dr = F at both ends (float64
    in). The polynomial form keeps float32 derivatives free of the cancellation between the
    large φ at the two ends that the Hermite basis form suffers on a fine grid."""
    slope_lower, slope_upper = -force_lower * dr, -force_upper * dr  # dφ/dt
    rise = phi_upper - phi_lower
    return np.stack([phi_lower, slope_lower, 3 * rise - 2 * slope_lower - slope_upper,
                     -2 * rise + slope_lower + slope_upper], axis=-1)


def cubic(c, t):
    """p(t) of `hermite_coefficients` c [..., 4] (numpy or JAX arrays)."""
    return c[..., 0] + t * (c[..., 1] + t * (c[..., 2] + t * c[..., 3]))


def cubic_force(c, t, dr):
    """F = −dp/dr of `cubic` on an interval of width dr (nm)."""
    return -(c[..., 1] + t * (2 * c[..., 2] + 3 * t * c[..., 3])) / dr


def _coefficients(table, dr) -> np.ndarray:
    """[M−1, 4] cubic coefficients of a `PairTable`'s intervals, ascending in r."""
    return hermite_coefficients(table.phi[:-1], table.phi[1:], table.force[:-1],
                                table.force[1:], dr)


def _force_error(functions: PairFunctions, tables: PairTables) -> float:
    """Largest |F_table − F_model| / force scale at the quarter, mid and three-quarter points
    of the intervals within [r_min, cutoff], over every species pair."""
    worst, dr = 0.0, tables.dr_nm
    for table in tables.pairs:
        coefficients = _coefficients(table, dr)
        for t in (0.25, 0.5, 0.75):
            at = table.r_nm[:-1] + t * dr
            keep = at >= table.r_min_nm
            _, model, _ = exported_values(functions, table, at[keep])
            interpolated = cubic_force(coefficients[keep], t, dr)
            worst = max(worst, float(np.max(np.abs(interpolated - model))))
    return worst / tables.force_scale


class PairTable:
    """A pair family's energy as tables, with what MD uses of a `Potential` (`energy_function`,
    `params_as`, `cutoff_nm`, `n_atoms`, `species`).

    Every species pair's grid ends at the cutoff with the same spacing (the export's), so the
    tables share their nodes counted down from the cutoff, r_q = cutoff − q·dr; a pair with a
    larger r_min has fewer intervals (`n_intervals`), padded with its lowest one. Each
    interval holds the coefficients of its cubic (`hermite_coefficients`)."""

    def __init__(self, potential, tables: PairTables, max_force_error_rel: float):
        self.potential = potential
        self.tables = tables
        self.max_force_error_rel = float(max_force_error_rel)
        self.cutoff_nm = float(potential.cutoff_nm)
        self.n_atoms = potential.n_atoms
        self.species = potential.species
        self.n_species = potential.n_species
        self.dr_nm = float(tables.dr_nm)
        intervals = np.array([t.r_nm.shape[0] - 1 for t in tables.pairs])
        width = int(intervals.max())

        def down_from_cutoff(c):  # [M−1, 4] ascending in r -> [width, 4] descending, padded
            return np.pad(c[::-1], ((0, width - c.shape[0]), (0, 0)), mode="edge")

        self._params = {
            # interval q lies between r_q = cutoff − q·dr (upper end) and r_{q+1} (lower)
            "coefficients": np.stack([down_from_cutoff(_coefficients(t, self.dr_nm))
                                      for t in tables.pairs]),  # [T, width, 4] kJ/mol
            "n_intervals": intervals,  # [T]
            "offsets": np.asarray(tables.atom_offset_kJ_mol, np.float64),  # [S] kJ/mol
        }

    @classmethod
    def build(cls, potential, r_min_nm, dr_nm: float = DEFAULT_DR_NM,
              max_force_error_rel: float = MAX_FORCE_ERROR_REL) -> PairTable:
        """Tables of `potential` (a pair family) with r_min [P] nm (the wall below it), the
        spacing halved from `dr_nm` until the force error is within `max_force_error_rel`."""
        functions = PairFunctions(potential)
        for _ in range(MAX_HALVINGS + 1):
            tables = export_pair_tables(potential, r_min_nm, dr_nm, functions)
            error = _force_error(functions, tables)
            if error <= max_force_error_rel:
                return cls(potential, tables, error)
            dr_nm /= 2
        raise ForcematchError(
            f"the pair table of {potential.path} still misses the model's forces by {error:.3g} "
            f"of the force RMS at dr = {2 * dr_nm:.3g} nm (bound {max_force_error_rel:g})")

    def bound(self) -> dict:
        """What md.json records about the table."""
        return {"dr_nm": self.dr_nm, "points": [t.r_nm.shape[0] for t in self.tables.pairs],
                "r_lo_nm": [t.r_lo_nm for t in self.tables.pairs],
                "r_min_nm": [t.r_min_nm for t in self.tables.pairs],
                "max_force_error_rel": self.max_force_error_rel,
                "interpolation": "cubic Hermite in r of phi and F; linear below the first node"}

    def force_error(self, positions_nm, box_nm, species) -> float:
        """Largest |F_table − F_model| over the atoms of frames [B,N,3] in box [B,3] (nm),
        relative to the training force RMS, both in float32 as MD runs them: what the table
        changes in the forces MD integrates."""
        import jax
        import jax.numpy as jnp

        from forcematch.data.pairs import frame_pairs

        energy, params = self.energy_function(), self.params_as(np.float32)
        forces = jax.jit(jax.vmap(jax.grad(lambda *args: -energy(params, *args)),
                                  in_axes=(0, 0, None, 0)))
        n = positions_nm.shape[1]
        lists = [frame_pairs(x, box, self.cutoff_nm)[:2]
                 for x, box in zip(positions_nm, box_nm, strict=True)]
        width = max(i.shape[0] for i, _ in lists)  # one shape: padding index N, one compile
        i, j = (np.stack([np.pad(pair[k], (0, width - pair[k].shape[0]), constant_values=n)
                          for pair in lists]) for k in (0, 1))
        got = forces(jnp.asarray(positions_nm, jnp.float32), jnp.asarray(box_nm, jnp.float32),
                     jnp.asarray(species, jnp.int32), (jnp.asarray(i, jnp.int32),
                                                       jnp.asarray(j, jnp.int32)))
        expected = self.potential.predict(positions_nm, box_nm, species)[1]
        return float(np.max(np.abs(np.asarray(got) - expected))) / (
            self.potential.force_scale_kJ_mol_nm())

    def params_as(self, dtype) -> dict:
        return {k: v if k == "n_intervals" else np.asarray(v, dtype)
                for k, v in self._params.items()}

    def energy_function(self):
        """f(params, positions [N,3], box [3], species [N], pairs) -> E (kJ/mol): Σ over the
        pairs within the cutoff of the interpolated φ, plus the per-atom offsets. `pairs`
        (i, j [P], N on padding) is required: MD's list."""
        import jax.numpy as jnp

        from forcematch import space

        dr, cutoff, s = self.dr_nm, self.cutoff_nm, self.potential.n_species

        def energy(params, positions_nm, box_nm, species, pairs=None):
            params = {k: jnp.asarray(v) for k, v in params.items()}
            n = positions_nm.shape[0]
            i, j = pairs
            real = (i < n) & (j < n) & (i != j)
            i, j = jnp.where(real, i, 0), jnp.where(real, j, 0)
            d = space.displacement(positions_nm[i], positions_nm[j], box_nm)
            r2 = jnp.sum(d * d, axis=-1)
            mask = real & (r2 < cutoff**2)
            r = jnp.sqrt(jnp.where(mask, r2, cutoff**2))
            if s == 1:
                kind = jnp.zeros_like(i)
            else:
                a = jnp.minimum(species[i], species[j])
                b = jnp.maximum(species[i], species[j])
                kind = a * s - a * (a - 1) // 2 + (b - a)  # `tables.species_pairs` order
            u = (cutoff - r) / dr  # node index counted down from the cutoff
            last = params["n_intervals"][kind] - 1  # the pair's lowest interval (from r_lo)
            q = jnp.clip(jnp.floor(u).astype(jnp.int32), 0, last)
            c = params["coefficients"][kind, q]  # [P, 4]
            t = (q + 1) - u  # from the interval's lower end; < 0 below r_lo
            inside = cubic(c, t)
            below = c[:, 0] + c[:, 1] * t  # φ(r_lo) + F(r_lo)(r_lo − r): linear
            value = jnp.where(t < 0, below, inside)
            return (jnp.sum(jnp.where(mask, value, 0.0))
                    + jnp.sum(params["offsets"][species]))

        return energy
