rule build_report:
    input:
        metrics="results/metrics/probe_metrics.parquet",
        vs_lexical="results/metrics/vs_lexical.parquet",
        answers=answer_files(),
        classes=answer_files(".classes.parquet"),
        causal=["results/metrics/causal_metrics.parquet"] if causal_tables() else [],
        geometry=["results/metrics/geometry.parquet"] if GEOMETRY else [],
        transfer=["results/metrics/transfer.parquet"] if TRANSFER else [],
        prepared=prepared_tables(),
        parts=model_parts(),
    output:
        index="results/report/index.html",
        methods="results/report/methods.md",
        bundle="results/report/vega.js",
        relative_depth=report(
            "results/report/relative_depth.png",
            caption="../report/relative_depth.rst",
            category="All models",
        ),
        figures=report(
            report_figures("png", "classification"),
            caption="../report/per_model.rst",
            category="Per model and dataset",
        ),
        regression=report(
            report_figures("png", "regression"),
            caption="../report/regression.rst",
            category="Per model and dataset",
        ),
        answer_confusion=report(
            answer_figures("png"),
            caption="../report/answers.rst",
            category="Per model and dataset",
        ),
        causal_figures=report(
            causal_figures("png"),
            caption="../report/causal.rst",
            category="Per model and dataset",
        ),
        geometry_figures=report(
            geometry_figures("png"),
            caption="../report/geometry.rst",
            category="Per model and dataset",
        ),
        transfer_figures=report(
            transfer_figures("png"),
            caption="../report/transfer.rst",
            category="All models",
        ),
        interactive=every_figure("html"),
        vector=every_figure("svg") + every_figure("pdf"),
        summary="results/report/summary.csv",
    params:
        quantisation={model: config["models"][model]["quantisation"] for model in MODELS},
        tolerance=config["report"]["plateau_tolerance"],
        twins=random_init_twins(config["models"]),
        classifiers=CLASSIFIERS,
        answered=[(model, dataset) for model in MODELS for dataset in DATASETS if answered(model, dataset)],
        datasets=DATASETS,
        targets={dataset: list(PLANS[dataset]["targets"]) for dataset in DATASETS},
        parts=MODEL_DATASETS,
        template=lambda wc: TEMPLATE,  # a function: the template's {text} is no wildcard
        layers={model: LAYERS[model] for model in MODELS},
        code=code_fingerprint("report"),
    log:
        "results/logs/build_report.log",
    resources:
        mem_mb=on_retry(2000),
        runtime=on_retry(15),
    conda:
        "../../envs/emoprobe.yaml"
    script:
        "../scripts/build_report.py"


# The run's provenance manifest, after everything else: it records the job and inputs of every table.
localrules:
    write_provenance,


rule write_provenance:
    input:
        tables=[target for target in all_targets(manifest=False) if not target.endswith(".safetensors")],
        prepared=prepared_tables(),
        parts=model_parts(),
    output:
        manifest="results/report/provenance.json",
    params:
        datasets=DATASETS,
        parts=MODEL_DATASETS,
        code=code_fingerprint("provenance"),
    log:
        "results/logs/write_provenance.log",
    resources:
        mem_mb=on_retry(2000),
        runtime=on_retry(15),
    conda:
        "../../envs/emoprobe.yaml"
    script:
        "../scripts/write_provenance.py"
