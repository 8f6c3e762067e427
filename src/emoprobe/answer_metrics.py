"""The model's own answers (answers.py) scored like a probe, counted per class, and confused."""

from __future__ import annotations

import numpy as np
import polars as pl

from . import bootstrap
from .registry import ANSWER

ANSWER_METRICS = ("accuracy", "balanced_accuracy", "macro_f1")
TOP1_METRIC = "top1_is_label_word"  # share of texts whose unrestricted top-1 token is a label word's


def answer_scores(answers: pl.DataFrame, seed: int = 0) -> pl.DataFrame:
    """The model's answer scored like a probe (probe ANSWER, one "fold" 0 holding every
    row, so value = pooled): accuracy, balanced accuracy and macro-F1 of the answer against the
    label, and TOP1_METRIC, the share of texts whose unrestricted top-1 token is a label word's;
    each with its seeded 95% bootstrap CI over the texts."""
    truth, answer = answers["label_id"].to_numpy(), answers["answer_id"].to_numpy()
    intervals = bootstrap.bootstrap_cis(truth, answer, ANSWER_METRICS, seed=seed)
    in_vocabulary = answers["top1_is_label_word"].to_numpy()
    intervals[TOP1_METRIC] = bootstrap.bootstrap_ci(np.ones_like(in_vocabulary), in_vocabulary, "accuracy", seed=seed)
    return pl.DataFrame([{"probe": ANSWER, "fold": 0, "metric": metric, "value": point, "pooled": point,
                          "ci_low": low, "ci_high": high} for metric, (point, low, high) in intervals.items()],
                        schema={"probe": pl.String, "fold": pl.Int64, "metric": pl.String, "value": pl.Float64,
                                "pooled": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64})


def class_counts(answers: pl.DataFrame, kept: pl.DataFrame | None = None) -> pl.DataFrame:
    """Per label: texts, texts the model answered correctly, and (with `kept`, the rows a
    correct_only subset keeps after its class-size checks) the texts probed."""
    counts = answers.group_by("label_id", "label").agg(pl.len().alias("n_texts"),
                                                       pl.col("correct").sum().alias("n_correct"))
    if kept is not None:
        counts = counts.join(kept.group_by("label_id").agg(pl.len().alias("n_probed")), on="label_id", how="left")
        counts = counts.with_columns(pl.col("n_probed").fill_null(0))
    return counts.sort("label_id")


def confusion(answers: pl.DataFrame) -> pl.DataFrame:
    """Row-normalised confusion of labels (rows) and answers: label, answer, count, share of the label's texts."""
    return (answers.group_by("label", "answer").agg(pl.len().alias("count"))
            .with_columns(share=pl.col("count") / pl.col("count").sum().over("label"))
            .sort("label", "answer"))
