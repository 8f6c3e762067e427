"""Snakemake adapter: see emoprobe.jobs.save_directions."""
from emoprobe.jobs import save_directions, run

run(snakemake, save_directions)  # noqa: F821 (injected by Snakemake)
