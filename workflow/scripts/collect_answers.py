"""Snakemake adapter: see emoprobe.jobs.collect_answers."""
from emoprobe.jobs import collect_answers, run

run(snakemake, collect_answers)  # noqa: F821 (injected by Snakemake)
