rule cg_mean_force:
    """The exact mean force on the CG test frames (config `cg_mean_force`): the mapped atoms of
    each frame held fixed in OpenMM, the rest sampled at the run's temperature."""
    input:
        config=STAGE_CONFIG["cg_mean_force"],
        replicas=DATA_FILES,
        test=rules.dataset.output.test,
    output:
        "results/cg/mean_force.h5",
    params:
        dataset_dir=lambda wildcards, input: str(Path(input.test).parent),
    log:
        "results/logs/cg/mean_force.log",
    benchmark:
        "results/benchmarks/cg/mean_force.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=240,
    shell:
        "forcematch cg-mean-force --config {input.config} --inputs {input.replicas}"
        " --dataset-dir {params.dataset_dir} --out {output} --threads {threads} > {log} 2>&1"
