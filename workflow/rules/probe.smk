rule fit_probe:
    input:
        shards=activation_part,
        table=prepared_table,
    output:
        scores="results/probes/{model}/{dataset}/layer_{layer}/positions_{positions}.parquet",
        predictions="results/probes/{model}/{dataset}/layer_{layer}/positions_{positions}.predictions.parquet",
    params:
        cv_folds=config["probe"]["cv_folds"],
        C=config["probe"]["C"],
        backend=config["probe"]["backend"],
        max_iter=config["probe"]["max_iter"],
        seed=config["seed"],
        official_split=dataset_option("official_split"),
        code=code_fingerprint("probe"),
    log:
        "results/logs/fit_probe/{model}/{dataset}/layer_{layer}/positions_{positions}.log",
    threads: 1
    resources:
        mem_mb=on_retry(config["probe"]["mem_mb"]),
        runtime=on_retry(config["probe"]["runtime"]),
    conda:
        "../../envs/emoprobe.yaml"
    script:
        "../scripts/fit_probe.py"


rule fit_ridge:
    input:
        shards=activation_part,
        table=prepared_table,
    output:
        scores="results/probes/{model}/{dataset}/layer_{layer}/positions_{positions}.ridge.parquet",
        predictions="results/probes/{model}/{dataset}/layer_{layer}/positions_{positions}.ridge.predictions.parquet",
    params:
        cv_folds=config["probe"]["cv_folds"],
        seed=config["seed"],
        official_split=dataset_option("official_split"),
        code=code_fingerprint("ridge"),
    log:
        "results/logs/fit_ridge/{model}/{dataset}/layer_{layer}/positions_{positions}.log",
    threads: 1
    resources:
        mem_mb=on_retry(config["probe"]["mem_mb"]),
        runtime=on_retry(config["probe"]["runtime"]),
    conda:
        "../../envs/emoprobe.yaml"
    script:
        "../scripts/fit_ridge.py"


rule aggregate_metrics:
    input:
        scores=probe_scores() + ridge_scores(),
    output:
        parquet="results/metrics/probe_metrics.parquet",
        csv="results/metrics/probe_metrics.csv",
    params:
        positions=POSITIONS,  # a probe job fits all of its part's positions; the table keeps these
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
