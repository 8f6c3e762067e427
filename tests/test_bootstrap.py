"""Bootstrap intervals: resampled metrics equal sklearn's on the resampled rows, intervals cover."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, r2_score

from emoprobe import bootstrap as bs
from emoprobe.bootstrap import (CLASSIFICATION_METRICS, METRICS, REGRESSION_METRICS, bootstrap_ci, bootstrap_cis,
                                bootstrap_distribution, metric_on_counts, paired_difference_ci,
                                paired_difference_distribution)
from emoprobe.errors import DataError
from emoprobe.regression import pearson_r


def _sklearn(metric: str, y_true, y_pred) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # balanced accuracy warns about classes only predicted
        return {"accuracy": lambda: accuracy_score(y_true, y_pred),
                "balanced_accuracy": lambda: balanced_accuracy_score(y_true, y_pred),
                "macro_f1": lambda: f1_score(y_true, y_pred, average="macro", zero_division=0),
                "r2": lambda: r2_score(y_true, y_pred),
                "pearson_r": lambda: pearson_r(y_true, y_pred)}[metric]()


def _predictor(y: np.ndarray, accuracy: float, n_classes: int, rng) -> np.ndarray:
    """Right with probability `accuracy`, otherwise a uniformly drawn wrong class."""
    wrong = (y + rng.integers(1, n_classes, len(y))) % n_classes
    return np.where(rng.random(len(y)) < accuracy, y, wrong)


def _labelled(seed: int = 0):
    """40 rows, 4 true classes of which class 3 is rare (2 rows); class 4 is only ever predicted."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1, 2, 3], [15, 13, 10, 2])
    pred = np.where(rng.random(len(y)) < 0.6, y, rng.integers(0, 5, len(y)))
    pred[[0, 20]] = 4
    return y, pred


def _missing_class_counts(y: np.ndarray, pred: np.ndarray, rng) -> np.ndarray:
    """Random resamples plus ones built to lack, in y_true, a class that y_pred still has; to lack
    a class in both; and to lack the only-predicted class 4."""
    n = len(y)
    counts = list(rng.multinomial(n, np.full(n, 1 / n), size=6))
    for keep in (y != 3,                      # class 3 gone from y_true, still predicted for some rows
                 (y != 3) & (pred != 3),      # class 3 gone from both
                 pred != 4,                   # the only-predicted class gone
                 (y == 0) | (y == 1)):        # two classes of truth only
        rows = np.flatnonzero(keep)
        counts.append(np.bincount(rng.choice(rows, n), minlength=n))
    return np.array(counts)


def test_resampled_classification_metrics_equal_sklearn_on_the_repeated_rows():
    y, pred = _labelled()
    counts = _missing_class_counts(y, pred, np.random.default_rng(1))
    missing_true = missing_both = with_only_predicted = 0
    for metric in CLASSIFICATION_METRICS:
        values = metric_on_counts(y, pred, metric, counts)
        for c, value in zip(counts, values):
            truth, predicted = np.repeat(y, c), np.repeat(pred, c)
            assert value == pytest.approx(_sklearn(metric, truth, predicted), rel=1e-12, abs=1e-12)
            if metric == "accuracy":
                missing_true += 3 not in truth and 3 in predicted
                missing_both += 3 not in truth and 3 not in predicted
                with_only_predicted += 4 in predicted
    assert missing_true and missing_both and with_only_predicted  # the corner cases were exercised


