# forcematch: reference LJ argon (OpenMM) -> H5MD datasets -> force-matched JAX model ->
# validation -> figures. Each rule calls one `forcematch <stage>` subcommand; all logic lives in
# src/forcematch. Run: snakemake --cores 8   (config/config.yaml), or with --configfile FILE
# (exactly one file, run as written: docs/howto/configuration.md).
import re
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

from forcematch.config import (
    STAGE_SECTIONS,
    data_parts,
    has_reference_engine,
    load_config,
    write_slice,
    write_stage_slices,
)
from forcematch.calculators.tables import PAIR_FAMILIES
from forcematch.config.overrides import describe
from forcematch.errors import ForcematchError
from forcematch.config.sweep import parse_run_name, run_slice, summary, sweep_runs


min_version("9.0")


report: "workflow/report/workflow.rst"


# The config that runs is the one file the user wrote, read by forcematch itself: there is no
# `configfile:` directive (Snakemake would merge the default config under --configfile, so a
# config without `sweep` would silently get the default sweep), and Snakemake's merged `config`
# is not used; `--config` settings are laid over the file explicitly and printed at the start.
# `forcematch check-config FILE [--config ...]` prints what `snakemake --configfile FILE
# [--config ...]` runs.
DEFAULT_CONFIG = Path(workflow.basedir) / "config" / "config.yaml"
_CONFIGFILE_OPTION = re.compile(r"--configf(?:i(?:l(?:es?)?)?)?")  # argparse accepts prefixes


def _configfiles_in_argv(argv):
    """The files named by every --configfile option in `argv` (argparse keeps only the last
    option's, so `--configfile a.yaml --configfile b.yaml` would silently drop a.yaml)."""
    files, taking = [], False
    for arg in argv:
        option, eq, value = arg.partition("=")
        if _CONFIGFILE_OPTION.fullmatch(option):
            taking = not eq
            files += [value] if eq else []
        elif taking and not arg.startswith("-"):
            files.append(arg)
        else:
            taking = False
    return files


def config_file():
    """--configfile FILE, or config/config.yaml; WorkflowError for two files or --config."""
    given = [str(path) for path in workflow.overwrite_configfiles]
    if "snakemake" in sys.argv[0]:
        given = max(given, _configfiles_in_argv(sys.argv[1:]), key=len)
    if len(given) > 1:
        raise WorkflowError(
            f"{len(given)} config files given ({', '.join(given)}): forcematch runs exactly "
            "one config file; merge them into one and check it with `forcematch check-config "
            "FILE`")
    return Path(given[0]) if given else DEFAULT_CONFIG


# Schema, derived checks (cutoff against the box, enough replicas for the split, ...) and the
# bounds on what the config expands to run here, so `snakemake -n` reports a bad config.
try:
    CONFIG_FILE = config_file()
    # snakemake --config SECTION='{KEY: VALUE}': laid over the file (forcematch.config.overrides),
    # as `forcematch check-config FILE --config ...` shows the result.
    OVERRIDES = dict(workflow.config_settings.config or {})
    CONFIG = load_config(CONFIG_FILE, OVERRIDES)
    RUNS = sweep_runs(CONFIG)
except ForcematchError as err:
    raise WorkflowError(str(err)) from None
print(f"forcematch: {CONFIG_FILE}"
      f"{' with --config ' + describe(OVERRIDES) if OVERRIDES else ''}: {summary(CONFIG)}",
      file=sys.stderr)
REPLICAS = list(range(CONFIG["simulate"]["replicas"]))
# The data: simulated replicas, or the parts of your own trajectories (config `import`).
IMPORTED = CONFIG["import"] is not None
PARTS = list(range(data_parts(CONFIG)))
IMPORT_INPUTS = []
if IMPORTED:
    _import = CONFIG["import"]
    IMPORT_INPUTS = [*_import["files"], *(_import["energy_files"] or []),
                     *([_import["topology"]] if _import["topology"] else [])]
    DATA_FILES = expand("results/import/part_{part}.h5", part=PARTS)
else:
    DATA_FILES = expand("results/simulate/replica_{replica}.h5", replica=REPLICAS)
# Coarse-grained data (config `cg`): the dataset stage maps the replicas to CG sites, and the
# test frames' exact mean force is sampled once (rule cg_mean_force) for every validation.
CG = CONFIG["cg"] is not None
MEAN_FORCE = ["results/cg/mean_force.h5"] if CG else []
# Imported and CG data have no reference potential to validate against (the MD reference is
# the data's own liquid); the collapse study is optional (diagnose.enabled).
REFERENCE_ENGINE = has_reference_engine(CONFIG)
VALIDATED = ["reference", *RUNS] if REFERENCE_ENGINE else RUNS
DIAGNOSE = CONFIG["diagnose"]["enabled"]
# Training runs of a pair family also write model/pair_table.csv (φ and F, for the figures).
PAIR_RUNS = [run for run in RUNS if run.split("-")[0] in PAIR_FAMILIES]
UNUSED_SOURCE = "simulate" if IMPORTED else "import"  # its rule and config slice are left out

# Each stage reads only its own slice of the config, so editing train.* reruns training and what
# follows, never the simulations; training has one slice per <model>-<loss> (train_run_config),
# so editing one run's settings reruns only that run. Slices are content-addressed,
# results/config/<stage>-<hash>.json, written once and never rewritten: parsing this file with
# another config (a dry run, or a second snakemake that the lock then refuses) never changes an
# input of a job already running.
STAGE_CONFIG = {
    stage: str(path)
    for stage, path in write_stage_slices(
        CONFIG, "results/config",
        [stage for stage in STAGE_SECTIONS
         if stage not in ("train", UNUSED_SOURCE) and (CG or stage != "cg_mean_force")],
    ).items()
}


# results/config/train/<model>-<loss>-<hash>.json: the slice one training run reads, written for
# every run of the sweep here, before Snakemake plans: a file written by an input function while
# it plans is invisible to the existence cache of a directory it has already listed.
TRAIN_CONFIG = {
    (model, loss): str(write_slice("results/config/train", f"{model}-{loss}",
                                   run_slice(CONFIG, model, loss)))
    for model, loss, _ in map(parse_run_name, RUNS)
}


def train_run_config(wildcards):
    """The training slice of run <model>-<loss>-n<n_train> (TRAIN_CONFIG)."""
    run = f"{wildcards.model}-{wildcards.loss}-n{wildcards.n_train}"
    if run not in RUNS:
        raise WorkflowError(f"no training run {run} in {CONFIG_FILE}: its sweep runs "
                            f"{', '.join(RUNS)}")
    return TRAIN_CONFIG[(wildcards.model, wildcards.loss)]


# The data come from OpenMM (simulate) or from your files (import), never both.
if IMPORTED:

    include: "workflow/rules/import.smk"

else:

    include: "workflow/rules/simulate.smk"

include: "workflow/rules/dataset.smk"

if CG:

    include: "workflow/rules/cg.smk"

include: "workflow/rules/train.smk"
include: "workflow/rules/validate.smk"
include: "workflow/rules/md.smk"
include: "workflow/rules/diagnose.smk"
include: "workflow/rules/figures.smk"


rule all:
    input:
        expand("results/validate/{run}/metrics.json", run=VALIDATED),
        expand("results/md/{run}/md.json", run=["reference", *RUNS]),
        rules.figures.output,
