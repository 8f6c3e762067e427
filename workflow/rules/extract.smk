rule extract_activations:
    input:
        table=prepared_table,
    output:
        shards=directory("results/activations/{model}/{dataset}/{part}"),
    params:
        model=lambda wc: config["models"][wc.model],
        n_layers=lambda wc: N_LAYERS[wc.model],
        # From the part's name, never the config: adding layers elsewhere leaves this job alone.
        layers=part_layers,
        sites=lambda wc: list(parse_part(wc.part).sites),
        positions=lambda wc: list(parse_part(wc.part).positions),
        template=lambda wc: TEMPLATE,
        code=code_fingerprint("extract"),  # a function: the template's {text} is no wildcard
        device=config["extraction"]["device"],
        dtype=extraction_dtype(),
        answers=extraction_answers,  # the label words to score at the last position, or None
    log:
        "results/logs/extract_activations/{model}/{dataset}/{part}.log",
    benchmark:
        "results/benchmarks/extract_activations/{model}/{dataset}/{part}.tsv"
    threads: 8
    resources:
        mem_mb=on_retry(config["extraction"]["mem_mb"]),
        runtime=on_retry(config["extraction"]["runtime"]),
        gpu=0 if config["extraction"]["device"] == "cpu" else 1,
    conda:
        "../../envs/emoprobe.yaml"
    script:
        "../scripts/extract_activations.py"


# A copy and two small tables: on a cluster they run where Snakemake runs, not as jobs of their own.
localrules:
    collect_answers,
    score_answers,


rule collect_answers:
    input:
        part=answers_part,
    output:
        answers="results/answers/{model}/{dataset}.parquet",
    params:
        file=ANSWERS_FILE,  # in the part's folder
        code=code_fingerprint("answers"),
    log:
        "results/logs/collect_answers/{model}/{dataset}.log",
    threads: 1
    resources:
        mem_mb=on_retry(1000),
        runtime=on_retry(15),
    conda:
        "../../envs/emoprobe.yaml"
    script:
        "../scripts/collect_answers.py"


rule score_answers:
    input:
        answers="results/answers/{model}/{dataset}.parquet",
        part=answers_part,
        table=prepared_table,
    output:
        scores="results/answers/{model}/{dataset}.scores.parquet",
        classes="results/answers/{model}/{dataset}.classes.parquet",
    params:
        seed=config["seed"],
        subset=lambda wc: SUBSET[wc.dataset],
        subset_checks=subset_checks,
        code=code_fingerprint("answer_scores"),
    log:
        "results/logs/score_answers/{model}/{dataset}.log",
    threads: 1
    resources:
        mem_mb=on_retry(2000),
        runtime=on_retry(15),
    conda:
        "../../envs/emoprobe.yaml"
    script:
        "../scripts/score_answers.py"
