"""Snakemake adapter: see emoprobe.jobs.lexical_baseline."""
from emoprobe.jobs import lexical_baseline, run

run(snakemake, lexical_baseline)  # noqa: F821 (injected by Snakemake)
