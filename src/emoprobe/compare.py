"""Paired comparison of every probe with the lexical baseline, row for row.

A probe and the lexical baseline are scored on the same held-out rows (they share
folds.assign_folds' folds), so their difference in a metric can be bootstrapped pairwise: each
resample draws rows and scores both predictors on them (bootstrap.paired_difference_ci). An
interval entirely above 0 says the layer's hidden states give more than the words alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from . import bootstrap
from .errors import EmoprobeError

# The metric each kind of probe is compared on: the classification probes' and ridge's.
CLASSIFICATION_METRIC, REGRESSION_METRIC = "accuracy", "r2"

COMPARISON_SCHEMA = {
    "model": pl.String, "dataset": pl.String, "target": pl.String, "layer": pl.Int64, "site": pl.String,
    "position": pl.String,
    "probe": pl.String, "metric": pl.String, "score": pl.Float64, "lexical": pl.Float64,
    "difference": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64, "n_rows": pl.Int64,
    "beats_lexical": pl.Boolean,
}


def compare_with_lexical(probe_predictions: pl.DataFrame, lexical_predictions: pl.DataFrame,
                         truth: dict[str, np.ndarray], classifiers: Sequence[str] = ("logreg",),
                         seed: int = 0) -> pl.DataFrame:
    """Rows of COMPARISON_SCHEMA but model and dataset, one per (target, layer, site, position, probe),
    for the classification probes `classifiers` (on accuracy) and ridge (on R2); their baselines
    and controls are not compared.

    probe_predictions: held-out predictions with columns layer, site, position, row, probe, predicted
    and, for numeric targets, target; lexical_predictions: the lexical baseline's (row,
    predicted[, target]); truth: {target: true values by row of the prepared table} ("label" for
    the class ids). Both must cover the same rows for each target: they come from the same folds.
    """
    if "target" not in probe_predictions.columns:
        probe_predictions = probe_predictions.with_columns(target=pl.lit("label"))
    if "target" not in lexical_predictions.columns:
        lexical_predictions = lexical_predictions.with_columns(target=pl.lit("label"))
    compared = dict.fromkeys(classifiers, CLASSIFICATION_METRIC) | {"ridge": REGRESSION_METRIC}
    probe_predictions = probe_predictions.filter(pl.col("probe").is_in(list(compared)))
    lexical = {target: group.sort("row") for (target,), group in lexical_predictions.group_by("target")}
    rows = []
    for (target, layer, site, position, probe), group in probe_predictions.group_by(
            "target", "layer", "site", "position", "probe", maintain_order=True):
        group = group.sort("row")
        words = lexical.get(target)
        if words is None or not group["row"].equals(words["row"]):
            raise EmoprobeError(f"the lexical baseline's held-out rows for target {target!r} differ from the "
                                f"{probe} probe's at layer {layer} ({site}), position {position}: they were fitted on "
                                "different folds (another seed, cv_folds or prepared table); rerun both.")
        metric = compared[probe]
        y = truth[target][group["row"].to_numpy()]
        a, b = group["predicted"].to_numpy(), words["predicted"].to_numpy()
        difference, low, high = bootstrap.paired_difference_ci(y, a, b, metric, seed=seed)
        score, lexical_score = (bootstrap.metric_on_counts(y, p, metric, np.ones((1, len(y))))[0] for p in (a, b))
        rows.append({"target": target, "layer": layer, "site": site, "position": position, "probe": probe,
                     "metric": metric,
                     "score": float(score), "lexical": float(lexical_score), "difference": difference,
                     "ci_low": low, "ci_high": high, "n_rows": len(y), "beats_lexical": low > 0})
    schema = {k: v for k, v in COMPARISON_SCHEMA.items() if k not in ("model", "dataset")}
    return pl.DataFrame(rows, schema=schema)


def layer_ranges(layers: Sequence[int]) -> str:
    """Layers as compact ranges: [3, 4, 5, 9] -> "3-5, 9"; "none" when empty."""
    ranges: list[list[int]] = []
    for layer in sorted(set(layers)):
        if ranges and layer == ranges[-1][1] + 1:
            ranges[-1][1] = layer
        else:
            ranges.append([layer, layer])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges) or "none"
