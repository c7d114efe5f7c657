rule import_data:
    """Your own trajectories (config `import`) read, converted to the project's units, checked
    and cut into parts (one per file, or blocks of one file) that the split treats as replicas."""
    input:
        config=STAGE_CONFIG["import"],
        files=IMPORT_INPUTS,
    output:
        expand("results/import/part_{part}.h5", part=PARTS),
    params:
        out_dir=lambda wildcards, output: str(Path(output[0]).parent),
    log:
        "results/logs/import.log",
    benchmark:
        "results/benchmarks/import.tsv"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    shell:
        "forcematch import --config {input.config} --out-dir {params.out_dir} > {log} 2>&1"
