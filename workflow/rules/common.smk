# Configuration validation and the named input/target functions every rule uses.

import re
import os
import sys
from pathlib import Path

SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SRC)  # the Snakefile and every job import the emoprobe package from here
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")]))

from emoprobe.answers import ANSWERS_FILE
from emoprobe.config import random_init_twins, resolve_layers, resolve_template, validate_config
from emoprobe.data.prepare import probe_plan
from emoprobe.errors import EmoprobeError
from emoprobe.models import ModelInfoCache, check_pinned_sha256, resolve_dtype
from emoprobe.positions import nearest_end
from emoprobe.parts import PART_PATTERN, POSITIONS_PATTERN, parse_part, part_positions, plan_parts
from emoprobe.provenance import code_fingerprint
from emoprobe.registry import LINEAR
from emoprobe.shards import RESIDUAL, SITES as SITE_ORDER, delete_and_rerun, read_pairs, shard_file, size_problem

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
SITES = [site for site in SITE_ORDER if site in config["sites"]]
# The classification probes (`probes` entries, defaults filled in), by name, in config order.
PROBES = {entry["name"]: entry for entry in config["probes"]}
CLASSIFIERS = list(PROBES)
LINEAR_PROBES = [name for name, entry in PROBES.items() if entry["kind"] in LINEAR]
TEMPLATE = resolve_template(config["prompt"]["template"])

_model_info = ModelInfoCache(Path(".snakemake") / "emoprobe" / "model_info.json")
try:
    MODEL_INFO = {model: _model_info(config["models"][model]) for model in MODELS}
    N_LAYERS = {model: info["n_layers"] for model, info in MODEL_INFO.items()}
    LAYERS = {model: resolve_layers(config["layers"], N_LAYERS[model], model) for model in MODELS}
    # A pinned GGUF file is checked before any job (hashed once per size and mtime); a Hub one
    # would have to be downloaded here, so its extraction job checks it.
    for model in MODELS:
        spec = config["models"][model]
        if spec["source"] == "gguf" and spec["sha256"] and "id" not in spec:
            check_pinned_sha256(spec)
except EmoprobeError as error:
    raise WorkflowError(str(error)) from None
for model in MODELS:  # a site the architecture lacks stops the run here, before any job
    for site in SITES:
        if site != RESIDUAL and (why := MODEL_INFO[model]["sites"][site]):
            raise WorkflowError(f"model '{model}': {why}")

# The decoder LMs, which answer the prompt (encoders give no answer).
DECODERS = [model for model in MODELS if MODEL_INFO[model]["decoder"]]
SUBSET = {dataset: config["datasets"][dataset]["subset"] for dataset in DATASETS}
CORRECT_ONLY = [dataset for dataset in DATASETS if SUBSET[dataset] == "correct_only"]


def check_answers_apply():
    """correct_only needs answers from every model: stop before any job where one cannot give them."""
    encoders = [model for model in MODELS if model not in DECODERS]
    for dataset in CORRECT_ONLY:
        why = None
        if not config["answers"]:
            why = "`answers` is false"
        elif not PLANS[dataset]["classification"]:
            why = "it has no class labels"
        elif encoders:
            why = f"model(s) {encoders} are encoders, and answers need a decoder LM"
        if why:
            raise WorkflowError(f"dataset '{dataset}' has `subset: correct_only`, which probes the texts each model "
                                f"answered correctly, but {why}. Set `subset: all`, or probe decoder LMs with "
                                "`answers: true`.")
    if config["answers"] and encoders:
        print(f"emoprobe: {', '.join(encoders)} {'is an encoder' if len(encoders) == 1 else 'are encoders'}: "
              "no answers read (they need a decoder LM); everything else runs.", file=sys.stderr)


check_answers_apply()


def answered(model, dataset):
    """Whether the model's answers on the dataset are read (config `answers`, a decoder, classes)."""
    return config["answers"] and model in DECODERS and PLANS[dataset]["classification"]