def test_bootstrap_values_equal_sklearn_on_the_rows_each_resample_drew():
    """The resamples bootstrap_ci uses (multinomial counts of distinct (truth, prediction) cells),
    rebuilt as rows, scored by sklearn, single and paired."""
    y, pred = _labelled()
    other = np.where(np.random.default_rng(5).random(len(y)) < 0.5, y, 2)
    codes, _ = bs._label_codes(y, pred, other)
    counts, cells = bs._draw_cells(codes, 20, seed=3)
    labels = np.union1d(np.union1d(y, pred), other)
    for metric in ("balanced_accuracy", "macro_f1"):
        _, values = paired_difference_distribution(y, pred, other, metric, n_resamples=20, seed=3)
        for c, value in zip(counts.astype(int), values):
            truth, a, b = (labels[np.repeat(row, c)] for row in cells)
            assert value == pytest.approx(_sklearn(metric, truth, a) - _sklearn(metric, truth, b), abs=1e-12)
    # accuracy: the resamples draw the cells of (a wrong, b wrong); rebuilt from one row of each cell
    wrong = np.stack([np.zeros(len(y), dtype=int), pred != y, other != y]).astype(int)
    counts, cells = bs._draw_cells(wrong, 20, seed=3)
    assert cells.shape[1] == 4
    first_row = [int(np.flatnonzero((wrong[1] == cell[1]) & (wrong[2] == cell[2]))[0]) for cell in cells.T]
    _, values = paired_difference_distribution(y, pred, other, "accuracy", n_resamples=20, seed=3)
    for c, value in zip(counts.astype(int), values):
        rows = np.repeat(first_row, c)
        assert value == pytest.approx(_sklearn("accuracy", y[rows], pred[rows]) - _sklearn("accuracy", y[rows], other[rows]),
                                      abs=1e-12)
    codes, _ = bs._label_codes(y, pred)
    counts, cells = bs._draw_cells(codes, 20, seed=4)
    values = bootstrap_distribution(y, pred, CLASSIFICATION_METRICS, n_resamples=20, seed=4)
    for metric in CLASSIFICATION_METRICS:
        for c, value in zip(counts.astype(int), values[metric][1]):
            truth, predicted = (labels[np.repeat(row, c)] for row in cells)
            assert value == pytest.approx(_sklearn(metric, truth, predicted), abs=1e-12)


def test_resampled_regression_metrics_equal_sklearn_on_the_repeated_rows():
    rng = np.random.default_rng(2)
    y = np.round(rng.normal(size=30) * 4)  # integers: ties, and constant resamples sklearn scores exactly
    pred = np.where(rng.random(30) < 0.8, y + rng.normal(size=30), 1.0)
    pred[:3] = y[:3]
    n = len(y)
    counts = list(rng.multinomial(n, np.full(n, 1 / n), size=8))
    counts += [np.bincount(np.zeros(n, int) + i, minlength=n) for i in (0, 5)]  # one row N times
    same = np.flatnonzero(y == y[np.argmax(np.bincount((y - y.min()).astype(int)))])  # the commonest value
    counts.append(np.bincount(rng.choice(same, n), minlength=n))
    counts.append(np.bincount(rng.choice(np.flatnonzero(pred == 1.0), n), minlength=n))  # constant y_pred
    counts = np.array(counts)
    for metric in REGRESSION_METRICS:
        values = metric_on_counts(y, pred, metric, counts)
        for c, value in zip(counts, values):
            assert value == pytest.approx(_sklearn(metric, np.repeat(y, c), np.repeat(pred, c)), rel=1e-9, abs=1e-12)
    assert set(metric_on_counts(y, pred, "r2", counts[8:10])) == {0.0, 1.0}  # a wrong and a right lone row
    assert metric_on_counts(y, pred, "pearson_r", counts[-1:])[0] == 0.0


def test_r2_of_constant_truth_is_decided_exactly():
    """Seven rows of 0.1: sklearn's mean is not 0.1 in floating point and it returns about -5e31;
    the documented definition gives 0.0 for wrong predictions and 1.0 for right ones."""
    truth = np.full(7, 0.1)
    ones = np.ones((1, 7))
    assert metric_on_counts(truth, truth + 0.1, "r2", ones)[0] == 0.0
    assert metric_on_counts(truth, truth.copy(), "r2", ones)[0] == 1.0
    assert metric_on_counts(truth, truth + np.arange(7), "pearson_r", ones)[0] == 0.0


