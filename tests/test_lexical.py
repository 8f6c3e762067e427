"""The lexical baseline (TF-IDF + logistic regression / ridge) finds words that carry the label,
finds nothing in noise, and learns each fold from that fold's training rows only."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import r2_score
from threadpoolctl import threadpool_limits

from emoprobe import lexical
from emoprobe.errors import DataError
from emoprobe.folds import assign_folds
from emoprobe.lexical import lexical_classification, lexical_regression, make_features

FILLER = [f"w{i}x{i * 7 % 13}" for i in range(400)]  # 400 distinct filler words
NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture(autouse=True)
def one_blas_thread():
    """The small eigendecompositions of RidgeCV take ~20x longer when BLAS threads contend for
    cores shared with other work."""
    with threadpool_limits(1, user_api="blas"):
        yield


def _texts(rng, n, n_words=8, extra=None):
    """n texts of random filler words, `extra[i]` (if given) put at a random place in text i."""
    texts = []
    for i in range(n):
        words = list(rng.choice(FILLER, n_words))
        if extra is not None:
            words.insert(int(rng.integers(n_words + 1)), extra[i])
        texts.append(" ".join(words))
    return texts


def test_label_word_in_the_text_is_found():
    rng = np.random.default_rng(0)
    names = np.array(["joy", "anger", "fear", "sadness"])
    y = rng.integers(len(names), size=300)
    texts = _texts(rng, len(y), extra=names[y])
    folds = assign_folds(texts, 5, 0, labels=y)
    predicted, proba_of_true = lexical_classification(texts, y, folds)
    assert (predicted == y).mean() >= 0.98
    assert np.median(proba_of_true) > 0.5  # 4 classes: chance is 0.25


def test_random_words_with_random_labels_are_at_chance():
    rng = np.random.default_rng(1)
    n, k = 600, 3
    y = rng.integers(k, size=n)
    texts = _texts(rng, n)
    folds = assign_folds(texts, 5, 0, labels=y)
    predicted, proba_of_true = lexical_classification(texts, y, folds)
    chance = 1 / k
    standard_error = np.sqrt(chance * (1 - chance) / n)
    assert abs((predicted == y).mean() - chance) < 3 * standard_error
    assert abs(proba_of_true.mean() - chance) < 0.05


@pytest.mark.parametrize("kind", ["classification", "regression"])
def test_each_fold_learns_vocabulary_and_idf_from_its_training_rows_only(monkeypatch, kind):
    rng = np.random.default_rng(2)
    y = rng.integers(2, size=200)
    texts = _texts(rng, len(y), n_words=5)
    folds = assign_folds(texts, 4, 0, labels=y)
    # Words that appear in one fold's test rows only (each in two of them, so min_df would keep it).
    for f, (_, test) in enumerate(folds):
        for i in test[:2]:
            texts[i] += f" onlytest{'qjzv'[f] * 3}"
    built = []

    def recording():
        built.append(make_features())
        return built[-1]

    monkeypatch.setattr(lexical, "make_features", recording)
    if kind == "classification":
        lexical_classification(texts, y, folds)
    else:
        lexical_regression(texts, y + rng.normal(size=len(y)), folds)
    assert len(built) == len(folds)
    texts = np.asarray(texts, dtype=object)
    for f, ((train, test), features) in enumerate(zip(folds, built)):
        for name, fitted in features.transformer_list:
            analyse = fitted.build_analyzer()
            seen_in_train = set().union(*(analyse(t) for t in texts[train]))
            test_only = set().union(*(analyse(t) for t in texts[test])) - seen_in_train
            assert test_only, name  # the check below is not vacuous
            assert not test_only & fitted.vocabulary_.keys(), name
            # The same vocabulary and idf as the vectoriser fitted on the training texts alone.
            alone = TfidfVectorizer(**fitted.get_params()).fit(texts[train])
            assert alone.vocabulary_ == fitted.vocabulary_, name
            np.testing.assert_allclose(alone.idf_, fitted.idf_, rtol=1e-6)
        words = features.transformer_list[0][1].vocabulary_
        assert f"onlytest{'qjzv'[f] * 3}" not in words
        assert all(f"onlytest{c * 3}" in words for g, c in enumerate("qjzv") if g != f)


def test_copies_of_a_text_count_once_in_vocabulary_and_idf():
    features = make_features().fit(["a rare word here", "a rare word here", "common words", "common words too"])
    words = features.transformer_list[0][1].vocabulary_
    assert "rare" not in words  # in one distinct text only: below min_df=2 although in two rows
    assert "common" in words


def test_number_word_determines_target_and_noise_target_gives_nothing():
    rng = np.random.default_rng(3)
    value = rng.integers(10, size=400)
    texts = _texts(rng, len(value), n_words=4, extra=np.array(NUMBERS)[value])
    Y = np.column_stack([value, rng.normal(size=len(value))])
    folds = assign_folds(texts, 5, 0)
    predicted = lexical_regression(texts, Y, folds)
    assert predicted.shape == Y.shape and np.isfinite(predicted).all()
    r2 = np.array([[r2_score(Y[test, j], predicted[test, j]) for j in range(2)] for _, test in folds]).mean(0)
    assert r2[0] > 0.95
    assert -0.05 < r2[1] < 0.02
    # With a tiny fixed penalty ridge nearly interpolates its training rows: held-out noise stays
    # unpredictable (R-squared < 0), where a fit that had seen the test rows would score near 1.
    weak = lexical_regression(texts, Y[:, 1:], folds, alphas=(1e-3,))
    assert np.mean([r2_score(Y[test, 1], weak[test, 0]) for _, test in folds]) < 0.02


def test_copies_of_a_text_do_not_change_the_regression():
    rng = np.random.default_rng(4)
    value = rng.integers(10, size=150)
    texts = _texts(rng, len(value), n_words=4, extra=np.array(NUMBERS)[value])
    Y = np.column_stack([value + rng.normal(size=len(value)), rng.normal(size=len(value))])
    folds = assign_folds(texts, 5, 0)
    once = lexical_regression(texts, Y, folds)
    n = len(texts)
    twice_folds = [(np.concatenate([train, train + n]), np.concatenate([test, test + n])) for train, test in folds]
    twice = lexical_regression(texts + texts, np.vstack([Y, Y]), twice_folds)
    np.testing.assert_allclose(twice[:n], once, atol=1e-3)
    np.testing.assert_allclose(twice[n:], once, atol=1e-3)


def test_refuses_texts_that_do_not_match_the_rows():
    folds = [(np.arange(5), np.arange(5, 10))]
    with pytest.raises(DataError, match="one text per row"):
        lexical_classification(["a b"] * 9, np.arange(10) % 2, folds)
    with pytest.raises(DataError, match="not strings"):
        lexical_regression(["a b"] * 9 + [None], np.arange(10.0), folds)
