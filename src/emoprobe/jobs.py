"""One function per workflow rule; workflow/scripts/*.py only hand the `snakemake` object over.

Each job logs to its rule's log file; an EmoprobeError ends the job with its message (no
traceback) and a non-zero exit, and Snakemake removes the job's incomplete outputs.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl

from .errors import EmoprobeError
from .positions import Position, position_label

log = logging.getLogger("emoprobe")


def run(smk, job: Callable) -> None:
    """Run `job(smk)` with logging to smk.log[0] and to stderr."""
    handlers = [logging.StreamHandler(sys.stderr)]
    log_file = None
    if smk.log:
        Path(smk.log[0]).parent.mkdir(parents=True, exist_ok=True)
        log_file = open(smk.log[0], "w", encoding="utf-8")  # noqa: SIM115 (lives for the job)
        handlers.append(logging.StreamHandler(log_file))
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started = time.perf_counter()
    try:
        job(smk)
    except EmoprobeError as exc:
        log.error("%s", exc)
        sys.exit(1)
    except Exception:
        log.exception("unexpected failure")
        raise
    log.info("done in %.1f s", time.perf_counter() - started)


def prepare_dataset(smk) -> None:
    from .data.prepare import prepare, target_columns
    from .data.sources import PREPARED_RECORD, recording_reads

    p = smk.params
    # p.cv_folds is set only where it can change the table (bad_rows: drop drops classes with
    # fewer texts than folds); otherwise the config's value just lets such classes fail early.
    probe = smk.config["probe"]
    cv_folds = p.cv_folds if p.cv_folds is not None else None if probe["split"] == "holdout" else probe["cv_folds"]
    record = {}
    with recording_reads() as reads:
        table = prepare(p.dataset, p.template, p.seed, smk.config["data_dir"], smk.config["download_dir"],
                        cv_folds=cv_folds, record=record)
    record["raw_files"] = [{"path": path, "sha256": digest} for path, digest in sorted(reads.items())]
    log.info("prepared %d rows, labels: %s, targets: %s", table.height,
             dict(table["label"].value_counts().sort("label").iter_rows()), target_columns(table))
    table.write_parquet(smk.output.table, metadata={PREPARED_RECORD: json.dumps(record)})


# extraction.batch_size / batch_tokens: "auto" by device (see the config schema).
AUTO_BATCH_LIMITS = {"cuda": {"batch_size": 256, "batch_tokens": 16384}, "cpu": {"batch_size": 64, "batch_tokens": 1024}}


def extraction_plan(device, threads: int, config: dict) -> dict[str, int]:
    """Batch limits (`extraction` config values, "auto" by device) and concurrent batch streams:
    on a CPU one single-threaded stream per thread, which keeps every core busy between the
    matmuls (2-13% faster than one stream on all threads, benchmarks/bench_extraction.py);
    on a GPU one stream."""
    auto = AUTO_BATCH_LIMITS["cuda" if device.type == "cuda" else "cpu"]
    plan = {key: value if (value := config[key]) != "auto" else auto[key] for key in ("batch_size", "batch_tokens")}
    return {**plan, "streams": threads if device.type == "cpu" else 1}


def extract_activations(smk) -> None:
    import torch

    from . import answers, models
    from .prompts import template_parts
    from .data.sources import sha256_of
    from .extract import extract_to_shards, keep_freed_memory_mapped
    from .positions import is_pooled
    from .shards import shard_file

    p = smk.params
    torch.set_num_threads(max(1, smk.threads))
    table = pl.read_parquet(smk.input.table)
    device = models.pick_device(p.device)
    dtype = models.resolve_dtype(p.dtype, device.type)  # p.dtype is "auto" only with extraction.device: auto
    file_sha256 = models.check_pinned_sha256(p.model)  # before loading: a wrong file is refused at once
    tokenizer, model, resolved = models.load(p.model, device, dtype)
    # Batch limits and streams are not params: they change results only by float rounding, so no reruns.
    plan = extraction_plan(device, torch.get_num_threads(), smk.config["extraction"])
    log.info("model %s (commit %s, file sha256 %s) on %s in %s, %d texts, layers %s, sites %s, positions %s, batches "
             "of at most %d texts and %d tokens, %d at a time", resolved.model_id, resolved.commit, file_sha256, device,
             dtype, table.height, p.layers, p.sites, p.positions, plan["batch_size"], plan["batch_tokens"],
             plan["streams"])
    keep_freed_memory_mapped()
    out_dir = Path(smk.output.shards)
    metadata = {
        "model_name": smk.wildcards.model, "model_id": resolved.model_id, "source": resolved.source,
        "revision": resolved.revision or "", "commit": resolved.commit or "", "file_sha256": file_sha256 or "",
        "quantisation": resolved.quantisation or "", "dtype": dtype,
        "weights": f"random_init(seed={p.model['init_seed']})" if p.model.get("random_init") else "pretrained",
        "n_layers": str(p.n_layers), "dataset": smk.wildcards.dataset,
        "prompt_template": p.template, "prepared_sha256": sha256_of(smk.input.table),
    }
    words = tokens = None
    if p.answers is not None:  # the dataset's answer_words ({} for the label names)
        classes = dict(table.select("label_id", "label").unique().sort("label_id").iter_rows())
        words = answers.label_words(list(classes.values()), p.answers)
        context = answers.prompt_ending(p.template)
        tokens = answers.label_tokens(tokenizer, words, context)
        log.info("answers: logits of the label words' first tokens after %r %s at position -1", context,
                 {label: (words[label], token) for label, token in tokens.items()})
    start = len(template_parts(p.template)[0])  # where each prompt's text begins (for the pooled positions)
    text_chars = [(start, start + len(text)) for text in table["text"]] if any(map(is_pooled, p.positions)) else None
    read = extract_to_shards(model, tokenizer, table["prompt"].to_list(), table["id"].to_list(),
                             p.layers, p.positions, plan["batch_size"],
                             lambda layer, site: str(out_dir / shard_file(layer, site)), metadata,
                             batch_tokens=plan["batch_tokens"], streams=plan["streams"],
                             answer_tokens=list(tokens.values()) if tokens else None, sites=p.sites,
                             text_chars=text_chars)
    if read is not None:
        answered = answers.answer_table(table["id"].to_list(), table["label_id"].to_numpy(), classes, *read,
                                        tokenizer, tokens)
        partial = out_dir / f"{answers.ANSWERS_FILE}.partial"
        answers.write_answers(answered, str(partial), words, tokens)
        partial.rename(out_dir / answers.ANSWERS_FILE)
        log.info("the model's answer: accuracy %.3f on %d texts; top-1 token a label word's for %.3f",
                 answered["correct"].mean(), answered.height, answered["top1_is_label_word"].mean())


def _probe_inputs(smk) -> tuple:
    """(prepared table, shard metadata, {position: X [N, H]} at the job's layer and site for each of
    its positions, prepared-table row of each of the N rows), the shard checked to match the table.
    With the dataset's `subset: correct_only`, only the rows subset.correct_only_rows keeps."""
    from .subset import correct_only_rows
    from .data.sources import sha256_of
    from .parts import parse_positions
    from .shards import check_metadata, read_metadata, read_position, shard_file

    shard = Path(smk.input.shards) / shard_file(smk.wildcards.layer, smk.params.site)
    table = pl.read_parquet(smk.input.table)
    metadata = read_metadata(shard)
    check_metadata(shard, metadata, {"n_rows": str(table.height),
                                     "prepared_sha256": sha256_of(smk.input.table),
                                     "layer": smk.wildcards.layer, "site": smk.params.site})
    held = json.loads(metadata["positions"])
    wanted = parse_positions(smk.wildcards.positions)
    if missing := sorted(set(wanted) - set(held)):
        raise EmoprobeError(f"{shard} holds positions {held}, not {missing}; delete its folder and rerun extraction.")
    rows = np.arange(table.height)
    if smk.params.subset == "correct_only":
        rows = correct_only_rows(pl.read_parquet(smk.input.answers), table, smk.params.subset_checks)
        log.info("subset correct_only: %d of %d texts, the ones %s answered correctly", len(rows), table.height,
                 smk.wildcards.model)
    return (table[rows], metadata, {position: read_position(shard, held.index(position))[rows] for position in wanted},
            rows)