def test_point_estimates_equal_sklearn_on_all_rows():
    y, pred = _labelled()
    names = np.array(["anger", "fear", "joy", "sadness", "surprise"])  # string labels work too
    for truth, predicted in ((y, pred), (names[y], names[pred])):
        intervals = bootstrap_cis(truth, predicted, CLASSIFICATION_METRICS, n_resamples=50)
        for metric, (point, low, high) in intervals.items():
            assert point == pytest.approx(_sklearn(metric, truth, predicted), abs=1e-12)
            assert low <= high
    rng = np.random.default_rng(3)
    target = rng.normal(size=200)
    estimate, other = target + rng.normal(size=200), 0.3 * target + rng.normal(size=200)
    for metric in REGRESSION_METRICS:
        assert bootstrap_ci(target, estimate, metric, n_resamples=50)[0] == pytest.approx(
            _sklearn(metric, target, estimate), rel=1e-12)
        assert paired_difference_ci(target, estimate, other, metric, n_resamples=50)[0] == pytest.approx(
            _sklearn(metric, target, estimate) - _sklearn(metric, target, other), rel=1e-12)
    assert paired_difference_ci(y, pred, y, "macro_f1", n_resamples=50)[0] == pytest.approx(
        _sklearn("macro_f1", y, pred) - 1.0, abs=1e-12)


def test_interval_is_the_percentiles_of_the_resampled_values():
    y, pred = _labelled()
    point, values = bootstrap_distribution(y, pred, ["macro_f1"], n_resamples=400, seed=7)["macro_f1"]
    assert values.shape == (400,)
    assert bootstrap_ci(y, pred, "macro_f1", n_resamples=400, seed=7, level=0.9) == (
        point, *np.quantile(values, [0.05, 0.95]))


def test_cell_resamples_spread_like_row_resamples():
    """Drawing cell counts from a multinomial is resampling rows: the classification values spread
    as under explicit row resampling (and accuracy as the binomial's sqrt(p (1 - p) / N))."""
    rng = np.random.default_rng(4)
    y = rng.integers(0, 5, 200)
    pred = _predictor(y, 0.6, 5, rng)
    row_counts = np.concatenate(list(bs._row_count_blocks(len(y), 4000, seed=1)))
    cells = bootstrap_distribution(y, pred, CLASSIFICATION_METRICS, n_resamples=4000, seed=2)
    for metric in CLASSIFICATION_METRICS:
        rows = metric_on_counts(y, pred, metric, row_counts)
        drawn = cells[metric][1]
        assert np.quantile(drawn, [0.025, 0.5, 0.975]) == pytest.approx(np.quantile(rows, [0.025, 0.5, 0.975]), abs=0.01)
        assert drawn.std() == pytest.approx(rows.std(), rel=0.06)
    accuracy = np.mean(y == pred)
    assert cells["accuracy"][1].std() == pytest.approx(np.sqrt(accuracy * (1 - accuracy) / len(y)), rel=0.05)


def test_accuracy_interval_covers_the_true_accuracy_about_95_percent_of_the_time():
    rng = np.random.default_rng(5)
    covered = 0
    for seed in range(200):
        y = rng.integers(0, 3, 300)
        _, low, high = bootstrap_ci(y, _predictor(y, 0.7, 3, rng), "accuracy", seed=seed)
        covered += low <= 0.7 <= high
    assert 0.90 <= covered / 200 <= 0.99


def test_pearson_interval_covers_the_true_correlation_about_95_percent_of_the_time():
    rng = np.random.default_rng(6)
    rho, covered = 0.5, 0
    for seed in range(200):
        y = rng.normal(size=300)
        _, low, high = bootstrap_ci(y, rho * y + np.sqrt(1 - rho ** 2) * rng.normal(size=300), "pearson_r",
                                    n_resamples=500, seed=seed)
        covered += low <= rho <= high
    assert 0.90 <= covered / 200 <= 0.99


def test_paired_interval_excludes_zero_when_one_predictor_is_right_on_a_superset():
    """A is right wherever B is and on 8 rows more (of 300): on every shared resample A scores at
    least as high, so each resampled difference is >= 0 and the interval lies above 0, though
    the gain (0.027) is below the spread of either accuracy (0.028), so resamples not shared by
    both (an unpaired bootstrap) would give negative differences and an interval around 0."""
    rng = np.random.default_rng(7)
    y = rng.integers(0, 4, 300)
    right_b = np.arange(300) < 150
    right_a = np.arange(300) < 158
    wrong = (y + 1) % 4
    a, b = np.where(right_a, y, wrong), np.where(right_b, y, wrong)
    for metric in ("accuracy", "balanced_accuracy"):
        difference, low, high = paired_difference_ci(y, a, b, metric)
        assert 0 < low < difference < high
        assert (paired_difference_distribution(y, a, b, metric)[1] >= 0).all()
    assert paired_difference_ci(y, a, b, "accuracy")[0] == pytest.approx(8 / 300)
    # Regression: B's error is A's, doubled on 10 rows; so B's squared error is never smaller.
    truth = rng.normal(size=300)
    error = 0.5 * rng.normal(size=300)
    close, far = truth + error, truth + error * np.where(np.arange(300) < 10, 2.0, 1.0)
    assert paired_difference_ci(truth, close, far, "r2")[1] > 0
    assert (paired_difference_distribution(truth, close, far, "r2")[1] >= 0).all()


