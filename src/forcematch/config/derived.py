"""What follows from a validated config beyond one key at a time: the box, where the data
come from (simulated replicas or imported parts), species names, and the derived checks that
`forcematch.config.validate_config` runs (cutoff against the box, enough replicas for the split,
a mixture's counts, the bounds on what a config expands to).
"""

from __future__ import annotations

import math
from typing import Any

from forcematch.errors import ForcematchError
from forcematch.units import cubic_box_length_nm


def check_derived(config: dict[str, Any], *, source: str = "config") -> None:
    """Limits that involve more than one key (the schema checks one key at a time).

    The diagnostic runs use min(diagnose.n_train, training frames), so need no check here.
    `check_size` bounds what the config expands to (jobs, data, MD work).
    """
    check_size(config, source=source)
    check_species(config["system"], source=source)
    system, simulate, split = config["system"], config["simulate"], config["split"]
    if system["switch_nm"] >= system["cutoff_nm"]:
        raise ForcematchError(
            f"{source}: system.switch_nm = {system['switch_nm']} nm must be less than "
            f"system.cutoff_nm = {system['cutoff_nm']} nm"
        )
    _check_loss_weights(config["train"], source)
    if config["cg"] is not None:
        check_cg(config, source=source)
    if config["import"] is not None:  # the box and frame counts are in the files
        check_import(config, source=source)
        return
    box_nm = box_length_nm(config)
    if system["cutoff_nm"] >= box_nm / 2:
        raise ForcematchError(
            f"{source}: system.cutoff_nm = {system['cutoff_nm']} nm must be less than half the "
            f"box: "
            f"{system['n_atoms']} atoms at {system['density_g_cm3']} g/cm3 give a box of "
            f"{box_nm:.4f} nm, so the largest allowed cutoff is {box_nm / 2:.4f} nm"
        )
    held_out = split["val_replicas"] + split["test_replicas"]
    if simulate["replicas"] < held_out + 1:
        raise ForcematchError(
            f"{source}: simulate.replicas = {simulate['replicas']} is too few for the split: "
            f"split.val_replicas ({split['val_replicas']}) + split.test_replicas "
            f"({split['test_replicas']}) + at least 1 training replica = {held_out + 1}"
        )
    train = config["train"]
    n_train_frames = (simulate["replicas"] - held_out) * simulate["frames_per_replica"]
    if train["n_train"] is not None and train["n_train"] > n_train_frames:
        raise ForcematchError(
            f"{source}: train.n_train = {train['n_train']} exceeds the {n_train_frames} training "
            f"frames ({simulate['replicas'] - held_out} replicas x "
            f"{simulate['frames_per_replica']} frames)"
        )
    usable = train["n_train"] or n_train_frames
    if train["batch_size"] > usable:
        raise ForcematchError(
            f"{source}: train.batch_size = {train['batch_size']} exceeds the {usable} "
            f"training frames"
        )


def _check_loss_weights(train: dict[str, Any], source: str) -> None:
    if train["energy_weight"] == 0 and train["force_weight"] == 0:
        raise ForcematchError(
            f"{source}: train.energy_weight and train.force_weight are both 0: nothing to fit"
        )


def check_species(system: dict[str, Any], *, source: str = "config") -> None:
    """A mixture's counts add up to system.n_atoms; names are unique; pair_parameters name
    known species, each unordered pair at most once."""
    species = system["species"]
    if species is None:
        if system["pair_parameters"]:
            raise ForcematchError(f"{source}: system.pair_parameters needs system.species")
        return
    names = [entry["name"] for entry in species]
    if len(set(names)) != len(names):
        raise ForcematchError(f"{source}: system.species names must be unique, got {names}")
    total = sum(entry["count"] for entry in species)
    if total != system["n_atoms"]:
        counts = " + ".join(str(entry["count"]) for entry in species)
        raise ForcematchError(f"{source}: the counts of system.species add up to {counts} = "
                              f"{total} atoms, but system.n_atoms is {system['n_atoms']}")
    seen = set()
    for k, entry in enumerate(system["pair_parameters"]):
        pair = entry["species"]
        unknown = [name for name in pair if name not in names]
        if unknown:
            raise ForcematchError(f"{source}: system.pair_parameters.{k}.species names "
                                  f"{unknown[0]!r}, not one of system.species ({names})")
        if pair[0] == pair[1]:
            raise ForcematchError(
                f"{source}: system.pair_parameters.{k} pairs {pair[0]!r} with itself: a "
                "species' own sigma_nm and epsilon_kJ_mol are those of its system.species entry")
        key = frozenset(pair)
        if key in seen:
            raise ForcematchError(f"{source}: system.pair_parameters.{k}: the pair {pair} is "
                                  "given twice")
        seen.add(key)