def _job_folds(table: pl.DataFrame, split: dict, seed: int, labels=None):
    """The job's (train, test) pairs: `split` (the rule's split param) kfold, k-fold CV over all
    rows, all copies of a text in one fold (stratified by `labels` when given); holdout, sklearn's
    train_test_split; official, the dataset's one (train + dev, test) pair."""
    from .folds import assign_folds, holdout_split

    if split["kind"] == "official" and "split" not in table.columns:
        raise EmoprobeError("official_split is on but the prepared table has no `split` column; rerun "
                            "prepare_dataset.")
    if split["kind"] == "holdout":
        folds = holdout_split(table["text"].to_numpy(), split["fraction"], split["seed"])
        if labels is not None and len(trained := np.unique(labels[folds[0][0]])) < 2:
            raise EmoprobeError(f"the holdout split's {len(folds[0][0])} training rows hold only label id "
                                f"{trained.tolist()}; a classification probe needs two. Use more texts, or another "
                                "probe.holdout_seed.")
        return folds
    if split["kind"] == "official":
        return assign_folds(table["text"].to_numpy(), seed=seed, labels=labels, split=table["split"].to_list())
    return assign_folds(table["text"].to_numpy(), split["cv_folds"], seed, labels=labels)


def _keyed(scores: pl.DataFrame, model: str | None, dataset: str, layer: int | None, position: Position | None,
           n_layers: int | None, n_classes: int | None, dtype: str | None, n_rows: int,
           site: str | None = None) -> pl.DataFrame:
    """Per-fold scores with the metrics table's keys: model, dataset, target, layer, site, position,
    ..., n_layers, n_classes, the shards' extraction dtype (model, layer, site, position, n_layers
    and dtype null for the lexical baseline, which reads no model) and n_rows, the texts scored;
    the position as positions.position_label writes it."""
    return scores.select(
        pl.lit(model, dtype=pl.String).alias("model"), pl.lit(dataset).alias("dataset"),
        pl.col("target"), pl.lit(layer, dtype=pl.Int64).alias("layer"), pl.lit(site, dtype=pl.String).alias("site"),
        pl.lit(position_label(position), dtype=pl.String).alias("position"),
        "probe", "fold", "metric", "value", "pooled", "ci_low", "ci_high",
        pl.lit(n_layers, dtype=pl.Int64).alias("n_layers"),
        pl.lit(n_classes, dtype=pl.Int64).alias("n_classes"),
        pl.lit(dtype, dtype=pl.String).alias("dtype"),
        pl.lit(n_rows, dtype=pl.Int64).alias("n_rows"),
    )


