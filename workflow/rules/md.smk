MD_OUTPUTS = ["md.json", "nvt.h5"]


rule md_reference:
    """The MD protocol with OpenMM's reference system (imported or CG data: the test split's
    own liquid): what every model's MD is held against."""
    input:
        config=STAGE_CONFIG["md"],
        train=rules.dataset.output.train,
        val=rules.dataset.output.val,
        test=rules.dataset.output.test,
    output:
        # imported or CG data: md.json of the data's own liquid (no engine reruns them)
        [f"results/md/reference/{name}"
         for name in (MD_OUTPUTS if REFERENCE_ENGINE else ["md.json"])],
    params:
        dataset_dir=lambda wildcards, input: str(Path(input.train).parent),
        out_dir=lambda wildcards, output: str(Path(output[0]).parent),
    log:
        "results/logs/md/reference.log",
    benchmark:
        "results/benchmarks/md/reference.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "forcematch md --config {input.config} --dataset-dir {params.dataset_dir}"
        " --out-dir {params.out_dir} --threads {threads} > {log} 2>&1"


rule md_model:
    """MD with a trained model: momentum, energy drift against time step, stability at T and at
    the stress temperature, RDF and pressure against the reference's."""
    input:
        config=STAGE_CONFIG["md"],
        train=rules.dataset.output.train,
        val=rules.dataset.output.val,
        test=rules.dataset.output.test,
        model="results/train/{run}/model",
        reference="results/md/reference/md.json",
    output:
        [f"results/md/{{run}}/{name}" for name in MD_OUTPUTS],
    params:
        dataset_dir=lambda wildcards, input: str(Path(input.train).parent),
        reference_dir=lambda wildcards, input: str(Path(input.reference).parent),
        out_dir=lambda wildcards, output: str(Path(output[0]).parent),
    log:
        "results/logs/md/{run}.log",
    benchmark:
        "results/benchmarks/md/{run}.tsv"
    wildcard_constraints:
        run=r"(?!reference$)[\w.-]+",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "forcematch md --config {input.config} --dataset-dir {params.dataset_dir}"
        " --model {input.model} --reference-dir {params.reference_dir}"
        " --out-dir {params.out_dir} --threads {threads} > {log} 2>&1"