wildcard_constraints:
    model="|".join(map(re.escape, MODELS)),
    dataset="|".join(map(re.escape, DATASETS)),
    layer=r"\d+",
    positions=POSITIONS_PATTERN,
    part=PART_PATTERN,
    site="|".join(re.escape(f".{site}") for site in SITE_ORDER[1:]) + "|",  # "" = the residual stream
    probe="|".join(map(re.escape, CLASSIFIERS)),
    experiment="ablation|patching|heads|promotion|steering",


def on_retry(amount):
    """Resource that grows with each attempt (retries: a job killed for memory or time asks for more)."""
    return lambda wildcards, attempt: amount * attempt


def prepared_table(wildcards):
    return f"results/data/{wildcards.dataset}.parquet"


def _parts_on_disk(model, dataset):
    folder = Path("results/activations") / model / dataset
    return [entry.name for entry in folder.iterdir() if entry.is_dir()] if folder.is_dir() else []


# Which extraction part (one job's shard folder, see emoprobe.parts) holds each (layer, site,
# position): parts already on disk keep serving what they hold, so adding layers, sites or
# positions plans new parts for just what is new and leaves every fitted probe alone.
PARTS = {
    (model, dataset): plan_parts(LAYERS[model], POSITIONS, _parts_on_disk(model, dataset), N_LAYERS[model], SITES)
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
            held = parse_part(part)
            for layer, site in read_pairs(held.layers, held.sites):
                shard = folder / shard_file(layer, site)
                if problem := size_problem(shard):
                    problems.append(f"{shard}: {problem}; {delete_and_rerun(folder)}")
    if problems:
        raise WorkflowError("damaged activation parts:\n  " + "\n  ".join(problems))


check_parts_on_disk()


# A probe job fits, at one layer and site, all the positions of the part holding that layer's
# requested positions at the site (one Python start per layer, site and part, not per position):
# (layer, site, the part's positions as written in its name) -> part.
PROBE_PARTS = {
    key: {(layer, site, part_positions(part)): part for (layer, site, _), part in plan.items()}
    for key, plan in PARTS.items()
}


def site_suffix(site):
    """How a site shows in probe paths, after layer_<L>: nothing for the residual stream, else .<site>."""
    return "" if site == RESIDUAL else f".{site}"


def wildcard_site(wildcards):
    """The site of a probe job's {site} wildcard ("" or ".<site>")."""
    return wildcards.site.removeprefix(".") or RESIDUAL


def activation_part(wildcards):
    """The shard folder of a probe job: the part holding the job's layer, site and positions."""
    site = wildcard_site(wildcards)
    part = PROBE_PARTS[wildcards.model, wildcards.dataset].get((int(wildcards.layer), site, wildcards.positions))
    if part is None:
        raise WorkflowError(f"no extraction part holds positions {wildcards.positions} at layer {wildcards.layer} "
                            f"({site}) of model '{wildcards.model}' for the config's `layers` x `sites` x `positions`; "
                            "`snakemake -n` lists the probe outputs this config asks for.")
    return f"results/activations/{wildcards.model}/{wildcards.dataset}/{part}"


def part_layers(wildcards):
    """An extraction part's layers, checked against the model's depth."""
    layers = list(parse_part(wildcards.part).layers)
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


def _answering_part(model, dataset):
    """The one extraction part of a model x dataset that reads its answers: a part in use already
    holding them (so that adding layers or positions never moves the answers, nor reruns what
    reads them), else the first part by name."""
    parts = sorted(set(PARTS[model, dataset].values()))
    folder = Path("results/activations") / model / dataset
    return next((part for part in parts if (folder / part / ANSWERS_FILE).is_file()), parts[0])


def extraction_answers(wildcards):
    """The extraction job's `answers` param: the dataset's answer_words ({} = the label names) for
    the part that reads the model's answers, else None (the other parts stop after their deepest layer)."""
    if (not answered(wildcards.model, wildcards.dataset)
            or wildcards.part != _answering_part(wildcards.model, wildcards.dataset)):
        return None
    return config["datasets"][wildcards.dataset]["answer_words"] or {}


def answers_part(wildcards):
    """The extraction part holding a model x dataset's answers (see _answering_part)."""
    return f"results/activations/{wildcards.model}/{wildcards.dataset}/{_answering_part(wildcards.model, wildcards.dataset)}"


def answers_input(wildcards):
    """A probe job's answers file: with `subset: correct_only` it picks the rows; none otherwise."""
    return ([f"results/answers/{wildcards.model}/{wildcards.dataset}.parquet"]
            if SUBSET[wildcards.dataset] == "correct_only" else [])


def answer_files(suffix=".parquet"):
    """Every answered model x dataset's answers file ("", ".scores" or ".classes" + .parquet)."""
    return [f"results/answers/{model}/{dataset}{suffix}" for model in MODELS for dataset in DATASETS
            if answered(model, dataset)]


def probe_split(wildcards):
    """How a dataset's probes and baselines split its rows (jobs._job_folds): {"kind": official}
    (the dataset's official_split), holdout (probe.split) with its fraction and seed, or kfold with cv_folds."""
    probe = config["probe"]
    if config["datasets"][wildcards.dataset]["official_split"]:
        return {"kind": "official"}
    if probe["split"] == "holdout":
        return {"kind": "holdout", "fraction": probe["holdout_fraction"], "seed": probe["holdout_seed"]}
    return {"kind": "kfold", "cv_folds": probe["cv_folds"]}


def subset_checks(wildcards):
    """What a correct_only subset's class-size checks need (subset.correct_only_rows), else None."""
    if SUBSET[wildcards.dataset] != "correct_only":
        return None
    spec = config["datasets"][wildcards.dataset]
    return {"cv_folds": config["probe"]["cv_folds"] if probe_split(wildcards)["kind"] == "kfold" else None,
            "spec": {key: spec[key] for key in ("bad_rows", "official_split", "max_per_class", "max_rows")}}


def prepared_spec(wildcards):
    """The dataset's entry as prepare_dataset sees it: the options that do not change the table left out."""
    return {key: value for key, value in config["datasets"][wildcards.dataset].items()
            if key not in ("answer_words", "subset", "label_map")}


def subsampled(dataset):
    """Whether the dataset's prepared table depends on the seed."""
    spec = config["datasets"][dataset]
    return bool(spec["max_per_class"] or spec["max_rows"])


def custom_file(wildcards):
    """A custom (or local huggingface) dataset's own files, so that editing one reruns prepare_dataset; [] otherwise."""
    spec = config["datasets"][wildcards.dataset]
    if spec["type"] not in ("custom", "huggingface"):
        return []
    return [spec[key] for key in ("path", "labels_path", "label_names_path") if spec.get(key) is not None]


def prepare_cv_folds(wildcards):
    """probe.cv_folds where it can change the prepared table, else None (see jobs.prepare_dataset)."""
    spec = config["datasets"][wildcards.dataset]
    drops_rare_classes = (PLANS[wildcards.dataset]["classification"] and spec["bad_rows"] == "drop"
                          and not spec["official_split"] and config["probe"]["split"] == "kfold")
    return config["probe"]["cv_folds"] if drops_rare_classes else None


def _sweep(datasets, suffix):
    """One probe output per model x dataset x layer x site x extraction part holding that layer and
    site: a probe job fits all of its part's positions at one layer and site, so Python and torch
    start once per layer and site."""
    return sorted({
        f"results/probes/{model}/{dataset}/layer_{layer}{site_suffix(site)}/positions_{positions}{suffix}"
        for model in MODELS
        for dataset in datasets
        for layer, site, positions in PROBE_PARTS[model, dataset]
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
    `lexical_baseline: false`, nor for a correct_only dataset (its probes see other rows)."""
    if not config["lexical_baseline"]:
        return []
    datasets = [dataset for dataset in datasets if dataset not in CORRECT_ONLY]
    suffix = ".parquet" if output == "scores" else ".predictions.parquet"
    return [f"results/baselines/{dataset}/lexical{infix}{suffix}"
            for dataset in datasets
            for name, infix, wanted in (("classes", "", CLASSIFIED), ("targets", ".ridge", REGRESSED))
            if kind in (None, name) and dataset in wanted]


def probe_predictions(model, dataset):
    """(held-out predictions file, layer, site, "classes" or "targets") of every probe job of a model x dataset."""
    infixes = [("classes", f".{probe}", CLASSIFIED) for probe in CLASSIFIERS] + [("targets", ".ridge", REGRESSED)]
    return [(f"results/probes/{model}/{dataset}/layer_{layer}{site_suffix(site)}/positions_{positions}{infix}"
             ".predictions.parquet", layer, site, kind)
            for kind, infix, wanted in infixes
            if dataset in wanted
            for layer, site, positions in sorted(PROBE_PARTS[model, dataset])]


def comparisons():
    """Every model x dataset's paired comparison with the lexical baseline (none without it)."""
    return [f"results/comparisons/{model}/{dataset}/vs_lexical.parquet"
            for model in MODELS for dataset in DATASETS if dataset not in CORRECT_ONLY] if config["lexical_baseline"] else []


# Causal experiments (config `causal`, workflow/rules/causal.smk): decoder LMs whose answers are
# read, on datasets with classes (steering: also with the steered appraisals as targets); each
# layer >= 1 of the config's `layers` is a centre.
CAUSAL = config["causal"]
CAUSAL_CENTRES = {model: [layer for layer in LAYERS[model] if layer >= 1] for model in MODELS}
STEERED = [dataset for dataset in CLASSIFIED if set(CAUSAL["steering"]["appraisals"]) <= set(PLANS[dataset]["targets"])]
# The experiments that add a direction to the residual stream (read from its shards at position -1).
DIRECTED = ("promotion", "steering")


def causal_runs(experiment):
    """The (model, dataset) pairs an experiment runs on."""
    datasets = STEERED if experiment == "steering" else CLASSIFIED
    return [(model, dataset) for model in DECODERS for dataset in datasets if answered(model, dataset)]


def causal_settings(experiment):
    """An experiment's own settings (its params: changing another's reruns nothing here)."""
    if experiment in ("ablation", "patching"):
        return {"sites": CAUSAL["sites"], **CAUSAL[experiment]}
    return CAUSAL.get(experiment, {})


def _reads_shards(experiment):
    """Whether an experiment reads activations from the extraction shards."""
    return experiment in ("patching", *DIRECTED) or (
        experiment == "ablation" and bool({"mean", "random"} & set(CAUSAL["ablation"]["kinds"])))


def causal_pairs(model, experiment):
    """The (layer, site) pairs whose position -1 activations an experiment reads from the shards."""
    if not _reads_shards(experiment):
        return []
    from emoprobe.interventions.plan import centred_span

    span = CAUSAL[experiment]["span"]
    layers = {layer for centre in CAUSAL_CENTRES[model] for layer in centred_span(centre, span, N_LAYERS[model])}
    sites = [RESIDUAL] if experiment in DIRECTED else CAUSAL["sites"]
    return [(layer, site) for layer in sorted(layers) for site in sites]


def promotion_probe():
    """The linear probe whose saved directions emotion promotion adds."""
    return CAUSAL["promotion"]["probe"] or LINEAR_PROBES[0]


def _causal_fix(experiment):
    return {"ablation": "or drop the mean and random kinds from `causal.ablation.kinds`"}.get(
        experiment, f"or drop {experiment} from `causal.experiments`")


def check_causal():
    """Stop before any job where the causal experiments cannot run as configured; say which
    models and datasets they skip (encoders, datasets without classes or appraisals)."""
    if not CAUSAL["experiments"]:
        return
    if not config["answers"]:
        raise WorkflowError("`causal.experiments` measure the model's own answer: set `answers: true`.")
    skipped = sorted({model for model in MODELS if model not in DECODERS}) + sorted(set(DATASETS) - set(CLASSIFIED))
    if skipped:
        print(f"emoprobe: causal experiments do not apply to {', '.join(skipped)} (they need a decoder LM and a "
              "dataset with classes); everything else runs.", file=sys.stderr)
    if "steering" in CAUSAL["experiments"]:
        appraisals = CAUSAL["steering"]["appraisals"]
        if not STEERED:
            raise WorkflowError(f"appraisal steering moves along the ridge directions of the appraisals {appraisals}, "
                                "which no dataset with classes has as `targets`: add them to a dataset's `targets` "
                                "(crowd_envent has 21), or drop steering from `causal.experiments`.")
        if unsteered := sorted(set(CLASSIFIED) - set(STEERED)):
            print(f"emoprobe: appraisal steering skips {', '.join(unsteered)} (no `targets` {appraisals}).",
                  file=sys.stderr)
    if "promotion" in CAUSAL["experiments"]:
        if not LINEAR_PROBES:
            raise WorkflowError("emotion promotion adds a linear probe's saved direction: add a logreg entry to "
                                "`probes`, or drop promotion from `causal.experiments`.")
        if promotion_probe() not in LINEAR_PROBES:
            raise WorkflowError(f"`causal.promotion.probe` is '{promotion_probe()}', which is not one of the linear "
                                f"`probes` {LINEAR_PROBES}: name one of them.")
    for experiment in CAUSAL["experiments"]:
        if not _reads_shards(experiment):
            continue
        what = {"ablation": "causal ablation's mean and random kinds read", "patching": "activation patching reads",
                "promotion": "emotion promotion reads (for the residual norms)",
                "steering": "appraisal steering reads (for the ridge directions)"}[experiment]
        sites = [RESIDUAL] if experiment in DIRECTED else CAUSAL["sites"]
        if missing := [site for site in sites if site not in SITES]:
            raise WorkflowError(f"{what} the sites {missing} from the extraction shards: add them to `sites` "
                                f"({_causal_fix(experiment)}).")
        if -1 not in POSITIONS:
            raise WorkflowError(f"{what} position -1 from the extraction shards: add -1 to `positions` "
                                f"({_causal_fix(experiment)}).")
        for model, _ in causal_runs(experiment):
            if missing := sorted({layer for layer, _ in causal_pairs(model, experiment)} - set(LAYERS[model])):
                raise WorkflowError(f"{what} layers {missing} of model '{model}' (spans of {CAUSAL[experiment]['span']} "
                                    f"layers around each of `layers`) from the extraction shards, which `layers` "
                                    f"leaves out: set `layers: all` ({_causal_fix(experiment)}).")


check_causal()


def causal_shards(wildcards):
    """[layer, site, shard file] of every pair causal_pairs reads, in the parts that hold position -1."""
    plan = PARTS[wildcards.model, wildcards.dataset]
    return [[layer, site, f"results/activations/{wildcards.model}/{wildcards.dataset}/{plan[layer, site, -1]}/"
                          f"{shard_file(layer, site)}"]
            for layer, site in causal_pairs(wildcards.model, wildcards.experiment)]


def causal_parts(wildcards):
    """The extraction parts (folders) holding causal_shards' files."""
    return sorted({str(Path(path).parent) for _, _, path in causal_shards(wildcards)})


def direction_file(model, dataset, layer, position, probe):
    """The saved directions (rule save_directions) of a linear probe of the residual stream at a
    layer, in the extraction part that holds `position` there."""
    part = PARTS[model, dataset][layer, RESIDUAL, position]
    return (f"results/probes/{model}/{dataset}/layer_{layer}/positions_{part_positions(part)}.{probe}"
            ".directions.safetensors")


def causal_directions(wildcards):
    """[layer, file] of the saved linear-probe directions (residual stream, position -1) that
    emotion promotion adds at each layer it edits; none for the other experiments."""
    if wildcards.experiment != "promotion":
        return []
    return [[layer, direction_file(wildcards.model, wildcards.dataset, layer, -1, promotion_probe())]
            for layer, _ in causal_pairs(wildcards.model, wildcards.experiment)]


# The geometry of the saved directions (config `geometry`, workflow/rules/geometry.smk): every
# layer's residual stream at the fixed position nearest the end, of the first linear probe.
GEOMETRY = config["geometry"]["enabled"]
GEOMETRY_POSITION = nearest_end(POSITIONS)


def check_geometry():
    """Stop before any job where the geometry cannot be computed as configured."""
    if not GEOMETRY:
        return
    if not LINEAR_PROBES:
        raise WorkflowError("`geometry` reads the saved directions of a linear probe: add a logreg entry to `probes`, "
                            "or set `geometry.enabled: false`.")
    if RESIDUAL not in SITES:
        raise WorkflowError("`geometry` reads the probes' directions in the residual stream: add residual to `sites`, "
                            "or set `geometry.enabled: false`.")
    if not CLASSIFIED:
        raise WorkflowError("`geometry` compares the directions of classes: configure a dataset with classes, or set "
                            "`geometry.enabled: false`.")


check_geometry()


# Cross-dataset transfer (config `transfer`, workflow/rules/transfer.smk): every ordered pair of
# datasets with classes and a `label_map`, per model.
from emoprobe.data.label_maps import known_labels, resolve_label_map

try:
    LABEL_MAPS = {dataset: resolve_label_map(dataset, config["datasets"][dataset]) for dataset in DATASETS}
except EmoprobeError as error:
    raise WorkflowError(str(error)) from None
VOCABULARIES = {dataset: known_labels(config["datasets"][dataset]) for dataset in DATASETS}
TRANSFER = config["transfer"]["enabled"]
MAPPED = [dataset for dataset in CLASSIFIED if LABEL_MAPS[dataset] is not None]
if TRANSFER and len(MAPPED) < 2:
    raise WorkflowError(f"`transfer` compares datasets through their label maps, and {len(MAPPED)} dataset(s) with "
                        f"classes have one ({MAPPED}): give two or more a `label_map` (e.g. `label_map: ekman`), or "
                        "set `transfer.enabled: false`.")


def transfer_shards(wildcards):
    """[layer, site, position, source shard, target shard] over the model's sweep."""
    def shard(dataset, layer, site, position):
        part = PARTS[wildcards.model, dataset][layer, site, position]
        return f"results/activations/{wildcards.model}/{dataset}/{part}/{shard_file(layer, site)}"

    return [[layer, site, position, shard(wildcards.source, layer, site, position),
             shard(wildcards.target, layer, site, position)]
            for layer in LAYERS[wildcards.model] for site in SITES for position in POSITIONS]


def transfer_parts(wildcards):
    return sorted({str(Path(path).parent) for *_, source, target in transfer_shards(wildcards)
                   for path in (source, target)})


def transfer_figures(suffix):
    """The report's transfer charts of every model, as .png or .html."""
    return [f"results/report/{model}/{figure}.{suffix}" for model in MODELS
            for figure in ("transfer_matrix", "transfer_by_layer")] if TRANSFER else []


def transfer_tables():
    return [f"results/transfer/{model}/{source}__{target}.parquet" for model in MODELS for source in MAPPED
            for target in MAPPED if source != target] if TRANSFER else []


def geometry_directions(model, dataset):
    return [direction_file(model, dataset, layer, GEOMETRY_POSITION, LINEAR_PROBES[0]) for layer in LAYERS[model]]


def geometry_figures(suffix):
    """The report's geometry charts of every model x dataset, as .png or .html (the RSA where the
    dataset has two or more appraisal targets)."""
    return [f"results/report/{model}/{dataset}/{figure}.{suffix}" for model in MODELS for dataset in CLASSIFIED
            for figure in ("direction_layer_similarity", "emotion_map")
            + (("rsa_by_layer",) if len(PLANS[dataset]["targets"]) >= 2 else ()) if GEOMETRY]


def geometry_tables():
    return [f"results/geometry/{model}/{dataset}.parquet" for model in MODELS for dataset in CLASSIFIED] if GEOMETRY else []


CAUSAL_FIGURES = {"ablation": ("ablation_by_layer",), "patching": ("patching_by_layer",),
                  "heads": ("heads_heatmap",), "promotion": ("promotion_by_layer",),
                  "steering": ("steering_by_layer", "steering_heatmap")}


def causal_figures(suffix):
    """The report's causal charts of every model x dataset they ran on, as .png or .html."""
    return [f"results/report/{model}/{dataset}/{figure}.{suffix}" for experiment in CAUSAL["experiments"]
            for model, dataset in causal_runs(experiment) for figure in CAUSAL_FIGURES[experiment]]


def causal_tables():
    return [f"results/causal/{model}/{dataset}/{experiment}.parquet" for experiment in CAUSAL["experiments"]
            for model, dataset in causal_runs(experiment)]


CLASSIFICATION_FIGURES = ("accuracy_by_layer", "layer_position_heatmap") + (
    ("selectivity_by_layer",) if config["probe"]["control_task"] else ()) + (
    ("probes_by_layer",) if len(CLASSIFIERS) > 1 else ()) + (
    tuple(f"{figure}{suffix}" for suffix in ("", *(["_text_mean"] if "text_mean" in POSITIONS else []))
          for figure in ("sites_by_layer", "site_layer_heatmap")) if len(SITES) > 1 else ())
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


def answer_figures(suffix):
    """The confusion matrix of every answered model x dataset, as .png or .html."""
    return [f"results/report/{model}/{dataset}/answer_confusion.{suffix}" for model in MODELS for dataset in DATASETS
            if answered(model, dataset)]


def directions():
    """The saved directions of every linear probe (`probe.save_directions`), else none."""
    if not config["probe"]["save_directions"]:
        return []
    return [path for probe in LINEAR_PROBES for path in _sweep(CLASSIFIED, f".{probe}.directions.safetensors")]


def every_figure(suffix):
    """Every figure of the report, as .png, .html, .svg or .pdf."""
    return (report_figures(suffix) + answer_figures(suffix) + causal_figures(suffix) + geometry_figures(suffix)
            + transfer_figures(suffix) + [f"results/report/relative_depth.{suffix}"])


def prepared_tables():
    return [f"results/data/{dataset}.parquet" for dataset in DATASETS]


# One extraction part per model x dataset: its shards' metadata name the weights, dtype and prompt
# (the report's methods section and the provenance manifest).
MODEL_DATASETS = [(model, dataset) for model in MODELS for dataset in DATASETS]


def model_parts():
    return [f"results/activations/{model}/{dataset}/{min(PARTS[(model, dataset)].values())}"
            for model, dataset in MODEL_DATASETS]


def all_targets(manifest=True):
    return ["results/metrics/probe_metrics.parquet", "results/metrics/vs_lexical.parquet",
            "results/report/index.html"] + directions() + (
        ["results/metrics/causal_metrics.parquet"] if causal_tables() else []) + (
        ["results/metrics/geometry.parquet"] if GEOMETRY else []) + (
        ["results/metrics/transfer.parquet"] if TRANSFER else []) + (
        ["results/report/provenance.json"] if manifest else [])
