# Cross-dataset transfer of the linear probe (emoprobe.transfer): config `transfer`, datasets'
# `label_map`. One job per model and ordered pair of datasets, over every layer, site and position.


rule transfer_probe:
    input:
        source=lambda wc: f"results/data/{wc.source}.parquet",
        target=lambda wc: f"results/data/{wc.target}.parquet",
        parts=transfer_parts,
    output:
        table="results/transfer/{model}/{source}__{target}.parquet",
    params:
        shards=transfer_shards,  # [layer, site, position, source shard, target shard]
        label_maps=lambda wc: {"source": LABEL_MAPS[wc.source], "target": LABEL_MAPS[wc.target]},
        vocabularies=lambda wc: {"source": VOCABULARIES[wc.source], "target": VOCABULARIES[wc.target]},
        min_shared=config["transfer"]["min_shared"],
        probe=lambda wc: PROBES[LINEAR_PROBES[0]],
        cv_folds=config["probe"]["cv_folds"],
        seed=config["seed"],
        code=code_fingerprint("transfer"),
    wildcard_constraints:
        source="|".join(map(re.escape, DATASETS)),
        target="|".join(map(re.escape, DATASETS)),
    log:
        "results/logs/transfer_probe/{model}/{source}__{target}.log",
    threads: 2
    resources:
        mem_mb=on_retry(config["probe"]["mem_mb"]),
        runtime=on_retry(config["probe"]["runtime"]),
    conda:
        "../../envs/emoprobe.yaml"
    script:
        "../scripts/transfer_probe.py"


rule aggregate_transfer:
    input:
        tables=transfer_tables(),
    output:
        parquet="results/metrics/transfer.parquet",
        csv="results/metrics/transfer.csv",
    params:
        code=code_fingerprint("transfer_aggregate"),
    log:
        "results/logs/aggregate_transfer.log",
    resources:
        mem_mb=on_retry(2000),
        runtime=on_retry(15),
    conda:
        "../../envs/emoprobe.yaml"
    script:
        "../scripts/aggregate_transfer.py"
