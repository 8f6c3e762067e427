"""Control tasks: labels that depend on the first word only, stable, with the real proportions
where the word types allow; the probe's control fit and selectivity."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from emoprobe.controls import TOP_WORDS, control_labels, first_word
from emoprobe.probes import cross_validate_probe


def _texts(rng, n, n_types):
    starts = [f"Start{i}" for i in range(n_types)]
    return [f"{rng.choice(starts)}{rng.choice(['', ',', '!'])} then words {i}" for i in range(n)]


def test_first_word_is_the_first_run_of_word_characters_lower_cased():
    assert [first_word(t) for t in ("I felt", "  'When' it", "...", "Été chaud")] == ["i", "when", "", "été"]


@pytest.mark.parametrize("task", ["first_word", "first_word_top13"])
def test_labels_depend_only_on_the_first_word_and_are_stable(task):
    rng = np.random.default_rng(0)
    texts = _texts(rng, 600, 80)
    y = rng.integers(5, size=len(texts))
    labels = control_labels(task, texts, y, seed=1)
    by_word = pl.DataFrame({"word": [first_word(t) for t in texts], "label": labels})
    assert by_word.group_by("word").agg(pl.col("label").n_unique())["label"].max() == 1
    np.testing.assert_array_equal(labels, control_labels(task, texts, y, seed=1))
    # The real labels of the texts do not enter (only their proportions do, for first_word).
    np.testing.assert_array_equal(labels, control_labels(task, texts, rng.permutation(y), seed=1))
    upper = [t.upper() for t in texts]
    np.testing.assert_array_equal(labels, control_labels(task, upper, y, seed=1))


def test_first_word_control_keeps_the_class_proportions():
    rng = np.random.default_rng(2)
    texts = _texts(rng, 3000, 300)
    y = rng.choice(4, size=len(texts), p=[0.4, 0.3, 0.2, 0.1])
    labels = control_labels("first_word", texts, y, seed=0)
    np.testing.assert_allclose(np.bincount(labels, minlength=4) / len(y), np.bincount(y) / len(y), atol=0.01)
    assert not np.array_equal(labels, control_labels("first_word", texts, y, seed=5))  # the seed picks the map


def test_tak_control_is_the_top_words_and_other():
    texts = [f"W{i}, text {j}" for i in range(20) for j in range(40 - i)]  # w0 the most frequent, w19 the least
    labels = control_labels("first_word_top13", texts, np.zeros(len(texts)), seed=0)
    assert labels.max() == TOP_WORDS and labels[0] == 0 and labels[-1] == TOP_WORDS
    assert set(labels[[first_word(t) in {f"w{i}" for i in range(13, 20)} for t in texts]]) == {TOP_WORDS}


def test_selectivity_is_the_paired_difference_of_probe_and_control_accuracy():
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(3), 60)
    X = np.eye(3)[y] * 4 + rng.normal(size=(len(y), 3))
    control = rng.integers(3, size=len(y))  # not in X: the control probe stays near chance
    result = cross_validate_probe(X, y, seed=0, backend="torch", control=control)
    accuracy = {probe: rows for (probe,), rows in result.scores.filter(metric="accuracy").group_by("probe")}
    predictions = {probe: rows.sort("row") for (probe,), rows in result.predictions.group_by("probe")}
    real = (predictions["logreg"]["predicted"].to_numpy() == y).mean()
    controlled = (predictions["logreg_control"]["predicted"].to_numpy() == control).mean()
    selectivity = accuracy["logreg_selectivity"].sort("fold")
    assert selectivity["pooled"][0] == pytest.approx(real - controlled)
    assert selectivity["ci_low"][0] < real - controlled < selectivity["ci_high"][0]
    assert selectivity["ci_low"][0] > 0.3  # near 1 minus near 1/3
    fold_difference = (accuracy["logreg"].sort("fold")["value"] - accuracy["logreg_control"].sort("fold")["value"])
    np.testing.assert_allclose(selectivity["value"].to_numpy(), fold_difference.to_numpy())