def test_paired_interval_of_a_predictor_with_itself_is_exactly_zero():
    y, pred = _labelled()
    rng = np.random.default_rng(8)
    target = rng.normal(size=100)
    estimate = target + rng.normal(size=100)
    for metric in METRICS:
        truth, predicted = (y, pred) if metric in CLASSIFICATION_METRICS else (target, estimate)
        assert paired_difference_ci(truth, predicted, predicted.copy(), metric) == (0.0, 0.0, 0.0)


def test_paired_interval_of_independent_equally_good_predictors_mostly_includes_zero():
    rng = np.random.default_rng(9)
    includes = 0
    for seed in range(100):
        y = rng.integers(0, 3, 300)
        _, low, high = paired_difference_ci(y, _predictor(y, 0.7, 3, rng), _predictor(y, 0.7, 3, rng),
                                            "accuracy", seed=seed)
        includes += low <= 0 <= high
    assert includes / 100 >= 0.88


def _labels_and_values(classification_metric: str, regression_metric: str, seed: int) -> list[tuple]:
    """(truth, prediction, metric) for a classification and a regression metric."""
    y, pred = _labelled()
    rng = np.random.default_rng(seed)
    target = rng.normal(size=80)
    return [(y, pred, classification_metric), (target, target + rng.normal(size=80), regression_metric)]


def test_same_seed_same_interval_other_seed_another():
    for truth, predicted, metric in _labels_and_values("macro_f1", "r2", 10):
        first = bootstrap_ci(truth, predicted, metric, n_resamples=200, seed=11)
        assert bootstrap_ci(truth, predicted, metric, n_resamples=200, seed=11) == first
        assert bootstrap_ci(truth, predicted, metric, n_resamples=200, seed=12) != first
        assert paired_difference_ci(truth, predicted, truth, metric, n_resamples=200, seed=11) == \
            paired_difference_ci(truth, predicted, truth, metric, n_resamples=200, seed=11)


def test_a_higher_level_gives_a_wider_interval():
    for truth, predicted, metric in _labels_and_values("balanced_accuracy", "pearson_r", 13):
        intervals = [bootstrap_ci(truth, predicted, metric, seed=1, level=level) for level in (0.5, 0.8, 0.95, 0.99)]
        for (_, low, high), (_, wider_low, wider_high) in zip(intervals, intervals[1:]):
            assert wider_low < low < high < wider_high


def test_bad_arguments_are_refused():
    y, pred = _labelled()
    with pytest.raises(ValueError, match="unknown"):
        bootstrap_ci(y, pred, "auc")
    with pytest.raises(ValueError, match="one length"):
        bootstrap_ci(y, pred[:-1], "accuracy")
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci(y, pred, "accuracy", level=95)
    with pytest.raises(ValueError, match="n_resamples"):
        paired_difference_ci(y, pred, y, "accuracy", n_resamples=0)
    with pytest.raises(DataError, match="NaN"):
        bootstrap_ci(np.array([1.0, 2.0, np.nan]), np.array([1.0, 2.0, 3.0]), "r2")


def test_mean_interval_is_the_percentiles_of_resampled_means():
    """mean_ci against a plain loop: resample N of the N values with the same generator, take each
    resample's mean, then numpy's percentiles."""
    values = np.random.default_rng(4).normal(1.0, 2.0, 237)
    point, low, high = bs.mean_ci(values, n_resamples=500, seed=9)
    rng = np.random.default_rng(9)
    means = [values[rng.integers(0, len(values), len(values))].mean() for _ in range(500)]
    assert point == pytest.approx(values.mean())
    assert (low, high) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])))
    assert low < values.mean() < high
