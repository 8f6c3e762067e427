"""Snakemake adapter: see emoprobe.jobs.extract_activations."""
from emoprobe.jobs import extract_activations, run

run(snakemake, extract_activations)  # noqa: F821 (injected by Snakemake)
