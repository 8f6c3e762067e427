"""Snakemake adapter: see emoprobe.jobs.aggregate_metrics."""
from emoprobe.jobs import aggregate_metrics, run

run(snakemake, aggregate_metrics)  # noqa: F821 (injected by Snakemake)
