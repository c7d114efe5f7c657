"""What each `forcematch` subcommand does, given its parsed arguments (`cli` parses them).

Each `cmd_<stage>(args)` validates its inputs before any long work, imports the heavy libraries
(JAX, OpenMM) only when it runs, and raises ForcematchError on bad input; `cli.main` turns that
into a one-line message and exit status 2.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from pathlib import Path

from forcematch.config.sweep import run_config
from forcematch.errors import ForcematchError

# Thread pools of the numerical libraries: set to the rule's `threads`, overriding the
# environment (an exported OMP_NUM_THREADS=8 must not break a rule's promise of 1 thread).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


# XLA's CPU backend has no thread-count flag; without Eigen's thread pool it runs each op on
# one thread. (A bare "intra_op_parallelism_threads=N" token, often suggested, is not an XLA
# flag: XLA ignores it and every flag after it.)
XLA_THREAD_FLAG = "--xla_cpu_multi_thread_eigen"


def limit_threads(threads: int) -> None:
    """Keep XLA's and BLAS's CPU thread pools within `threads` (a Snakemake rule's promise).

    Must run before JAX is imported. The BLAS variables are set, not defaulted: values
    exported in the environment are replaced, since the rule's `threads` is what the scheduler
    counted. XLA_FLAGS is kept verbatim (`xla_flags_with_threads`).
    """
    if threads < 1:
        raise ForcematchError(f"--threads must be at least 1, got {threads}")
    os.environ["XLA_FLAGS"] = xla_flags_with_threads(os.environ.get("XLA_FLAGS", ""), threads)
    for var in THREAD_VARIABLES:
        os.environ[var] = str(threads)


def xla_flags_with_threads(user: str, threads: int) -> str:
    """`user` (XLA_FLAGS as exported) exactly as given, with XLA_THREAD_FLAG for `threads`
    appended unless `user` already sets it: XLA parses the string itself (its own quoting and
    order), so forcematch never re-tokenises it, and a flag the user set is the user's."""
    if re.search(rf"(^|\s){XLA_THREAD_FLAG}(=|\s|$)", user):
        return user
    flag = f"{XLA_THREAD_FLAG}={'true' if threads > 1 else 'false'}"
    if not user:
        return flag
    return user + ("" if user[-1].isspace() else " ") + flag


def use_compilation_cache() -> None:
    """Point JAX at its persistent compilation cache, unless the environment already does.

    Every stage is a fresh process that compiles the same functions (a model family's energy,
    the MD chunks, the eager operations of setting up): cached, a repeated compilation is a
    file read. The default is ~/.cache/forcematch/jax ($XDG_CACHE_HOME honoured); deleting it
    is always safe. Must run before JAX is imported.

    Parallel jobs share the cache, and JAX writes an entry without locking (its locking mode,
    with a size limit, breaks for good on an entry written without it). A job that reads an
    entry still being written gets a truncated stream, which JAX detects, warns about and
    compiles afresh; a write the disk refuses (full, a file-size limit) only goes uncached.
    Either way the result is the same, so those two warnings are silenced here: the cache is
    an optimisation, its failures are not the user's problem.
    """
    cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(cache_home / "forcematch" / "jax"))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    warnings.filterwarnings("ignore",
                            message="Error (reading|writing) persistent compilation cache")


def _existing_file(path: str | Path, what: str) -> Path:
    """`path` resolved; ForcematchError naming it when it is missing or not a file."""
    resolved = Path(path).expanduser().resolve()
    if not resolved.exists():
        raise ForcematchError(f"{what} not found: {path}")
    if not resolved.is_file():
        raise ForcematchError(f"{what} is not a file: {path}")
    return resolved


def _existing_dir(path: str | Path, what: str) -> Path:
    path = Path(path).expanduser().resolve()
    if not path.is_dir():
        raise ForcematchError(f"{what} not found (or not a directory): {path}")
    return path


