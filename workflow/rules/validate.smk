VALIDATE_OUTPUTS = ["metrics.json", "fd.csv", "net_force.csv", "parity_energy.csv",
                    "parity_force.csv"]


rule validate_reference:
    """Reference data against physics (U/N) and OpenMM's double-precision Reference platform."""
    input:
        config=STAGE_CONFIG["validate"],
        splits=rules.dataset.output,
    output:
        [f"results/validate/reference/{name}" for name in VALIDATE_OUTPUTS],
    log:
        "results/logs/validate/reference.log",
    benchmark:
        "results/benchmarks/validate/reference.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "forcematch validate --config {input.config} --dataset-dir results/dataset"
        " --out-dir results/validate/reference --threads {threads} > {log} 2>&1"


rule validate_model:
    """A trained model on the held-out test replicas: accuracy, FD in float64, net force."""
    input:
        config=STAGE_CONFIG["validate"],
        splits=rules.dataset.output,
        model="results/train/{run}/model",
    output:
        [f"results/validate/{{run}}/{name}" for name in VALIDATE_OUTPUTS],
    log:
        "results/logs/validate/{run}.log",
    benchmark:
        "results/benchmarks/validate/{run}.tsv"
    wildcard_constraints:
        run=r"(?!reference$)[\w.-]+",
    threads: 1
    resources:
        mem_mb=6000,
        runtime=30,
    shell:
        "forcematch validate --config {input.config} --dataset-dir results/dataset"
        " --model {input.model} --out-dir results/validate/{wildcards.run}"
        " --threads {threads} > {log} 2>&1"
