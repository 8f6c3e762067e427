"""Snakemake adapter: see emoprobe.jobs.score_answers."""
from emoprobe.jobs import run, score_answers

run(snakemake, score_answers)  # noqa: F821 (injected by Snakemake)
