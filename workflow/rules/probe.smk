rule fit_probe:
    input:
        shards=activation_part,
        table=prepared_table,
        answers=answers_input,
    output:
        scores="results/probes/{model}/{dataset}/layer_{layer}{site}/positions_{positions}.{probe}.parquet",
        predictions="results/probes/{model}/{dataset}/layer_{layer}{site}/positions_{positions}.{probe}.predictions.parquet",
    params:
        probe=lambda wc: PROBES[wc.probe],  # the `probes` entry, its kind's defaults filled in
        site=wildcard_site,
        majority=lambda wc: wc.probe == CLASSIFIERS[0],  # the majority baseline: in the first entry's jobs
        split=probe_split,
        shuffled_control=config["probe"]["shuffled_control"],
        control_task=config["probe"]["control_task"],
        seed=config["seed"],
        subset=lambda wc: SUBSET[wc.dataset],
        subset_checks=subset_checks,
        code=code_fingerprint("probe"),
    log:
        "results/logs/fit_probe/{model}/{dataset}/layer_{layer}{site}/positions_{positions}.{probe}.log",
    threads: 1
    resources:
        mem_mb=on_retry(config["probe"]["mem_mb"]),
        runtime=on_retry(config["probe"]["runtime"]),
    conda:
        "../../envs/emoprobe.yaml"
    script:
        "../scripts/fit_probe.py"


rule save_directions:
    input:
        shards=activation_part,
        table=prepared_table,
        answers=answers_input,
    output:
        directions="results/probes/{model}/{dataset}/layer_{layer}{site}/positions_{positions}.{probe}.directions.safetensors",
    wildcard_constraints:
        probe="|".join(map(re.escape, LINEAR_PROBES)) or "(?!)",  # linear entries only
    params:
        probe=lambda wc: PROBES[wc.probe],
        site=wildcard_site,
        seed=config["seed"],
        subset=lambda wc: SUBSET[wc.dataset],
        subset_checks=subset_checks,
        code=code_fingerprint("directions"),
    log:
        "results/logs/save_directions/{model}/{dataset}/layer_{layer}{site}/positions_{positions}.{probe}.log",
    threads: 1
    resources:
        mem_mb=on_retry(config["probe"]["mem_mb"]),
        runtime=on_retry(config["probe"]["runtime"]),
    conda:
        "../../envs/emoprobe.yaml"
    script:
        "../scripts/save_directions.py"


rule fit_ridge:
    input:
        shards=activation_part,
        table=prepared_table,
        answers=answers_input,
    output:
        scores="results/probes/{model}/{dataset}/layer_{layer}{site}/positions_{positions}.ridge.parquet",
        predictions="results/probes/{model}/{dataset}/layer_{layer}{site}/positions_{positions}.ridge.predictions.parquet",
    params:
        site=wildcard_site,
        split=probe_split,
        seed=config["seed"],
        subset=lambda wc: SUBSET[wc.dataset],
        subset_checks=subset_checks,
        code=code_fingerprint("ridge"),
    log:
        "results/logs/fit_ridge/{model}/{dataset}/layer_{layer}{site}/positions_{positions}.log",
    threads: 1
    resources:
        mem_mb=on_retry(config["probe"]["mem_mb"]),
        runtime=on_retry(config["probe"]["runtime"]),
    conda:
        "../../envs/emoprobe.yaml"
    script:
        "../scripts/fit_ridge.py"


rule lexical_baseline:
    input:
        table=prepared_table,
    output:
        scores="results/baselines/{dataset}/lexical.parquet",
        predictions="results/baselines/{dataset}/lexical.predictions.parquet",
    params:
        split=probe_split,
        seed=config["seed"],
        code=code_fingerprint("lexical"),
    log:
        "results/logs/lexical_baseline/{dataset}.log",
    threads: 1
    resources:
        mem_mb=on_retry(config["probe"]["mem_mb"]),
        runtime=on_retry(config["probe"]["runtime"]),
    conda:
        "../../envs/emoprobe.yaml"
    script:
        "../scripts/lexical_baseline.py"


use rule lexical_baseline as lexical_ridge with:
    output:
        scores="results/baselines/{dataset}/lexical.ridge.parquet",
        predictions="results/baselines/{dataset}/lexical.ridge.predictions.parquet",
    log:
        "results/logs/lexical_ridge/{dataset}.log",


rule compare_with_lexical:
    input:
        predictions=lambda wc: [path for path, _, _, _ in probe_predictions(wc.model, wc.dataset)],
        lexical_classes=lambda wc: lexical_outputs([wc.dataset], "predictions", "classes"),
        lexical_targets=lambda wc: lexical_outputs([wc.dataset], "predictions", "targets"),
        table=prepared_table,
    output:
        comparison="results/comparisons/{model}/{dataset}/vs_lexical.parquet",
    params:
        layers=lambda wc: [layer for _, layer, _, _ in probe_predictions(wc.model, wc.dataset)],
        sites=lambda wc: [site for _, _, site, _ in probe_predictions(wc.model, wc.dataset)],
        kinds=lambda wc: [kind for _, _, _, kind in probe_predictions(wc.model, wc.dataset)],
        classifiers=CLASSIFIERS,
        seed=config["seed"],
        code=code_fingerprint("compare"),
    log:
        "results/logs/compare_with_lexical/{model}/{dataset}.log",
    threads: 1
    resources:
        mem_mb=on_retry(2000),
        runtime=on_retry(30),
    conda:
        "../../envs/emoprobe.yaml"
    script:
        "../scripts/compare_with_lexical.py"


rule aggregate_metrics:
    input:
        scores=probe_scores() + ridge_scores() + lexical_outputs(DATASETS, "scores") + answer_files(".scores.parquet"),
        comparisons=comparisons(),
    output:
        parquet="results/metrics/probe_metrics.parquet",
        csv="results/metrics/probe_metrics.csv",
        vs_lexical="results/metrics/vs_lexical.parquet",
        vs_lexical_csv="results/metrics/vs_lexical.csv",
    params:
        positions=POSITIONS,  # a probe job fits all of its part's positions; the tables keep these
        code=code_fingerprint("aggregate"),
    log:
        "results/logs/aggregate_metrics.log",
    resources:
        mem_mb=on_retry(2000),
        runtime=on_retry(15),
    conda:
        "../../envs/emoprobe.yaml"
    script:
        "../scripts/aggregate_metrics.py"
