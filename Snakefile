# forcematch: reference LJ argon (OpenMM) -> H5MD datasets -> force-matched JAX model ->
# validation -> figures. Each rule calls one `forcematch <stage>` subcommand; all logic lives in
# src/forcematch. Run: snakemake --cores 8   (config: config/config.yaml)
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

from forcematch.config import (
    STAGE_SECTIONS,
    stage_config,
    validate_config,
    write_if_changed,
)
from forcematch.errors import ForcematchError
from forcematch.sweep import run_slice, sweep_runs


min_version("9.0")


configfile: str(Path(workflow.basedir) / "config" / "config.yaml")


report: "workflow/report/workflow.rst"


# Schema and derived checks (cutoff against the box, enough replicas for the split, ...) run
# here, so `snakemake -n` already reports a bad config, naming the key.
try:
    CONFIG = validate_config(dict(config), source="config")
except ForcematchError as err:
    raise WorkflowError(str(err)) from None

# Each stage reads only its own slice of the config (rewritten only when its content changes),
# so editing train.* reruns training and what follows, never the simulations. Training has one
# slice per run (train_run_config below), so editing one run's settings reruns only that run.
STAGE_CONFIG = {
    stage: str(write_if_changed(f"results/config/{stage}.json", stage_config(CONFIG, stage)))
    for stage in STAGE_SECTIONS
    if stage != "train"
}
REPLICAS = list(range(CONFIG["simulate"]["replicas"]))
RUNS = sweep_runs(CONFIG)


def train_run_config(wildcards):
    """results/config/train/<run>.json: the slice of the config that one training run reads."""
    run = f"{wildcards.model}-{wildcards.loss}-n{wildcards.n_train}"
    return str(write_if_changed(f"results/config/train/{run}.json",
                                run_slice(CONFIG, wildcards.model, wildcards.loss)))


include: "workflow/rules/simulate.smk"
include: "workflow/rules/dataset.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/validate.smk"
include: "workflow/rules/diagnose.smk"
include: "workflow/rules/figures.smk"


rule all:
    input:
        "results/validate/reference/metrics.json",
        expand("results/validate/{run}/metrics.json", run=RUNS),
        rules.figures.output,
