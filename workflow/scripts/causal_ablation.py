"""Snakemake adapter: see emoprobe.jobs.causal_ablation."""
from emoprobe.jobs import causal_ablation, run

run(snakemake, causal_ablation)  # noqa: F821 (injected by Snakemake)
