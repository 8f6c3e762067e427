"""Ridge probes recover known R-squared on synthetic targets and refuse unusable inputs."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from emoprobe.errors import DataError
from emoprobe.folds import assign_folds
from emoprobe.regression import REGRESSION_COLUMNS, cross_validate_ridge


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
    scores = cross_validate_ridge(X, Y, ["linear", "noise", "scaled"], cv_folds=5, seed=0).scores
    assert dict(scores.schema) == REGRESSION_COLUMNS | {"pooled": pl.Float64, "ci_low": pl.Float64,
                                                        "ci_high": pl.Float64}
    assert scores.columns == ["probe", "fold", "metric", "value", "target", "pooled", "ci_low", "ci_high"]
    assert _mean(scores, "ridge", "r2", "linear") == pytest.approx(0.8, abs=0.03)
    assert _mean(scores, "ridge", "r2", "scaled") == pytest.approx(0.8, abs=0.03)  # R-squared is scale-free
    assert _mean(scores, "ridge", "pearson_r", "linear") == pytest.approx(np.sqrt(0.8), abs=0.02)
    assert -0.03 < _mean(scores, "ridge", "r2", "noise") < 0.01
    assert abs(_mean(scores, "ridge", "pearson_r", "noise")) < 0.1
    ridge = scores.filter(pl.col("probe") == "ridge")
    assert ridge["fold"].n_unique() == 5 and set(ridge["metric"]) == {"r2", "pearson_r", "alpha"}
    assert scores.filter(pl.col("probe") == "mean")["metric"].unique().to_list() == ["r2"]


def _brute_force_r2(truth: np.ndarray, predicted: float) -> float:
    return 1 - np.sum((truth - predicted) ** 2) / np.sum((truth - truth.mean()) ** 2)


def test_mean_predictor_is_the_training_folds_mean():
    """Two folds whose training rows, test rows and all rows have different means: the floor
    predicts the training rows' mean (R-squared below 0), not the test rows' (exactly 0)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    Y = np.concatenate([rng.normal(size=(15, 2)), rng.normal(size=(25, 2)) + [2.0, -5.0]])
    folds = [(np.arange(15), np.arange(15, 40)), (np.arange(15, 40), np.arange(15))]
    scores = cross_validate_ridge(X, Y, ["a", "b"], folds=folds).scores.filter(pl.col("probe") == "mean")
    for fold, (train, test) in enumerate(folds):
        for j, target in enumerate(["a", "b"]):
            expected = {where: _brute_force_r2(Y[test, j], Y[rows, j].mean())
                        for where, rows in (("train", train), ("test", test), ("all", np.arange(40)))}
            assert len(set(expected.values())) == 3  # the three choices differ
            (got,) = scores.filter((pl.col("fold") == fold) & (pl.col("target") == target))["value"]
            assert got == pytest.approx(expected["train"], rel=1e-12)


def test_penalty_is_chosen_per_target():
    X, Y = _synthetic(n=300, dim=50)
    scores = cross_validate_ridge(X, Y[:, :2], ["linear", "noise"], cv_folds=3).scores
    assert _mean(scores, "ridge", "alpha", "noise") > 10 * _mean(scores, "ridge", "alpha", "linear")


def test_weak_signal_r2_and_single_target_vector():
    X, Y = _synthetic(r2=0.3, n=3000, seed=1)
    scores = cross_validate_ridge(X, Y[:, 0], ["weak"], cv_folds=4, seed=2).scores
    assert _mean(scores, "ridge", "r2", "weak") == pytest.approx(0.3, abs=0.04)


def test_same_seed_same_scores_and_official_split():
    X, Y = _synthetic(n=200)
    a = cross_validate_ridge(X, Y, ["a", "b", "c"], seed=3).scores
    assert a.equals(cross_validate_ridge(X, Y, ["a", "b", "c"], seed=3).scores)
    split = np.array(["train"] * 140 + ["dev"] * 20 + ["test"] * 40)
    folds = assign_folds(np.arange(200), split=split)
    scores = cross_validate_ridge(X, Y, ["a", "b", "c"], folds=folds).scores
    assert scores["fold"].unique().to_list() == [0] and _mean(scores, "ridge", "r2", "a") > 0.6


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
    with pytest.raises(DataError, match=r"fold \d has 7 training and 1 test rows; a ridge probe needs at least 3"):
        cross_validate_ridge(X[:8], Y[:8], ["a", "b", "c"])
    with pytest.raises(DataError, match=r"4 distinct texts are too few for probe.cv_folds=5"):
        cross_validate_ridge(X[:8], Y[:8], ["a", "b", "c"], groups=np.repeat(np.arange(4), 2))


