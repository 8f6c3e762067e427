"""Snakemake adapter: see emoprobe.jobs.aggregate_causal."""
from emoprobe.jobs import aggregate_causal, run

run(snakemake, aggregate_causal)  # noqa: F821 (injected by Snakemake)
