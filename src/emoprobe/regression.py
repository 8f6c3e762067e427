"""Regression probes for numeric targets: standardisation + ridge, penalty chosen by inner CV.

Outer folds come from folds.assign_folds (copies of a text share a fold). Per outer fold,
`RidgeCV` picks each target's penalty by efficient leave-one-out CV (the exact LOO error of
ridge, computed in closed form) on the training folds only, over one row per text (copies
would otherwise stand in for their held-out twin and pull the penalty down), so neither the
held-out fold nor a copy informs the penalty. Scores per fold and target: R-squared and Pearson
r of the ridge probe, and R-squared of the mean predictor (the training folds' mean: the
floor, about 0). All of a dataset's targets are fitted together, one outer split for all.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import polars as pl
from scipy import sparse
from sklearn.linear_model import Ridge, RidgeCV
from sklearn.metrics import r2_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from .errors import DataError
from .folds import PROBE_COLUMNS, CrossValidation, Folds, assign_folds, with_intervals

log = logging.getLogger(__name__)

REGRESSION_COLUMNS = PROBE_COLUMNS | {"target": pl.String}
DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(-2, 6, 17))  # 0.01 ... 1e6, half decades


def ridge_by_groups(X, Y: np.ndarray, groups: np.ndarray, alphas: Sequence[float]) -> tuple[Ridge, np.ndarray]:
    """Ridge fitted on all rows of X (dense or sparse), with one penalty per target chosen by
    RidgeCV's leave-one-out CV over one row per group (a text's first row, the mean of its
    targets): copies would otherwise stand in for their held-out twin.

    Returns the fit and the chosen grid penalties [T]. The fit on all n rows uses them scaled by
    n / (number of groups), the same penalty per row (RidgeCV's own fit when no group repeats).
    """
    _, first, inverse, counts = np.unique(groups, return_index=True, return_inverse=True, return_counts=True)
    Y_group = np.zeros((len(first), Y.shape[1]))
    np.add.at(Y_group, inverse, Y)
    # An array, not a tuple: RidgeCV writes into a one-penalty `alphas` (a TypeError on a tuple).
    # Dense X: one SVD serves every penalty ("svd"; the default eigendecomposes X'X but then
    # computes the leave-one-out diagonal anew for each penalty, 7x slower at 5,280 x 576).
    search = RidgeCV(alphas=np.array(alphas, dtype=float), alpha_per_target=True,
                     gcv_mode=None if sparse.issparse(X) else "svd")
    search.fit(X[first], Y_group / counts[:, None])
    chosen = np.broadcast_to(search.alpha_, (Y.shape[1],)).astype(float)
    return Ridge(alpha=chosen * X.shape[0] / len(first)).fit(X, Y), chosen


def fit_ridge_probe(X: np.ndarray, Y: np.ndarray, groups: np.ndarray,
                    alphas: Sequence[float] = DEFAULT_ALPHAS) -> tuple[Pipeline, np.ndarray]:
    """StandardScaler + ridge_by_groups; returns the pipeline and the chosen grid penalties [T]."""
    scaler = StandardScaler().fit(X)
    ridge, chosen = ridge_by_groups(scaler.transform(X), Y, groups, alphas)
    return Pipeline([("standardise", scaler), ("ridge", ridge)]), chosen


def check_regression_inputs(X: np.ndarray, Y: np.ndarray, targets: Sequence[str], folds: Folds) -> None:
    """Fail with a message naming the problem before any fitting starts."""
    if X.ndim != 2 or Y.ndim != 2 or len(X) != len(Y):
        raise DataError(f"regression inputs must be X [N, H] and Y [N, T]; got {X.shape} and {Y.shape}.")
    if Y.shape[1] != len(targets) or len(set(targets)) != len(targets):
        raise DataError(f"{Y.shape[1]} target columns but target names {list(targets)}; name each once.")
    if not np.isfinite(X).all():
        raise DataError("activations contain NaN or inf; the extraction is broken (check the model's dtype).")
    for j, name in enumerate(targets):
        bad = np.flatnonzero(~np.isfinite(Y[:, j]))
        if len(bad):
            raise DataError(f"target {name!r} has {len(bad)} NaN or inf values (rows {bad[:5].tolist()}); "
                            "prepare the dataset with `bad_rows: drop` or fill them in.")
        if np.ptp(Y[:, j]) == 0:
            raise DataError(f"target {name!r} is constant ({Y[0, j]}); there is nothing to predict, drop it.")
    for fold, (train, test) in enumerate(folds):
        if len(train) < 3 or len(test) < 2:
            raise DataError(f"fold {fold} has {len(train)} training and {len(test)} test rows; a ridge probe needs "
                            "at least 3 and 2. Use more rows or fewer probe.cv_folds.")


def pearson_r(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Pearson correlation; 0.0 when the predictions are constant (the correlation is undefined)."""
    if np.ptp(y_pred) == 0 or np.ptp(y_true) == 0:
        return 0.0
    return float(np.corrcoef(y_true, y_pred)[0, 1])


def target_fold_scores(truth: np.ndarray, predicted: np.ndarray, probe: str, fold: int, target: str) -> list[dict]:
    """R-squared and Pearson r of one fold's held-out predictions of one target (REGRESSION_COLUMNS rows)."""
    return [{"probe": probe, "fold": fold, "metric": "r2", "value": float(r2_score(truth, predicted)), "target": target},
            {"probe": probe, "fold": fold, "metric": "pearson_r", "value": pearson_r(truth, predicted),
             "target": target}]


def cross_validate_ridge(X: np.ndarray, Y: np.ndarray, targets: Sequence[str], cv_folds: int = 5, seed: int = 0,
                         alphas: Sequence[float] = DEFAULT_ALPHAS, groups: np.ndarray | None = None,
                         folds: Folds | None = None) -> CrossValidation:
    """Per-fold, per-target held-out scores and predictions of the ridge probe and of the mean
    predictor.

    Score rows: probe (ridge | mean), fold, metric (r2, pearson_r, alpha for ridge; r2 for mean),
    value, target, and the pooled metric with its bootstrap CI (see folds.with_intervals).
    Prediction rows: row, fold, probe, target, predicted. `folds` defaults to assign_folds' seeded k-fold, rows with equal `groups`
    (the texts; by default every row its own) in one fold; pass (train, test) pairs (e.g.
    assign_folds' official split) to replace it. The penalty search sees one row per group.
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    Y = Y[:, None] if Y.ndim == 1 else Y
    targets = list(targets)
    groups = np.unique(np.arange(len(X)) if groups is None else np.asarray(groups), return_inverse=True)[1]
    if folds is None:
        folds = assign_folds(groups, cv_folds, seed)
    check_regression_inputs(X, Y, targets, folds)
    rows, predictions, at_edge = [], [], set()
    for fold, (train, test) in enumerate(folds):
        probe, chosen = fit_ridge_probe(X[train], Y[train], groups[train], alphas)
        predicted = probe.predict(X[test]).reshape(len(test), -1)
        for j, name in enumerate(targets):
            predictions += [pl.DataFrame({"row": test, "fold": fold, "probe": "ridge", "target": name,
                                          "predicted": predicted[:, j]}),
                            pl.DataFrame({"row": test, "fold": fold, "probe": "mean", "target": name,
                                          "predicted": np.full(len(test), Y[train, j].mean())})]
            truth = Y[test, j]
            rows += [
                *target_fold_scores(truth, predicted[:, j], "ridge", fold, name),
                {"probe": "ridge", "fold": fold, "metric": "alpha", "value": float(chosen[j]), "target": name},
                {"probe": "mean", "fold": fold, "metric": "r2",
                 "value": float(r2_score(truth, np.full(len(test), Y[train, j].mean()))), "target": name},
            ]
            if chosen[j] in (min(alphas), max(alphas)):
                at_edge.add(name)
    if at_edge:
        log.warning("the chosen ridge penalty sits at the edge of the grid (%g .. %g) for targets %s in some "
                    "folds; widen the alphas", min(alphas), max(alphas), sorted(at_edge))
    predictions = pl.concat(predictions).sort("probe", "target", "row")
    scores = with_intervals(pl.DataFrame(rows, schema=REGRESSION_COLUMNS), predictions,
                            lambda group: Y[group["row"], targets.index(group["target"])], seed, ("probe", "target"))
    return CrossValidation(scores, predictions)
