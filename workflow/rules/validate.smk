VALIDATE_OUTPUTS = ["metrics.json", "fd.csv", "net_force.csv", "parity_energy.csv",
                    "parity_force.csv"]


rule validate_reference:
    """Reference data against physics (U/N) and OpenMM's double-precision Reference platform."""
    input:
        config=STAGE_CONFIG["validate"],
        train=rules.dataset.output.train,
        val=rules.dataset.output.val,
        test=rules.dataset.output.test,
        stats=rules.dataset.output.stats,
    output:
        [f"results/validate/reference/{name}" for name in VALIDATE_OUTPUTS],
    params:
        dataset_dir=lambda wildcards, input: str(Path(input.train).parent),
        out_dir=lambda wildcards, output: str(Path(output[0]).parent),
    log:
        "results/logs/validate/reference.log",
    benchmark:
        "results/benchmarks/validate/reference.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "forcematch validate --config {input.config} --dataset-dir {params.dataset_dir}"
        " --out-dir {params.out_dir} --threads {threads} > {log} 2>&1"


rule validate_model:
    """A trained model on the held-out test replicas: accuracy, FD in float64, net force."""
    input:
        # Not the train sections: validation depends on the model through `model`.
        config=STAGE_CONFIG["validate"],
        train=rules.dataset.output.train,
        val=rules.dataset.output.val,
        test=rules.dataset.output.test,
        stats=rules.dataset.output.stats,
        model="results/train/{run}/model",
        mean_force=MEAN_FORCE,  # CG data only
    output:
        [f"results/validate/{{run}}/{name}" for name in VALIDATE_OUTPUTS],
    params:
        dataset_dir=lambda wildcards, input: str(Path(input.train).parent),
        out_dir=lambda wildcards, output: str(Path(output[0]).parent),
        mean_force=lambda wildcards, input: (f"--mean-force {input.mean_force}"
                                             if input.mean_force else ""),
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
        "forcematch validate --config {input.config} --dataset-dir {params.dataset_dir}"
        " --model {input.model} --out-dir {params.out_dir} {params.mean_force}"
        " --threads {threads} > {log} 2>&1"
