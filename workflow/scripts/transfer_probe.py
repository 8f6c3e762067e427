"""Snakemake adapter: see emoprobe.jobs.transfer_probe."""
from emoprobe.jobs import transfer_probe, run

run(snakemake, transfer_probe)  # noqa: F821 (injected by Snakemake)
