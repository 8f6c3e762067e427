"""Per-probe fold scores -> one tidy metrics table."""

from __future__ import annotations

from collections.abc import Iterable

import polars as pl

KEYS = ["model", "dataset", "layer", "position", "probe", "metric"]
DESCRIPTIVE = ["n_layers", "n_classes"]


def aggregate(probe_files: Iterable[str]) -> pl.DataFrame:
    """One row per (model, dataset, layer, position, probe, metric): mean, std, n_folds."""
    folds = pl.concat([pl.read_parquet(path) for path in probe_files], how="vertical")
    return (
        folds.group_by(KEYS + DESCRIPTIVE)
        .agg(pl.col("value").mean().alias("mean"),
             pl.col("value").std(ddof=1).alias("std"),
             pl.col("fold").n_unique().alias("n_folds"))
        .sort(KEYS)
        .select(KEYS + ["mean", "std", "n_folds"] + DESCRIPTIVE)
    )


def select(metrics: pl.DataFrame, probe: str, metric: str = "accuracy") -> pl.DataFrame:
    """The rows of one probe and metric."""
    return metrics.filter((pl.col("probe") == probe) & (pl.col("metric") == metric))


def majority_rate(metrics: pl.DataFrame, metric: str = "accuracy") -> pl.DataFrame:
    """Majority-class score per (model, dataset) (the same at every layer and position)."""
    return select(metrics, "majority", metric).group_by("model", "dataset").agg(pl.col("mean").max().alias("majority"))


def summarise(metrics: pl.DataFrame, tolerance: float = 0.02, probe: str = "logreg",
              metric: str = "accuracy") -> pl.DataFrame:
    """Per (model, dataset): best layer and position, its score, first layer within tolerance."""
    scores = select(metrics, probe, metric)
    majority = majority_rate(metrics, metric)
    rows = []
    for (model, dataset), group in scores.group_by("model", "dataset", maintain_order=True):
        best = group.sort(["mean", "layer"], descending=[True, False]).row(0, named=True)
        at_position = group.filter(pl.col("position") == best["position"]).sort("layer")
        plateau = at_position.filter(pl.col("mean") >= best["mean"] - tolerance)["layer"].min()
        rows.append({
            "model": model, "dataset": dataset, "best_layer": best["layer"],
            "best_position": best["position"], "n_layers": best["n_layers"],
            metric: best["mean"], f"{metric}_std": best["std"],
            "first_layer_within_tolerance": plateau, "chance": 1.0 / best["n_classes"],
        })
    return pl.DataFrame(rows).join(majority, on=["model", "dataset"], how="left").sort("model", "dataset")