def _existing_splits(dataset_dir: str | Path, names) -> list[Path]:
    return [_existing_file(Path(dataset_dir) / f"{name}.h5", "dataset split") for name in names]


def _out_dir(path: str | Path) -> Path:
    """Output directory `path` resolved; refuses a path that is an existing file. The stage
    creates it once its inputs have passed their checks."""
    resolved = Path(path).expanduser().resolve()
    if resolved.exists() and not resolved.is_dir():
        raise ForcematchError(f"output directory {path} exists and is not a directory")
    return resolved


def _out_file(path: str | Path) -> Path:
    """Output file `path` resolved, its directory created; refuses an existing directory."""
    resolved = Path(path).expanduser().resolve()
    if resolved.is_dir():
        raise ForcematchError(f"output file {path} is an existing directory")
    resolved.parent.mkdir(parents=True, exist_ok=True)
    return resolved


def cmd_info(args) -> None:
    import jax
    import openmm

    import forcematch

    print(f"forcematch {forcematch.__version__}")
    print(f"jax {jax.__version__}; devices: {jax.devices()}")
    platforms = [openmm.Platform.getPlatform(i).getName()
                 for i in range(openmm.Platform.getNumPlatforms())]
    print(f"openmm {openmm.__version__}; platforms: {', '.join(platforms)}")


def cmd_check_config(args) -> None:
    import json

    from forcematch.config import load_config
    from forcematch.config.overrides import parse_entries
    from forcematch.config.sweep import summary

    config = load_config(args.config, parse_entries(args.overrides or []))
    print(json.dumps(config, indent=2))
    # The line the Snakefile prints when it loads this file: what `snakemake` runs.
    print(f"# {summary(config)}", file=sys.stderr)


def cmd_write_stage_configs(args) -> None:
    from forcematch.config import load_config, write_stage_slices

    # Content-addressed, as the workflow writes them: <stage>-<hash>.json, never rewritten.
    for path in write_stage_slices(load_config(args.config), args.out_dir).values():
        print(path)


def cmd_simulate(args) -> None:
    from forcematch.config import load_config
    from forcematch.reference import run_replica

    config = load_config(args.config)
    n_replicas = config["simulate"]["replicas"]
    if not 0 <= args.replica < n_replicas:
        raise ForcematchError(f"--replica {args.replica} is outside 0..{n_replicas - 1} "
                              f"(simulate.replicas = {n_replicas})")
    run_replica(config, args.replica, _out_file(args.out), threads=args.threads,
                platform=args.platform or config["simulate"]["platform"])


def cmd_dataset(args) -> None:
    from forcematch.config import load_config
    from forcematch.dataset import build_dataset

    config = load_config(args.config)
    inputs = [_existing_file(path, "input trajectory") for path in args.inputs]
    build_dataset(config, inputs, _out_dir(args.out_dir))


def cmd_cg_mean_force(args) -> None:
    limit_threads(args.threads)
    from forcematch.cg.run import sample_test_mean_force
    from forcematch.config import load_config

    config = load_config(args.config)
    inputs = [_existing_file(path, "replica file") for path in args.inputs]
    if len(inputs) != config["simulate"]["replicas"]:
        raise ForcematchError(f"got {len(inputs)} replica files but simulate.replicas is "
                              f"{config['simulate']['replicas']}")
    test = _existing_splits(args.dataset_dir, ("test",))[0]
    sample_test_mean_force(config, inputs, test, _out_file(args.out), threads=args.threads)


def _dataset_stats(dataset_dir: Path, expected_hash: str | None) -> dict:
    """The training split's statistics from the dataset stage's stats.json."""
    from forcematch.io.model_files import read_json_object
    from forcematch.io.provenance import require_same_origin

    path = _existing_file(dataset_dir / "stats.json", "dataset statistics")
    stats = read_json_object(path)
    if not isinstance(stats.get("train"), dict):
        raise ForcematchError(f"{path}: no 'train' statistics (rerun the dataset stage)")
    require_same_origin([(str(path), stats)], expected=expected_hash)
    return stats["train"]


