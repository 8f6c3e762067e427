"""Classification probes: standardisation + multinomial logistic regression, stratified k-fold CV."""

from __future__ import annotations

import warnings

import numpy as np
import polars as pl
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from .errors import DataError

PROBE_COLUMNS = {"probe": pl.String, "fold": pl.Int64, "metric": pl.String, "value": pl.Float64}


def make_logistic_probe(C: float = 1.0, max_iter: int = 1000, seed: int = 0) -> Pipeline:
    return Pipeline([
        ("standardise", StandardScaler()),
        ("logreg", LogisticRegression(C=C, max_iter=max_iter, random_state=seed)),
    ])


def check_probe_inputs(X: np.ndarray, y: np.ndarray, cv_folds: int) -> None:
    """Fail with a message naming the problem before any fitting starts."""
    if X.ndim != 2 or len(X) != len(y):
        raise DataError(f"probe inputs must be X [N, H] and y [N]; got {X.shape} and {y.shape}.")
    if not np.isfinite(X).all():
        raise DataError("activations contain NaN or inf; the extraction is broken (check the model's dtype).")
    labels, counts = np.unique(y, return_counts=True)
    if len(labels) < 2:
        raise DataError(f"only one label ({labels.tolist()}) present; a probe needs at least two classes.")
    too_few = {int(label): int(n) for label, n in zip(labels, counts) if n < cv_folds}
    if too_few:
        raise DataError(
            f"label ids {too_few} (id: count) have fewer examples than probe.cv_folds={cv_folds}; "
            "lower cv_folds, or use more data (raise max_per_class)."
        )


def _scores(y_true, y_pred) -> dict[str, float]:
    return {"accuracy": accuracy_score(y_true, y_pred),
            "macro_f1": f1_score(y_true, y_pred, average="macro", zero_division=0)}


def cross_validate_probe(X: np.ndarray, y: np.ndarray, cv_folds: int = 5, seed: int = 0,
                         C: float = 1.0, max_iter: int = 1000) -> pl.DataFrame:
    """Per-fold held-out scores of the logistic probe and of the train-fold majority class."""
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y)
    check_probe_inputs(X, y, cv_folds)
    rows = []
    splitter = StratifiedKFold(n_splits=cv_folds, shuffle=True, random_state=seed)
    for fold, (train, test) in enumerate(splitter.split(X, y)):
        probe = make_logistic_probe(C, max_iter, seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            probe.fit(X[train], y[train])
        labels, counts = np.unique(y[train], return_counts=True)
        majority = np.full(len(test), labels[np.argmax(counts)])
        for name, predicted in (("logreg", probe.predict(X[test])), ("majority", majority)):
            rows += [{"probe": name, "fold": fold, "metric": metric, "value": float(value)}
                     for metric, value in _scores(y[test], predicted).items()]
    return pl.DataFrame(rows, schema=PROBE_COLUMNS)
