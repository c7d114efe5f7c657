rule diagnose_collapse:
    """Small training runs that show why force-only training collapses, and a flipped sign."""
    input:
        config=STAGE_CONFIG["diagnose"],
        train=rules.dataset.output.train,
        val=rules.dataset.output.val,
        test=rules.dataset.output.test,
        stats=rules.dataset.output.stats,
    output:
        summary="results/diagnose/collapse/summary.json",
    params:
        dataset_dir=lambda wildcards, input: str(Path(input.train).parent),
        out_dir=lambda wildcards, output: str(Path(output.summary).parent),
    log:
        "results/logs/diagnose/collapse.log",
    benchmark:
        "results/benchmarks/diagnose/collapse.tsv"
    threads: 1
    resources:
        mem_mb=6000,
        runtime=60,
    shell:
        "forcematch diagnose-collapse --config {input.config} --dataset-dir {params.dataset_dir}"
        " --out-dir {params.out_dir} --threads {threads} > {log} 2>&1"
