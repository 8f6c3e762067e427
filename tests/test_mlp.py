"""The MLP probe: finds a non-linear boundary the linear probe cannot, learns only from each
fold's training rows (validation slice included, test rows never), and is seeded."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from emoprobe.folds import assign_folds
from emoprobe.mlp import proba_mlp_sklearn, proba_mlp_torch, validation_split
from emoprobe.probes import cross_validate_probe


@pytest.fixture(autouse=True)
def one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(threads)


def _xor(n=800, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    return X, ((X[:, 0] > 0) ^ (X[:, 1] > 0)).astype(int)


def _accuracy(result, probe):
    return result.scores.filter(probe=probe, metric="accuracy")["pooled"][0]


def test_mlp_finds_what_the_linear_probe_cannot():
    X, y = _xor()
    linear = cross_validate_probe(X, y, seed=0, backend="torch")
    mlp = cross_validate_probe(X, y, seed=0, name="mlp", kind="mlp", max_epochs=40, majority=False)
    assert _accuracy(linear, "logreg") < 0.6  # XOR: no line separates it
    assert _accuracy(mlp, "mlp") > 0.85
    sklearn = cross_validate_probe(X, y, seed=0, name="tak", kind="mlp", backend="sklearn", hidden=32, majority=False)
    assert _accuracy(sklearn, "tak") > 0.75  # sklearn's defaults: 32 units, early stopping after 10 epochs


def test_validation_slice_is_whole_texts_from_the_training_rows():
    groups = np.repeat(np.arange(100), 2)  # every text twice
    folds = assign_folds(groups, 4, 0)
    for (train, test), (fit, validation) in zip(folds, validation_split(folds, groups, 0.2, seed=0)):
        assert set(fit) | set(validation) == set(train) and not set(fit) & set(validation)
        assert not set(groups[fit]) & set(groups[validation])  # copies of a text stay on one side
        assert len(set(groups[validation])) == round(0.2 * len(set(groups[train])))


def test_test_rows_never_reach_the_fit():
    """Flipping the labels of fold 0's test rows leaves fold 0's held-out predictions exactly as
    they were (its model never saw those labels, in training or early stopping), while the
    other folds, which train on those rows, change; and reruns are identical (seeded)."""
    X, y = _xor(400)
    folds = assign_folds(np.arange(len(y)), 4, 0, labels=y)
    first = proba_mlp_torch(X, y, folds, hidden=16, max_epochs=5, seed=1)[0]
    test0 = folds[0][1]
    flipped = y.copy()
    flipped[test0] = 1 - flipped[test0]
    second = proba_mlp_torch(X, flipped, folds, hidden=16, max_epochs=5, seed=1)[0]
    np.testing.assert_array_equal(first[test0], second[test0])
    assert not np.allclose(first[folds[1][1]], second[folds[1][1]])
    np.testing.assert_array_equal(first, proba_mlp_torch(X, y, folds, hidden=16, max_epochs=5, seed=1)[0])


def test_mlp_probabilities_follow_the_sorted_classes():
    X, _ = _xor(1200)  # sklearn early-stops on a validation tenth: too few rows and it stops untrained
    labels = np.where(X[:, 0] > 0, 7, 3)
    folds = assign_folds(np.arange(len(labels)), 3, 0, labels=labels)
    for proba in (proba_mlp_torch(X, labels, folds, hidden=16, lr=0.01, max_epochs=30)[0],
                  proba_mlp_sklearn(X, labels, folds, hidden=16)):
        assert proba.shape == (len(labels), 2)
        assert ((proba.argmax(1) == 1) == (labels == 7)).mean() > 0.8  # swapped columns would give < 0.2
