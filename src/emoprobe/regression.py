"""Regression probes for numeric targets: standardisation + ridge, penalty chosen by inner CV.

Per outer fold, `RidgeCV` picks each target's penalty by efficient leave-one-out CV (the
exact LOO error of ridge, computed in closed form) on the training folds only, so the
held-out fold never informs the penalty. Scores per fold and target: R-squared and Pearson
r of the ridge probe, and R-squared of the mean predictor (the training folds' mean: the
floor, about 0). All of a dataset's targets are fitted together, one outer split for all.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import polars as pl
from sklearn.linear_model import RidgeCV
from sklearn.metrics import r2_score
from sklearn.model_selection import KFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from .errors import DataError
from .probes import PROBE_COLUMNS

log = logging.getLogger(__name__)

REGRESSION_COLUMNS = PROBE_COLUMNS | {"target": pl.String}
DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(-2, 6, 17))  # 0.01 ... 1e6, half decades

Folds = list[tuple[np.ndarray, np.ndarray]]


def make_ridge_probe(alphas: Sequence[float] = DEFAULT_ALPHAS) -> Pipeline:
    """StandardScaler + RidgeCV choosing one penalty per target by leave-one-out CV."""
    return Pipeline([
        ("standardise", StandardScaler()),
        ("ridge", RidgeCV(alphas=tuple(alphas), alpha_per_target=True)),
    ])


def kfold_folds(n_rows: int, cv_folds: int, seed: int) -> Folds:
    """Shuffled k-fold (train, test) index pairs with a fixed seed."""
    return list(KFold(n_splits=cv_folds, shuffle=True, random_state=seed).split(np.zeros((n_rows, 1))))


def official_split_folds(split: Sequence[str]) -> Folds:
    """One (train, test) pair from a train/dev/test column: fit on train + dev, score on test."""
    split = np.asarray(split, dtype=object)
    unknown = sorted(set(split.tolist()) - {"train", "dev", "test"})
    if unknown:
        raise DataError(f"split values {unknown[:5]} are not train, dev or test.")
    train, test = np.flatnonzero(split != "test"), np.flatnonzero(split == "test")
    if not len(test) or not (split == "train").any():
        raise DataError("the official split needs train and test rows; this table lacks one of them.")
    return [(train, test)]


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


def cross_validate_ridge(X: np.ndarray, Y: np.ndarray, targets: Sequence[str], cv_folds: int = 5, seed: int = 0,
                         alphas: Sequence[float] = DEFAULT_ALPHAS, folds: Folds | None = None) -> pl.DataFrame:
    """Per-fold, per-target held-out scores of the ridge probe and of the mean predictor.

    Rows: probe (ridge | mean), fold, metric (r2, pearson_r, alpha for ridge; r2 for mean),
    value, target. `folds` (e.g. official_split_folds) replaces the seeded k-fold split.
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    Y = Y[:, None] if Y.ndim == 1 else Y
    targets = list(targets)
    if folds is None:
        if len(X) < 2 * cv_folds:
            raise DataError(f"{len(X)} rows are too few for probe.cv_folds={cv_folds}; a ridge probe needs at "
                            f"least {2 * cv_folds}.")
        folds = kfold_folds(len(X), cv_folds, seed)
    check_regression_inputs(X, Y, targets, folds)
    rows, at_edge = [], set()
    for fold, (train, test) in enumerate(folds):
        probe = make_ridge_probe(alphas).fit(X[train], Y[train])
        predicted = probe.predict(X[test]).reshape(len(test), -1)
        chosen = np.broadcast_to(probe.named_steps["ridge"].alpha_, (len(targets),))
        for j, name in enumerate(targets):
            truth = Y[test, j]
            rows += [
                {"probe": "ridge", "fold": fold, "metric": "r2", "value": float(r2_score(truth, predicted[:, j])),
                 "target": name},
                {"probe": "ridge", "fold": fold, "metric": "pearson_r", "value": pearson_r(truth, predicted[:, j]),
                 "target": name},
                {"probe": "ridge", "fold": fold, "metric": "alpha", "value": float(chosen[j]), "target": name},
                {"probe": "mean", "fold": fold, "metric": "r2",
                 "value": float(r2_score(truth, np.full(len(test), Y[train, j].mean()))), "target": name},
            ]
            if chosen[j] in (min(alphas), max(alphas)):
                at_edge.add(name)
    if at_edge:
        log.warning("the chosen ridge penalty sits at the edge of the grid (%g .. %g) for targets %s in some "
                    "folds; widen the alphas", min(alphas), max(alphas), sorted(at_edge))
    return pl.DataFrame(rows, schema=REGRESSION_COLUMNS)
