"""Snakemake adapter: see emoprobe.jobs.build_report."""
from emoprobe.jobs import build_report, run

run(snakemake, build_report)  # noqa: F821 (injected by Snakemake)
