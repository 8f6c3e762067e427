# emoprobe: where is emotion linearly decodable inside a language model?
#
#   prepared dataset -> extraction (one job per model x dataset, one shard per layer; layers or
#   positions added later get a job of their own)
#   -> probes (one job per model x dataset x layer and probe kind, fitting every position of the
#   part holding that layer) -> metrics table -> report
#
# Run: snakemake --cores 2            (see README.md for SLURM and configuration)

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/extract.smk"
include: "workflow/rules/probe.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/causal.smk"
include: "workflow/rules/geometry.smk"
include: "workflow/rules/transfer.smk"


rule all:
    input:
        all_targets(),
    default_target: True