def _write(table: pl.DataFrame, path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    table.write_parquet(path)


def _fit_each_position(smk, activations: dict, metadata: dict, n_classes: int | None, fit, summarise,
                       rows: np.ndarray) -> None:
    """fit(X) -> a CrossValidation at each of the job's positions in turn; logs summarise(scores)
    per position and writes all positions' keyed scores and their held-out predictions (with a
    `position` column first, `row` the prepared-table row: X's rows are its `rows`) to the job's outputs."""
    from threadpoolctl import threadpool_limits

    scores, predictions = [], []
    with threadpool_limits(max(1, smk.threads)):
        for position, X in activations.items():
            result = fit(X)
            scores.append(_keyed(result.scores, smk.wildcards.model, smk.wildcards.dataset, int(smk.wildcards.layer),
                                 position, int(metadata["n_layers"]), n_classes, metadata["dtype"], len(rows),
                                 smk.params.site))
            held_out = result.predictions.with_columns(row=pl.Series(rows)[result.predictions["row"]])
            predictions.append(held_out.select(pl.lit(position_label(position)).alias("position"), pl.all()))
            log.info("layer %s (%s) position %s: %s", smk.wildcards.layer, smk.params.site, position,
                     summarise(scores[-1]))
    _write(pl.concat(scores), smk.output.scores)
    _write(pl.concat(predictions), smk.output.predictions)


def fit_probe(smk) -> None:
    """One `probes` entry at one layer and each of the job's positions, with its controls (and,
    in the first entry's jobs, the majority baseline)."""
    from .controls import control_labels
    from .probes import cross_validate_probe, leakage, majority_rate

    p = smk.params
    entry = dict(p.probe)
    name, kind = entry.pop("name"), entry.pop("kind")
    table, metadata, activations, rows = _probe_inputs(smk)
    y = table["label_id"].to_numpy()
    folds = _job_folds(table, p.split, p.seed, labels=y)
    control = control_labels(p.control_task, table["text"].to_list(), y, p.seed) if p.control_task else None
    majority = majority_rate(y, folds)

    def fit(X):
        result = cross_validate_probe(X, y, seed=p.seed, folds=folds, groups=table["text"].to_numpy(),
                                      shuffled=p.shuffled_control, control=control, name=name, kind=kind,
                                      majority=p.majority, **entry)
        return result._replace(scores=result.scores.with_columns(target=pl.lit("label")))

    def summarise(scores):
        if warning := leakage(scores, majority, name):
            log.warning("%s", warning)
        pooled = {probe: scores.filter((pl.col("probe") == probe) & (pl.col("metric") == "accuracy"))
                  for probe in scores["probe"].unique(maintain_order=True)}
        accuracy = pooled[name]
        others = [probe for probe in pooled if probe != name]
        return (f"{name} accuracy {accuracy['value'].mean():.3f} +- {accuracy['value'].std() or 0.0:.3f} over folds, "
                f"pooled {accuracy['pooled'][0]:.3f} (95% CI {accuracy['ci_low'][0]:.3f}-{accuracy['ci_high'][0]:.3f})"
                f"; majority rate {majority:.3f}"
                + "".join(f"; {probe} {pooled[probe]['pooled'][0]:.3f}" for probe in others))

    _fit_each_position(smk, activations, metadata, table["label_id"].n_unique(), fit, summarise, rows)


def save_directions(smk) -> None:
    """A linear `probes` entry fitted on all rows at one layer and each of the job's positions,
    saved in the model's units (probes.fit_directions) as safetensors."""
    from safetensors.numpy import save_file

    from .probes import fit_directions

    p = smk.params
    table, metadata, activations, _ = _probe_inputs(smk)
    y = table["label_id"].to_numpy()
    classes = np.unique(y)
    label_of = dict(table.select("label_id", "label").unique().iter_rows())
    fitted = fit_directions(np.stack(list(activations.values())), y, p.probe["C"], p.probe["max_iter"],
                            p.probe["backend"], p.seed, p.probe["standardise"])
    provenance = {key: metadata[key] for key in ("model_name", "model_id", "commit", "file_sha256", "quantisation",
                                                 "dtype", "n_layers", "dataset", "prepared_sha256", "prompt_template")}
    info = {"probe": p.probe["name"], "layer": smk.wildcards.layer, "site": p.site,
            "positions": json.dumps(list(activations)),
            "label_ids": json.dumps(classes.tolist()),
            "labels": json.dumps([label_of[i] for i in classes.tolist()]),
            "weight_rows": "one per class" if len(classes) > 2 else "one: the logit of the second class",
            "units": "raw activations: logits = x @ weight[p].T + bias[p]; standardised z = (x - mean[p]) / scale[p]",
            "C": str(p.probe["C"]), "backend": p.probe["backend"], "standardise": str(p.probe["standardise"]),
            "subset": p.subset, "n_rows": str(table.height)}
    Path(smk.output.directions).parent.mkdir(parents=True, exist_ok=True)
    save_file(fitted, smk.output.directions, metadata=provenance | info)
    log.info("saved %s directions at layer %s (%s), positions %s: weight %s", p.probe["name"], smk.wildcards.layer,
             p.site, list(activations), fitted["weight"].shape)


def fit_ridge(smk) -> None:
    """Ridge probes for all of the dataset's numeric targets at one layer and each of the job's positions."""
    from .data.prepare import target_columns
    from .regression import cross_validate_ridge

    p = smk.params
    table, metadata, activations, rows = _probe_inputs(smk)
    targets = target_columns(table)
    if not targets:
        raise EmoprobeError(f"{smk.input.table} has no regression target columns; rerun prepare_dataset.")
    values, texts = table.select(targets).to_numpy(), table["text"].to_numpy()
    folds = _job_folds(table, p.split, p.seed)

    def summarise(scores):
        r2 = (scores.filter((pl.col("probe") == "ridge") & (pl.col("metric") == "r2"))
              .group_by("target", maintain_order=True).agg(pl.col("value").mean()))
        return "R2 " + ", ".join(f"{target} {value:.3f}" for target, value in r2.iter_rows())

    _fit_each_position(smk, activations, metadata, None,
                       lambda X: cross_validate_ridge(X, values, targets, seed=p.seed, groups=texts, folds=folds),
                       summarise, rows)


def lexical_baseline(smk) -> None:
    """The lexical baseline of one dataset: classes (rule lexical_baseline) or all numeric
    targets (rule lexical_ridge), on the probes' folds, in the probe files' formats."""
    from .data.prepare import target_columns
    from .lexical import cross_validate_lexical, cross_validate_lexical_ridge

    p = smk.params
    table = pl.read_parquet(smk.input.table)
    texts = table["text"].to_list()
    if smk.rule == "lexical_baseline":
        y = table["label_id"].to_numpy()  # prepare_dataset guarantees two classes or more
        result = cross_validate_lexical(texts, y, _job_folds(table, p.split, p.seed, labels=y), p.seed)
        result = result._replace(scores=result.scores.with_columns(target=pl.lit("label")))
        n_classes = table["label_id"].n_unique()
    else:
        targets = target_columns(table)
        result = cross_validate_lexical_ridge(texts, table.select(targets).to_numpy(), targets,
                                              _job_folds(table, p.split, p.seed), p.seed)
        n_classes = None
    scores = _keyed(result.scores, None, smk.wildcards.dataset, None, None, None, n_classes, None, table.height)
    log.info("lexical baseline on %d rows: %s", table.height, ", ".join(
        f"{target} {metric} {value:.3f} [{low:.3f}, {high:.3f}]" for target, metric, value, low, high in
        scores.group_by("target", "metric", maintain_order=True)
        .agg(pl.col("pooled", "ci_low", "ci_high").first()).iter_rows()))
    _write(scores, smk.output.scores)
    _write(result.predictions, smk.output.predictions)


def collect_answers(smk) -> None:
    """One model x dataset's answers, read by one of its extraction parts, copied (with their
    parquet metadata, the label words) to results/answers: the file correct_only probes read,
    rewritten only when that part is."""
    import shutil

    part = Path(smk.input.part)
    source = part / smk.params.file
    if not source.is_file():
        raise EmoprobeError(f"{part} holds no {smk.params.file}: it was extracted without answers. Rerun its "
                            f"extraction: rm -r {part} && snakemake {part}")
    Path(smk.output.answers).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, smk.output.answers)


