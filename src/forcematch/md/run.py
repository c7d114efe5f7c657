"""`forcematch md`: the MD protocol for a trained model or the OpenMM reference, files in and out.

    run_reference_md(config, dataset_dir, out_dir)
    run_model_md(config, model_dir, dataset_dir, reference_dir, out_dir)

Each writes `<out_dir>/md.json` (settings, momentum, energy drift against time step, stability
at T and at the stress temperature, U/N, T, pressure and RDF; every value's unit in its key)
and `<out_dir>/nvt.h5` (the NVT run at T: positions, velocities, forces; potential, kinetic
and total energy as H5MD observables; Langevin has no thermostat state to store). The
reference's md.json also holds the RDF noise floor from the dataset's replicas; the model's
holds `against_reference`. Every md.json records the system it simulated (`system_record`); a
model's run refuses a reference of another system (`require_same_system`). Both files are
written whole or not at all.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from forcematch.config import config_hash, species_names, stage_config
from forcematch.data.frames import Frames
from forcematch.errors import ForcematchError
from forcematch.io.atomic import write_json
from forcematch.io.h5md import read_h5md, write_h5md
from forcematch.io.provenance import provenance
from forcematch.md import checks
from forcematch.md.protocol import Protocol, compare, limits_from_data, run_protocol, summarise
from forcematch.md.record import Segment
from forcematch.units import UNIT


def _log(message: str) -> None:
    print(f"md: {message}", flush=True)


def _start_and_limits(config: dict, dataset_dir: Path):
    """(test frames, start positions [N,3], the stability limits from the training data, the
    closest pair of each species pair in the training split [P] nm, `tables.species_pairs`
    order): one scan of train.h5."""
    md = config["md"]
    test = read_h5md(dataset_dir / "test.h5")
    if md["start_frame"] >= test.n_frames:
        raise ForcematchError(f"md.start_frame {md['start_frame']} is past the last frame of "
                              f"{dataset_dir / 'test.h5'} ({test.n_frames} frames)")
    by_pair = training_closest_pairs_nm(dataset_dir)
    closest = float(by_pair.min())
    limits = limits_from_data(closest, md["close_pair_margin"], md["runaway_factor"])
    _log(f"closest pair in the training data {closest * 10:.3f} A; a run fails below "
         f"{limits.min_distance_nm * 10:.3f} A or above {limits.runaway_factor:g} x T")
    return test, test.positions_nm[md["start_frame"]], limits, by_pair


def training_closest_pairs_nm(dataset_dir: Path) -> np.ndarray:
    """The closest pair of each species pair in the training split [P] nm (`species_pairs`
    order; inf where none): stats.json's `closest_pair_nm`, written by the dataset stage; a
    scan of train.h5 for a dataset written before it held them."""
    from forcematch.data.pairs import closest_by_species_pair
    from forcematch.data.sources import H5MDSource

    stats_path = dataset_dir / "stats.json"
    train = json.loads(stats_path.read_text()).get("train", {}) if stats_path.is_file() else {}
    found = train.get("closest_pair_nm")
    if found is None:
        with H5MDSource(dataset_dir / "train.h5") as source:
            found = closest_by_species_pair(source)
    return np.array([np.inf if r is None else float(r) for r in found])


def _integrated(potential, md: dict, closest_nm: np.ndarray, test):
    """(what MD integrates, what md.json says of its table): the potential itself, or for a
    pair family with `md.pair_table` its table (`md.pair_table.PairTable`), walled below
    `closest_nm` [P], the closest pair of each species pair in the training split."""
    from forcematch.calculators.export import choose_r_min
    from forcematch.calculators.tables import PAIR_FAMILIES
    from forcematch.md.pair_table import PairTable

    if not md["pair_table"] or potential.model_name not in PAIR_FAMILIES:
        return potential, None
    if potential.n_species == 1:
        closest_nm = np.asarray([np.min(closest_nm)])
    r_min, _ = choose_r_min(potential, closest_nm, None)
    try:
        table = PairTable.build(potential, r_min)
    except ForcematchError as err:  # φ too rough to tabulate within the bound: the network
        _log(f"pair table: {err}; MD integrates the model itself")
        return potential, {"used": False, "why": str(err)}
    frames = slice(0, min(4, test.n_frames))
    per_atom = table.force_error(test.positions_nm[frames], test.box_nm[frames], test.species)
    _log(f"pair table: dr {table.dr_nm:g} nm, force error {table.max_force_error_rel:.2g} of "
         f"the force RMS per pair, {per_atom:.2g} per atom on {frames.stop} test frames")
    return table, table.bound() | {"used": True, "force_error_rel_per_atom": per_atom,
                                   "per_atom_frames": frames.stop}


def _epsilon_kJ_mol(config: dict) -> float:
    from forcematch.reference.system import lj_system_from_config

    return lj_system_from_config(config).epsilon_kJ_mol


def system_record(n_atoms: int, box_nm, species, names: list[str] | None) -> dict:
    """What md.json says of the system a run simulates: the atom count, the box edges [3] nm
    and the atoms of each species present, by name where the config names them (`names`,
    `config.derived.species_names`), else by index."""
    indices, counts = np.unique(np.asarray(species), return_counts=True)
    labels = [names[k] if names is not None and k < len(names) else str(k) for k in indices]
    return {"n_atoms": int(n_atoms), "box_nm": [float(b) for b in np.asarray(box_nm)],
            "species": {label: int(c) for label, c in zip(labels, counts, strict=True)}}


def _edges(box_nm) -> str:
    return " x ".join(f"{float(b):.6g}" for b in np.ravel(box_nm))


def _counts(species: dict) -> str:
    return ", ".join(f"{name} {count}" for name, count in species.items())


def require_same_system(reference: dict, mine: dict, reference_dir) -> None:
    """Refuse a reference md.json (`reference`) whose recorded system differs from `mine`
    (`system_record` of this run) in atom count, box (to 1e-6) or species counts; what it
    does not record (an md.json written before it did) is not checked."""
    recorded = reference.get("system")
    if not isinstance(recorded, dict):
        return
    where = f"--reference-dir {reference_dir}: its md.json"
    n = recorded.get("n_atoms")
    if n is not None and n != mine["n_atoms"]:
        raise ForcematchError(f"{where} is of {n} atoms, this run's system has "
                              f"{mine['n_atoms']}")
    box = recorded.get("box_nm")
    if box is not None and (np.shape(box) != (3,)
                            or not np.allclose(box, mine["box_nm"], rtol=1e-6, atol=0.0)):
        raise ForcematchError(f"{where} has a box of {_edges(box)} nm, this run's system "
                              f"{_edges(mine['box_nm'])} nm")
    species = recorded.get("species")
    if species is not None and species != mine["species"]:
        raise ForcematchError(f"{where} has species {_counts(species)}, this run's system "
                              f"{_counts(mine['species'])}")


def _finite_or_none(value):
    """JSON-safe: NaN and infinities become null (md.json states no number it lacks)."""
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _write(out_dir: Path, summary: dict, segments: dict[str, Segment], species) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    seg = segments.get("nvt") or segments["equilibration"]
    n = seg.potential_kJ_mol.shape[0]
    frames = Frames(positions_nm=seg.positions_nm, forces_kJ_mol_nm=seg.forces_kJ_mol_nm,
                    potential_energy_kJ_mol=seg.potential_kJ_mol,
                    box_nm=np.tile(seg.box_nm, (n, 1)), species=species,
                    masses_amu=seg.masses_amu, step=np.arange(n) * seg.record_every,
                    time_ps=seg.time_ps, velocities_nm_ps=seg.velocities_nm_ps)
    observables = {"kinetic_energy": (seg.kinetic_kJ_mol, UNIT["energy"]),
                   "total_energy": (seg.total_kJ_mol, UNIT["energy"]),
                   "temperature": (seg.temperature_inst_K, UNIT["temperature"])}
    write_h5md(out_dir / "nvt.h5", frames, {"md": summary["protocol"],
                                            "provenance": summary["provenance"]},
               observables=observables)
    write_json(out_dir / "md.json", _finite_or_none(summary))


def _report(summary: dict) -> None:
    for row in summary.get("energy", {}).get("nve", []):
        _log(f"NVE {row['timestep_fs']:g} fs: drift "
             f"{row.get('drift_eps_per_atom_per_ns', float('nan')):.3g} eps/atom/ns, "
             f"momentum change {row['momentum_change_relative']:.2g}, stable {row['stable']}")
    for name, s in summary.get("stability", {}).items():
        _log(f"{name} {s['temperature_K']:g} K: "
             + ("stable" if s["stable"] else f"failed at {s['time_to_failure_ps']:.2f} ps: "
                                              f"{s['failure']}"))
    liquid = summary.get("liquid")
    if liquid:
        _log(f"U/N {liquid['potential_eps_per_atom']['mean']:.4f} eps, P "
             f"{liquid['pressure_bar']['mean']:.1f} +- {liquid['pressure_bar']['error']:.1f} "
             f"bar, RDF peak {liquid['rdf_first_peak_A']:.3f} A")


def reference_noise_floor(split_files, block_ps: float | None, box_nm) -> float:
    """The RDF noise floor: `checks.rdf_noise_floor` over blocks of `block_ps` of the
    reference data (None: halves of the shortest file), pairs taken between different split
    files (different replicas)."""
    blocks = []
    splits = [read_h5md(path) for path in split_files]
    for k, (path, frames) in enumerate(zip(split_files, splits, strict=True)):
        if block_ps is None:
            per_block = max(2, min(f.n_frames for f in splits) // 2)
        else:
            interval = (float(np.median(np.diff(frames.time_ps))) if frames.n_frames > 1
                        else 0.0)
            if not interval > 0:
                raise ForcematchError(f"{path}: frame times are not increasing; cannot cut "
                                      f"{block_ps} ps blocks for the RDF noise floor")
            per_block = max(2, round(block_ps / interval))
        for start in range(0, frames.n_frames - per_block + 1, per_block):
            blocks.append((k, checks.rdf(frames.positions_nm[start:start + per_block],
                                         box_nm)[1]))
    length = "half the shortest file" if block_ps is None else f"{block_ps:g} ps"
    _log(f"RDF noise floor from {len(blocks)} blocks of {length} in {len(split_files)} files")
    return checks.rdf_noise_floor(blocks)


def run_reference_md(config: dict, dataset_dir, out_dir) -> dict:
    """The protocol with OpenMM's reference system (see the module docstring)."""
    from forcematch.md.reference import OpenMMEngine, strain_derivative_kJ_mol
    from forcematch.reference.system import lj_system_from_config

    dataset_dir, out_dir = Path(dataset_dir), Path(out_dir)
    protocol = Protocol.from_config(config)
    test, start, limits, _ = _start_and_limits(config, dataset_dir)
    lj = lj_system_from_config(config)
    engine = OpenMMEngine(lj)
    segments = run_protocol(engine, start, protocol, limits)
    summary = summarise(segments, protocol, lj.epsilon_kJ_mol,
                        lambda pos: strain_derivative_kJ_mol(lj, pos, engine.box_nm))
    summary["engine"] = "openmm"
    summary["system"] = system_record(test.n_atoms, engine.box_nm, test.species,
                                      species_names(config))
    summary["rdf_noise_floor"] = reference_noise_floor(
        [dataset_dir / f"{split}.h5" for split in ("train", "val", "test")], protocol.nvt_ps,
        engine.box_nm)
    summary["provenance"] = provenance("md", config_hash(stage_config(config, "md")),
                                       {"md": config["md"]["seed"]})
    _report(summary)
    _write(out_dir, summary, segments, test.species)
    return summary