def _training_inputs(args) -> tuple[dict, list[Path], dict, str]:
    """(the run's config, the train and val split paths, their statistics, the dataset's
    config hash) for `train` and `check-training`: the splits must come from this config."""
    from forcematch.config import config_hash, load_config, stage_config
    from forcematch.io.h5md import read_parameters
    from forcematch.io.provenance import require_same_origin

    config = run_config(load_config(args.config), args.model, args.loss, args.n_train)
    paths = _existing_splits(args.dataset_dir, ("train", "val"))
    dataset_hash = require_same_origin(
        [(str(p), read_parameters(p)) for p in paths],
        expected=config_hash(stage_config(config, "dataset")))
    return config, paths, _dataset_stats(paths[0].parent, dataset_hash), dataset_hash


def cmd_train(args) -> None:
    limit_threads(args.threads)
    from contextlib import ExitStack

    from forcematch.config import config_hash, stage_config
    from forcematch.config.derived import species_names
    from forcematch.data.sources import H5MDSource
    from forcematch.fit import fit
    from forcematch.io.h5md import read_h5md
    from forcematch.io.provenance import provenance

    config, paths, stats, dataset_hash = _training_inputs(args)
    model_name = config["train"]["model"]
    record = provenance("train", config_hash(stage_config(config, "train")),
                        seeds={"train.seed": config["train"]["seed"]},
                        inputs={"dataset_config_hash": dataset_hash})
    with ExitStack() as stack:
        if args.stream_from_hdf5:
            splits = [stack.enter_context(H5MDSource(path)) for path in paths]
        else:
            splits = [read_h5md(path) for path in paths]
        fit(*splits, config["train"], config["model"][model_name],
              config["system"]["cutoff_nm"], _out_dir(args.out_dir), stats=stats,
              devices=args.devices, restart_stale=args.restart_stale, provenance=record,
              species_names=species_names(config))


def cmd_check_training(args) -> None:
    """The checks `train` runs before its first step, on the same inputs; exit 2 if one
    refuses (every finding printed, the report as JSON on stdout)."""
    limit_threads(args.threads)
    import json

    from forcematch.io.h5md import read_h5md
    from forcematch.training.run import check_training

    config, paths, stats, _ = _training_inputs(args)
    model_name = config["train"]["model"]
    report = check_training(*[read_h5md(p) for p in paths], config["train"],
                            config["model"][model_name], config["system"]["cutoff_nm"],
                            stats=stats, progress=lambda line: print(line, file=sys.stderr))
    print(json.dumps(report, indent=2))
    refused = [c for c, r in report.items() if r.get("level") == "refused"]
    if refused:
        raise ForcematchError(f"refused before training by: {', '.join(refused)}")


def cmd_validate(args) -> None:
    limit_threads(args.threads)
    from forcematch.config import has_reference_engine, load_config
    from forcematch.validation.validate import validate_model, validate_reference

    config = load_config(args.config)
    splits = _existing_splits(args.dataset_dir, ("train", "val", "test"))
    if args.model is None:
        if not has_reference_engine(config):
            raise ForcematchError("validate without --model checks the data against their "
                                  "reference potential; imported and coarse-grained data have "
                                  "none: give --model")
        validate_reference(config, splits, _out_dir(args.out_dir))
    else:
        model_dir = Path(args.model).expanduser().resolve()
        if not model_dir.exists():
            raise ForcematchError(f"model directory not found: {args.model}")
        if not model_dir.is_dir():
            raise ForcematchError(f"model {args.model} is not a directory")
        mean_force = None if args.mean_force is None else _existing_file(
            args.mean_force, "mean-force file")
        validate_model(config, model_dir, splits[-1], _out_dir(args.out_dir),
                       mean_force=mean_force)


