"""Snakemake adapter: see emoprobe.jobs.causal_experiment."""
from emoprobe.jobs import causal_experiment, run

run(snakemake, causal_experiment)  # noqa: F821 (injected by Snakemake)
