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

import polars as pl

from .errors import EmoprobeError

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
    from .data.prepare import prepare

    p = smk.params
    table = prepare(p.dataset, p.template, p.seed, smk.config["data_dir"], smk.config["download_dir"])
    log.info("prepared %d rows, labels: %s", table.height,
             dict(table["label"].value_counts().sort("label").iter_rows()))
    table.write_parquet(smk.output.table)


def extract_activations(smk) -> None:
    import torch

    from . import models
    from .data.sources import sha256_of
    from .extract import extract_to_shards

    p = smk.params
    torch.set_num_threads(max(1, smk.threads))
    table = pl.read_parquet(smk.input.table)
    device = models.pick_device(p.device)
    tokenizer, model, resolved = models.load(p.model, device)
    batch_size = smk.config["extraction"]["batch_size"]  # not a param: it never changes results
    batch_size = batch_size if batch_size != "auto" else (64 if device.type == "cuda" else 16)
    log.info("model %s on %s, %d texts, layers %s, positions %s, batch %d", resolved.model_id,
             device, table.height, p.layers, p.positions, batch_size)
    out_dir = Path(smk.output.shards)
    metadata = {
        "model_name": smk.wildcards.model, "model_id": resolved.model_id, "source": resolved.source,
        "revision": resolved.revision or "", "quantisation": resolved.quantisation or "",
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "n_layers": str(p.n_layers), "dataset": smk.wildcards.dataset,
        "prompt_template": p.template, "prepared_sha256": sha256_of(smk.input.table),
    }
    extract_to_shards(model, tokenizer, table["prompt"].to_list(), table["id"].to_list(),
                      p.layers, p.positions, batch_size,
                      lambda layer: str(out_dir / f"layer_{layer}.safetensors"), metadata)


def fit_probe(smk) -> None:
    from threadpoolctl import threadpool_limits

    from .data.sources import sha256_of
    from .probes import cross_validate_probe
    from .shards import check_metadata, read_metadata, read_position

    p = smk.params
    shard = Path(smk.input.shards) / f"layer_{smk.wildcards.layer}.safetensors"
    table = pl.read_parquet(smk.input.table)
    metadata = read_metadata(shard)
    check_metadata(shard, metadata, {"n_rows": str(table.height),
                                     "prepared_sha256": sha256_of(smk.input.table),
                                     "layer": smk.wildcards.layer})
    positions = json.loads(metadata["positions"])
    position = int(smk.wildcards.position)
    if position not in positions:
        raise EmoprobeError(f"{shard} holds positions {positions}, not {position}; rerun extraction.")
    X = read_position(shard, positions.index(position))
    y = table["label_id"].to_numpy()
    with threadpool_limits(max(1, smk.threads)):
        folds = cross_validate_probe(X, y, p.cv_folds, p.seed, p.C, p.max_iter, p.backend)
    folds = folds.select(
        pl.lit(smk.wildcards.model).alias("model"), pl.lit(smk.wildcards.dataset).alias("dataset"),
        pl.lit(int(smk.wildcards.layer), dtype=pl.Int64).alias("layer"),
        pl.lit(position, dtype=pl.Int64).alias("position"), pl.all(),
        pl.lit(int(metadata["n_layers"]), dtype=pl.Int64).alias("n_layers"),
        pl.lit(table["label_id"].n_unique(), dtype=pl.Int64).alias("n_classes"),
    )
    accuracy = folds.filter((pl.col("probe") == "logreg") & (pl.col("metric") == "accuracy"))["value"]
    log.info("layer %s position %d: accuracy %.3f +- %.3f", smk.wildcards.layer, position,
             accuracy.mean(), accuracy.std())
    Path(smk.output.scores).parent.mkdir(parents=True, exist_ok=True)
    folds.write_parquet(smk.output.scores)


def aggregate_metrics(smk) -> None:
    from .aggregate import aggregate

    metrics = aggregate(smk.input.scores)
    metrics.write_parquet(smk.output.parquet)
    metrics.write_csv(smk.output.csv)
    log.info("%d metric rows from %d probe files", metrics.height, len(smk.input.scores))


def build_report(smk) -> None:
    from .report import build_report as build

    metrics = pl.read_parquet(smk.input.metrics)
    index = build(metrics, Path(smk.output.index).parent, smk.params.quantisation, smk.params.tolerance)
    log.info("report written to %s", index)
