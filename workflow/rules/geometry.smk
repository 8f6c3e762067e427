# The geometry of the saved linear-probe directions (emoprobe.geometry): config `geometry`.


rule probe_geometry:
    input:
        table=prepared_table,
        directions=lambda wc: geometry_directions(wc.model, wc.dataset),
    output:
        table="results/geometry/{model}/{dataset}.parquet",
    params:
        layers=lambda wc: LAYERS[wc.model],
        position=GEOMETRY_POSITION,
        probe=lambda wc: LINEAR_PROBES[0],
        n_permutations=config["geometry"]["n_permutations"],
        seed=config["seed"],
        code=code_fingerprint("geometry"),
    log:
        "results/logs/probe_geometry/{model}/{dataset}.log",
    resources:
        mem_mb=on_retry(2000),
        runtime=on_retry(30),
    conda:
        "../../envs/emoprobe.yaml"
    script:
        "../scripts/probe_geometry.py"


rule aggregate_geometry:
    input:
        tables=geometry_tables(),
    output:
        parquet="results/metrics/geometry.parquet",
        csv="results/metrics/geometry.csv",
    params:
        code=code_fingerprint("geometry_aggregate"),
    log:
        "results/logs/aggregate_geometry.log",
    resources:
        mem_mb=on_retry(2000),
        runtime=on_retry(15),
    conda:
        "../../envs/emoprobe.yaml"
    script:
        "../scripts/aggregate_geometry.py"
