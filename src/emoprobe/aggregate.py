"""Per-probe fold scores -> one tidy metrics table."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import polars as pl

from .compare import layer_ranges
from .errors import EmoprobeError
from .positions import Position, position_label, rank
from .registry import ANSWER, control_name

KEYS = ["model", "dataset", "target", "layer", "site", "position", "probe", "metric"]
DESCRIPTIVE = ["n_layers", "n_classes", "dtype", "n_rows"]
INTERVAL = ["pooled", "ci_low", "ci_high"]  # the same on every fold row of a (keys) group

def scored(classifiers: Sequence[str] = ("logreg",)) -> dict[str, tuple[str, str]]:
    """Each fitted probe (the classification probes `classifiers`, and ridge), the metric the
    summary ranks layers by, and the trivial baseline probe whose score on that metric is the
    floor: the training folds' majority class, or their mean (R2 about 0)."""
    return dict.fromkeys(classifiers, ("accuracy", "majority")) | {"ridge": ("r2", "mean")}

SUMMARY_SCHEMA = {
    "model": pl.String, "dataset": pl.String, "target": pl.String, "probe": pl.String,
    "score_metric": pl.String, "best_layer": pl.Int64, "best_site": pl.String, "best_position": pl.String,
    "n_layers": pl.Int64,
    "score": pl.Float64, "score_std": pl.Float64, "score_ci_low": pl.Float64, "score_ci_high": pl.Float64,
    "candidates": pl.Int64, "first_layer_within_tolerance": pl.Int64,
    "floor": pl.Float64, "chance": pl.Float64, "answer": pl.Float64, "answer_ci_low": pl.Float64,
    "answer_ci_high": pl.Float64, "shuffled": pl.Float64,
    "selectivity": pl.Float64, "selectivity_ci_low": pl.Float64, "selectivity_ci_high": pl.Float64,
    "lexical": pl.Float64, "lexical_ci_low": pl.Float64, "lexical_ci_high": pl.Float64,
    "best_minus_lexical": pl.Float64, "best_minus_lexical_ci_low": pl.Float64,
    "best_minus_lexical_ci_high": pl.Float64, "layers_beating_lexical": pl.String,
}


def aggregate(probe_files: Iterable[str], positions: Iterable[Position] | None = None) -> pl.DataFrame:
    """One row per (model, dataset, target, layer, site, position, probe, metric): mean and std over
    folds, the metric on the pooled held-out predictions with its bootstrap CI (pooled, ci_low,
    ci_high), n_folds.

    Classification rows have target "label"; ridge rows name their target and have n_classes null.
    The lexical baseline's rows (probe "lexical") have model, layer, site, position, n_layers and
    dtype null: it reads no model (nor do the model's answers: site and position null). Positions
    are labels (positions.position_label: "-1", "text_mean"), also those of files written when
    they were integers. `positions`: keep only these (a probe file holds every position of its
    extraction part) and the rows of no position.
    A model x dataset whose shards were extracted in different dtypes is refused.
    """
    folds = pl.concat([pl.read_parquet(path).with_columns(pl.col("position").cast(pl.String))
                       for path in probe_files], how="vertical")
    if positions is not None:
        labels = [position_label(position) for position in positions]
        folds = folds.filter(pl.col("position").is_in(labels) | pl.col("position").is_null())
    repeated = folds.filter(folds.select(KEYS + ["fold"]).is_duplicated())
    if repeated.height:
        raise EmoprobeError(f"{repeated.height} fold scores appear in more than one probe file, e.g. "
                            f"{repeated.row(0, named=True)}; each (layer, site, position) must come from one probe job: "
                            "delete the older of the two files and rerun.")
    check_one_dtype(folds)
    return (
        folds.group_by(KEYS + DESCRIPTIVE)
        .agg(pl.col("value").mean().alias("mean"),
             pl.col("value").std(ddof=1).alias("std"),
             *(pl.col(column).first() for column in INTERVAL),
             pl.col("fold").n_unique().alias("n_folds"))
        .sort([rank() if key == "position" else pl.col(key) for key in KEYS],
              descending=[key == "position" for key in KEYS], nulls_last=True)
        .select(KEYS + ["mean", "std", *INTERVAL, "n_folds"] + DESCRIPTIVE)
    )


def check_one_dtype(folds: pl.DataFrame) -> None:
    """Every layer of a model x dataset must come from shards extracted in one dtype (parts
    extracted on different machines with `extraction.dtype: auto` can differ)."""
    layers = (folds.filter(pl.col("model").is_not_null())
              .group_by("model", "dataset", "dtype").agg(pl.col("layer").unique().sort()))
    mixed = layers.filter(pl.len().over("model", "dataset") > 1).sort("model", "dataset", "dtype")
    if mixed.height:
        model, dataset = mixed.row(0)[:2]
        shown = "; ".join(f"{dtype}: layers {held}" for m, d, dtype, held in mixed.iter_rows()
                          if (m, d) == (model, dataset))
        raise EmoprobeError(f"model '{model}' on dataset '{dataset}' mixes shards extracted in different dtypes "
                            f"({shown}); set `extraction.dtype` to one of them and delete the parts "
                            f"(results/activations/{model}/{dataset}/...) of the other, then rerun.")


def select(metrics: pl.DataFrame, probe: str, metric: str = "accuracy") -> pl.DataFrame:
    """The rows of one probe and metric."""
    return metrics.filter((pl.col("probe") == probe) & (pl.col("metric") == metric))