def data_reference(config: dict, dataset_dir, out_dir) -> dict:
    """The reference of imported or coarse-grained data, where no engine can rerun the system:
    the liquid of the test split itself (U/N, RDF and its noise floor across the splits; no
    pressure, as the files hold no virial; for CG data no U/N either, as the potential of mean
    force is a free energy, not the atomistic energy the labels carry), in the md.json layout
    `compare` reads. Writes md.json only."""
    dataset_dir, out_dir = Path(dataset_dir), Path(out_dir)
    protocol = Protocol.from_config(config)
    test = read_h5md(dataset_dir / "test.h5")
    box = test.box_nm[0]
    if not np.allclose(test.box_nm, box, rtol=1e-9):
        raise ForcematchError(f"{dataset_dir / 'test.h5'}: the box changes between frames; "
                              "the MD comparison needs one box (an NVT trajectory)")
    r_A, g = checks.rdf(test.positions_nm, box)
    peak_r, peak_g = checks.first_peak(r_A, g)
    energy = test.potential_energy_kJ_mol / test.n_atoms / _epsilon_kJ_mol(config)
    what = "imported" if config["cg"] is None else "coarse-grained"
    summary = {
        "protocol": _finite_or_none(protocol.__dict__), "engine": "data", "stable": True,
        "system": system_record(test.n_atoms, box, test.species, species_names(config)),
        "note": f"{what} data: the test split's own liquid; no reference MD was run",
        "liquid": {"n_frames": int(test.n_frames),
                   "potential_eps_per_atom": (checks.block_mean(energy) if config["cg"] is None
                                              else None),
                   "pressure_bar": None, "rdf_first_peak_A": peak_r,
                   "rdf_first_peak_g": peak_g, "rdf": {"r_A": r_A.tolist(), "g": g.tolist()}},
        "rdf_noise_floor": reference_noise_floor(
            [dataset_dir / f"{split}.h5" for split in ("train", "val", "test")], None, box),
        "provenance": provenance("md", config_hash(stage_config(config, "md")),
                                 {"md": config["md"]["seed"]})}
    u = summary["liquid"]["potential_eps_per_atom"]
    said_u = f"U/N {u['mean']:.4f} eps, " if u else ""
    _log(f"data reference: {said_u}RDF peak {peak_r:.3f} A, noise floor "
         f"{summary['rdf_noise_floor']:.3f}")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "md.json", _finite_or_none(summary))
    return summary


