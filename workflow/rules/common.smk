# Configuration validation and the named input/target functions every rule uses.

import re
import os
import sys
from pathlib import Path

SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SRC)  # the Snakefile and every job import the emoprobe package from here
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")]))

from emoprobe.config import resolve_layers, resolve_template, validate_config
from emoprobe.errors import EmoprobeError
from emoprobe.models import LayerCountCache
from emoprobe.provenance import code_fingerprint

try:
    config.update(validate_config(config))
except EmoprobeError as error:
    raise WorkflowError(str(error)) from None

MODELS = sorted(config["models"])
DATASETS = sorted(config["datasets"])
POSITIONS = list(config["positions"])
TEMPLATE = resolve_template(config["prompt"]["template"])

_count_layers = LayerCountCache(Path(".snakemake") / "emoprobe" / "layer_counts.json")
try:
    N_LAYERS = {model: _count_layers(config["models"][model]) for model in MODELS}
    LAYERS = {model: resolve_layers(config["layers"], N_LAYERS[model], model) for model in MODELS}
except EmoprobeError as error:
    raise WorkflowError(str(error)) from None


wildcard_constraints:
    model="|".join(map(re.escape, MODELS)),
    dataset="|".join(map(re.escape, DATASETS)),
    layer=r"\d+",
    position=r"-\d+",


def prepared_table(wildcards):
    return f"results/data/{wildcards.dataset}.parquet"


def activation_dir(wildcards):
    return f"results/activations/{wildcards.model}/{wildcards.dataset}"


def probe_scores():
    """Every probe output of the configured sweep."""
    return [
        f"results/probes/{model}/{dataset}/layer_{layer}/pos_{position}.parquet"
        for model in MODELS
        for dataset in DATASETS
        for layer in LAYERS[model]
        for position in POSITIONS
    ]


def report_figures(suffix):
    """Per model x dataset figures of the report, as .png or .html."""
    return [
        f"results/report/{model}/{dataset}/{figure}.{suffix}"
        for model in MODELS
        for dataset in DATASETS
        for figure in ("accuracy_by_layer", "layer_position_heatmap")
    ]


def all_targets():
    return ["results/metrics/probe_metrics.parquet", "results/report/index.html"]
