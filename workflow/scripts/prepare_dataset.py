"""Snakemake adapter: see emoprobe.jobs.prepare_dataset."""
from emoprobe.jobs import prepare_dataset, run

run(snakemake, prepare_dataset)  # noqa: F821 (injected by Snakemake)
