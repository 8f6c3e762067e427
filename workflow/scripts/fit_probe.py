"""Snakemake adapter: see emoprobe.jobs.fit_probe."""
from emoprobe.jobs import fit_probe, run

run(snakemake, fit_probe)  # noqa: F821 (injected by Snakemake)
