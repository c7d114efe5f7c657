rule dataset:
    """Check every replica (or imported part) and split them by replica into train/val/test."""
    input:
        config=STAGE_CONFIG["dataset"],
        replicas=DATA_FILES,
    output:
        train="results/dataset/train.h5",
        val="results/dataset/val.h5",
        test="results/dataset/test.h5",
        stats="results/dataset/stats.json",
    params:
        out_dir=lambda wildcards, output: str(Path(output.train).parent),
    log:
        "results/logs/dataset.log",
    benchmark:
        "results/benchmarks/dataset.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "forcematch dataset --config {input.config} --inputs {input.replicas}"
        " --out-dir {params.out_dir} > {log} 2>&1"