def score_answers(smk) -> None:
    """One model x dataset's answers scored in the probe files' format (probe "answer", layer and
    position null) and counted per class (with `subset: correct_only`, also how many texts the
    probes keep)."""
    from .answer_metrics import answer_scores, class_counts
    from .shards import read_metadata
    from .subset import correct_only_rows

    p = smk.params
    table = pl.read_parquet(smk.input.table)
    answered = pl.read_parquet(smk.input.answers)
    kept = table[correct_only_rows(answered, table, p.subset_checks)] if p.subset == "correct_only" else None
    extraction = read_metadata(next(Path(smk.input.part).glob("layer_*.safetensors")))
    scores = answer_scores(answered, p.seed).with_columns(target=pl.lit("label"))
    _write(_keyed(scores, smk.wildcards.model, smk.wildcards.dataset, None, None, int(extraction["n_layers"]),
                  table["label_id"].n_unique(), extraction["dtype"], table.height), smk.output.scores)
    _write(class_counts(answered, kept).select(pl.lit(smk.wildcards.model).alias("model"),
                                               pl.lit(smk.wildcards.dataset).alias("dataset"), pl.all()),
           smk.output.classes)
    log.info("%s on %s: answer accuracy %.3f on %d texts (label words %s)%s", smk.wildcards.model,
             smk.wildcards.dataset, answered["correct"].mean(), answered.height,
             pl.read_parquet_metadata(smk.input.answers).get("answer_words"),
             f"; correct_only keeps {kept.height}" if kept is not None else "")


def compare_with_lexical(smk) -> None:
    """One model x dataset's probes against the dataset's lexical baseline, row for row."""
    from .compare import compare_with_lexical as compare
    from .data.prepare import target_columns

    table = pl.read_parquet(smk.input.table)
    truth = {"label": table["label_id"].to_numpy()} if "label_id" in table.columns else {}
    truth |= {target: table[target].to_numpy().astype(np.float64) for target in target_columns(table)}
    probe_predictions = [pl.read_parquet(path).with_columns(layer=pl.lit(layer, dtype=pl.Int64), site=pl.lit(site))
                         for path, layer, site in zip(smk.input.predictions, smk.params.layers, smk.params.sites)]
    comparisons = []
    for kind in ("classes", "targets"):
        files = [f for f, k in zip(probe_predictions, smk.params.kinds) if k == kind]
        if files:
            lexical = pl.read_parquet(getattr(smk.input, f"lexical_{kind}"))
            comparisons.append(compare(pl.concat(files, how="diagonal"), lexical, truth, smk.params.classifiers,
                                       smk.params.seed))
    result = pl.concat(comparisons, how="diagonal").select(
        pl.lit(smk.wildcards.model).alias("model"), pl.lit(smk.wildcards.dataset).alias("dataset"), pl.all())
    beats = result.filter("beats_lexical")
    log.info("%d of %d (layer, site, position, probe, target) beat the lexical baseline (paired 95%% CI above 0)",
             beats.height, result.height)
    _write(result.sort("target", "probe", "site", "position", "layer"), smk.output.comparison)


def _read_shard(shard: str, table_path: str, n_rows: int, layer: int, site: str, positions) -> np.ndarray:
    """[P, N, H]: a shard's activations at `positions` over the whole dataset, the shard checked to
    match the prepared table (`table_path`, of n_rows rows)."""
    from .data.sources import sha256_of
    from .shards import check_metadata, read_metadata, read_position

    metadata = read_metadata(shard)
    check_metadata(shard, metadata, {"n_rows": str(n_rows), "prepared_sha256": sha256_of(table_path),
                                     "layer": str(layer), "site": site})
    held = json.loads(metadata["positions"])
    return np.stack([read_position(shard, held.index(position)) for position in positions])


def _site_values(smk, table: pl.DataFrame):
    """Yield (layer, site, [N, H]) of the job's shards (params.shards): each site's activations at
    position -1 over the whole dataset."""
    for layer, site, shard in smk.params.shards:
        yield layer, site, _read_shard(shard, smk.input.table, table.height, layer, site, [-1])[0]


def causal_experiment(smk) -> None:
    """One causal experiment (wildcards.experiment: ablation or patching) of a model x dataset on a
    seeded stratified sample of its texts (interventions): one row per (centre layer, site[, kind],
    metric) with its bootstrap CI, results/causal/{model}/{dataset}/{experiment}.parquet."""
    import torch

    from . import models
    from .interventions.plan import sample_texts
    from .interventions.runner import EditRunner

    p = smk.params
    torch.set_num_threads(max(1, smk.threads))
    table = pl.read_parquet(smk.input.table)
    answered = pl.read_parquet(smk.input.answers)
    tokens = json.loads(pl.read_parquet_metadata(smk.input.answers)["answer_token_ids"])  # in label-id order
    rows = sample_texts(answered, p.settings.get("max_texts") or smk.config["causal"]["max_texts"], p.seed)
    class_ids, _ = _classes(table)
    columns = np.searchsorted(class_ids, table["label_id"].to_numpy())  # each row's label as a logit column
    device = models.pick_device(p.device)
    dtype = models.resolve_dtype(p.dtype, device.type)
    tokenizer, model, resolved = models.load(p.model, device, dtype)
    runner = EditRunner(model, tokenizer, list(tokens.values()), max_rows=smk.config["causal"]["max_rows"])
    # the sampled texts only, in sample order: token_lists[i] is row rows[i]
    token_lists = tokenizer(table["prompt"].to_numpy()[rows].tolist(), add_special_tokens=True)["input_ids"]
    log.info("%s of %s on %s: %d texts (%d the model answered correctly), on %s in %s", smk.wildcards.experiment,
             resolved.model_id, smk.wildcards.dataset, len(rows), int(answered["correct"].to_numpy()[rows].sum()),
             device, dtype)
    clean = runner.run(token_lists, [None])[:, 0]
    agree = float((class_ids[clean.argmax(1)] == answered["answer_id"].to_numpy()[rows]).mean())
    accuracy = float((clean.argmax(1) == columns[rows]).mean())
    log.info("clean answers equal the extraction's for %.3f of the sampled texts; clean accuracy %.3f", agree, accuracy)
    experiment = {"ablation": _ablation, "patching": _patching, "heads": _heads, "promotion": _promotion,
                  "steering": _steering}[smk.wildcards.experiment]
    out, n_units = experiment(smk, table, rows, columns, token_lists, runner, clean)
    result = pl.DataFrame(out).select(
        pl.lit(smk.wildcards.model).alias("model"), pl.lit(smk.wildcards.dataset).alias("dataset"),
        pl.lit(smk.wildcards.experiment).alias("experiment"), pl.all(), pl.lit(n_units).alias("n_texts"),
        pl.lit(accuracy).alias("clean_accuracy"), pl.lit(int(p.n_layers)).alias("n_layers"))
    _write(result, smk.output.table)


