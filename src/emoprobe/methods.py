"""The methods section of a run (results/report/methods.md, also shown in index.html), written
from the resolved config, the prepared tables' records and the shards' metadata, never by hand:
a researcher edits its prose, not its facts."""

from __future__ import annotations

import html
import inspect
import re
from collections.abc import Sequence

import polars as pl

from .bootstrap import bootstrap_ci
from .figures import Figure
from .manifest import package_versions, workflow_commit
from .shards import SITES

SITE_WORDS = {"residual": "the residual stream (each block's output, before the final norm; layer 0 is the "
                          "embedding output)",
              "attn_out": "what each block's attention sub-block adds to the residual stream",
              "mlp_out": "what each block's MLP sub-block adds to the residual stream"}
VERSIONED = ("torch", "transformers", "scikit-learn", "snakemake", "safetensors", "polars", "numpy")


def _count(n: int) -> str:
    return f"{n:,}"


def _layers(layers: Sequence[int]) -> str:
    layers = sorted(layers)
    if layers == list(range(layers[0], layers[-1] + 1)) and len(layers) > 2:
        return f"{layers[0]} to {layers[-1]}"
    return ", ".join(map(str, layers))


def _model(name: str, metadata: dict) -> str:
    weights = metadata.get("weights", "pretrained")
    origin = [f"source {metadata['source']}"]
    if metadata.get("revision"):
        origin.append(f"revision {metadata['revision']}")
    if metadata.get("commit"):
        origin.append(f"commit {metadata['commit']}")
    if metadata.get("file_sha256"):
        origin.append(f"file sha256 {metadata['file_sha256']}")
    quantised = (f"; weights quantised ({metadata['quantisation']}) and de-quantised to float for the forward pass"
                 if metadata.get("quantisation") else "")
    kind = "pretrained weights" if weights == "pretrained" else f"weights drawn at random ({weights}), not trained"
    return (f"**{name}**: `{metadata['model_id']}` ({', '.join(origin)}), {metadata['n_layers']} transformer blocks, "
            f"{kind}{quantised}; activations computed in {metadata['dtype']}.")


def _dataset(name: str, spec: dict, record: dict, table: pl.DataFrame, targets: Sequence[str]) -> str:
    files = ", ".join(f"`{f['path']}` (sha256 {f['sha256']})" for f in record.get("raw_files", [])) or "its files"
    dropped = "; ".join(f"{d['rows']:,} by `{d['option']}`" for d in record.get("dropped", [])) or "none"
    read = f"{_count(record['rows_read'])} rows read from {files}" if "rows_read" in record else f"read from {files}"
    kept = f"{_count(table.height)} texts kept"
    if table["label"].null_count() < table.height:
        counts = table["label"].value_counts().sort("label")
        kept += (f" in {counts.height} classes ("
                 + ", ".join(f"{label} {_count(n)}" for label, n in counts.iter_rows()) + ")")
    if targets:
        kept += f"; numeric targets: {', '.join(targets)}"
    options = [f"{key}: {value}" for key, value in spec.items()
               if key in ("max_per_class", "max_rows", "official_split", "labels", "duplicate_texts", "bad_rows",
                          "subset", "label_map") and value not in (None, False)]
    return (f"**{name}** (type {spec['type']}{', ' + ', '.join(options) if options else ''}): {read}; "
            f"dropped: {dropped}; {kept}.")


def _probes(config: dict) -> list[str]:
    probe = config["probe"]
    if probe["split"] == "holdout":
        scheme = (f"one unstratified train/test split (sklearn train_test_split, test size "
                  f"{probe['holdout_fraction']}, random_state {probe['holdout_seed']})")
    else:
        scheme = (f"{probe['cv_folds']}-fold cross-validation, stratified by label for classes, with every copy "
                  f"of a text in one fold (seed {config['seed']}); a dataset with `official_split` is fitted on its "
                  "train and dev rows and scored on its test rows")
    lines = [f"Split: {scheme}."]
    for entry in config["probes"]:
        settings = ", ".join(f"{key} {value}" for key, value in entry.items() if key not in ("name", "kind"))
        lines.append(f"Classification probe `{entry['name']}`: {entry['kind']} ({settings or 'defaults'}).")
    lines.append("Numeric targets: standardisation and ridge regression, the penalty chosen by inner "
                 "cross-validation on the training folds, scored by held-out R\u00b2.")
    defaults = inspect.signature(bootstrap_ci).parameters
    lines.append(f"Scores are the mean over folds; each 95% interval is the percentile interval of "
                 f"{_count(defaults['n_resamples'].default)} bootstrap resamples of the pooled held-out predictions "
                 "(rows drawn with replacement), and a difference between two scores is bootstrapped paired, on the "
                 "same resampled rows.")
    return lines


