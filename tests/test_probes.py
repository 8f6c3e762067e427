"""Logistic probes recover known separability and refuse unusable inputs."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from emoprobe.errors import DataError
from emoprobe.probes import cross_validate_probe


def _mean(scores: pl.DataFrame, probe: str, metric: str) -> float:
    return scores.filter((pl.col("probe") == probe) & (pl.col("metric") == metric))["value"].mean()


def _synthetic(separation: float, n_per_class=60, n_classes=4, dim=20, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), n_per_class)
    centres = rng.normal(size=(n_classes, dim)) * separation
    return centres[y] + rng.normal(size=(len(y), dim)), y


def test_separable_classes_are_found():
    X, y = _synthetic(separation=5.0)
    scores = cross_validate_probe(X, y, cv_folds=5, seed=0)
    assert _mean(scores, "logreg", "accuracy") > 0.97
    assert _mean(scores, "logreg", "macro_f1") > 0.97
    assert scores.filter(pl.col("probe") == "logreg")["fold"].n_unique() == 5


def test_noise_stays_near_chance():
    X, y = _synthetic(separation=0.0)
    scores = cross_validate_probe(X, y, cv_folds=5, seed=0)
    assert abs(_mean(scores, "logreg", "accuracy") - 0.25) < 0.1
    assert _mean(scores, "majority", "accuracy") == pytest.approx(0.25, abs=0.05)


def test_imbalanced_majority_rate():
    X, y = _synthetic(separation=0.0)
    keep = (y != 0) | (np.arange(len(y)) % 6 == 0)  # class 0 shrunk to 10
    X, y = X[keep], y[keep]
    scores = cross_validate_probe(X, y, cv_folds=5, seed=0)
    assert _mean(scores, "majority", "accuracy") == pytest.approx(60 / 190, abs=0.03)


def test_same_seed_same_scores():
    X, y = _synthetic(separation=1.0)
    assert cross_validate_probe(X, y, seed=3).equals(cross_validate_probe(X, y, seed=3))


def test_too_few_examples_per_class_is_named():
    X, y = _synthetic(separation=1.0, n_per_class=10)
    y[:7] = 9  # label 9 now has 7 examples, label 0 has 3
    with pytest.raises(DataError, match=r"\{0: 3\}.*cv_folds=5"):
        cross_validate_probe(X, y, cv_folds=5)


def test_non_finite_activations_are_refused():
    X, y = _synthetic(separation=1.0)
    X[3, 2] = np.nan
    with pytest.raises(DataError, match="NaN or inf"):
        cross_validate_probe(X, y)
