"""Bootstrap confidence intervals for the probes' metrics, over pooled out-of-fold predictions.

The input is one prediction per row, made by the fold that held the row out (the pooled
out-of-fold predictions of a cross-validation). A resample draws N of the N rows with
replacement; a metric's resampled value is its value on those rows, and the interval is the
percentile interval of `n_resamples` such values (numpy's default linear quantiles at
(1 - level) / 2 and (1 + level) / 2). The point estimate is the metric on all rows. The same
seed gives the same resamples and so the same interval. Rows are treated as independent:
copies of one text count as separate rows here.

A resample is described by how often it drew each row, counts [B, N] with each row summing to
N (a multinomial draw, which is what drawing N row indices uniformly with replacement gives),
and every metric is computed for all B resamples at once from those counts (`metric_on_counts`),
never by materialising the resampled rows.

Metrics (`METRICS`), with sklearn's definitions on the resampled rows:

- "accuracy": the fraction of rows predicted right.
- "balanced_accuracy": the mean recall over the classes present in the resample's y_true
  (sklearn's balanced_accuracy_score, which drops a class absent from y_true, with a warning).
- "macro_f1": the mean F1 over the classes present in the resample's y_true or y_pred, F1 =
  2 TP / (true + predicted), so a class only predicted scores 0 (sklearn's f1_score with
  average="macro", zero_division=0).
- "r2": 1 - SS_res / SS_tot (sklearn's r2_score). For a resample whose y_true is constant
  (SS_tot = 0) it is 1.0 when every prediction equals y_true and 0.0 otherwise: the value
  sklearn's force_finite=True means to give. (sklearn itself decides by SS_tot == 0 in floating
  point, so for constant y_true whose mean does not round back to the value, e.g. seven rows of
  0.1, it returns about -5e31; constancy here is decided exactly, from the values.)
- "pearson_r": Pearson's correlation, 0.0 when either y_true or y_pred is constant on the
  resample (as regression.pearson_r).

The three classification metrics depend on the rows only through the confusion matrix, and
resampling rows is the same as drawing the counts of the distinct (truth, prediction) cells from
a multinomial with the cells' frequencies; so classification resamples are drawn that way, K^2
cells at most instead of N rows (1,000 resamples of 6,600 rows in milliseconds). A paired
difference in accuracy depends on the rows only through which of the two predictions are right,
so its resamples draw those 4 cells (K^3 for the other metrics). Regression
resamples draw row indices, in blocks of resamples that bound the memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from .errors import DataError

CLASSIFICATION_METRICS = ("accuracy", "balanced_accuracy", "macro_f1")
REGRESSION_METRICS = ("r2", "pearson_r")
METRICS = CLASSIFICATION_METRICS + REGRESSION_METRICS

Interval = tuple[float, float, float]  # (point estimate, low, high)

_BLOCK_CELLS = 1 << 21  # regression: resamples per block of row counts x rows, at most


# ---------------------------------------------------------------------------------------------
# Public API


def bootstrap_ci(y_true, y_pred, metric: str, n_resamples: int = 1000, seed: int = 0,
                 level: float = 0.95) -> Interval:
    """(point, low, high): `metric` on all rows and its percentile bootstrap interval at `level`."""
    return bootstrap_cis(y_true, y_pred, (metric,), n_resamples, seed, level)[metric]


def bootstrap_cis(y_true, y_pred, metrics: Sequence[str], n_resamples: int = 1000, seed: int = 0,
                  level: float = 0.95) -> dict[str, Interval]:
    """bootstrap_ci for several metrics, all on the same resamples: {metric: (point, low, high)}.

    Classification and regression metrics draw their resamples separately (see the module).
    """
    _check_level(level)
    return {name: _interval(point, values, level)
            for name, (point, values) in bootstrap_distribution(y_true, y_pred, metrics, n_resamples, seed).items()}


def paired_difference_ci(y_true, pred_a, pred_b, metric: str, n_resamples: int = 1000, seed: int = 0,
                         level: float = 0.95) -> Interval:
    """(difference, low, high) of metric(pred_a) - metric(pred_b): the difference on all rows and
    the percentile interval of the differences on resamples shared by both predictors (a paired
    bootstrap: each resample's rows are scored for A and for B). An interval that excludes 0
    says the two predictors differ at `level`; identical predictors give exactly (0, 0, 0).
    """
    _check_level(level)
    point, values = paired_difference_distribution(y_true, pred_a, pred_b, metric, n_resamples, seed)
    return _interval(point, values, level)


def mean_ci(values, n_resamples: int = 1000, seed: int = 0, level: float = 0.95) -> Interval:
    """(mean, low, high): the mean of per-row `values` and its percentile bootstrap interval
    (rows drawn with replacement, as the regression metrics')."""
    values = np.asarray(values, dtype=np.float64)
    _check_resamples(n_resamples)
    _check_level(level)
    means = np.concatenate([counts @ values / len(values)
                            for counts in _row_count_blocks(len(values), n_resamples, seed)])
    return _interval(values.mean(), means, level)


def ratio_ci(numerator, denominator, n_resamples: int = 1000, seed: int = 0, level: float = 0.95) -> Interval:
    """(sum(numerator) / sum(denominator), low, high): a ratio of per-row sums (of means) and its
    percentile bootstrap interval, rows drawn with replacement as in mean_ci."""
    numerator, denominator = np.asarray(numerator, dtype=np.float64), np.asarray(denominator, dtype=np.float64)
    _check_resamples(n_resamples)
    _check_level(level)
    ratios = np.concatenate([(counts @ numerator) / (counts @ denominator)
                             for counts in _row_count_blocks(len(numerator), n_resamples, seed)])
    return _interval(numerator.sum() / denominator.sum(), ratios, level)


def mean_statistic_ci(values, statistic, n_resamples: int = 1000, seed: int = 0, level: float = 0.95) -> Interval:
    """(statistic(column means), low, high): a statistic of the column means of per-row `values`
    [N, K] (e.g. a rank correlation of per-emotion mean changes with expected ones) and its
    percentile bootstrap interval, rows drawn with replacement as in mean_ci."""
    values = np.asarray(values, dtype=np.float64)
    _check_resamples(n_resamples)
    _check_level(level)
    statistics = np.array([statistic(means) for counts in _row_count_blocks(len(values), n_resamples, seed)
                           for means in counts @ values / len(values)])
    return _interval(float(statistic(values.mean(axis=0))), statistics, level)


def bootstrap_distribution(y_true, y_pred, metrics: Sequence[str], n_resamples: int = 1000,
                           seed: int = 0) -> dict[str, tuple[float, np.ndarray]]:
    """{metric: (value on all rows, values on the n_resamples resamples [B])}: what the intervals
    are percentiles of."""
    metrics = _check_metrics(metrics)
    y_true, (y_pred,) = _check_rows(y_true, y_pred)
    _check_resamples(n_resamples)
    out = {}
    classification = [m for m in metrics if m in CLASSIFICATION_METRICS]
    regression = [m for m in metrics if m in REGRESSION_METRICS]
    if classification:
        codes, n_classes = _label_codes(y_true, y_pred)
        cell_counts, cells = _draw_cells(codes, n_resamples, seed)
        point = _classification_scores(_confusions(np.ones((1, len(y_true))), codes[0], codes[1], n_classes))
        values = _classification_scores(_confusions(cell_counts, cells[0], cells[1], n_classes))
        out |= {m: (float(point[m][0]), values[m]) for m in classification}
    if regression:
        y_true, y_pred = _finite(y_true, "y_true"), _finite(y_pred, "y_pred")
        point = _regression_scores(np.ones((1, len(y_true))), y_true, y_pred)
        blocks = [_regression_scores(counts, y_true, y_pred) for counts in _row_count_blocks(len(y_true), n_resamples, seed)]
        out |= {m: (float(point[m][0]), np.concatenate([b[m] for b in blocks])) for m in regression}
    return {m: out[m] for m in metrics}


def paired_difference_distribution(y_true, pred_a, pred_b, metric: str, n_resamples: int = 1000,
                                   seed: int = 0) -> tuple[float, np.ndarray]:
    """(metric(a) - metric(b) on all rows, the same difference on each of n_resamples shared resamples [B])."""
    (metric,) = _check_metrics((metric,))
    y_true, (pred_a, pred_b) = _check_rows(y_true, pred_a, pred_b)
    _check_resamples(n_resamples)
    if metric in CLASSIFICATION_METRICS:
        if metric == "accuracy":  # depends on the rows only through which predictions are right: <= 4 cells
            right_a, right_b = (pred == y_true for pred in (pred_a, pred_b))
            codes, n_classes = np.stack([np.zeros(len(y_true), dtype=int), ~right_a, ~right_b]).astype(int), 2
        else:
            codes, n_classes = _label_codes(y_true, pred_a, pred_b)
        cell_counts, cells = _draw_cells(codes, n_resamples, seed)

        def difference(counts, truth, a, b):
            return (_classification_scores(_confusions(counts, truth, a, n_classes))[metric]
                    - _classification_scores(_confusions(counts, truth, b, n_classes))[metric])

        point = difference(np.ones((1, len(y_true))), *codes)
        values = difference(cell_counts, *cells)
    else:
        y_true, pred_a, pred_b = (_finite(v, name) for v, name in
                                  ((y_true, "y_true"), (pred_a, "pred_a"), (pred_b, "pred_b")))

        def difference(counts):
            return _regression_scores(counts, y_true, pred_a)[metric] - _regression_scores(counts, y_true, pred_b)[metric]

        point = difference(np.ones((1, len(y_true))))
        values = np.concatenate([difference(c) for c in _row_count_blocks(len(y_true), n_resamples, seed)])
    return float(point[0]), values


def metric_on_counts(y_true, y_pred, metric: str, counts) -> np.ndarray:
    """`metric` on each of B weightings of the rows, counts [B, N] (non-negative integers: how
    often each row is drawn), as if each row were repeated that often: [B] values. The
    definition the bootstrap's resampled values follow, vectorised over resamples."""
    (metric,) = _check_metrics((metric,))
    y_true, (y_pred,) = _check_rows(y_true, y_pred)
    counts = np.asarray(counts, dtype=float)
    if counts.ndim != 2 or counts.shape[1] != len(y_true) or (counts < 0).any() or not (counts.sum(1) > 0).all():
        raise ValueError(f"counts must be [B, {len(y_true)}] non-negative with a positive sum per row; got {counts.shape}")
    if metric in CLASSIFICATION_METRICS:
        (truth, predicted), n_classes = _label_codes(y_true, y_pred)
        return _classification_scores(_confusions(counts, truth, predicted, n_classes))[metric]
    return _regression_scores(counts, _finite(y_true, "y_true"), _finite(y_pred, "y_pred"))[metric]


# ---------------------------------------------------------------------------------------------
# Resampling


def _draw_cells(codes: np.ndarray, n_resamples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Resample rows described by label codes [C, N] (truth, then one or more predictions) through
    their distinct columns (cells): (counts [B, cells], cells [C, cells])."""
    cells, frequency = np.unique(codes, axis=1, return_counts=True)
    n_rows = codes.shape[1]
    counts = np.random.default_rng(seed).multinomial(n_rows, frequency / n_rows, size=n_resamples)
    return counts.astype(float), cells


def _row_count_blocks(n_rows: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Row counts [b, N] of n_resamples resamples, in consecutive blocks of at most _BLOCK_CELLS
    counts; each resample draws N row indices uniformly with replacement and counts them."""
    rng = np.random.default_rng(seed)
    per_block = max(1, _BLOCK_CELLS // n_rows)
    for start in range(0, n_resamples, per_block):
        block = np.empty((min(per_block, n_resamples - start), n_rows))
        for counts in block:  # one resample at a time: faster than one bincount of the block
            counts[:] = np.bincount(rng.integers(0, n_rows, n_rows), minlength=n_rows)
        yield block


# ---------------------------------------------------------------------------------------------
# Metrics, vectorised over resamples


def _confusions(counts: np.ndarray, truth: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """Confusion matrices [B, K, K] (true class, predicted class) of weighted rows (or cells)."""
    onehot = np.zeros((len(truth), n_classes * n_classes))
    onehot[np.arange(len(truth)), truth * n_classes + predicted] = 1.0
    return (counts @ onehot).reshape(-1, n_classes, n_classes)


def _classification_scores(confusion: np.ndarray) -> dict[str, np.ndarray]:
    hits = np.diagonal(confusion, axis1=1, axis2=2)
    true, predicted = confusion.sum(2), confusion.sum(1)
    in_truth = true > 0
    in_either = (true + predicted) > 0
    recall = np.where(in_truth, hits / np.where(in_truth, true, 1.0), 0.0)
    f1 = np.where(in_either, 2 * hits / np.where(in_either, true + predicted, 1.0), 0.0)
    return {"accuracy": hits.sum(1) / true.sum(1),
            "balanced_accuracy": recall.sum(1) / in_truth.sum(1),
            "macro_f1": f1.sum(1) / in_either.sum(1)}


def _regression_scores(counts: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, np.ndarray]:
    """r2 and pearson_r of weighted rows, counts [B, N], from weighted sums of centred values."""
    t, p = y_true - y_true.mean(), y_pred - y_pred.mean()  # centred once, against cancellation
    sums = counts @ np.stack([t, p, t * t, p * p, t * p, (y_true - y_pred) ** 2], axis=1)
    n = counts.sum(1)
    mean_t, mean_p = sums[:, 0] / n, sums[:, 1] / n
    ss_t = np.maximum(sums[:, 2] - n * mean_t ** 2, 0.0)
    ss_p = np.maximum(sums[:, 3] - n * mean_p ** 2, 0.0)
    cross, ss_res = sums[:, 4] - n * mean_t * mean_p, sums[:, 5]
    constant_t, constant_p = _constant_where(counts, y_true), _constant_where(counts, y_pred)
    r2 = np.where(constant_t, (ss_res == 0).astype(float), 1.0 - ss_res / np.where(constant_t, 1.0, ss_t))
    undefined = constant_t | constant_p
    pearson = np.where(undefined, 0.0, cross / np.sqrt(np.where(undefined, 1.0, ss_t * ss_p)))
    return {"r2": r2, "pearson_r": np.clip(pearson, -1.0, 1.0)}


def _constant_where(counts: np.ndarray, values: np.ndarray) -> np.ndarray:
    """[B]: whether `values` take a single value on the rows drawn in each resample, i.e. whether
    all of a resample's draws fall on rows of one value (decided exactly, on integer counts)."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    if len(starts) == 1:
        return np.ones(len(counts), dtype=bool)
    per_value = counts if len(starts) == len(values) else np.add.reduceat(counts[:, order], starts, axis=1)
    return per_value.max(1) == counts.sum(1)


def _interval(point: float, values: np.ndarray, level: float) -> Interval:
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(point), float(low), float(high)


# ---------------------------------------------------------------------------------------------
# Inputs


def _label_codes(y_true: np.ndarray, *predictions: np.ndarray) -> tuple[np.ndarray, int]:
    """Labels as class indices [1 + P, N] over the sorted union of all labels, and K."""
    labels, inverse = np.unique(np.concatenate([y_true, *predictions]), return_inverse=True)
    return inverse.reshape(1 + len(predictions), len(y_true)), len(labels)


def _check_metrics(metrics: Sequence[str]) -> list[str]:
    if isinstance(metrics, str):
        raise ValueError(f"metrics must be a sequence of names, not the string {metrics!r}")
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise ValueError(f"unknown or no metrics {unknown}; choose from {METRICS}")
    return list(dict.fromkeys(metrics))


def _check_rows(y_true, *predictions) -> tuple[np.ndarray, list[np.ndarray]]:
    y_true = np.asarray(y_true)
    predictions = [np.asarray(p) for p in predictions]
    if y_true.ndim != 1 or len(y_true) == 0 or any(p.shape != y_true.shape for p in predictions):
        raise ValueError(f"y_true and the predictions must be non-empty 1-D arrays of one length; got shapes "
                         f"{[y_true.shape, *(p.shape for p in predictions)]}")
    return y_true, predictions


def _check_resamples(n_resamples: int) -> None:
    if int(n_resamples) != n_resamples or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer; got {n_resamples}")


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must lie strictly between 0 and 1; got {level}")


def _finite(values: np.ndarray, name: str) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    if not np.isfinite(values).all():
        raise DataError(f"{name} has {int((~np.isfinite(values)).sum())} NaN or inf values; a regression "
                        "metric needs finite targets and predictions.")
    return values
