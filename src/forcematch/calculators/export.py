"""`forcematch export`: a trained pair model as an OpenMM System and a LAMMPS pair table.

    export_model(model_dir, dataset_dir, out_dir, lammps_units="real")    # the stage
    tables = export_pair_tables(potential, r_min_nm, dr_nm)              # (calculators.tables)
    system = openmm_system(tables, masses_amu [N], species [N], box_nm [3])
    text   = lammps_table(PairFunctions(potential), tables, "real", points)

What the tables hold, the repulsive continuation below the closest pair of the training data
and the interpolation error of each engine: `forcematch.calculators.tables`. The stage writes,
as one directory that replaces `out_dir` whole:
    system.xml         openmm.XmlSerializer System: masses, periodic box, CustomNonbondedForces
                       (CutoffPeriodic at the model's cutoff, no switch, no long-range
                       correction) of φ_ab(r), each a Continuous1DFunction: one force per
                       species pair over its interaction group (up to GROUP_MAX_ATOMS atoms,
                       faster on the CPU platform), else one force with one-hot selectors
    forcematch.table   `pair_style table` file: section FM_<a+1>_<b+1> per species pair, RSQ
                       spacing, N points, Å and kcal/mol (`real`) or eV (`metal`)
    pair_coeff.lammps  pair_style, pair_coeff and mass commands: include after read_data
    export.json        grids, tabulation error bounds, per-atom energy offsets, units
Atom type in LAMMPS: `lammps_types` (the species' own type numbers where the data came from a
dump, else species + 1). The model's energy = the engine's + Σ_i offset(species_i).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from forcematch.calculators.export_options import check_export_options
from forcematch.calculators.tables import (
    LAMMPS_UNITS,
    TARGET_REL_FORCE_ERROR,
    PairFunctions,
    PairTable,
    PairTables,
    automatic_grids,
    export_pair_tables,
    exported_values,
    lammps_grid,
    require_pair_model,
    species_pairs,
)
from forcematch.errors import ForcematchError
from forcematch.units import NM_TO_A

__all__ = ["export_model", "export_pair_tables", "openmm_system",
           "lammps_table", "lammps_commands", "energy_expression", "OUTPUT_FILES"]

OUTPUT_FILES = ("system.xml", "forcematch.table", "pair_coeff.lammps", "export.json")
TABLE_FILE = "forcematch.table"
LAMMPS_STYLES = ("linear", "spline")


# -- OpenMM ------------------------------------------------------------------------------------
# Systems of at most this many atoms get one CustomNonbondedForce per species pair restricted
# to an interaction group. Measured (CPU platform, 1 thread, argon at 0.8 nm): OpenMM's CPU
# kernel cannot vectorise table lookups, and its interaction-group path, scalar, is faster up
# to ~2,000 atoms but scales as N² (one species: 2.8x faster at 100 atoms, 1.6x at 1,000, even
# at 2,000, 0.5x at 4,000; two species: 7.9x against one-hot selectors at 100 atoms).
GROUP_MAX_ATOMS = 2000


def _selector(table: PairTable, n_species: int) -> str:
    """The one-hot product that is 1 for a pair of species (a, b) in either order."""
    a, b = table.a, table.b
    if n_species == 1:
        return ""
    if a == b:
        return f"sp{a}n1*sp{a}n2*"
    return f"(sp{a}n1*sp{b}n2+sp{b}n1*sp{a}n2)*"


def pair_expression(p: int, table: PairTable, force_scale: float) -> str:
    """φ of pair `p` in OpenMM's expression language (kJ/mol, r in nm): phi<p>(max(r, r_lo))
    + F_lo · max(r_lo − r, 0): the table from r_lo to the cutoff, continued below r_lo with the
    (repulsive) force F_lo at r_lo, so never zero there."""
    lo, force_lo = float(table.r_lo_nm), max(float(table.force[0]), force_scale)
    return f"phi{p}(max(r,{lo!r}))+{force_lo!r}*max({lo!r}-r,0)"


def energy_expression(tables: PairTables) -> str:
    """One CustomNonbondedForce for all species pairs: Σ_p selector_p · g_p, selectors from
    one-hot per-particle parameters sp<a>n (none for one species)."""
    terms = [f"{_selector(t, tables.n_species)}g{p}" for p, t in enumerate(tables.pairs)]
    definitions = [f"g{p}={pair_expression(p, t, tables.force_scale)}"
                   for p, t in enumerate(tables.pairs)]
    return "; ".join(["+".join(terms), *definitions])


def _custom_force(tables: PairTables, expression: str, pairs: list[tuple[int, PairTable]]):
    import openmm

    force = openmm.CustomNonbondedForce(expression)
    force.setName("forcematch pair table")
    force.setNonbondedMethod(openmm.CustomNonbondedForce.CutoffPeriodic)
    force.setCutoffDistance(tables.cutoff_nm)
    force.setUseSwitchingFunction(False)
    force.setUseLongRangeCorrection(False)
    for p, t in pairs:
        force.addTabulatedFunction(f"phi{p}", openmm.Continuous1DFunction(
            t.phi.tolist(), t.r_lo_nm, tables.cutoff_nm))
    return force


def openmm_forces(tables: PairTables, species, groups: bool) -> list:
    """CustomNonbondedForces of the tables for atoms of `species` [N]: with `groups`, one per
    species pair present, over the interaction group (atoms of a, atoms of b); else one, the
    pair function picked by one-hot per-particle parameters (`energy_expression`)."""
    index = species if tables.n_species > 1 else np.zeros_like(species)
    if not groups:
        force = _custom_force(tables, energy_expression(tables), list(enumerate(tables.pairs)))
        n_params = tables.n_species if tables.n_species > 1 else 0
        for a in range(n_params):
            force.addPerParticleParameter(f"sp{a}n")
        for s in index:
            force.addParticle([float(s == a) for a in range(n_params)])
        return [force]
    forces = []
    for p, t in enumerate(tables.pairs):
        members = [np.flatnonzero(index == t.a).tolist(), np.flatnonzero(index == t.b).tolist()]
        if not members[0] or not members[1] or (t.a == t.b and len(members[0]) < 2):
            continue
        force = _custom_force(tables, pair_expression(p, t, tables.force_scale), [(p, t)])
        for _ in index:
            force.addParticle([])
        force.addInteractionGroup(*members)
        forces.append(force)
    return forces


def openmm_system(tables: PairTables, masses_amu, species, box_nm, groups: bool | None = None):
    """An openmm.System of N particles (masses_amu [N] amu, species [N] in 0..S−1, box_nm [3]
    orthorhombic edges, nm) whose forces are the tabulated pair model (`openmm_forces`;
    `groups` None: interaction groups up to GROUP_MAX_ATOMS atoms)."""
    import openmm

    masses = np.asarray(masses_amu, np.float64).reshape(-1)
    species = np.asarray(species, np.int64).reshape(-1)
    box = np.asarray(box_nm, np.float64).reshape(3)
    if box.min() < 2 * tables.cutoff_nm:
        raise ForcematchError(f"box {box.tolist()} nm is shorter than twice the cutoff "
                              f"({tables.cutoff_nm} nm): OpenMM's CutoffPeriodic needs 2x")
    if tables.n_species > 1 and (species.min() < 0 or species.max() >= tables.n_species):
        raise ForcematchError(f"species must lie in 0..{tables.n_species - 1}")
    system = openmm.System()
    for m in masses:
        system.addParticle(float(m))
    system.setDefaultPeriodicBoxVectors(*(openmm.Vec3(*np.where(np.arange(3) == i, box[i], 0.0))
                                          for i in range(3)))
    for force in openmm_forces(tables, species, masses.size <= GROUP_MAX_ATOMS
                               if groups is None else groups):
        system.addForce(force)
    return system


# -- LAMMPS ------------------------------------------------------------------------------------
def lammps_keyword(table: PairTable) -> str:
    return f"FM_{table.a + 1}_{table.b + 1}"


def lammps_table(functions: PairFunctions, tables: PairTables, units: str, points: int) -> str:
    """The `pair_style table` file: per species pair a section of `points` lines "i r E F"
    (RSQ spacing from r_lo to the cutoff, Å; E in kcal/mol or eV, F = −dE/dr per Å) with the
    exact dF/dr at both ends (FPRIME)."""
    energy, name = LAMMPS_UNITS[units]
    lines = [f"# forcematch export: pair model tables for LAMMPS units {units} (distance "
             f"Angstrom, energy {name}, force {name}/Angstrom)",
             f"# RSQ spacing with {points} points: pair_style table linear {points} uses them "
             "as they are"]
    for t in tables.pairs:
        lo, hi, r = lammps_grid(t, tables.cutoff_nm, points)
        phi, force, dforce = exported_values(functions, t, r)
        e, f = phi / energy, force / energy / NM_TO_A
        fp = dforce / energy / NM_TO_A**2
        lines += ["", lammps_keyword(t),
                  f"N {points} RSQ {lo} {hi} FPRIME {fp[0]:.14e} {fp[-1]:.14e}", ""]
        lines += [f"{i} {x:.14g} {y:.14e} {z:.14e}"
                  for i, (x, y, z) in enumerate(zip(r * NM_TO_A, e, f, strict=True), 1)]
    return "\n".join(lines) + "\n"


def lammps_types(n_species: int, species_names: list[str] | None) -> list[int]:
    """The LAMMPS atom type of each species: the name itself where every name is a LAMMPS type
    number (data imported from a dump: the user's own types, in their order), else the
    species index + 1."""
    if species_names and all(name.isdigit() and int(name) > 0 for name in species_names):
        return [int(name) for name in species_names]
    return [s + 1 for s in range(n_species)]


def lammps_commands(tables: PairTables, units: str, style: str, points: int,
                    masses_by_species: dict[int, float],
                    species_names: list[str] | None = None) -> str:
    """pair_style, pair_coeff (cutoff = the table's last distance, as `linear` needs to use the
    file's values as they are) and mass commands, the species' names and energy offsets as
    comments; atom types from `lammps_types`."""
    energy, name = LAMMPS_UNITS[units]
    types = lammps_types(tables.n_species, species_names)
    names = species_names or [f"species {s}" for s in range(tables.n_species)]
    lines = [f"# forcematch export for LAMMPS `units {units}` (Angstrom, {name}).",
             f"# Include after read_data (or create_box); {TABLE_FILE} must be in the working "
             "directory. The model's energy",
             "# = pe + the sum over atoms of the offset per atom of its species:"]
    lines += [f"#   type {types[s]} = {names[s]!r}: {o / energy:.12g} {name}"
              for s, o in enumerate(tables.atom_offset_kJ_mol)]
    lines += ["# A pair closer than a table's first distance stops LAMMPS (Pair distance < "
              "table inner cutoff).", f"pair_style table {style} {points}"]
    for t in tables.pairs:
        hi = lammps_grid(t, tables.cutoff_nm, 2)[1]
        pair = "* *" if tables.n_species == 1 else " ".join(
            str(ty) for ty in sorted((types[t.a], types[t.b])))
        lines.append(f"pair_coeff {pair} {TABLE_FILE} {lammps_keyword(t)} {hi}")
    lines += [f"mass {types[s]} {m:.10g}  # {names[s]}"
              for s, m in sorted(masses_by_species.items())]
    return "\n".join(lines) + "\n"


# -- the training data: masses, box, closest pairs -----------------------------------------------
def training_inputs(potential, dataset_dir: Path) -> dict:
    """From the training split `dataset_dir`/train.h5 of the model: masses [N] (amu),
    species [N], box [3] (nm, the first frame's; `box_varies`) and the closest pair per
    species pair [P] (nm). Refuses a dataset of another config or other atoms."""
    from forcematch.data.pairs import closest_pairs_nm
    from forcematch.data.sources import H5MDSource
    from forcematch.io.h5md import read_h5md, read_parameters
    from forcematch.io.provenance import require_same_origin

    path = Path(dataset_dir) / "train.h5"
    trained_on = ((potential.info.get("provenance") or {}).get("inputs") or {}).get(
        "dataset_config_hash")
    dataset_hash = require_same_origin(
        [(f"the training data of the model in {potential.path}", {"config_hash": trained_on}),
         (str(path), read_parameters(path))])
    first = read_h5md(path, slice(0, 1))
    if first.n_atoms != potential.n_atoms or not np.array_equal(first.species,
                                                                potential.species):
        raise ForcematchError(f"{path}: its atoms and species are not those the model in "
                              f"{potential.path} was trained on")
    masses = np.asarray(first.masses_amu, np.float64)
    if not np.all(np.isfinite(masses) & (masses > 0)):
        raise ForcematchError(f"{path} records no mass for some atoms: the OpenMM System "
                              "needs every mass")
    s = potential.n_species
    index = first.species if s > 1 else np.zeros_like(first.species)
    with H5MDSource(path) as source:
        closest = closest_pairs_nm(source, index, species_pairs(s))
        box = source.box_nm[0]
        varies = bool(np.any(np.abs(source.box_nm - box) > 1e-9 * box))
    return {"masses": masses, "species": first.species, "box": box, "box_varies": varies,
            "closest": closest, "dataset_config_hash": dataset_hash, "path": str(path)}


def choose_r_min(potential, closest: np.ndarray, r_min_nm: float | None):
    """(r_min [P] nm, where it came from): `r_min_nm` if given; else the model's recorded
    `closest_pair_nm` (one or one per pair), if any; else the closest pair of each species
    pair in the training split (the smallest over all pairs where a pair was never seen)."""
    n = closest.shape[0]
    if r_min_nm is not None:
        return np.full(n, float(r_min_nm)), "--r-min-nm"
    recorded = potential.info.get("closest_pair_nm")
    if recorded is not None:
        return np.broadcast_to(np.asarray(recorded, np.float64), (n,)).copy(), (
            "closest_pair_nm recorded with the model")
    seen = closest[np.isfinite(closest)]
    if seen.size == 0:
        raise ForcematchError("the training split has no pair of atoms at all: give --r-min-nm")
    return np.where(np.isfinite(closest), closest, seen.min()), (
        "closest pair of each species pair in the training split (train.h5)")


# -- the stage ---------------------------------------------------------------------------------
def _summary(potential, tables, points, errors, data, options) -> dict:
    """export.json: what was written and how well the tables follow the model."""
    from forcematch.io.provenance import provenance

    energy, name = LAMMPS_UNITS[options["lammps_units"]]
    record = potential.info.get("provenance") or {}
    return {
        "files": {"openmm_system": "system.xml", "lammps_table": TABLE_FILE,
                  "lammps_commands": "pair_coeff.lammps"},
        "model": {"path": str(potential.path), "family": potential.model_name,
                  "model_config": potential.model_config, "cutoff_nm": potential.cutoff_nm},
        "units": {"openmm": "nm, kJ/mol, kJ/mol/nm, amu",
                  "lammps": f"units {options['lammps_units']}: Angstrom, {name}, {name}/Angstrom"},
        "grid": {"dr_nm": tables.dr_nm, "openmm_points": [t.r_nm.size for t in tables.pairs],
                 "lammps_points": points, "lammps_style": options["lammps_style"],
                 "lammps_spacing": "RSQ", "r_min_source": options["r_min_source"]},
        "pairs": [{"species": [t.a, t.b], "lammps_keyword": lammps_keyword(t),
                   "r_min_nm": t.r_min_nm, "r_lo_nm": t.r_lo_nm,
                   "closest_in_training_nm": (float(data["closest"][k])
                                              if np.isfinite(data["closest"][k]) else None),
                   "continuation": t.continuation} for k, t in enumerate(tables.pairs)],
        "continuation": "below r_min, d = r_min - r: F = force0 + (k/kappa)(exp(kappa d) - 1),"
                        " phi = phi0 + force0 d + (k/kappa^2)(exp(kappa d) - 1 - kappa d); "
                        "matched: derivatives of phi continued at r_min (3: up to d3phi/dr3)",
        "tabulation_error": errors | {
            "target_max_force_error_rel": TARGET_REL_FORCE_ERROR,
            "force_scale_kJ_mol_nm": tables.force_scale,
            "where": "grid midpoints in [r_min, cutoff], max over species pairs"},
        "energy_offset_per_atom_kJ_mol": tables.atom_offset_kJ_mol.tolist(),
        f"energy_offset_per_atom_{name.replace('/', '_')}": (
            tables.atom_offset_kJ_mol / energy).tolist(),
        "energy_offset_note": "model energy = engine energy + sum over atoms of the offset of "
                              "its species (constant: no force)",
        "box_nm": data["box"].tolist(), "box_varies_in_training": data["box_varies"],
        "openmm": {"forces": [f.getEnergyFunction() for f in options["openmm_forces"]],
                   "interaction_groups": options["openmm_groups"],
                   "nonbonded_method": "CutoffPeriodic", "long_range_correction": False},
        "notes": tables.notes,
        "provenance": provenance("export", str(record.get("config_hash") or "none"), inputs={
            "model_config_hash": record.get("config_hash"),
            "dataset_config_hash": data["dataset_config_hash"]}),
    }


def export_model(model_dir, dataset_dir, out_dir, *, lammps_units: str = "real",
                 lammps_style: str = "linear", dr_nm: float | None = None,
                 lammps_points: int | None = None, r_min_nm: float | None = None,
                 progress: Callable[[str], None] = print) -> dict:
    """Write OUTPUT_FILES for the pair model in `model_dir` into `out_dir` (replaced whole),
    masses, box and closest pairs from `dataset_dir` (its training data); returns export.json.
    `dr_nm`/`lammps_points` None: refined until the force error is below 1e-4 of its scale.
    Options outside `check_export_options`' bounds are refused before any table is built."""
    from forcematch.io.atomic import atomic_directory, check_replaceable, output_errors, write_json
    from forcematch.potential import load_model

    if lammps_units not in LAMMPS_UNITS or lammps_style not in LAMMPS_STYLES:
        raise ForcematchError(f"LAMMPS units must be one of {list(LAMMPS_UNITS)} and the "
                              f"style one of {list(LAMMPS_STYLES)}")
    potential = load_model(model_dir)
    require_pair_model(potential)
    check_export_options(potential.cutoff_nm, dr_nm, lammps_points, r_min_nm)
    out_dir = Path(out_dir)
    check_replaceable(out_dir, OUTPUT_FILES, "--out-dir")
    data = training_inputs(potential, Path(dataset_dir))
    r_min, source = choose_r_min(potential, data["closest"], r_min_nm)
    progress(f"r_min per species pair {np.round(r_min, 4).tolist()} nm ({source})")
    functions = PairFunctions(potential)
    tables, points, errors = automatic_grids(functions, r_min, dr_nm, lammps_points,
                                             lammps_style)
    system = openmm_system(tables, data["masses"], data["species"], data["box"])
    masses_by_species = {int(s): float(data["masses"][np.argmax(data["species"] == s)])
                         for s in np.unique(data["species"])}
    forces = [system.getForce(i) for i in range(system.getNumForces())]
    summary = _summary(potential, tables, points, errors, data, {
        "lammps_units": lammps_units, "lammps_style": lammps_style, "r_min_source": source,
        "openmm_forces": forces, "openmm_groups": forces[0].getNumInteractionGroups() > 0})
    import openmm

    with output_errors(out_dir.parent, own_name=True):
        out_dir.parent.mkdir(parents=True, exist_ok=True)
    with atomic_directory(out_dir) as tmp:
        (tmp / "system.xml").write_text(openmm.XmlSerializer.serialize(system))
        (tmp / TABLE_FILE).write_text(lammps_table(functions, tables, lammps_units, points))
        (tmp / "pair_coeff.lammps").write_text(lammps_commands(
            tables, lammps_units, lammps_style, points, masses_by_species,
            potential.species_names))
        write_json(tmp / "export.json", summary)
    for note in tables.notes:
        progress(f"note: {note}")
    progress(f"dr {tables.dr_nm:.3g} nm, LAMMPS {lammps_style} {points} points; max force "
             f"error / force RMS: OpenMM {errors['openmm_spline']['max_force_error_rel']:.2e}, "
             f"LAMMPS {errors['lammps_' + lammps_style]['max_force_error_rel']:.2e}; wrote "
             f"{out_dir}")
    return summary
