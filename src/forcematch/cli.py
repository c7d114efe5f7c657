"""`forcematch <stage>`: one subcommand per workflow stage, usable without Snakemake.

Every subcommand validates the config it is given before any long work, prints progress to
stdout and exits with status 2 and a one-line message on bad input: a ForcematchError, a bad
command-line argument (argparse's usage text is left to --help), or a write the file system
refuses (no space, read-only, permission: the OSErrors of `atomic.OUTPUT_ERRNOS`). Any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import nullcontext, redirect_stdout

from forcematch import commands
from forcematch.commands import limit_threads, use_compilation_cache  # noqa: F401 (limit_threads: re-exported)
from forcematch.config.sweep import LOSSES
from forcematch.errors import ForcematchError
from forcematch.io.atomic import OUTPUT_ERRNOS
from forcematch.progress import set_quiet


def _flag(text: str) -> bool:
    if text not in ("0", "1"):
        raise argparse.ArgumentTypeError(f"expected 0 or 1, got {text!r}")
    return text == "1"


def _integer(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
    return value


def _count(text: str) -> int:
    return _integer(text, 0)


def _positive(text: str) -> int:
    return _integer(text, 1)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _n_train(text: str) -> str:
    """'all' or a frame count >= 1 (kept as text: `sweep.run_config` takes either)."""
    if text == "all":
        return text
    try:
        if int(text) >= 1:
            return str(int(text))
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"expected 'all' or a frame count >= 1, got {text!r}")


class UsageError(Exception):
    """A bad command line, reported by `main` as one line (argparse would print the usage)."""

    def __init__(self, prog: str, message: str):
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    """argparse with its errors raised as UsageError instead of printing usage and exiting."""

    def error(self, message: str):
        raise UsageError(self.prog, message)


def _stage_parser(sub, name: str, func, help: str, *, dataset: bool = True,
                  threads: bool = True) -> argparse.ArgumentParser:
    """A subcommand with --config (and --dataset-dir, --out-dir, --threads)."""
    p = sub.add_parser(name, help=help)
    p.set_defaults(func=func)
    p.add_argument("--config", required=True)
    if dataset:
        p.add_argument("--dataset-dir", required=True)
        p.add_argument("--out-dir", required=True)
    if threads:
        p.add_argument("--threads", type=_positive, default=1,
                       help="CPU threads (XLA, BLAS, OpenMM) this job may use")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bars or status lines (errors and warnings still show)")
    return p


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    """Which run of the sweep: --model, --loss, --n-train (train and check-training)."""
    p.add_argument("--model", help="override train.model")
    p.add_argument("--loss", choices=LOSSES, help="override the loss weights")
    p.add_argument("--n-train", type=_n_train,
                   help="override train.n_train ('all' or a frame count)")


def _add_cg_mean_force_parser(sub) -> None:
    p = _stage_parser(sub, "cg-mean-force", commands.cmd_cg_mean_force,
                      "the exact mean force on CG test frames, sampled with OpenMM (config "
                      "`cg`): the ground truth of coarse-grained force matching", dataset=False)
    p.add_argument("--inputs", nargs="+", required=True,
                   help="the simulated replica files, replica 0 first (their test replicas "
                        "are the CG test split's atomistic states)")
    p.add_argument("--dataset-dir", required=True, help="the CG dataset (its test.h5)")
    p.add_argument("--out", required=True, help="mean-force file to write (HDF5)")


def _add_train_parser(sub) -> None:
    p = _stage_parser(sub, "train", commands.cmd_train, "force-match a model on a dataset")
    _add_run_arguments(p)
    p.add_argument("--restart-stale", action="store_true",
                   help="move a checkpoint of another config aside instead of refusing to start")
    # How to run, not what to train: outside the config and its hash.
    p.add_argument("--stream-from-hdf5", nargs="?", const=1, default=0, type=_flag,
                   metavar="0|1",
                   help="read mini-batches from the dataset files instead of loading every "
                        "frame: flat memory, the same parameters bit for bit (a bare flag: 1)")
    p.add_argument("--devices", type=_count, default=0, metavar="N",
                   help="data-parallel training over the first N local JAX devices "
                        "(0, the default: all)")


def _add_export_parser(sub) -> None:
    p = sub.add_parser("export", help="a trained pair model as an OpenMM System (system.xml) "
                       "and a LAMMPS pair_style table (forcematch.table, pair_coeff.lammps)")
    p.set_defaults(func=commands.cmd_export)
    p.add_argument("--model", required=True, help="trained pair model directory")
    p.add_argument("--dataset-dir", required=True,
                   help="the dataset the model was trained on (masses, box, closest pairs)")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--lammps-units", choices=["real", "metal"], default="real",
                   help="real: kcal/mol and Å (default); metal: eV and Å")
    p.add_argument("--lammps-style", choices=["linear", "spline"], default="linear",
                   help="pair_style table interpolation (default linear)")
    p.add_argument("--dr-nm", type=_positive_float,
                   help="OpenMM table spacing (nm); default: 0.001, halved until the max "
                        "force error is below 1e-4 of the force RMS")
    p.add_argument("--lammps-points", type=_positive, metavar="N",
                   help="LAMMPS table points; default: 2000, doubled until the same bound")
    p.add_argument("--r-min-nm", type=_positive_float,
                   help="where the repulsive continuation replaces the model (default: the "
                        "closest pair of each species pair in the training split)")
    p.add_argument("--threads", type=_positive, default=1, help="CPU threads (XLA, BLAS)")
    p.add_argument("--quiet", action="store_true", help="no status lines (errors still show)")


def _add_config_parsers(sub) -> None:
    p = sub.add_parser("info", help="versions, JAX devices and OpenMM platforms")
    p.set_defaults(func=commands.cmd_info)
    p = sub.add_parser("check-config", help="validate a config and print it with defaults filled")
    p.add_argument("config")
    p.add_argument("--config", dest="overrides", nargs="+", metavar="SECTION=VALUE",
                   help="settings laid over the file, as `snakemake --config` takes them: "
                        "'train={seed: 1}'")
    p.set_defaults(func=commands.cmd_check_config)
    p = sub.add_parser("stage-configs", help="write each stage's slice of the config as JSON")
    p.add_argument("config")
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=commands.cmd_write_stage_configs)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="forcematch", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_config_parsers(sub)

    p = _stage_parser(sub, "simulate", commands.cmd_simulate,
                      "sample one replica of the reference system with OpenMM", dataset=False)
    p.add_argument("--replica", type=_count, required=True)
    p.add_argument("--out", required=True, help="H5MD file to write")
    p.add_argument("--platform", choices=["CPU", "Reference", "CUDA", "OpenCL"])

    p = _stage_parser(sub, "import", commands.cmd_import,
                      "your own trajectories (config `import`) in project units, checked and "
                      "cut into parts the split treats as replicas", dataset=False,
                      threads=False)
    p.add_argument("--out-dir", required=True, help="directory for part_0.h5, part_1.h5, ...")

    p = _stage_parser(sub, "dataset", commands.cmd_dataset,
                      "check replica files and split them by replica", dataset=False,
                      threads=False)
    p.add_argument("--inputs", nargs="+", required=True, help="replica files, replica 0 first")
    p.add_argument("--out-dir", required=True)

    _add_cg_mean_force_parser(sub)
    _add_train_parser(sub)
    p = _stage_parser(sub, "check-training", commands.cmd_check_training,
                      "the checks train runs before its first step (neighbours, label sign, "
                      "loss balance, zero-force baseline), without training", dataset=False)
    p.add_argument("--dataset-dir", required=True)
    _add_run_arguments(p)
    p = _stage_parser(sub, "validate", commands.cmd_validate,
                      "validate the reference data or a trained model")
    p.add_argument("--model", help="trained model directory; omit to validate the reference")
    p.add_argument("--mean-force", help="CG data: the test frames' exact mean force "
                   "(cg-mean-force), to split the model's loss into noise floor and error")
    p = _stage_parser(sub, "md", commands.cmd_md,
                      "MD with a trained model or the OpenMM reference: momentum, energy "
                      "drift, stability, RDF and pressure")
    p.add_argument("--model", help="trained model directory; omit for the reference")
    p.add_argument("--reference-dir", help="the reference's md output (with --model)")
    _add_export_parser(sub)
    p = _stage_parser(sub, "diagnose-collapse", commands.cmd_diagnose_collapse,
                      "training runs that show why force-only training can collapse")
    p.add_argument("--n-train", type=_positive, metavar="N",
                   help="override diagnose.n_train (training frames of every run)")

    p = sub.add_parser("figures", help="draw the paper figures from validation and training")
    p.add_argument("--validate-dirs", nargs="+", required=True)
    p.add_argument("--train-dirs", nargs="+", required=True)
    p.add_argument("--diagnose-dir", help="output of diagnose-collapse (adds the collapse figure)")
    p.add_argument("--md-dirs", nargs="+", default=(),
                   help="outputs of forcematch md, 'reference' among them (adds the MD figures)")
    p.add_argument("--dataset-dir", help="the dataset (train.h5) the models were trained on: "
                   "its exact pair potential joins the pair-potential figure (simulated data)")
    p.add_argument("--config-label", help="the config the inputs came from, for the headline "
                   "of each figure (e.g. the config file's name)")
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=commands.cmd_figures)
    return parser


def _failure(command: str, err: BaseException) -> str | None:
    """The one-line message for an exception a user can fix; None for a bug."""
    if isinstance(err, ForcematchError):
        return f"forcematch {command}: error: {err}"
    if isinstance(err, OSError) and err.errno in OUTPUT_ERRNOS:
        where = f": {err.filename}" if err.filename else ""
        return (f"forcematch {command}: error: {err.strerror or err}{where}; check the "
                "permissions and free space of the output directory, then rerun")
    return None


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except UsageError as err:
        print(f"{err.prog}: error: {err} (see {err.prog} --help)", file=sys.stderr)
        return 2
    use_compilation_cache()
    quiet = getattr(args, "quiet", False)
    set_quiet(quiet)
    try:
        with open(os.devnull, "w") if quiet else nullcontext() as sink:
            with redirect_stdout(sink) if quiet else nullcontext():
                args.func(args)
    except (ForcematchError, OSError) as err:
        message = _failure(args.command, err)
        if message is None:
            raise
        print(message, file=sys.stderr)
        return 2
    finally:
        set_quiet(False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