def import_parts(config: dict[str, Any]) -> int:
    """How many parts (the replicas of the split) `import` makes: one per file, or
    `import.blocks` of the one file."""
    files = config["import"]["files"]
    return len(files) if len(files) > 1 else config["import"]["blocks"]


def data_parts(config: dict[str, Any]) -> int:
    """The independent trajectories the split divides: imported parts or simulated replicas."""
    if config["import"] is not None:
        return import_parts(config)
    return config["simulate"]["replicas"]


def species_names(config: dict[str, Any]) -> list[str] | None:
    """Names of species 0..S-1 where the config gives them (system.species of a simulated
    mixture, import.species), else None."""
    if config["import"] is not None:
        return config["import"]["species"]
    species = config["system"]["species"]
    return None if species is None else [entry["name"] for entry in species]


def has_reference_engine(config: dict[str, Any]) -> bool:
    """Whether OpenMM can rerun the system the data describe: simulated, atomistic data. For
    imported or coarse-grained data the test split's own liquid is the MD reference, and no
    reference potential exists to validate the data against."""
    return config["import"] is None and config["cg"] is None


def check_cg(config: dict[str, Any], *, source: str = "config") -> None:
    """Coarse-graining needs the simulated system (the mean force is sampled with OpenMM), more
    atoms than one site, enough test frames, and no collapse study (which maps data itself)."""
    cg, system = config["cg"], config["system"]
    if config["import"] is not None:
        raise ForcematchError(f"{source}: cg needs simulated data (the exact mean force is "
                              "sampled with OpenMM); remove import or cg")
    if config["diagnose"]["enabled"]:
        raise ForcematchError(f"{source}: cg and diagnose.enabled: the collapse study trains on "
                              "atomistic labels; set diagnose.enabled: false for a CG run")
    if cg["keep_every"] >= system["n_atoms"]:
        raise ForcematchError(f"{source}: cg.keep_every = {cg['keep_every']} leaves one site of "
                              f"system.n_atoms = {system['n_atoms']}")
    mean_force = config["cg_mean_force"]
    test_frames = config["split"]["test_replicas"] * config["simulate"]["frames_per_replica"]
    if mean_force["frames"] > test_frames:
        raise ForcematchError(f"{source}: cg_mean_force.frames = {mean_force['frames']} exceeds "
                              f"the {test_frames} test frames")
    runs, blocks = mean_force["runs"], mean_force["blocks"]
    if mean_force["samples"] % (runs * blocks):
        raise ForcematchError(
            f"{source}: cg_mean_force.samples = {mean_force['samples']} do not split into "
            f"cg_mean_force.runs x blocks = {runs} x {blocks}")
    if mean_force["seed"] + mean_force["frames"] * runs - 1 > 2**31 - 1:  # OpenMM's seeds
        raise ForcematchError(f"{source}: cg_mean_force.seed + frames x runs exceeds 2**31 - 1")
    steps = mean_force["sample_ps"] * 1e3 / mean_force["timestep_fs"]
    if steps < mean_force["samples"]:  # every sample at least one step after the last
        raise ForcematchError(
            f"{source}: cg_mean_force.sample_ps = {mean_force['sample_ps']} at timestep_fs = "
            f"{mean_force['timestep_fs']} is {steps:.0f} steps, fewer than samples = "
            f"{mean_force['samples']}")


def source_stage(config: dict[str, Any]) -> str:
    """The stage the data come from: "import" or "simulate"."""
    return "simulate" if config["import"] is None else "import"