def test_penalty_search_sees_one_row_per_text():
    """Random targets per text, three copies each: leave-one-out over rows lets each copy's twins
    predict it and picks the smallest penalty; the search over one row per text picks what RidgeCV
    picks on the deduplicated rows, and the held-out R2 stays near the mean predictor's."""
    from sklearn.linear_model import RidgeCV
    from sklearn.preprocessing import StandardScaler

    from emoprobe.regression import DEFAULT_ALPHAS, fit_ridge_probe

    rng = np.random.default_rng(2)
    text_of_row = np.repeat(np.arange(100), 3)  # more features than texts: copies can be memorised
    X, Y = rng.normal(size=(100, 150))[text_of_row], rng.normal(size=(100, 1))[text_of_row]
    Z = StandardScaler().fit_transform(X)
    over_rows = RidgeCV(alphas=DEFAULT_ALPHAS).fit(Z, Y).alpha_
    over_texts = RidgeCV(alphas=DEFAULT_ALPHAS).fit(Z[::3], Y[::3]).alpha_
    assert over_rows == min(DEFAULT_ALPHAS) and over_texts >= 100  # what the copies did to the old search
    _, chosen = fit_ridge_probe(X, Y, text_of_row)
    assert chosen.tolist() == [over_texts]
    scores = cross_validate_ridge(X, Y, ["random"], cv_folds=5, groups=text_of_row).scores
    assert _mean(scores, "ridge", "r2", "random") > _mean(scores, "mean", "r2", "random") - 0.05


def test_penalty_without_copies_is_ridgecvs_own():
    """No repeated text: the same penalties and predictions as sklearn's RidgeCV pipeline."""
    from sklearn.linear_model import RidgeCV
    from sklearn.preprocessing import StandardScaler

    from emoprobe.regression import DEFAULT_ALPHAS, fit_ridge_probe

    X, Y = _synthetic(n=150, dim=30)
    probe, chosen = fit_ridge_probe(X, Y, np.arange(len(X)))
    reference = RidgeCV(alphas=DEFAULT_ALPHAS, alpha_per_target=True).fit(StandardScaler().fit_transform(X), Y)
    np.testing.assert_array_equal(chosen, reference.alpha_)
    np.testing.assert_allclose(probe.predict(X), reference.predict(StandardScaler().fit_transform(X)), rtol=1e-7,
                               atol=1e-9)


def test_held_out_predictions_and_intervals():
    """Each row is predicted once, by the fold that held it out, as sklearn's pipeline with the
    chosen penalty predicts it; `pooled` is sklearn's R2 on those predictions, inside its CI."""
    from sklearn.linear_model import Ridge
    from sklearn.metrics import r2_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, Y = _synthetic(n=300)
    result = cross_validate_ridge(X, Y[:, :2], ["linear", "noise"], cv_folds=3, seed=4)
    predictions = result.predictions
    ridge = predictions.filter((pl.col("probe") == "ridge") & (pl.col("target") == "linear"))
    assert ridge["row"].to_list() == list(range(300))  # every row once, in row order
    for fold, rows in ridge.group_by("fold"):
        test = rows["row"].to_numpy()
        train = np.setdiff1d(np.arange(300), test)
        alpha = _mean(result.scores.filter(pl.col("fold") == fold[0]), "ridge", "alpha", "linear")
        expected = make_pipeline(StandardScaler(), Ridge(alpha=alpha)).fit(X[train], Y[train, 0]).predict(X[test])
        np.testing.assert_allclose(rows["predicted"].to_numpy(), expected, rtol=1e-6, atol=1e-8)
    row = result.scores.filter((pl.col("probe") == "ridge") & (pl.col("target") == "linear")
                               & (pl.col("metric") == "r2")).row(0, named=True)
    assert row["pooled"] == pytest.approx(r2_score(Y[:, 0], ridge["predicted"].to_numpy()))
    assert row["ci_low"] < row["pooled"] < row["ci_high"] and row["ci_high"] - row["ci_low"] < 0.2
    mean = predictions.filter((pl.col("probe") == "mean") & (pl.col("target") == "noise"))
    for fold, rows in mean.group_by("fold"):
        train = np.setdiff1d(np.arange(300), rows["row"].to_numpy())
        np.testing.assert_allclose(rows["predicted"].to_numpy(), Y[train, 1].mean(), rtol=1e-12)
    alpha_rows = result.scores.filter(pl.col("metric") == "alpha")
    assert alpha_rows["ci_low"].null_count() == alpha_rows.height  # no interval for the chosen penalty


def test_a_single_penalty_is_used_as_given():
    """RidgeCV writes into a one-penalty `alphas` (a TypeError on a tuple): the search takes an array."""
    X, Y = _synthetic(n=200)
    scores = cross_validate_ridge(X, Y[:, :1], ["linear"], cv_folds=3, alphas=(10.0,)).scores
    assert _mean(scores, "ridge", "alpha", "linear") == 10.0