def _same_dir(a: Path, b: Path) -> bool:
    """Whether resolved paths `a` and `b` are one directory (by name, or by inode when both
    exist: a bind mount too)."""
    return a == b or (a.exists() and b.exists() and os.path.samefile(a, b))


def _out_dir_apart(path: str | Path, inputs: dict[str, str | Path | None]) -> Path:
    """`_out_dir(path)`, refused when it is one of the directories in `inputs` ({option: path
    given}; None: not given) once symlinks and `..` are resolved: outputs over inputs."""
    out = _out_dir(path)
    for option, given in inputs.items():
        if given is None:
            continue
        if _same_dir(out, Path(given).expanduser().resolve()):
            same = "" if str(path) == str(given) else f" (both are {out})"
            raise ForcematchError(f"--out-dir {path} is the {option} directory {given}{same}: "
                                  "its files would be overwritten; choose another --out-dir")
    return out


def cmd_md(args) -> None:
    limit_threads(args.threads)
    from forcematch.config import has_reference_engine, load_config

    out_dir = _out_dir_apart(args.out_dir, {"--reference-dir": args.reference_dir,
                                            "--dataset-dir": args.dataset_dir,
                                            "--model": args.model})
    config = load_config(args.config)
    if config["md"]["float64"]:
        import jax

        jax.config.update("jax_enable_x64", True)
    from forcematch.md.run import data_reference, run_model_md, run_reference_md

    dataset_dir = _existing_splits(args.dataset_dir, ("train", "val", "test"))[0].parent
    if args.model is None and not has_reference_engine(config):  # imported or CG data
        data_reference(config, dataset_dir, out_dir)
    elif args.model is None:
        run_reference_md(config, dataset_dir, out_dir)
    else:
        if args.reference_dir is None:
            raise ForcematchError("MD with a model needs --reference-dir (the reference's md "
                                  "output, to compare with)")
        run_model_md(config, _existing_dir(args.model, "model directory"), dataset_dir,
                     _existing_dir(args.reference_dir, "reference MD directory"), out_dir)


def cmd_export(args) -> None:
    """A trained pair model tabulated for OpenMM and LAMMPS (`calculators.export`)."""
    limit_threads(args.threads)
    from forcematch.calculators.export import export_model

    model_dir = _existing_dir(args.model, "model directory")
    _existing_splits(args.dataset_dir, ("train",))
    export_model(model_dir, Path(args.dataset_dir).expanduser().resolve(),
                 _out_dir(args.out_dir), lammps_units=args.lammps_units,
                 lammps_style=args.lammps_style, dr_nm=args.dr_nm,
                 lammps_points=args.lammps_points, r_min_nm=args.r_min_nm)


def cmd_diagnose_collapse(args) -> None:
    limit_threads(args.threads)
    from forcematch.config import load_config, validate_config
    from forcematch.validation.diagnose import collapse_study

    config = load_config(args.config)
    if args.n_train is not None:
        config = validate_config(config | {"diagnose": config["diagnose"] | {
            "n_train": args.n_train}}, source=f"{args.config} with --n-train {args.n_train}")
    splits = _existing_splits(args.dataset_dir, ("train", "val", "test"))
    collapse_study(config, splits[0].parent, _out_dir(args.out_dir))


def cmd_figures(args) -> None:
    from forcematch.figures.plots import make_figures

    make_figures(args.validate_dirs, args.train_dirs, args.out_dir,
                 diagnose_dir=args.diagnose_dir, md_dirs=args.md_dirs,
                 dataset_dir=args.dataset_dir, config_label=args.config_label)


def cmd_import(args) -> None:
    """Your own trajectories (config `import`) converted, checked and cut into part files."""
    from forcematch.config import load_config
    from forcematch.imports import import_trajectories

    config = load_config(args.config)
    if config["import"] is None:
        raise ForcematchError(f"{args.config} has no import section: set import.files and "
                              "import.units (or run forcematch simulate)")
    import_trajectories(config, _out_dir(args.out_dir))