def run_model_md(config: dict, model_dir, dataset_dir, reference_dir, out_dir) -> dict:
    """The protocol with a trained model, compared with the reference's md.json."""
    from forcematch.io.model_files import read_json_object
    from forcematch.md.engine import ModelEngine
    from forcematch.potential import load_model

    dataset_dir, out_dir = Path(dataset_dir), Path(out_dir)
    reference = read_json_object(Path(reference_dir) / "md.json")
    md = config["md"]
    protocol = Protocol.from_config(config)
    if reference.get("protocol") != _finite_or_none(protocol.__dict__):
        raise ForcematchError(f"{Path(reference_dir) / 'md.json'} was made with other md "
                              "settings: rerun the reference MD with this config")
    test, start, limits, closest_nm = _start_and_limits(config, dataset_dir)
    system = system_record(test.n_atoms, test.box_nm[md["start_frame"]], test.species,
                           species_names(config))
    require_same_system(reference, system, reference_dir)
    potential = load_model(model_dir)
    masses = test.masses_amu
    if not np.isfinite(masses).all():
        raise ForcematchError(f"{dataset_dir / 'test.h5'}: masses are missing (NaN); MD "
                              "needs every particle's mass")
    integrated, table = _integrated(potential, md, closest_nm, test)
    engine = ModelEngine(integrated, masses, test.box_nm[md["start_frame"]],
                         species=test.species, skin_nm=md["skin_nm"], float64=md["float64"],
                         friction_per_ps=md["friction_per_ps"], progress=_log)
    segments = run_protocol(engine, start, protocol, limits)
    box = test.box_nm[md["start_frame"]]
    summary = summarise(segments, protocol, _epsilon_kJ_mol(config),
                        lambda pos: np.trace(potential.strain_derivative(
                            pos, box, float64=md["float64"]), axis1=1, axis2=2))
    summary["engine"] = "jax_md, pair table" if (table or {}).get("used") else "jax_md"
    summary["system"] = system
    summary["pair_table"] = table
    summary["model"] = potential.describe()
    summary["against_reference"] = compare(summary, reference)
    summary["provenance"] = provenance("md", config_hash(stage_config(config, "md")),
                                       {"md": md["seed"]})
    _report(summary)
    _write(out_dir, summary, segments, test.species)
    return summary