def _ablation(smk, table, rows, columns, token_lists, runner, clean) -> tuple[list[dict], int]:
    """Ablation's rows (interventions.ablation) and the number of texts they are measured on."""
    import torch

    from .interventions.ablation import ablation_edits
    from .interventions.effects import effects
    from .interventions.plan import donor_rows

    p, settings = smk.params, smk.params.settings
    means, donors = {}, {}
    donor = donor_rows(rows, table.height, p.seed)
    for layer, site, values in _site_values(smk, table):
        means[layer, site] = torch.as_tensor(values.mean(axis=0, dtype=np.float64), dtype=torch.float32)
        donors[layer, site] = torch.as_tensor(values[donor])
    edits = ablation_edits(p.centres, settings["sites"], settings["kinds"], settings["span"], p.n_layers, means,
                           donors)
    log.info("%d ablations", len(edits))
    logits = runner.run(token_lists, [edit for *_, edit in edits])
    out = [{"layer": centre, "site": site, "kind": kind, "span": f"{edit.span[0]}-{edit.span[-1]}", "metric": metric,
            "value": value, "ci_low": low, "ci_high": high}
           for index, (centre, site, kind, edit) in enumerate(edits)
           for metric, (value, low, high) in effects(clean, logits[:, index], columns[rows], p.seed).items()]
    worst = min((row for row in out if row["metric"] == "accuracy_change"), key=lambda row: row["value"])
    log.info("largest accuracy drop: %s %s at layers %s: %.3f [%.3f, %.3f]", worst["site"], worst["kind"],
             worst["span"], worst["value"], worst["ci_low"], worst["ci_high"])
    return out, len(rows)


def _patching(smk, table, rows, columns, token_lists, runner, clean) -> tuple[list[dict], int]:
    """Activation patching's rows (interventions.patching) and the number of pairs they are measured on."""
    import torch

    from .interventions.effects import patching_effects
    from .interventions.patching import patch_edits
    from .interventions.plan import text_pairs

    p, settings = smk.params, smk.params.settings
    sources, targets = text_pairs(columns[rows], settings["n_pairs"], p.seed)  # indices into rows
    activations = {(layer, site): torch.as_tensor(values[rows[sources]]) for layer, site, values in _site_values(smk, table)}
    edits = patch_edits(p.centres, settings["sites"], settings["span"], p.n_layers, activations)
    log.info("%d pairs x %d patches", len(targets), len(edits))
    logits = runner.run([token_lists[target] for target in targets], [edit for *_, edit in edits])
    out = [{"layer": centre, "site": site, "kind": "source", "span": f"{edit.span[0]}-{edit.span[-1]}",
            "metric": metric, "value": value, "ci_low": low, "ci_high": high}
           for index, (centre, site, edit) in enumerate(edits)
           for metric, (value, low, high) in patching_effects(clean[targets], clean[sources], logits[:, index],
                                                              columns[rows[sources]], columns[rows[targets]],
                                                              p.seed).items()]
    best = max((row for row in out if row["metric"] == "normalised_logit_difference"), key=lambda row: row["value"])
    log.info("largest normalised logit difference: %s at layers %s: %.3f [%.3f, %.3f]", best["site"], best["span"],
             best["value"], best["ci_low"], best["ci_high"])
    return out, len(targets)


def _heads(smk, table, rows, columns, token_lists, runner, clean) -> tuple[list[dict], int]:
    """Head knockout's rows (interventions.heads): one per (layer, head, metric)."""
    from .extract import transformer_blocks
    from .interventions.edits import HEADS, attention_heads
    from .interventions.effects import effects
    from .interventions.heads import head_edits

    p = smk.params
    blocks = transformer_blocks(runner.model)
    _, n_heads, width = attention_heads(runner.model, blocks[0])
    edits = head_edits(p.centres, n_heads, width)
    log.info("%d head knockouts (%d heads of width %d per layer)", len(edits), n_heads, width)
    logits = runner.run(token_lists, [edit for *_, edit in edits])
    out = [{"layer": layer, "site": HEADS, "kind": "zero", "head": head, "span": f"{layer}-{layer}", "metric": metric,
            "value": value, "ci_low": low, "ci_high": high}
           for index, (layer, head, _) in enumerate(edits)
           for metric, (value, low, high) in effects(clean, logits[:, index], columns[rows], p.seed).items()]
    worst = sorted((row for row in out if row["metric"] == "accuracy_change"), key=lambda row: row["value"])[:5]
    log.info("largest accuracy drops: %s", "; ".join(f"layer {row['layer']} head {row['head']} {row['value']:.3f} "
                                                       f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}]" for row in worst))
    return out, len(rows)


def _residual_norms(values: np.ndarray) -> float:
    """The median Euclidean norm of a layer's residual-stream activations [N, H]."""
    return float(np.median(np.linalg.norm(values.astype(np.float64), axis=1)))


def _classes(table: pl.DataFrame) -> tuple[np.ndarray, dict[int, str]]:
    """The table's label ids sorted (the order of the probes' classes and of the label-word logit
    columns), and each id's label."""
    return np.sort(table["label_id"].unique().to_numpy()), dict(table.select("label_id", "label").unique().iter_rows())


