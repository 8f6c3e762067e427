"""Snakemake adapter: see emoprobe.jobs.aggregate_transfer."""
from emoprobe.jobs import aggregate_transfer, run

run(snakemake, aggregate_transfer)  # noqa: F821 (injected by Snakemake)