def baseline_rate(metrics: pl.DataFrame, probe: str = "majority", metric: str = "accuracy",
                  name: str = "majority") -> pl.DataFrame:
    """A baseline probe's score per (model, dataset, target): it ignores the activations, so it is
    the same at every layer and position (the max only guards against float noise)."""
    return (select(metrics, probe, metric).group_by("model", "dataset", "target")
            .agg(pl.col("mean").max().alias(name)))


def majority_rate(metrics: pl.DataFrame, metric: str = "accuracy") -> pl.DataFrame:
    """Majority-class score per (model, dataset, target) (the same at every layer and position)."""
    return baseline_rate(metrics, "majority", metric, "majority")


def summarise(metrics: pl.DataFrame, tolerance: float = 0.02, vs_lexical: pl.DataFrame | None = None,
              classifiers: Sequence[str] = ("logreg",)) -> pl.DataFrame:
    """Per (model, dataset, target) and fitted probe (`classifiers`, ridge): the best (layer, site, position) by the probe's
    score metric (accuracy, or R2 for ridge), the score there (and the 95% bootstrap CI of its
    pooled held-out score, which does not account for the pick), the first layer within `tolerance`
    of it at that site and position, the floor (majority-class accuracy, or the mean predictor's R2),
    chance (1 / n_classes; null for ridge), the model's own answer's score with its CI (answer,
    where read; answers.py), and at the best (layer, site, position) the shuffled-label
    control's score and the selectivity (accuracy minus control-task accuracy) with its paired CI
    (null without them).

    With the lexical baseline: its score and CI, the best score minus it with the paired 95% CI
    (from `vs_lexical`, compare.compare_with_lexical's table), and the layers whose paired CI
    lies above 0 at the best site and position ("none" if no layer there beats the words).

    The best score is the maximum of `candidates` CV means, picked on the same folds that score
    it: an optimistic pick, not a held-out one. Ties go to the earlier layer, then to the
    position nearest the end (a fixed one before text_last, then text_mean), then to the site
    first by name."""
    rows = []
    for probe, (metric, baseline) in scored(classifiers).items():
        scores = select(metrics, probe, metric)
        floors = {(model, dataset, target): floor for model, dataset, target, floor
                  in baseline_rate(metrics, baseline, metric, "floor").iter_rows()}
        lexical = {(dataset, target): row for row in
                   select(metrics, "lexical", metric).iter_rows(named=True)
                   for dataset, target in [(row["dataset"], row["target"])]}
        for (model, dataset, target), group in scores.group_by("model", "dataset", "target", maintain_order=True):
            best = group.sort([pl.col("mean"), pl.col("layer"), rank(), pl.col("site")],
                              descending=[True, False, True, False]).row(0, named=True)
            at_position = group.filter(position=best["position"], site=best["site"]).sort("layer")
            plateau = at_position.filter(pl.col("mean") >= best["mean"] - tolerance)["layer"].min()
            cell = {"model": model, "dataset": dataset, "target": target, "layer": best["layer"],
                    "site": best["site"], "position": best["position"]}
            shuffled = select(metrics, control_name(probe, "shuffled"), metric).filter(**cell)["mean"]
            selectivity = select(metrics, control_name(probe, "selectivity"), metric).filter(**cell)
            answer = select(metrics, ANSWER, metric).filter(model=model, dataset=dataset, target=target)
            words = lexical.get((dataset, target), {})
            rows.append({
                "model": model, "dataset": dataset, "target": target, "probe": probe, "score_metric": metric,
                "best_layer": best["layer"], "best_site": best["site"], "best_position": best["position"],
                "n_layers": best["n_layers"],
                "score": best["mean"], "score_std": best["std"], "score_ci_low": best["ci_low"],
                "score_ci_high": best["ci_high"], "candidates": group.height,
                "first_layer_within_tolerance": plateau,
                "floor": floors.get((model, dataset, target)),
                "chance": 1.0 / best["n_classes"] if best["n_classes"] else None,
                **{f"answer{suffix}": answer[column][0] if answer.height else None
                   for suffix, column in (("", "mean"), ("_ci_low", "ci_low"), ("_ci_high", "ci_high"))},
                "shuffled": shuffled[0] if len(shuffled) else None,
                **{f"selectivity{suffix}": selectivity[column][0] if selectivity.height else None
                   for suffix, column in (("", "pooled"), ("_ci_low", "ci_low"), ("_ci_high", "ci_high"))},
                "lexical": words.get("mean"), "lexical_ci_low": words.get("ci_low"),
                "lexical_ci_high": words.get("ci_high"),
                **_against_lexical(vs_lexical, cell | {"probe": probe}),
            })
    return pl.DataFrame(rows, schema=SUMMARY_SCHEMA).sort("model", "dataset", "probe", "target")


def _against_lexical(vs_lexical: pl.DataFrame | None, cell: dict) -> dict:
    """The summary's paired-comparison columns for the best (layer, site, position) of a probe."""
    keys = ("best_minus_lexical", "best_minus_lexical_ci_low", "best_minus_lexical_ci_high", "layers_beating_lexical")
    if vs_lexical is None or vs_lexical.is_empty():
        return dict.fromkeys(keys)
    at_position = vs_lexical.filter(**{k: v for k, v in cell.items() if k != "layer"})
    best = at_position.filter(layer=cell["layer"])
    if best.is_empty():
        return dict.fromkeys(keys)
    return dict(zip(keys, (best["difference"][0], best["ci_low"][0], best["ci_high"][0],
                           layer_ranges(at_position.filter("beats_lexical")["layer"].to_list()))))