def _saved_weight(path, position: int, class_ids: np.ndarray, needed_for: str) -> np.ndarray:
    """The saved probe weight [K', H] at `position` of a directions file (save_directions), which
    must hold one direction per class of `class_ids`."""
    from safetensors import safe_open

    with safe_open(path, "numpy") as file:
        metadata = file.metadata()
        weight = file.get_tensor("weight")[json.loads(metadata["positions"]).index(position)]
    if (fitted := json.loads(metadata["label_ids"])) != class_ids.tolist():
        raise EmoprobeError(f"{path} holds directions for label ids {fitted}, the dataset has {class_ids.tolist()}: "
                            f"{needed_for} needs one per emotion (a correct_only subset can lose a class; probe "
                            "`subset: all`).")
    return weight


def _promotion(smk, table, rows, columns, token_lists, runner, clean) -> tuple[list[dict], int]:
    """Emotion promotion's rows (interventions.promotion): per (centre layer, alpha, direction
    kind, emotion or "all", metric)."""
    from .interventions.effects import promotion_effects
    from .geometry import probe_directions
    from .interventions.promotion import RANDOM, promotion_edits, random_directions

    p, settings = smk.params, smk.params.settings
    class_ids, label_of = _classes(table)
    norms, directions, width = {}, {}, None
    for layer, _, values in _site_values(smk, table):
        norms[layer], width = _residual_norms(values), values.shape[1]
    for layer, path in p.directions:
        directions[layer] = probe_directions(_saved_weight(path, -1, class_ids, "promotion"), len(class_ids))
    labels = settings["emotions"] or [label_of[i] for i in class_ids]
    if unknown := sorted(set(labels) - set(label_of.values())):
        raise EmoprobeError(f"`causal.promotion.emotions` names {unknown}, which are not labels of "
                            f"{smk.wildcards.dataset} ({sorted(label_of.values())}).")
    emotions = np.array([int(np.searchsorted(class_ids, next(i for i, name in label_of.items() if name == label)))
                         for label in labels])
    random = random_directions(sorted(norms), width, p.seed)
    edits = promotion_edits(p.centres, emotions, settings["alphas"], settings["span"], p.n_layers, directions, norms,
                            random)
    log.info("%d promotions (%d emotions and a random control x %d alphas x %d centres), median residual norms %s",
             len(edits), len(emotions), len(settings["alphas"]), len(p.centres),
             {layer: round(norm, 1) for layer, norm in norms.items()})
    logits = runner.run(token_lists, [edit for *_, edit in edits])
    out = []
    for centre in p.centres:
        for alpha in settings["alphas"]:
            index = {emotion: i for i, (c, emotion, a, _) in enumerate(edits) if c == centre and a == alpha}
            span = edits[index[RANDOM]][3].span
            for kind, runs in (("probe", [index[emotion] for emotion in emotions]), ("random", [index[RANDOM]] * len(emotions))):
                scored = promotion_effects(clean, logits[:, runs], emotions, p.seed)
                out += [{"layer": centre, "site": "residual", "kind": kind,
                         "emotion": "all" if column is None else label_of[int(class_ids[column])], "alpha": alpha,
                         "span": f"{span[0]}-{span[-1]}", "metric": metric, "value": value, "ci_low": low,
                         "ci_high": high}
                        for column, metrics in scored.items() for metric, (value, low, high) in metrics.items()]
    best = max((row for row in out if row["kind"] == "probe" and row["emotion"] == "all"), key=lambda row: row["value"])
    log.info("highest promotion rate over all emotions: alpha %s at layers %s: %.3f [%.3f, %.3f]", best["alpha"],
             best["span"], best["value"], best["ci_low"], best["ci_high"])
    return out, len(rows)


def _steering(smk, table, rows, columns, token_lists, runner, clean) -> tuple[list[dict], int]:
    """Appraisal steering's rows (interventions.steering): the expected changes (layer null), then per
    (centre layer, appraisal or "random", sign) the agreement and each emotion's logprob_change."""
    from .interventions.promotion import random_directions
    from .interventions.steering import expected_changes, ridge_directions, steering_edits, surgery
    from .interventions.effects import steering_effects

    p, settings = smk.params, smk.params.settings
    appraisals = settings["appraisals"]
    class_ids, label_of = _classes(table)
    names = [label_of[int(i)] for i in class_ids]
    ratings = table.select(appraisals).to_numpy().astype(np.float64)
    texts = table["text"].to_numpy()
    norms, directions, width = {}, {}, None
    for layer, _, values in _site_values(smk, table):
        norms[layer], width = _residual_norms(values), values.shape[1]
        directions[layer] = ridge_directions(values.astype(np.float64), ratings, texts)
        if settings["surgery"]:
            directions[layer] = surgery(directions[layer])
    kind = "surgery" if settings["surgery"] else "ridge"
    expected = expected_changes(ratings, columns, len(class_ids), p.seed)  # [A, K]
    random = random_directions(sorted(norms), width, p.seed)
    edits = steering_edits(p.centres, appraisals, settings["alpha"], settings["span"], p.n_layers, directions,
                           norms, random)
    log.info("%d steering edits (%d appraisals and a random control, up and down, x %d centres)", len(edits),
             len(appraisals), len(p.centres))
    logits = runner.run(token_lists, [edit for *_, edit in edits])
    out = [{"layer": None, "site": "residual", "kind": "expected", "appraisal": appraisal, "direction": "up",
            "emotion": name, "alpha": None, "span": None, "metric": "expected_change", "value": float(value),
            "ci_low": None, "ci_high": None}
           for appraisal, changes in zip(appraisals, expected) for name, value in zip(names, changes)]
    for index, (centre, appraisal, sign, edit) in enumerate(edits):
        # the random direction is held against each appraisal's expectation in turn
        compared = appraisals if appraisal == "random" else [appraisal]
        for target in compared:
            factor = 1.0 if sign == "up" else -1.0
            agreement, changes = steering_effects(clean, logits[:, index], factor * expected[appraisals.index(target)],
                                                  p.seed)
            common = {"layer": centre, "site": "residual", "kind": "random" if appraisal == "random" else kind,
                      "appraisal": target, "direction": sign, "alpha": settings["alpha"],
                      "span": f"{edit.span[0]}-{edit.span[-1]}"}
            out.append(common | {"emotion": None, "metric": "agreement", "value": agreement[0],
                                 "ci_low": agreement[1], "ci_high": agreement[2]})
            if appraisal != "random" or target == appraisals[0]:  # the random edit's changes once
                out += [common | {"emotion": name, "metric": "logprob_change", "value": value, "ci_low": low,
                                  "ci_high": high} for name, (value, low, high) in zip(names, changes)]
    best = max((row for row in out if row["metric"] == "agreement" and row["kind"] != "random"),
               key=lambda row: row["value"])
    log.info("highest agreement with the human data: %s %s at layers %s: %.3f [%.3f, %.3f]", best["appraisal"],
             best["direction"], best["span"], best["value"], best["ci_low"], best["ci_high"])
    return out, len(rows)


