"""Snakemake adapter: see emoprobe.jobs.probe_geometry."""
from emoprobe.jobs import probe_geometry, run

run(snakemake, probe_geometry)  # noqa: F821 (injected by Snakemake)