def _controls(config: dict, twins: dict[str, list[str]]) -> list[str]:
    lines = ["Chance (1 / number of classes) and the majority-class rate are drawn on every accuracy chart."]
    if config["lexical_baseline"]:
        lines.append("Lexical baseline: TF-IDF word and character n-grams of the text alone with logistic "
                     "regression (ridge for numeric targets), on the probes' own folds; a layer 'beats the words' "
                     "where the paired 95% CI of its difference to the baseline lies above 0.")
    if config["probe"]["shuffled_control"]:
        lines.append("Shuffled-label control: each probe refitted on labels permuted within the training folds.")
    if config["probe"]["control_task"]:
        lines.append(f"Control task ({config['probe']['control_task']}, Hewitt and Liang 2019): selectivity is the "
                     "probe's accuracy minus its accuracy on the control labels.")
    for model, copies in sorted(twins.items()):
        lines.append(f"Random-initialisation control of {model}: {', '.join(copies)} (same architecture and "
                     "tokenizer, weights drawn by the architecture's initialiser), extracted and probed alike.")
    return lines


def _optional(config: dict) -> list[str]:
    lines = []
    if config["answers"]:
        lines.append("The model's own answer: the argmax over the label words' first-token logits at the last "
                     "prompt position (Tak et al. 2025), scored against the labels with the same bootstrap.")
    causal = config["causal"]
    if causal["experiments"]:
        lines.append(f"Causal experiments ({', '.join(causal['experiments'])}) on the model's answer, on a seeded "
                     f"sample of at most {causal['max_texts']} texts stratified by label; settings: "
                     + "; ".join(f"{name}: {causal[name]}" for name in causal["experiments"] if name in causal) + ".")
    if config["geometry"]["enabled"]:
        lines.append(f"Probe geometry of the saved linear-probe directions; the RSA's p-value from "
                     f"{_count(config['geometry']['n_permutations'])} permutations of the emotions.")
    if config["transfer"]["enabled"]:
        lines.append(f"Cross-dataset transfer between datasets sharing at least {config['transfer']['min_shared']} "
                     "labels through their `label_map`: the linear probe trained on the source, scored on the target.")
    return lines


def methods_blocks(config: dict, template: str, layers: dict[str, list[int]], positions: Sequence,
                   datasets: dict[str, tuple[dict, pl.DataFrame, list[str]]], shards: dict[tuple[str, str], dict],
                   twins: dict[str, list[str]]) -> list[tuple[str, list[str]]]:
    """(heading, paragraphs) of the methods: `datasets` {name: (record, prepared table, targets)},
    `shards` {(model, dataset): a shard's metadata}, `layers` {model: layers read}."""
    models = {model: metadata for (model, _), metadata in sorted(shards.items())}
    dtypes = {(model, metadata["dtype"]) for (model, _), metadata in shards.items()}
    sites = [SITE_WORDS[site] for site in SITES if site in config["sites"]]
    blocks = [
        ("Models", [_model(model, metadata) for model, metadata in models.items()]),
        ("Datasets", [_dataset(name, config["datasets"][name], *datasets[name]) for name in sorted(datasets)]),
        ("Prompt", [f"Each text was inserted into this prompt template, verbatim: `{template}`."]),
        ("Activations", [
            f"Read at {'; '.join(sites)}; at layers {'; '.join(f'{_layers(read)} of {model}' for model, read in sorted(layers.items()))}; "
            f"at token positions {', '.join(map(str, positions))} counted from the end of the prompt (-1 is its last "
            f"token; text_mean and text_max pool over the text's own tokens); in "
            f"{', '.join(sorted({dtype for _, dtype in dtypes}))}."]),
        ("Probes", _probes(config)),
        ("Baselines and controls", _controls(config, twins)),
    ]
    if optional := _optional(config):
        blocks.append(("Further analyses", optional))
    versions = package_versions()
    commit = workflow_commit()
    state = "unknown" if commit["commit"] is None else commit["commit"] + (" (with uncommitted changes)"
                                                                           if commit["dirty"] else "")
    blocks.append(("Software", [", ".join(f"{name} {versions[name]}" for name in VERSIONED if versions.get(name))
                                + f"; emoprobe workflow commit {state}."]))
    return blocks


def figures_block(figures: Sequence[Figure], root) -> tuple[str, list[str]]:
    """Each figure's file, paper width, title and legend: the caption to paste."""
    return ("Figures", [f"`{figure.stem.relative_to(root).as_posix()}` (.svg, .pdf: {figure.width} width): "
                        f"{figure.title}." + (" " + "; ".join(figure.legend) + "." if figure.legend else "")
                        for figure in figures])


def to_markdown(blocks: list[tuple[str, list[str]]]) -> str:
    lines = ["# Methods", "", "_Generated by emoprobe from this run's config, prepared tables and shard metadata._", ""]
    for heading, paragraphs in blocks:
        lines += [f"## {heading}", ""]
        bullet = heading in ("Models", "Datasets", "Figures")
        lines += [f"- {p}" if bullet else p + "\n" for p in paragraphs]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def to_html(blocks: list[tuple[str, list[str]]]) -> str:
    def inline(text: str) -> str:
        text = html.escape(text)
        text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
        return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)

    parts = ["<h2>Methods</h2><p><em>Generated from this run's config, prepared tables and shard metadata; "
             "also in methods.md.</em></p>"]
    for heading, paragraphs in blocks:
        if heading == "Figures":
            continue  # every figure is on the page with its title
        parts.append(f"<h3>{html.escape(heading)}</h3>" + "".join(f"<p>{inline(p)}</p>" for p in paragraphs))
    return "".join(parts)
