# forcematch: reference LJ argon (OpenMM) -> H5MD datasets -> force-matched JAX model ->
# validation -> figures. Each rule calls one `forcematch <stage>` subcommand; all logic lives in
# src/forcematch. Run: snakemake --cores 8   (config: config/config.yaml)
from pathlib import Path

from snakemake.exceptions import WorkflowError

from forcematch.config import (
    STAGE_SECTIONS,
    sweep_runs,
    stage_config,
    validate_config,
    write_if_changed,
)
from forcematch.errors import ForcematchError


configfile: str(Path(workflow.basedir) / "config" / "config.yaml")


report: "workflow/report/workflow.rst"


# Schema and derived checks (cutoff against the box, enough replicas for the split, ...) run
# here, so `snakemake -n` already reports a bad config, naming the key.
try:
    CONFIG = validate_config(dict(config), source="config")
except ForcematchError as err:
    raise WorkflowError(str(err)) from None

# Each stage reads only its own slice of the config, so editing train.* reruns training and
# what follows, never the simulations.
STAGE_CONFIG = {
    stage: str(write_if_changed(f"results/config/{stage}.json", stage_config(CONFIG, stage)))
    for stage in STAGE_SECTIONS
}
REPLICAS = list(range(CONFIG["simulate"]["replicas"]))
RUNS = sweep_runs(CONFIG)


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
