# Configuration validation and the named input/target functions every rule uses.

import re
import os
import sys
from pathlib import Path

SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SRC)  # the Snakefile and every job import the emoprobe package from here
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")]))

from emoprobe.config import random_init_twins, resolve_layers, resolve_template, validate_config
from emoprobe.data.prepare import probe_plan
from emoprobe.errors import EmoprobeError
from emoprobe.models import LayerCountCache, check_pinned_sha256, resolve_dtype
from emoprobe.parts import PART_PATTERN, POSITIONS_PATTERN, parse_part, part_positions, plan_parts
from emoprobe.provenance import code_fingerprint
from emoprobe.registry import LINEAR
from emoprobe.shards import delete_and_rerun, size_problem

try:
    config.update(validate_config(config))
except EmoprobeError as error:
    raise WorkflowError(str(error)) from None

MODELS = sorted(config["models"])
DATASETS = sorted(config["datasets"])
# What each dataset is probed for, from its config alone: classes (fit_probe) and/or numeric
# targets (fit_ridge, one job fitting all of them).
PLANS = {dataset: probe_plan(config["datasets"][dataset]) for dataset in DATASETS}
CLASSIFIED = [dataset for dataset in DATASETS if PLANS[dataset]["classification"]]
REGRESSED = [dataset for dataset in DATASETS if PLANS[dataset]["targets"]]
POSITIONS = list(config["positions"])
# The classification probes (`probes` entries, defaults filled in), by name, in config order.
PROBES = {entry["name"]: entry for entry in config["probes"]}
CLASSIFIERS = list(PROBES)
LINEAR_PROBES = [name for name, entry in PROBES.items() if entry["kind"] in LINEAR]
TEMPLATE = resolve_template(config["prompt"]["template"])

_count_layers = LayerCountCache(Path(".snakemake") / "emoprobe" / "layer_counts.json")
try:
    N_LAYERS = {model: _count_layers(config["models"][model]) for model in MODELS}
    LAYERS = {model: resolve_layers(config["layers"], N_LAYERS[model], model) for model in MODELS}
    # A pinned GGUF file is checked before any job (hashed once per size and mtime); a Hub one
    # would have to be downloaded here, so its extraction job checks it.
    for model in MODELS:
        spec = config["models"][model]
        if spec["source"] == "gguf" and spec["sha256"] and "id" not in spec:
            check_pinned_sha256(spec)
except EmoprobeError as error:
    raise WorkflowError(str(error)) from None


wildcard_constraints:
    model="|".join(map(re.escape, MODELS)),
    dataset="|".join(map(re.escape, DATASETS)),
    layer=r"\d+",
    positions=POSITIONS_PATTERN,
    part=PART_PATTERN,
    probe="|".join(map(re.escape, CLASSIFIERS)),


def on_retry(amount):
    """Resource that grows with each attempt (retries: a job killed for memory or time asks for more)."""
    return lambda wildcards, attempt: amount * attempt


def prepared_table(wildcards):
    return f"results/data/{wildcards.dataset}.parquet"


def _parts_on_disk(model, dataset):
    folder = Path("results/activations") / model / dataset
    return [entry.name for entry in folder.iterdir() if entry.is_dir()] if folder.is_dir() else []


# Which extraction part (one job's shard folder, see emoprobe.parts) holds each (layer, position):
# parts already on disk keep serving the pairs they hold, so adding layers or positions plans
# new parts for just the new pairs and leaves every fitted probe alone.
PARTS = {
    (model, dataset): plan_parts(LAYERS[model], POSITIONS, _parts_on_disk(model, dataset), N_LAYERS[model])
    for model in MODELS
    for dataset in DATASETS
}


def check_parts_on_disk():
    """Stop before any job if a part in use lost a shard or holds one cut short: Snakemake sees
    the folder (a directory() output) as present and would neither rerun its extraction nor
    notice. A part still holding *.partial files is an interrupted job, left to Snakemake's
    rerun-incomplete."""
    problems = []
    for (model, dataset), plan in PARTS.items():
        for part in sorted(set(plan.values())):
            folder = Path("results/activations") / model / dataset / part
            if not folder.is_dir() or any(folder.glob("*.partial")):
                continue
            for layer in parse_part(part)[0]:
                shard = folder / f"layer_{layer}.safetensors"
                if problem := size_problem(shard):
                    problems.append(f"{shard}: {problem}; {delete_and_rerun(folder)}")
    if problems:
        raise WorkflowError("damaged activation parts:\n  " + "\n  ".join(problems))


check_parts_on_disk()


# A probe job fits, at one layer, all the positions of the part holding that layer's requested
# positions (one Python start per layer and part, not per position): (layer, the part's
# positions as written in its name) -> part.
PROBE_PARTS = {
    key: {(layer, part_positions(part)): part for (layer, _), part in plan.items()}
    for key, plan in PARTS.items()
}


def activation_part(wildcards):
    """The shard folder of a probe job: the part holding the job's layer and positions."""
    part = PROBE_PARTS[wildcards.model, wildcards.dataset].get((int(wildcards.layer), wildcards.positions))
    if part is None:
        raise WorkflowError(f"no extraction part holds positions {wildcards.positions} at layer {wildcards.layer} "
                            f"of model '{wildcards.model}' for the config's `layers` x `positions`; "
                            "`snakemake -n` lists the probe outputs this config asks for.")
    return f"results/activations/{wildcards.model}/{wildcards.dataset}/{part}"


