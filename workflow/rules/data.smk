rule prepare_dataset:
    input:
        custom_file,
    output:
        table="results/data/{dataset}.parquet",
    params:
        dataset=prepared_spec,  # answer_words and subset never change the table
        template=lambda wc: TEMPLATE,
        code=code_fingerprint("prepare"),  # a function: the template's {text} is no wildcard
        # The seed only matters for a subsample; where raw files live never changes the table.
        seed=lambda wc: config["seed"] if subsampled(wc.dataset) else None,
        cv_folds=prepare_cv_folds,  # only where bad_rows: drop drops classes too small for the CV
    log:
        "results/logs/prepare_dataset/{dataset}.log",
    resources:
        mem_mb=on_retry(2000),
        runtime=on_retry(30),
    conda:
        "../../envs/emoprobe.yaml"
    script:
        "../scripts/prepare_dataset.py"
