rule extract_activations:
    input:
        table=prepared_table,
    output:
        shards=directory("results/activations/{model}/{dataset}"),
    params:
        model=lambda wc: config["models"][wc.model],
        n_layers=lambda wc: N_LAYERS[wc.model],
        layers=lambda wc: LAYERS[wc.model],
        positions=POSITIONS,
        template=lambda wc: TEMPLATE,
        code=code_fingerprint("extract"),  # a function: the template's {text} is no wildcard
        device=config["extraction"]["device"],
    log:
        "results/logs/extract_activations/{model}/{dataset}.log",
    benchmark:
        "results/benchmarks/extract_activations/{model}/{dataset}.tsv"
    threads: 8
    resources:
        mem_mb=on_retry(config["extraction"]["mem_mb"]),
        runtime=on_retry(config["extraction"]["runtime"]),
        gpu=0 if config["extraction"]["device"] == "cpu" else 1,
    conda:
        "../../envs/emoprobe.yaml"
    script:
        "../scripts/extract_activations.py"
