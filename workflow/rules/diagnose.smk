rule diagnose_collapse:
    """Small training runs that show why force-only training collapses, and a flipped sign."""
    input:
        config=STAGE_CONFIG["diagnose"],
        splits=rules.dataset.output,
    output:
        "results/diagnose/collapse/summary.json",
    log:
        "results/logs/diagnose/collapse.log",
    benchmark:
        "results/benchmarks/diagnose/collapse.tsv"
    threads: 1
    resources:
        mem_mb=6000,
        runtime=60,
    shell:
        "forcematch diagnose-collapse --config {input.config} --dataset-dir results/dataset"
        " --out-dir results/diagnose/collapse --threads {threads} > {log} 2>&1"