def part_layers(wildcards):
    """An extraction part's layers, checked against the model's depth."""
    layers = list(parse_part(wildcards.part)[0])
    try:
        resolve_layers(layers, N_LAYERS[wildcards.model], wildcards.model)
    except EmoprobeError as error:
        raise WorkflowError(str(error)) from None
    return layers


def extraction_dtype():
    """`extraction.dtype` as the extraction jobs' param: resolved here where `extraction.device`
    fixes the device, else "auto", resolved by the job on the device it gets (the shards record it
    either way, and aggregate refuses a sweep that mixes dtypes)."""
    dtype, device = config["extraction"]["dtype"], config["extraction"]["device"]
    return dtype if device == "auto" else resolve_dtype(dtype, device)


def subsampled(dataset):
    """Whether the dataset's prepared table depends on the seed."""
    spec = config["datasets"][dataset]
    return bool(spec["max_per_class"] or spec["max_rows"])


def dataset_option(key):
    """Params function: the dataset's value of option `key`."""
    return lambda wildcards: config["datasets"][wildcards.dataset][key]


def custom_file(wildcards):
    """A custom dataset's own file, so that editing it reruns prepare_dataset; [] otherwise."""
    spec = config["datasets"][wildcards.dataset]
    return [spec["path"]] if spec["type"] == "custom" else []


def prepare_cv_folds(wildcards):
    """probe.cv_folds where it can change the prepared table, else None (see jobs.prepare_dataset)."""
    spec = config["datasets"][wildcards.dataset]
    drops_rare_classes = (PLANS[wildcards.dataset]["classification"] and spec["bad_rows"] == "drop"
                          and not spec["official_split"])
    return config["probe"]["cv_folds"] if drops_rare_classes else None


def _sweep(datasets, suffix):
    """One probe output per model x dataset x layer x extraction part holding that layer: a probe
    job fits all of its part's positions at one layer, so Python and torch start once per layer."""
    return sorted({
        f"results/probes/{model}/{dataset}/layer_{layer}/positions_{positions}{suffix}"
        for model in MODELS
        for dataset in datasets
        for layer, positions in PROBE_PARTS[model, dataset]
    })


def probe_scores():
    """Every classification probe output of the configured sweep (datasets with classes), per probe."""
    return [path for probe in CLASSIFIERS for path in _sweep(CLASSIFIED, f".{probe}.parquet")]


def ridge_scores():
    """Every ridge probe output of the configured sweep (datasets with numeric targets)."""
    return _sweep(REGRESSED, ".ridge.parquet")


def lexical_outputs(datasets, output, kind=None):
    """The lexical baseline's `output` files ("scores" or "predictions") for `datasets`: the
    classes' (kind "classes") and/or the numeric targets' ("targets"); none with
    `lexical_baseline: false`."""
    if not config["lexical_baseline"]:
        return []
    suffix = ".parquet" if output == "scores" else ".predictions.parquet"
    return [f"results/baselines/{dataset}/lexical{infix}{suffix}"
            for dataset in datasets
            for name, infix, wanted in (("classes", "", CLASSIFIED), ("targets", ".ridge", REGRESSED))
            if kind in (None, name) and dataset in wanted]


def probe_predictions(model, dataset):
    """(held-out predictions file, layer, "classes" or "targets") of every probe job of a model x dataset."""
    infixes = [("classes", f".{probe}", CLASSIFIED) for probe in CLASSIFIERS] + [("targets", ".ridge", REGRESSED)]
    return [(f"results/probes/{model}/{dataset}/layer_{layer}/positions_{positions}{infix}.predictions.parquet",
             layer, kind)
            for kind, infix, wanted in infixes
            if dataset in wanted
            for layer, positions in sorted(PROBE_PARTS[model, dataset])]


def comparisons():
    """Every model x dataset's paired comparison with the lexical baseline (none without it)."""
    return [f"results/comparisons/{model}/{dataset}/vs_lexical.parquet"
            for model in MODELS for dataset in DATASETS] if config["lexical_baseline"] else []


CLASSIFICATION_FIGURES = ("accuracy_by_layer", "layer_position_heatmap") + (
    ("selectivity_by_layer",) if config["probe"]["control_task"] else ()) + (
    ("probes_by_layer",) if len(CLASSIFIERS) > 1 else ())
REGRESSION_FIGURES = ("r2_by_layer", "target_layer_heatmap")


def report_figures(suffix, kind=None):
    """Per model x dataset figures of the report, as .png or .html; kind: classification,
    regression or None for both."""
    figures = {"classification": (CLASSIFIED, CLASSIFICATION_FIGURES), "regression": (REGRESSED, REGRESSION_FIGURES)}
    return [
        f"results/report/{model}/{dataset}/{figure}.{suffix}"
        for name, (datasets, names) in figures.items()
        if kind in (None, name)
        for model in MODELS
        for dataset in datasets
        for figure in names
    ]


def directions():
    """The saved directions of every linear probe (`probe.save_directions`), else none."""
    if not config["probe"]["save_directions"]:
        return []
    return [path for probe in LINEAR_PROBES for path in _sweep(CLASSIFIED, f".{probe}.directions.safetensors")]


def all_targets():
    return ["results/metrics/probe_metrics.parquet", "results/metrics/vs_lexical.parquet",
            "results/report/index.html"] + directions()