def check_import(config: dict[str, Any], *, source: str = "config") -> None:
    """Enough parts for the split; one energy file per trajectory when energy files are given."""
    imp, split = config["import"], config["split"]
    energy_files = imp["energy_files"]
    if energy_files is not None and len(energy_files) != len(imp["files"]):
        raise ForcematchError(
            f"{source}: import.energy_files lists {len(energy_files)} files for "
            f"{len(imp['files'])} import.files: give one energy file per trajectory")
    held_out = split["val_replicas"] + split["test_replicas"]
    parts = import_parts(config)
    if parts < held_out + 1:
        what = (f"{len(imp['files'])} import.files" if len(imp["files"]) > 1
                else f"import.blocks = {imp['blocks']}")
        raise ForcematchError(
            f"{source}: {what} give {parts} parts, too few for the split: split.val_replicas "
            f"({split['val_replicas']}) + split.test_replicas ({split['test_replicas']}) + at "
            f"least 1 for training = {held_out + 1}")


# Bounds on what a config expands to, checked when it loads (so `snakemake -n` refuses a typo
# such as frames_per_replica: 2000000000 before any job runs). The default config uses 18 runs,
# 48 MB of reference data and 2.5e7 atom-steps.
MAX_SWEEP_RUNS = 500  # training jobs of one sweep (models x losses x n_train)
MAX_REPLICAS = 1000  # simulation jobs
MAX_REFERENCE_BYTES = 100 * 10**9  # positions + forces of every frame, float64: 48 B per atom
MAX_MD_ATOM_STEPS = 10**12  # replicas x MD steps x atoms: ~2 weeks at 1e6 atom-steps/s


def check_size(config: dict[str, Any], *, source: str = "config") -> None:
    """Refuse a config that expands beyond the MAX_* bounds above, naming the keys."""
    simulate, n_atoms, sweep = config["simulate"], config["system"]["n_atoms"], config["sweep"]
    replicas, frames = simulate["replicas"], simulate["frames_per_replica"]
    if replicas > MAX_REPLICAS:
        raise ForcematchError(f"{source}: simulate.replicas = {replicas} exceeds the limit of "
                              f"{MAX_REPLICAS} simulation jobs")
    data_bytes = replicas * frames * n_atoms * 48
    if data_bytes > MAX_REFERENCE_BYTES:
        raise ForcematchError(
            f"{source}: simulate.replicas x simulate.frames_per_replica x system.n_atoms = "
            f"{replicas} x {frames} x {n_atoms} atom-frames need {data_bytes / 1e9:.3g} GB of "
            f"positions and forces (48 bytes each); the limit is "
            f"{MAX_REFERENCE_BYTES / 1e9:.0f} GB")
    steps = simulate["equilibration_steps"] + frames * simulate["steps_between_frames"]
    if replicas * steps * n_atoms > MAX_MD_ATOM_STEPS:
        raise ForcematchError(
            f"{source}: {replicas} replicas x {steps} MD steps (simulate.equilibration_steps + "
            f"frames_per_replica x steps_between_frames) x {n_atoms} atoms = "
            f"{replicas * steps * n_atoms:.3g} atom-steps; the limit is {MAX_MD_ATOM_STEPS:.0e}")
    counts = [len(sweep[key] or [None]) for key in ("models", "losses", "n_train")]
    if math.prod(counts) > MAX_SWEEP_RUNS:
        raise ForcematchError(
            f"{source}: the sweep asks for {math.prod(counts)} training runs "
            f"({counts[0]} sweep.models x {counts[1]} sweep.losses x {counts[2]} sweep.n_train); "
            f"the limit is {MAX_SWEEP_RUNS}")


def mean_mass_amu(system: dict[str, Any]) -> float:
    """Mean particle mass (amu) of `system`: mass_amu, or the count-weighted mean of a
    mixture's species."""
    species = system["species"]
    if species is None:
        return float(system["mass_amu"])
    if len(species) == 1:  # the mass itself (a sum and division could differ in the last bit)
        return float(species[0]["mass_amu"])
    return (sum(s["count"] * s["mass_amu"] for s in species)
            / sum(s["count"] for s in species))


def box_length_nm(config: dict[str, Any]) -> float:
    """Edge (nm) of the cubic box of the simulated system (system.n_atoms at density_g_cm3)."""
    system = config["system"]
    return cubic_box_length_nm(system["n_atoms"], system["density_g_cm3"],
                               mean_mass_amu(system))
