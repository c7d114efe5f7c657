rule train:
    """Force-match one model; a killed job resumes from results/train/<run>/checkpoint."""
    input:
        config=STAGE_CONFIG["train"],
        train="results/dataset/train.h5",
        val="results/dataset/val.h5",
    output:
        model=directory("results/train/{model}-{loss}-n{n_train}/model"),
        metrics="results/train/{model}-{loss}-n{n_train}/metrics.csv",
        final="results/train/{model}-{loss}-n{n_train}/final_metrics.json",
    log:
        "results/logs/train/{model}-{loss}-n{n_train}.log",
    benchmark:
        "results/benchmarks/train/{model}-{loss}-n{n_train}.tsv"
    wildcard_constraints:
        model=r"[a-z_]+",
        loss=r"joint|force|energy",
        n_train=r"all|\d+",
    threads: 1
    resources:
        mem_mb=6000,
        runtime=240,
    shell:
        "forcematch train --config {input.config} --dataset-dir results/dataset"
        " --out-dir results/train/{wildcards.model}-{wildcards.loss}-n{wildcards.n_train}"
        " --model {wildcards.model} --loss {wildcards.loss} --n-train {wildcards.n_train}"
        " --restart-stale --threads {threads} > {log} 2>&1"
