rule train:
    """Force-match one model; a killed job resumes from results/train/<run>/checkpoint."""
    input:
        # This run's own slice of the config (Snakefile: train_run_config), so editing another
        # run's train_by_run or train_by_model entry leaves this job alone.
        config=train_run_config,
        train=rules.dataset.output.train,
        val=rules.dataset.output.val,
        stats=rules.dataset.output.stats,
    output:
        model=directory("results/train/{model}-{loss}-n{n_train}/model"),
        metrics="results/train/{model}-{loss}-n{n_train}/metrics.csv",
        final="results/train/{model}-{loss}-n{n_train}/final_metrics.json",
    params:
        dataset_dir=lambda wildcards, input: str(Path(input.train).parent),
        out_dir=lambda wildcards, output: str(Path(output.metrics).parent),
    log:
        "results/logs/train/{model}-{loss}-n{n_train}.log",
    benchmark:
        "results/benchmarks/train/{model}-{loss}-n{n_train}.tsv"
    wildcard_constraints:
        model=r"[a-z_]+",
        loss=r"joint|force|energy",
        n_train=r"all|\d+",
    threads: 1
    # train_devices and stream_from_hdf5 say how to run, not what to train, so they are
    # resources (not rerun triggers) rather than config keys: change them per invocation with
    # --set-resources train:train_devices=2 train:stream_from_hdf5=1, or in a profile
    # (workflow/profiles/gpu). train_devices: data-parallel over this many local JAX devices,
    # 0 = all; stream_from_hdf5: 1 reads mini-batches from the dataset files (flat memory).
    resources:
        mem_mb=6000,
        runtime=240,
        train_devices=0,
        stream_from_hdf5=0,
    shell:
        "forcematch train --config {input.config} --dataset-dir {params.dataset_dir}"
        " --out-dir {params.out_dir}"
        " --model {wildcards.model} --loss {wildcards.loss} --n-train {wildcards.n_train}"
        " --devices {resources.train_devices} --stream-from-hdf5 {resources.stream_from_hdf5}"
        " --restart-stale --threads {threads} > {log} 2>&1"
