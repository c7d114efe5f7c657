# the pair-potential figure: drawn when a pair family (spline, pair) is in the sweep
PAIR_FIGURE = bool(PAIR_RUNS)
FIGURE_NAMES = ["parity_force", "parity_energy", "learning_curve", "accuracy_vs_size", "fd_error",
                "net_force", *(["collapse"] if DIAGNOSE else []), "md_drift", "md_rdf",
                "md_summary", *(["pair_potential"] if PAIR_FIGURE else []),
                *(["cg_split"] if CG else [])]


rule figures:
    """Paper figures (PNG + PDF + CSV) from what training and validation wrote."""
    input:
        validate=expand("results/validate/{run}/metrics.json", run=VALIDATED),
        train=expand("results/train/{run}/metrics.csv", run=RUNS),
        # the pair families' models, whose pair_table.csv (φ and F) the pair-potential figure
        # reads (it loads no model)
        pair_models=expand("results/train/{run}/model", run=PAIR_RUNS),
        diagnose=[rules.diagnose_collapse.output.summary] if DIAGNOSE else [],
        md=["results/md/reference/md.json"] + expand("results/md/{run}/md.json", run=RUNS),
        # the exact pair potential of simulated data (the pair-potential figure)
        dataset=rules.dataset.output.train,
    output:
        png=[
            report(f"results/figures/{name}.png", caption=f"../report/{name}.rst",
                   category="Figures")
            for name in FIGURE_NAMES
        ],
        pdf=[f"results/figures/{name}.pdf" for name in FIGURE_NAMES],
        csv=[f"results/figures/{name}.csv" for name in FIGURE_NAMES],
        # the config and numbers of each figure, included by its report caption
        headline=[f"results/figures/{name}.headline.rst" for name in FIGURE_NAMES],
        provenance="results/figures/provenance.json",
    params:
        validate_dirs=lambda wildcards, input: [str(Path(p).parent) for p in input.validate],
        train_dirs=lambda wildcards, input: [str(Path(p).parent) for p in input.train],
        diagnose=lambda wildcards, input: (
            f"--diagnose-dir {Path(input.diagnose[0]).parent}" if input.diagnose else ""),
        md_dirs=lambda wildcards, input: [str(Path(p).parent) for p in input.md],
        dataset_dir=lambda wildcards, input: str(Path(input.dataset).parent),
        out_dir=lambda wildcards, output: str(Path(output.provenance).parent),
    log:
        "results/logs/figures.log",
    benchmark:
        "results/benchmarks/figures.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "forcematch figures --validate-dirs {params.validate_dirs}"
        " --train-dirs {params.train_dirs} {params.diagnose}"
        " --md-dirs {params.md_dirs} --dataset-dir {params.dataset_dir}"
        " --out-dir {params.out_dir} > {log} 2>&1"
