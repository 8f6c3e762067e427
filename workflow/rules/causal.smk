# Causal experiments (emoprobe.interventions): edits of the forward pass at the last prompt
# position and what they do to the model's answer. Decoder LMs with answers, datasets with classes.


rule causal_experiment:
    input:
        table=prepared_table,
        answers="results/answers/{model}/{dataset}.parquet",
        parts=causal_parts,
        directions=lambda wc: [path for _, path in causal_directions(wc)],
    output:
        table="results/causal/{model}/{dataset}/{experiment}.parquet",
    params:
        model=lambda wc: config["models"][wc.model],
        n_layers=lambda wc: N_LAYERS[wc.model],
        centres=lambda wc: CAUSAL_CENTRES[wc.model],
        shards=causal_shards,  # [layer, site, shard file]: the activations at position -1 it reads
        directions=causal_directions,  # [layer, file]: promotion's saved probe directions
        settings=lambda wc: causal_settings(wc.experiment),
        seed=config["seed"],
        device=config["extraction"]["device"],
        dtype=extraction_dtype(),
        code=code_fingerprint("causal"),
    log:
        "results/logs/causal_experiment/{model}/{dataset}/{experiment}.log",
    benchmark:
        "results/benchmarks/causal_experiment/{model}/{dataset}/{experiment}.tsv"
    threads: config["causal"]["threads"]
    resources:
        mem_mb=on_retry(config["causal"]["mem_mb"]),
        runtime=on_retry(config["causal"]["runtime"]),
        gpu=0 if config["extraction"]["device"] == "cpu" else 1,
    conda:
        "../../envs/emoprobe.yaml"
    script:
        "../scripts/causal_experiment.py"


rule aggregate_causal:
    input:
        tables=causal_tables(),
    output:
        parquet="results/metrics/causal_metrics.parquet",
        csv="results/metrics/causal_metrics.csv",
    params:
        code=code_fingerprint("causal_aggregate"),
    log:
        "results/logs/aggregate_causal.log",
    resources:
        mem_mb=on_retry(2000),
        runtime=on_retry(15),
    conda:
        "../../envs/emoprobe.yaml"
    script:
        "../scripts/aggregate_causal.py"