def _concatenate(smk, what: str) -> None:
    """The job's input tables, one under the other (columns one lacks left null), as parquet and csv."""
    tables = pl.concat([pl.read_parquet(path) for path in smk.input.tables], how="diagonal_relaxed")
    tables.write_parquet(smk.output.parquet)
    tables.write_csv(smk.output.csv)
    log.info("%d %s rows from %d tables", tables.height, what, len(smk.input.tables))


def aggregate_causal(smk) -> None:
    _concatenate(smk, "causal metric")


def aggregate_metrics(smk) -> None:
    from .aggregate import aggregate

    metrics = aggregate(smk.input.scores, smk.params.positions)
    metrics.write_parquet(smk.output.parquet)
    metrics.write_csv(smk.output.csv)
    log.info("%d metric rows from %d probe files", metrics.height, len(smk.input.scores))
    if smk.input.comparisons:
        labels = [position_label(position) for position in smk.params.positions]
        comparisons = pl.concat([pl.read_parquet(path).with_columns(pl.col("position").cast(pl.String))
                                 for path in smk.input.comparisons]).filter(pl.col("position").is_in(labels))
    else:
        from .compare import COMPARISON_SCHEMA

        comparisons = pl.DataFrame(schema=COMPARISON_SCHEMA)
    comparisons.write_parquet(smk.output.vs_lexical)
    comparisons.write_csv(smk.output.vs_lexical_csv)
    log.info("%d paired comparisons with the lexical baseline", comparisons.height)


def _part_metadata(part: str) -> dict:
    """The metadata of an extraction part's first shard: the model, its weights, dtype and prompt."""
    from .shards import read_metadata

    shard = min(Path(part).glob("*.safetensors"), default=None)
    if shard is None:
        raise EmoprobeError(f"{part} holds no shard; delete the folder and rerun its extraction.")
    return read_metadata(shard)


def build_report(smk) -> None:
    from . import methods
    from .data.sources import read_prepared_record
    from .figures import MIN_FONT_PT
    from .report import build_report as build

    p = smk.params
    out_dir = Path(smk.output.index).parent
    metrics = pl.read_parquet(smk.input.metrics)
    answers = {(model, dataset): (pl.read_parquet(table), pl.read_parquet(counts))
               for (model, dataset), table, counts in zip(p.answered, smk.input.answers, smk.input.classes)}
    causal = pl.read_parquet(smk.input.causal[0]) if smk.input.causal else None
    geometry = pl.read_parquet(smk.input.geometry[0]) if smk.input.geometry else None
    transfer = pl.read_parquet(smk.input.transfer[0]) if smk.input.transfer else None
    datasets = {}
    for dataset, path in zip(p.datasets, smk.input.prepared):
        datasets[dataset] = (read_prepared_record(path), pl.read_parquet(path), p.targets[dataset])
    shards = {tuple(key): _part_metadata(part) for key, part in zip(p.parts, smk.input.parts)}
    blocks = methods.methods_blocks(smk.config, p.template, p.layers, smk.config["positions"], datasets, shards,
                                    p.twins)
    index, figures = build(metrics, out_dir, p.quantisation, p.tolerance, pl.read_parquet(smk.input.vs_lexical),
                           p.twins, p.classifiers, answers, causal, geometry, transfer, methods.to_html(blocks))
    Path(smk.output.methods).write_text(methods.to_markdown([*blocks, methods.figures_block(figures, out_dir)]),
                                        encoding="utf-8")
    if small := [f"{figure.stem} ({figure.min_font_pt:.1f} pt)" for figure in figures
                 if figure.min_font_pt < MIN_FONT_PT]:
        log.warning("fonts below %.1f pt even at full page width: %s", MIN_FONT_PT, ", ".join(small))
    log.info("report written to %s (%d figures)", index, len(figures))


def write_provenance(smk) -> None:
    """results/report/provenance.json (manifest.build_manifest)."""
    from .manifest import build_manifest

    p = smk.params
    shards = {model: _part_metadata(part) for (model, _), part in zip(p.parts, smk.input.parts)}
    manifest = build_manifest(smk.config, dict(zip(p.datasets, smk.input.prepared)), shards)
    Path(smk.output.manifest).write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
    log.info("provenance of %d tables written to %s", len(manifest["tables"]), smk.output.manifest)


