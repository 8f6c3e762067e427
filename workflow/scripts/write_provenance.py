"""Snakemake adapter: see emoprobe.jobs.write_provenance."""
from emoprobe.jobs import run, write_provenance

run(snakemake, write_provenance)  # noqa: F821 (injected by Snakemake)
