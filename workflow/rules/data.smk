rule prepare_dataset:
    output:
        table="results/data/{dataset}.parquet",
    params:
        dataset=lambda wc: config["datasets"][wc.dataset],
        template=lambda wc: TEMPLATE,  # a function: the template's {text} is no wildcard
        seed=config["seed"],
        data_dir=config["data_dir"],
        download_dir=config["download_dir"],
    log:
        "results/logs/prepare_dataset/{dataset}.log",
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../../envs/emoprobe.yaml"
    script:
        "../scripts/prepare_dataset.py"
