"""Ridge probes recover known R-squared on synthetic targets and refuse unusable inputs."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from emoprobe.errors import DataError
from emoprobe.probes import cross_validate_probe
from emoprobe.regression import REGRESSION_COLUMNS, cross_validate_ridge, official_split_folds


def _mean(scores: pl.DataFrame, probe: str, metric: str, target: str) -> float:
    return scores.filter((pl.col("probe") == probe) & (pl.col("metric") == metric)
                         & (pl.col("target") == target))["value"].mean()


def _synthetic(n=1500, dim=20, r2=0.8, seed=0):
    """X, and targets: linear with true R-squared `r2`, pure noise, and a shifted, rescaled copy of the first."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, dim))
    w = rng.normal(size=dim)
    signal = X @ w / np.linalg.norm(w)                       # unit variance
    linear = np.sqrt(r2) * signal + np.sqrt(1 - r2) * rng.normal(size=n)
    noise = rng.normal(size=n)
    return X, np.column_stack([linear, noise, 3.0 + 0.01 * linear])


def test_known_r2_is_recovered_for_every_target_in_one_call():
    X, Y = _synthetic(r2=0.8)
    scores = cross_validate_ridge(X, Y, ["linear", "noise", "scaled"], cv_folds=5, seed=0)
    assert dict(scores.schema) == REGRESSION_COLUMNS
    assert scores.columns == ["probe", "fold", "metric", "value", "target"]
    assert _mean(scores, "ridge", "r2", "linear") == pytest.approx(0.8, abs=0.03)
    assert _mean(scores, "ridge", "r2", "scaled") == pytest.approx(0.8, abs=0.03)  # R-squared is scale-free
    assert _mean(scores, "ridge", "pearson_r", "linear") == pytest.approx(np.sqrt(0.8), abs=0.02)
    assert -0.03 < _mean(scores, "ridge", "r2", "noise") < 0.01
    assert abs(_mean(scores, "ridge", "pearson_r", "noise")) < 0.1
    for target in ("linear", "noise", "scaled"):
        assert -0.02 < _mean(scores, "mean", "r2", target) <= 0.0  # the floor
    ridge = scores.filter(pl.col("probe") == "ridge")
    assert ridge["fold"].n_unique() == 5 and set(ridge["metric"]) == {"r2", "pearson_r", "alpha"}
    assert scores.filter(pl.col("probe") == "mean")["metric"].unique().to_list() == ["r2"]


def test_penalty_is_chosen_per_target():
    X, Y = _synthetic(n=300, dim=50)
    scores = cross_validate_ridge(X, Y[:, :2], ["linear", "noise"], cv_folds=3)
    assert _mean(scores, "ridge", "alpha", "noise") > 10 * _mean(scores, "ridge", "alpha", "linear")


def test_weak_signal_r2_and_single_target_vector():
    X, Y = _synthetic(r2=0.3, n=3000, seed=1)
    scores = cross_validate_ridge(X, Y[:, 0], ["weak"], cv_folds=4, seed=2)
    assert _mean(scores, "ridge", "r2", "weak") == pytest.approx(0.3, abs=0.04)


def test_same_seed_same_scores_and_official_split():
    X, Y = _synthetic(n=200)
    a = cross_validate_ridge(X, Y, ["a", "b", "c"], seed=3)
    assert a.equals(cross_validate_ridge(X, Y, ["a", "b", "c"], seed=3))
    split = np.array(["train"] * 140 + ["dev"] * 20 + ["test"] * 40)
    (train, test), = official_split_folds(split)
    assert len(train) == 160 and test.tolist() == list(range(160, 200))
    scores = cross_validate_ridge(X, Y, ["a", "b", "c"], folds=official_split_folds(split))
    assert scores["fold"].unique().to_list() == [0] and _mean(scores, "ridge", "r2", "a") > 0.6
    with pytest.raises(DataError, match=r"split values \['validation'\] are not train, dev or test"):
        official_split_folds(["train", "validation", "test"])


@pytest.mark.parametrize("change, message", [
    (lambda X, Y: Y.__setitem__((4, 1), np.nan), r"target 'b' has 1 NaN or inf values \(rows \[4\]\).*bad_rows: drop"),
    (lambda X, Y: Y.__setitem__((slice(None), 2), 3.0), r"target 'c' is constant \(3.0\)"),
    (lambda X, Y: X.__setitem__((0, 0), np.inf), "activations contain NaN or inf"),
])
def test_unusable_inputs_are_named(change, message):
    X, Y = _synthetic(n=100)
    change(X, Y)
    with pytest.raises(DataError, match=message):
        cross_validate_ridge(X, Y, ["a", "b", "c"])


def test_shape_and_size_problems_are_named():
    X, Y = _synthetic(n=100)
    with pytest.raises(DataError, match=r"3 target columns but target names \['a', 'b'\]"):
        cross_validate_ridge(X, Y, ["a", "b"])
    with pytest.raises(DataError, match=r"8 rows are too few for probe.cv_folds=5"):
        cross_validate_ridge(X[:8], Y[:8], ["a", "b", "c"])


def test_classification_reports_balanced_accuracy():
    """Balanced accuracy (mean recall per class) sits beside accuracy in the classification probe."""
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], [180, 20])
    X = rng.normal(size=(200, 5))
    scores = cross_validate_probe(X, y, cv_folds=5)
    majority = scores.filter((pl.col("probe") == "majority"))
    accuracy = majority.filter(pl.col("metric") == "accuracy")["value"].mean()
    balanced = majority.filter(pl.col("metric") == "balanced_accuracy")["value"].mean()
    assert accuracy == pytest.approx(0.9) and balanced == pytest.approx(0.5)
