"""Snakemake adapter: see emoprobe.jobs.aggregate_geometry."""
from emoprobe.jobs import aggregate_geometry, run

run(snakemake, aggregate_geometry)  # noqa: F821 (injected by Snakemake)
