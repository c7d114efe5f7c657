rule simulate:
    """Sample one independent replica of the reference system with OpenMM (one thread)."""
    input:
        config=STAGE_CONFIG["simulate"],
    output:
        "results/simulate/replica_{replica}.h5",
    log:
        "results/logs/simulate/replica_{replica}.log",
    benchmark:
        "results/benchmarks/simulate/replica_{replica}.tsv"
    wildcard_constraints:
        replica=r"\d+",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=120,
    shell:
        "forcematch simulate --config {input.config} --replica {wildcards.replica}"
        " --out {output} --threads {threads} > {log} 2>&1"
