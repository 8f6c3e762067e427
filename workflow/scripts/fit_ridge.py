"""Snakemake adapter: see emoprobe.jobs.fit_ridge."""
from emoprobe.jobs import fit_ridge, run

run(snakemake, fit_ridge)  # noqa: F821 (injected by Snakemake)
