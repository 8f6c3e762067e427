"""Snakemake adapter: see emoprobe.jobs.compare_with_lexical."""
from emoprobe.jobs import compare_with_lexical, run

run(snakemake, compare_with_lexical)  # noqa: F821 (injected by Snakemake)
