"""Logistic probes recover known separability and refuse unusable inputs."""

from __future__ import annotations

import re

import numpy as np
import polars as pl
import pytest

from emoprobe.errors import DataError
from emoprobe.folds import assign_folds
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
    scores = cross_validate_probe(X, y, cv_folds=5, seed=0).scores
    assert _mean(scores, "logreg", "accuracy") > 0.97
    assert _mean(scores, "logreg", "macro_f1") > 0.97
    assert scores.filter(pl.col("probe") == "logreg")["fold"].n_unique() == 5


def test_noise_stays_near_chance():
    X, y = _synthetic(separation=0.0)
    scores = cross_validate_probe(X, y, cv_folds=5, seed=0).scores
    assert abs(_mean(scores, "logreg", "accuracy") - 0.25) < 0.1


def _brute_force_scores(truth: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Accuracy, mean recall over the true classes, and mean F1 over true and predicted classes."""
    recall = [np.mean(predicted[truth == c] == c) for c in np.unique(truth)]
    f1 = []
    for c in np.union1d(truth, predicted):
        hits = np.sum((predicted == c) & (truth == c))
        f1.append(2 * hits / (np.sum(predicted == c) + np.sum(truth == c)))
    return {"accuracy": np.mean(truth == predicted), "balanced_accuracy": np.mean(recall), "macro_f1": np.mean(f1)}


def test_majority_baseline_is_the_training_folds_majority():
    """Two folds whose training rows, test rows and all rows each have a different majority
    class: the baseline's accuracy, balanced accuracy (mean recall per class) and macro F1 are
    those of predicting the training rows' one."""
    first, second = np.repeat([0, 1, 2], [6, 1, 5]), np.repeat([0, 1, 2], [1, 6, 5])
    y = np.concatenate([first, second])
    folds = [(np.arange(12), np.arange(12, 24)), (np.arange(12, 24), np.arange(12))]
    X = np.random.default_rng(0).normal(size=(len(y), 3))
    scores = cross_validate_probe(X, y, folds=folds).scores.filter(pl.col("probe") == "majority")
    for fold, (train, test) in enumerate(folds):
        candidates = {where: np.bincount(y[rows]).argmax()
                      for where, rows in (("train", train), ("test", test), ("all", np.arange(len(y))))}
        expected = {where: _brute_force_scores(y[test], np.full(len(test), c)) for where, c in candidates.items()}
        assert len({e["accuracy"] for e in expected.values()}) == 3  # the three choices differ
        got = dict(scores.filter(pl.col("fold") == fold).select("metric", "value").iter_rows())
        assert got == pytest.approx(expected["train"], rel=1e-12)


def test_same_seed_same_scores():
    X, y = _synthetic(separation=1.0)
    assert cross_validate_probe(X, y, seed=3).scores.equals(cross_validate_probe(X, y, seed=3).scores)


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


def test_torch_backend_matches_sklearn():
    X, y = _synthetic(separation=0.25, n_per_class=80, dim=40, seed=2)
    y = np.array([7, 2, 9, 4])[y]  # label ids that are not class indices: torch must map its predictions back
    sk = cross_validate_probe(X, y, cv_folds=4, seed=1, backend="sklearn").scores
    tt = cross_validate_probe(X, y, cv_folds=4, seed=1, backend="torch").scores
    acc_sk, acc_tt = _mean(sk, "logreg", "accuracy"), _mean(tt, "logreg", "accuracy")
    assert 0.4 < acc_sk < 0.95  # neither trivial nor hopeless, so agreement means something
    assert abs(acc_sk - acc_tt) <= 0.01


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("C", [0.1, 10.0])
def test_torch_fit_is_sklearns_optimum(n_classes, C):
    """fit_torch's weights and intercepts are sklearn's LogisticRegression(C) coef_ and intercept_
    on StandardScaler-transformed training rows (the sklearn backend's Pipeline), for two classes
    (one weight column) and three (multinomial): at position 0 on raw features, offsets and
    scales far from 0 and 1, at position 1 on already standardised ones."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from emoprobe.probes import fit_torch

    rng = np.random.default_rng(n_classes)
    index = np.repeat(np.arange(n_classes), 70)
    y = np.array([5, 9, 7])[index]  # label ids, not class indices
    latent = rng.normal(size=(n_classes, 8))[index] * 0.7 + rng.normal(size=(len(y), 8))
    latent[:, 1] += 0.5 * latent[:, 0]  # correlated features
    raw = latent * rng.uniform(0.1, 20, 8) + rng.uniform(-50, 50, 8)
    X = np.stack([raw, StandardScaler().fit_transform(latent)]).astype(np.float32)
    folds = assign_folds(np.arange(len(y)), 3, 0, labels=y)
    fit = fit_torch(X, y, folds, C=C, tolerance=1e-6)
    assert fit.classes.tolist() == sorted(set(y.tolist()))
    assert fit.coef.shape == (2, 3, 1 if n_classes == 2 else n_classes, 8) and fit.intercept.shape == fit.coef.shape[:3]
    for position in range(2):
        for f, (train, _) in enumerate(folds):
            standardised = StandardScaler().fit_transform(X[position, train].astype(np.float64))
            sklearn = LogisticRegression(C=C, tol=1e-10, max_iter=10_000).fit(standardised, y[train])
            np.testing.assert_allclose(fit.coef[position, f], sklearn.coef_, atol=1e-3)
            np.testing.assert_allclose(fit.intercept[position, f], sklearn.intercept_, atol=1e-3)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_unstandardised_torch_fit_is_sklearns_optimum_on_raw_inputs(n_classes):
    """standardise: false (Tak et al.'s probe): fit_torch's weights are LogisticRegression(C)'s on
    the raw training rows, and the sklearn backend's Pipeline leaves the inputs as they are."""
    from sklearn.linear_model import LogisticRegression

    from emoprobe.probes import fit_torch, make_logistic_probe

    rng = np.random.default_rng(n_classes)
    index = np.repeat(np.arange(n_classes), 70)
    y = np.array([5, 9, 7])[index]
    latent = rng.normal(size=(n_classes, 6))[index] * 0.7 + rng.normal(size=(len(y), 6))
    X = (latent * rng.uniform(0.5, 3, 6) + rng.uniform(-2, 2, 6)).astype(np.float32)
    folds = assign_folds(np.arange(len(y)), 3, 0, labels=y)
    fit = fit_torch(X, y, folds, C=0.5, tolerance=1e-6, standardise=False)
    assert (fit.mean == 0).all() and (fit.inv_scale == 1).all()
    for f, (train, _) in enumerate(folds):
        sklearn = LogisticRegression(C=0.5, tol=1e-10, max_iter=10_000).fit(X[train].astype(np.float64), y[train])
        np.testing.assert_allclose(fit.coef[0, f], sklearn.coef_, atol=1e-3)
        np.testing.assert_allclose(fit.intercept[0, f], sklearn.intercept_, atol=1e-3)
        pipeline = make_logistic_probe(0.5, 10_000, standardise=False).fit(X[train], y[train])
        np.testing.assert_array_equal(pipeline.named_steps["standardise"].transform(X[train]), X[train])


def test_torch_optimum_equals_sklearn_predictions():
    from emoprobe.probes import fit_predict_sklearn, fit_predict_torch

    X, y = _synthetic(separation=0.8, n_per_class=50, dim=10, seed=4)
    folds = assign_folds(np.arange(len(y)), 3, 0, labels=y)
    agreement = (fit_predict_sklearn(X, y, folds) == fit_predict_torch(X, y, folds)[0]).mean()
    assert agreement > 0.98


def test_official_split_folds_are_used():
    X, y = _synthetic(separation=5.0)
    test = np.arange(len(y)) % 4 == 0
    scores = cross_validate_probe(X, y, folds=[(np.flatnonzero(~test), np.flatnonzero(test))]).scores
    assert scores["fold"].unique().to_list() == [0] and _mean(scores, "logreg", "accuracy") > 0.95


def test_preconditioning_keeps_the_optimum_and_cuts_the_steps(caplog):
    """Correlated features (as hidden states are): the same predictions, far fewer L-BFGS steps."""
    import logging

    from emoprobe.probes import fit_predict_torch

    rng = np.random.default_rng(5)
    y = np.repeat(np.arange(4), 75)
    latent = rng.normal(size=(300, 60)) * np.geomspace(1, 1e-2, 60)  # a few dominant directions
    latent[:, :5] += rng.normal(size=(4, 5))[y] * 0.5
    X = latent @ np.linalg.qr(rng.normal(size=(60, 60)))[0]  # ... spread over every feature
    folds = assign_folds(np.arange(len(y)), 3, 0, labels=y)
    steps = {}
    for precondition in (False, True):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="emoprobe.probes"):
            predicted = fit_predict_torch(X, y, folds, precondition=precondition)[0]
        (message,) = [r.getMessage() for r in caplog.records if "L-BFGS steps" in r.getMessage()]
        steps[precondition] = int(message.rsplit("max ", 1)[1])
        assert "stopped at max_iter" not in caplog.text
        if precondition:
            assert (predicted == plain).mean() > 0.98
        plain = predicted
    assert steps[True] * 2 < steps[False], steps


def test_constant_features_get_no_weight_in_either_backend(caplog):
    """Every prompt ending in the same token gives identical rows: both backends predict the
    majority class, and the torch one converges at once instead of chasing rounding noise."""
    import logging

    y = np.repeat(np.arange(3), [3000, 1800, 1200])
    X = np.tile(np.random.default_rng(0).normal(size=64).astype(np.float32) * 3, (len(y), 1))
    with caplog.at_level(logging.INFO, logger="emoprobe.probes"):
        torch_scores = cross_validate_probe(X, y, cv_folds=5, backend="torch").scores
    steps = int(next(r.getMessage() for r in caplog.records if "L-BFGS steps" in r.getMessage()).rsplit("max ", 1)[1])
    assert steps < 50
    sklearn_scores = cross_validate_probe(X, y, cv_folds=5, backend="sklearn").scores
    for scores in (torch_scores, sklearn_scores):
        assert _mean(scores, "logreg", "accuracy") == pytest.approx(0.5)


def test_the_stall_stop_leaves_a_problem_that_still_takes_real_steps_alone():
    """Ill-conditioned quadratics whose f no longer changes in float32 long before the gradient
    is small: L-BFGS keeps taking full-length steps there and must go on to the optimum."""
    import torch

    from emoprobe.probes import batched_lbfgs

    torch.manual_seed(0)
    A = torch.randn(2, 50, 50)
    hessian = A @ A.transpose(1, 2) / 50 + 1e-3 * torch.eye(50)
    target = torch.randn(2, 50)

    def value_and_grad(theta):
        slope = torch.einsum("gij,gj->gi", hessian, theta - target)
        return 0.5 * ((theta - target) * slope).sum(1) + 100.0, slope

    theta, _ = batched_lbfgs(value_and_grad, torch.zeros_like(target), max_iter=1000, tolerance=1e-9)
    assert (theta - target).abs().max() < 1e-2


@pytest.mark.slow
def test_real_embeddings_stop_at_float32_precision_and_match_sklearn(caplog):
    """SmolLM2's layer 0 at position -3 (the embeddings of ~1,450 distinct last text tokens, all
    6,600 crowd-enVENT prompts): an ill-conditioned fit at the edge of float32 precision. Torch
    ends every fold far short of max_iter (it used to run all 1,000 steps, ~10 min; later it
    stopped on the stall rule; with the written-out, blockwise gradient it converges) and predicts
    as well as sklearn."""

    import torch
    from threadpoolctl import threadpool_limits

    from emoprobe import models
    from emoprobe.config import resolve_template
    from emoprobe.data.prepare import prepare
    from emoprobe.extract import extract
    from emoprobe.jobs import AUTO_BATCH_LIMITS
    from emoprobe.probes import fit_predict_sklearn, fit_predict_torch

    from .conftest import SHARED_DATA, SMOLLM2, crowd_envent_path, require_smollm2

    require_smollm2()
    crowd_envent_path()
    table = prepare({"type": "crowd_envent"}, resolve_template("zero_shot"), 0, str(SHARED_DATA), "unused")
    tokenizer, model, _ = models.load(SMOLLM2, torch.device("cpu"))
    X = np.empty((table.height, model.config.hidden_size), dtype=np.float32)

    def keep(rows, captured):
        X[rows] = captured[0, "residual"][:, 0].float().numpy()

    limits = AUTO_BATCH_LIMITS["cpu"]
    extract(model, tokenizer, table["prompt"].to_list(), table["id"].to_list(), [0], [-3], limits["batch_size"],
            keep, progress=False, batch_tokens=limits["batch_tokens"])
    y = table["label_id"].to_numpy()
    folds = assign_folds(table["text"].to_numpy(), 5, 0, labels=y)
    caplog.set_level("INFO", logger="emoprobe")
    with threadpool_limits(1):
        torch_predicted = fit_predict_torch(X, y, folds)[0]
        sklearn_predicted = fit_predict_sklearn(X, y, folds)
    steps = re.search(r"L-BFGS steps per \(position, fold\) problem: median (\d+), max (\d+)", caplog.text)
    assert int(steps.group(2)) < 500, caplog.text[-2000:]
    for _, test in folds:
        assert np.mean(torch_predicted[test] == y[test]) == pytest.approx(np.mean(sklearn_predicted[test] == y[test]),
                                                                          abs=0.01)


@pytest.mark.parametrize("backend", ["torch", "sklearn"])
def test_held_out_predictions_and_intervals(backend):
    """Predictions: one per (probe, row), from the fold that held the row out; `pooled` is the
    accuracy of those predictions, inside its bootstrap CI; the majority baseline's p_true is
    the true label's share of the training rows."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    X, y = _synthetic(separation=0.4, n_per_class=50, n_classes=3, dim=8, seed=6)
    y = np.array([5, 1, 8])[y]
    result = cross_validate_probe(X, y, cv_folds=4, seed=2, backend=backend)
    predictions = result.predictions
    assert predictions.columns == ["row", "fold", "probe", "predicted", "p_true"]
    logreg = predictions.filter(pl.col("probe") == "logreg")
    assert logreg["row"].to_list() == list(range(len(y)))
    predicted = logreg["predicted"].to_numpy()
    assert set(predicted) <= {1, 5, 8} and ((logreg["p_true"] > 0) & (logreg["p_true"] < 1)).all()
    assert ((logreg["p_true"] > 0.5).to_numpy() <= (predicted == y)).all()  # above 1/2 is the argmax
    scores = result.scores
    for metric, function in (("accuracy", accuracy_score), ("balanced_accuracy", balanced_accuracy_score)):
        row = scores.filter((pl.col("probe") == "logreg") & (pl.col("metric") == metric)).row(0, named=True)
        assert row["pooled"] == pytest.approx(function(y, predicted))
        assert row["ci_low"] < row["pooled"] < row["ci_high"]
    majority = predictions.filter(pl.col("probe") == "majority")
    for (fold,), rows in majority.group_by("fold"):
        train = np.setdiff1d(np.arange(len(y)), rows["row"].to_numpy())
        share = {label: np.mean(y[train] == label) for label in (1, 5, 8)}
        np.testing.assert_allclose(rows["p_true"].to_numpy(), [share[label] for label in y[rows["row"].to_numpy()]])


def test_torch_probabilities_equal_sklearns():
    from emoprobe.folds import assign_folds
    from emoprobe.probes import proba_sklearn, proba_torch

    X, y = _synthetic(separation=0.5, n_per_class=40, n_classes=3, dim=6, seed=7)
    folds = assign_folds(np.arange(len(y)), 3, 0, labels=y)
    np.testing.assert_allclose(proba_torch(X, y, folds, tolerance=1e-7)[0], proba_sklearn(X, y, folds), atol=2e-3)


@pytest.mark.parametrize("backend", ["sklearn", "torch"])
def test_shuffled_label_control_is_at_chance_on_separable_data(backend):
    """Separable classes (the real probe near 1): the control, fitted on labels permuted within
    the training folds and scored on the true test labels, lands within 3 standard errors of
    chance (4 balanced classes)."""
    X, y = _synthetic(separation=5.0, n_per_class=100)
    result = cross_validate_probe(X, y, cv_folds=5, seed=0, backend=backend, shuffled=True)
    accuracy = result.scores.filter(metric="accuracy").group_by("probe").agg(pl.col("pooled").first())
    pooled = dict(accuracy.iter_rows())
    assert pooled["logreg"] > 0.97
    chance = 0.25
    assert abs(pooled["logreg_shuffled"] - chance) < 3 * np.sqrt(chance * (1 - chance) / len(y))
    assert set(result.predictions.filter(probe="logreg_shuffled")["row"]) == set(range(len(y)))


def test_a_control_that_still_sees_the_labels_is_reported_as_leakage(monkeypatch):
    """The leakage check is written for this case: a control whose 'shuffled' labels are the
    true ones (a broken permutation) scores like the probe, and `leakage` says so; the honest
    control gives no warning."""
    from emoprobe import probes

    X, y = _synthetic(separation=2.0, n_per_class=80)
    folds = assign_folds(np.arange(len(y)), 5, 0, labels=y)
    majority = probes.majority_rate(y, folds)
    honest = cross_validate_probe(X, y, seed=0, backend="torch", shuffled=True, folds=folds).scores
    assert majority == pytest.approx(honest.filter(probe="majority", metric="accuracy")["pooled"][0])
    assert probes.leakage(honest, majority) is None
    monkeypatch.setattr(probes, "shuffled_within_training", lambda y, folds, seed: np.tile(y, (len(folds), 1)))
    leaky = cross_validate_probe(X, y, seed=0, backend="torch", shuffled=True, folds=folds).scores
    message = probes.leakage(leaky, majority)
    assert message is not None and "LEAKAGE" in message and "majority-class accuracy" in message
    assert probes.leakage(leaky.filter(pl.col("probe") != "logreg_shuffled"), majority) is None  # no control


def test_standardiser_learns_from_the_training_rows_only():
    """A scaler fitted on all rows would leak the test rows' distribution into every fold: each
    torch probe's mean and scale are its fold's training rows' (test rows shifted far away to
    make the difference plain)."""
    from emoprobe.probes import fit_torch

    X, y = _synthetic(separation=1.0)
    folds = assign_folds(np.arange(len(y)), 4, 0, labels=y)
    X = X.copy()
    X[folds[0][1]] += 100.0
    probes = fit_torch(X, y, folds, max_iter=5)
    for f, (train, _) in enumerate(folds):
        np.testing.assert_allclose(probes.mean[0, f], X[train].mean(0), rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(probes.inv_scale[0, f], 1 / X[train].std(0), rtol=1e-4)
    assert np.abs(probes.mean[0, 1] - X.mean(0)).min() > 5  # all-rows means would be far off


@pytest.mark.parametrize("n_classes", [2, 3])
def test_saved_direction_reproduces_the_fitted_pipeline(n_classes):
    """fit_directions in the model's units: x @ weight.T + bias is sklearn's Pipeline
    decision_function on raw activations (sklearn backend) to 1e-5; the torch backend's is its
    own standardised probe, x -> ((x - mean) / scale) @ coef.T + intercept, to 1e-5, and sklearn's
    to the optimiser's tolerance."""
    from emoprobe.probes import fit_directions, fit_torch, make_logistic_probe

    rng = np.random.default_rng(n_classes)
    y = rng.integers(n_classes, size=400)
    X = (rng.normal(size=(400, 12)) + y[:, None] * 0.4) * rng.uniform(0.5, 20, size=12) + rng.normal(0, 50, size=12)
    X[:, 3] = 7.0  # a constant feature: weight 0, scale 1
    X = X.astype(np.float32)  # activations are float32 on disk
    pipeline = make_logistic_probe().fit(X, y)
    expected = pipeline.decision_function(X).reshape(len(y), -1)
    saved = fit_directions(X, y, backend="sklearn")
    assert saved["weight"].shape == (1, 1 if n_classes == 2 else n_classes, 12) and saved["bias"].shape[:1] == (1,)
    np.testing.assert_allclose(X @ saved["weight"][0].T + saved["bias"][0], expected, atol=1e-5 * np.abs(expected).max())
    assert saved["weight"][0, :, 3].tolist() == [0.0] * saved["weight"].shape[1] and saved["scale"][0, 3] == 1.0
    torch_saved = fit_directions(X, y, backend="torch")
    probes = fit_torch(X, y, [(np.arange(len(y)), np.array([], dtype=np.int64))])
    z = (X - probes.mean[0, 0]) * probes.inv_scale[0, 0]
    own = z @ probes.coef[0, 0].T + probes.intercept[0, 0]
    np.testing.assert_allclose(X @ torch_saved["weight"][0].T + torch_saved["bias"][0], own,
                               atol=1e-5 * np.abs(own).max())
    np.testing.assert_allclose(torch_saved["weight"], saved["weight"], atol=1e-3 * np.abs(saved["weight"]).max())