def probe_geometry(smk) -> None:
    """The geometry of one model x dataset's saved directions (geometry.py) at every layer, one tidy
    table: layer x layer cosine per emotion and their mean, emotion x emotion cosine and the 2-D
    principal map per layer, and, where the prepared table holds appraisal targets, the RSA with the
    emotions' mean appraisal profiles (and with pleasantness among them, the valence alignment)."""
    from . import geometry
    from .data.prepare import target_columns

    p = smk.params
    table = pl.read_parquet(smk.input.table)
    class_ids, label_of = _classes(table)
    names = [label_of[int(i)] for i in class_ids]
    directions, layers = [], []
    for layer, path in zip(p.layers, smk.input.directions):
        weight = _saved_weight(path, p.position, class_ids, "the geometry")
        if not np.linalg.norm(weight, axis=-1).all():
            log.info("layer %d left out: a direction is zero there (activations that do not vary over the texts, "
                     "e.g. the embedding of the prompt's fixed last token)", layer)
            continue
        directions.append(geometry.probe_directions(weight, len(class_ids)))
        layers.append(layer)
    if len(layers) < 2:
        raise EmoprobeError(f"the geometry of {smk.wildcards.model} on {smk.wildcards.dataset} needs the directions of "
                            f"two layers or more; layers {layers} of {list(p.layers)} have them.")
    rows = []
    similarity = geometry.layer_similarity(directions)
    for index, name in [(None, "mean"), *enumerate(names)]:
        matrix = similarity.mean(axis=0) if index is None else similarity[index]
        rows += [{"analysis": "layer_similarity", "layer": a, "layer_b": b, "emotion": name, "metric": "cosine",
                  "value": float(matrix[i, j])} for i, a in enumerate(layers) for j, b in enumerate(layers)]
    targets = target_columns(table)
    labels = np.searchsorted(class_ids, table["label_id"].to_numpy())
    human = None
    if len(targets) >= 2:
        profiles = geometry.appraisal_profiles(table.select(targets).to_numpy().astype(np.float64), labels,
                                               len(class_ids))
        human = geometry.cosine_matrix(profiles)
        rows += [{"analysis": "human_similarity", "emotion": a, "emotion_b": b, "metric": "cosine",
                  "value": float(human[i, j])} for i, a in enumerate(names) for j, b in enumerate(names)]
    for layer, layer_directions in zip(layers, directions):
        cosine = geometry.cosine_matrix(layer_directions)
        rows += [{"analysis": "emotion_similarity", "layer": layer, "emotion": a, "emotion_b": b, "metric": "cosine",
                  "value": float(cosine[i, j])} for i, a in enumerate(names) for j, b in enumerate(names)]
        coordinates, explained = geometry.principal_map(layer_directions)
        rows += [{"analysis": "principal_map", "layer": layer, "emotion": name, "metric": f"pc{c + 1}",
                  "value": float(coordinates[i, c])} for i, name in enumerate(names) for c in range(2)]
        rows += [{"analysis": "principal_map", "layer": layer, "metric": f"explained_pc{c + 1}",
                  "value": float(explained[c])} for c in range(2)]
        if human is not None:
            rows.append({"analysis": "rsa", "layer": layer, "metric": "spearman",
                         **geometry.rsa(cosine, human, p.n_permutations, seed=p.seed)})
            if "pleasantness" in targets:
                pleasantness = profiles[:, targets.index("pleasantness")]
                rows.append({"analysis": "valence", "layer": layer, "metric": "pc1_pleasantness_abs_r",
                             "value": geometry.valence_alignment(coordinates, pleasantness)})
    schema = {"analysis": pl.String, "layer": pl.Int64, "layer_b": pl.Int64, "emotion": pl.String,
              "emotion_b": pl.String, "metric": pl.String, "value": pl.Float64, "ci_low": pl.Float64,
              "ci_high": pl.Float64, "p_value": pl.Float64}
    result = pl.DataFrame(rows, schema=schema).select(
        pl.lit(smk.wildcards.model).alias("model"), pl.lit(smk.wildcards.dataset).alias("dataset"),
        pl.lit(position_label(p.position)).alias("position"), pl.lit(p.probe).alias("probe"), pl.all())
    adjacent = [similarity.mean(axis=0)[i, i + 1] for i in range(len(layers) - 1)]
    settled = next((layers[i] for i, value in enumerate(adjacent) if value > 0.9), None)
    log.info("adjacent-layer similarity of the directions first exceeds 0.9 at layer %s (mean over emotions)", settled)
    rsa = result.filter(analysis="rsa")
    if not rsa.is_empty():
        best = rsa.sort("value", descending=True).row(0, named=True)
        log.info("RSA with the human appraisal profiles (%d targets) is highest at layer %d: Spearman %.3f [%.3f, %.3f], "
                 "permutation p %.4f", len(targets), best["layer"], best["value"], best["ci_low"], best["ci_high"],
                 best["p_value"])
    _write(result, smk.output.table)


def aggregate_geometry(smk) -> None:
    _concatenate(smk, "geometry")


def transfer_probe(smk) -> None:
    """One model's cross-dataset transfer from wildcards.source to wildcards.target (transfer.py) at
    every layer, site and position of the sweep, on the labels the two share after their label maps."""
    from .data.label_maps import apply_label_map
    from .transfer import shared_labels, transfer_scores

    p = smk.params
    tables = {role: pl.read_parquet(getattr(smk.input, role)) for role in ("source", "target")}
    mapped = {role: apply_label_map(table["label"].to_list(), p.label_maps[role],
                                    p.vocabularies[role] or table["label"].unique().to_list(),
                                    f"dataset '{getattr(smk.wildcards, role)}'")
              for role, table in tables.items()}
    shared = shared_labels(mapped["source"], mapped["target"])
    schema = {"layer": pl.Int64, "site": pl.String, "position": pl.String, "position_index": pl.Int64,
              "kind": pl.String, "metric": pl.String, "value": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64}
    rows = []
    if len(shared) < p.min_shared:
        log.info("%s and %s share the labels %s after their label maps, fewer than transfer.min_shared (%d): no "
                 "transfer measured", smk.wildcards.source, smk.wildcards.target, shared, p.min_shared)
    else:
        keep = {role: np.flatnonzero(np.isin(np.array(labels, dtype=object), shared)) for role, labels in mapped.items()}
        codes = {role: np.searchsorted(shared, np.array(mapped[role], dtype=object)[keep[role]].astype(str))
                 for role in keep}
        log.info("shared labels %s: %d source texts, %d target texts", shared, len(keep["source"]), len(keep["target"]))
        groups = tables["target"]["text"].to_numpy()[keep["target"]]
        for layer, site, position, source_shard, target_shard in p.shards:
            X = {role: _read_shard(shard, getattr(smk.input, role), tables[role].height, layer, site,
                                   [position])[:, keep[role]]
                 for role, shard in (("source", source_shard), ("target", target_shard))}
            scored = transfer_scores(X["source"], codes["source"], X["target"], codes["target"], groups, p.cv_folds,
                                     p.seed, p.probe["C"], p.probe["max_iter"])
            rows += [{"layer": layer, "site": site, "position": position_label(position), **row} for row in scored]
    result = pl.DataFrame(rows, schema=schema).select(
        pl.lit(smk.wildcards.model).alias("model"), pl.lit(smk.wildcards.source).alias("source"),
        pl.lit(smk.wildcards.target).alias("target"), pl.lit(", ".join(shared)).alias("shared_labels"),
        pl.exclude("position_index"))
    if rows:
        best = result.filter(kind="transfer", metric="accuracy").sort("value", descending=True).row(0, named=True)
        log.info("best transfer accuracy %.3f [%.3f, %.3f] at layer %d (%s, position %s)", best["value"],
                 best["ci_low"], best["ci_high"], best["layer"], best["site"], best["position"])
    _write(result, smk.output.table)


def aggregate_transfer(smk) -> None:
    _concatenate(smk, "transfer")
