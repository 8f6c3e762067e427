"""Cross-validation shared by both probe kinds: folds (all copies of a text land in the same
fold), the per-fold score table, and bootstrap intervals on the pooled held-out predictions."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import polars as pl
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score
from sklearn.model_selection import GroupKFold, PredefinedSplit, StratifiedGroupKFold

from . import bootstrap
from .errors import DataError

log = logging.getLogger(__name__)

# The per-fold score table of both probe kinds (the ridge probes add a `target` column).
PROBE_COLUMNS = {"probe": pl.String, "fold": pl.Int64, "metric": pl.String, "value": pl.Float64}

Folds = list[tuple[np.ndarray, np.ndarray]]


class CrossValidation(NamedTuple):
    """A probe's per-fold scores (PROBE_COLUMNS + pooled, ci_low, ci_high) and its held-out
    predictions, one row per (probe, [target,] row of the prepared table)."""

    scores: pl.DataFrame
    predictions: pl.DataFrame


def with_intervals(scores: pl.DataFrame, predictions: pl.DataFrame, truth: Callable[[dict], np.ndarray],
                   seed: int, keys: Sequence[str] = ("probe",)) -> pl.DataFrame:
    """`scores` plus, per (keys, metric), the metric on the pooled held-out predictions
    (`pooled`) and its seeded 95% bootstrap interval (`ci_low`, `ci_high`; 1,000 resamples of
    the rows); null for metrics the bootstrap does not cover (ridge's alpha).

    truth(group) gives the true values of a group of `predictions` (its keys as a dict), in the
    order of its `row` column.
    """
    intervals = []
    for group_keys, group in predictions.group_by(list(keys), maintain_order=True):
        group_key = dict(zip(keys, group_keys))
        metrics = sorted(set(scores.filter(**group_key)["metric"]) & set(bootstrap.METRICS))
        cis = bootstrap.bootstrap_cis(truth(group_key | {"row": group["row"].to_numpy()}),
                                      group["predicted"].to_numpy(), metrics, seed=seed)
        intervals += [group_key | {"metric": metric, "pooled": point, "ci_low": low, "ci_high": high}
                      for metric, (point, low, high) in cis.items()]
    schema = {key: scores.schema[key] for key in keys} | {"metric": pl.String, "pooled": pl.Float64,
                                                          "ci_low": pl.Float64, "ci_high": pl.Float64}
    return scores.join(pl.DataFrame(intervals, schema=schema), on=[*keys, "metric"], how="left",
                       maintain_order="left")


def fold_scores(y: np.ndarray, predicted: np.ndarray, folds: Folds, probe: str) -> pl.DataFrame:
    """Per-fold accuracy, balanced accuracy and macro-F1 of out-of-fold predictions (PROBE_COLUMNS)."""
    return pl.DataFrame([{"probe": probe, "fold": fold, "metric": metric, "value": float(value)}
                         for fold, (_, test) in enumerate(folds)
                         for metric, value in _scores(y[test], predicted[test]).items()], schema=PROBE_COLUMNS)


def _scores(y_true, y_pred) -> dict[str, float]:
    return {"accuracy": accuracy_score(y_true, y_pred),
            "balanced_accuracy": balanced_accuracy_score(y_true, y_pred),
            "macro_f1": f1_score(y_true, y_pred, average="macro", zero_division=0)}


def held_out(folds: Folds, probe: str, **columns) -> pl.DataFrame:
    """Held-out prediction rows: (row, fold, probe, *columns) for each test row of every fold;
    a column is an array by row of the prepared table, or one value for all rows."""
    return pl.concat([pl.DataFrame({"row": test, "fold": fold, "probe": probe,
                                    **{name: values[test] if isinstance(values, np.ndarray) else values
                                       for name, values in columns.items()}})
                      for fold, (_, test) in enumerate(folds)])


def assign_folds(groups: Sequence, cv_folds: int = 5, seed: int = 0, labels: Sequence | None = None,
                 split: Sequence[str] | None = None) -> Folds:
    """(train, test) index pairs over the rows; rows with equal `groups` (the texts) share a fold.

    Shuffled k-fold with a fixed seed, stratified by `labels` when given (StratifiedGroupKFold,
    else GroupKFold); with `split` (train, dev or test per row) instead the source's one pair:
    fit on train + dev, score on test (PredefinedSplit).
    """
    groups = np.asarray(groups)
    _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    log.info("%d of %d rows share their text with another row (copies of %d texts)",
             int((counts[inverse] > 1).sum()), len(groups), int((counts > 1).sum()))
    if split is not None:
        return _official_split(np.asarray(split, dtype=object), groups)
    if labels is None:
        if len(counts) < cv_folds:
            raise DataError(f"{len(counts)} distinct texts are too few for probe.cv_folds={cv_folds}, one per "
                            "test fold; lower cv_folds, or use more data.")
        splitter = GroupKFold(n_splits=cv_folds, shuffle=True, random_state=seed)
    else:
        _check_texts_per_label(np.asarray(labels), inverse, cv_folds)
        splitter = StratifiedGroupKFold(n_splits=cv_folds, shuffle=True, random_state=seed)
    # Text codes, not the texts: GroupKFold's np.isin takes ~1000x as long on strings.
    return list(splitter.split(np.zeros((len(groups), 1)), labels, inverse))


def holdout_split(groups: Sequence, fraction: float = 0.2, seed: int = 42) -> Folds:
    """The one (train, test) pair of sklearn's train_test_split(rows, test_size=fraction,
    random_state=seed): unstratified and ungrouped (Tak et al. 2025's split), index arrays in
    train_test_split's own order; logs how many texts have copies on both sides."""
    from sklearn.model_selection import train_test_split

    groups = np.asarray(groups)
    if len(groups) < 2:
        raise DataError(f"{len(groups)} rows are too few for a train/test split.")
    train, test = train_test_split(np.arange(len(groups)), test_size=fraction, random_state=seed)
    if straddling := len(np.intersect1d(groups[train], groups[test])):
        log.warning("holdout split: %d texts have copies in both the training and the test rows (the split is "
                    "not grouped by text)", straddling)
    return [(train, test)]


def shuffled_within_training(y: Sequence, folds: Folds, seed: int = 0) -> np.ndarray:
    """Labels [F, N] for the shuffled-label control: row f is y with fold f's training labels
    permuted among its training rows (seeded per fold; test rows keep their labels, which the
    control never trains on). A probe fitted on them can only score the majority-class rate or
    less on the true test labels, unless something leaks."""
    y = np.asarray(y)
    shuffled = np.tile(y, (len(folds), 1))
    for fold, (train, _) in enumerate(folds):
        shuffled[fold, train] = np.random.default_rng([seed, fold]).permutation(y[train])
    return shuffled


def _check_texts_per_label(labels: np.ndarray, groups: np.ndarray, cv_folds: int) -> None:
    """Every label needs at least cv_folds distinct texts, one per test fold."""
    texts = {label: len(np.unique(groups[labels == label])) for label in np.unique(labels)}
    too_few = {label.item(): n for label, n in texts.items() if n < cv_folds}
    if too_few:
        raise DataError(
            f"label ids {too_few} (id: distinct texts) have fewer texts than probe.cv_folds={cv_folds}; "
            "lower cv_folds, or use more data (raise max_per_class)."
        )


def _official_split(split: np.ndarray, groups: np.ndarray) -> Folds:
    """The one (train + dev, test) pair; warns of test rows whose text is also a training row's."""
    unknown = sorted(set(split.tolist()) - {"train", "dev", "test"})
    if unknown:
        raise DataError(f"split values {unknown[:5]} are not train, dev or test.")
    if not (split == "test").any() or not (split == "train").any():
        raise DataError("the official split needs train and test rows; this table lacks one of them.")
    folds = list(PredefinedSplit(np.where(split == "test", 0, -1)).split())
    (train, test), = folds
    if shared := int(np.isin(groups[test], groups[train]).sum()):
        log.warning("%d of the official split's %d test rows share their text with a train or dev row; "
                    "set the dataset's `duplicate_texts: drop` to keep them apart", shared, len(test))
    return folds
