"""Folds keep every copy of a text on one side, stay stratified and seeded, and honour official splits."""

from __future__ import annotations

import logging

import numpy as np
import polars as pl
import pytest

from emoprobe.errors import DataError, EmoprobeError
from emoprobe.folds import assign_folds
from emoprobe.probes import cross_validate_probe
from emoprobe.regression import cross_validate_ridge


def _repeated_texts(n_texts=150, seed=0):
    """Texts with 1-4 copies each (copies agree on the label, 60/30/10 %): (texts, labels) per row."""
    rng = np.random.default_rng(seed)
    text_label = rng.choice(3, size=n_texts, p=[0.6, 0.3, 0.1])
    text_of_row = np.repeat(np.arange(n_texts), rng.integers(1, 5, size=n_texts))
    return np.array([f"text {t}" for t in text_of_row], dtype=object), text_label[text_of_row]


@pytest.mark.parametrize("stratified", [True, False])
def test_no_text_is_in_both_train_and_test(stratified):
    texts, labels = _repeated_texts()
    folds = assign_folds(texts, 5, 0, labels=labels if stratified else None)
    assert len(folds) == 5
    assert sorted(np.concatenate([test for _, test in folds]).tolist()) == list(range(len(texts)))
    for train, test in folds:
        assert sorted(np.concatenate([train, test]).tolist()) == list(range(len(texts)))
        assert not set(texts[train]) & set(texts[test])


def test_stratification_still_holds():
    texts, labels = _repeated_texts()
    overall = np.bincount(labels) / len(labels)
    for seed in range(3):
        for _, test in assign_folds(texts, 5, seed, labels=labels):
            assert np.abs(np.bincount(labels[test], minlength=3) / len(test) - overall).max() < 0.02


@pytest.mark.parametrize("stratified", [True, False])
def test_same_seed_same_folds_other_seed_other_folds(stratified):
    texts, labels = _repeated_texts()
    labels = labels if stratified else None

    def tests(seed):
        return [test.tolist() for _, test in assign_folds(texts, 5, seed, labels=labels)]

    assert tests(3) == tests(3)
    assert tests(3) != tests(4)


def test_probe_scores_do_not_leak_through_copies():
    """Random labels per text, three copies each, more features than texts: with a copy in the
    training folds the probe memorises the text (accuracy near 1); grouped it stays at chance."""
    rng = np.random.default_rng(1)
    text_of_row = np.repeat(np.arange(60), 3)
    X, y = rng.normal(size=(60, 100))[text_of_row], np.repeat([0, 1], 30)[rng.permutation(60)][text_of_row]
    scores = cross_validate_probe(X, y, cv_folds=5, C=100.0, groups=text_of_row).scores
    accuracy = scores.filter((pl.col("probe") == "logreg") & (pl.col("metric") == "accuracy"))["value"].mean()
    assert accuracy < 0.7


def test_ridge_scores_do_not_leak_through_copies():
    """As for the probe: random targets per text are unpredictable once copies share a fold."""
    rng = np.random.default_rng(2)
    text_of_row = np.repeat(np.arange(60), 3)
    X, Y = rng.normal(size=(60, 100))[text_of_row], rng.normal(size=60)[text_of_row]
    scores = cross_validate_ridge(X, Y, ["random"], cv_folds=5, groups=text_of_row).scores
    r2 = scores.filter((pl.col("probe") == "ridge") & (pl.col("metric") == "r2"))["value"].mean()
    assert r2 < 0.1


def test_rows_sharing_a_text_are_logged(caplog):
    texts = np.array(["a", "b", "a", "c", "d", "d", "d", "e", "f", "g", "h", "i"], dtype=object)
    with caplog.at_level(logging.INFO, logger="emoprobe.folds"):
        assign_folds(texts, 3, 0)
    assert "5 of 12 rows share their text with another row (copies of 2 texts)" in caplog.text


def test_too_few_texts_per_label_or_in_all_is_named():
    texts = np.array([f"t{i}" for i in range(40)] + ["x", "y", "z"] * 3, dtype=object)
    labels = np.array([1] * 40 + [0] * 9)  # label 0: 9 rows, but only 3 distinct texts
    with pytest.raises(DataError, match=r"label ids \{0: 3\} \(id: distinct texts\).*cv_folds=5"):
        assign_folds(texts, 5, 0, labels=labels)
    with pytest.raises(DataError, match=r"4 distinct texts are too few for probe.cv_folds=5"):
        assign_folds(np.array(["a", "b", "c", "d", "a", "b"], dtype=object), 5, 0)


def test_official_split_is_train_and_dev_against_test(caplog):
    rng = np.random.default_rng(0)
    split = rng.choice(["train", "dev", "test"], size=200, p=[0.7, 0.1, 0.2]).astype(object)
    texts = np.array([f"t{i}" for i in range(200)], dtype=object)
    texts[np.flatnonzero(split == "test")[:3]] = texts[np.flatnonzero(split == "dev")[0]]  # copies across splits
    with caplog.at_level(logging.INFO, logger="emoprobe.folds"):
        (train, test), = assign_folds(texts, 5, 0, labels=np.zeros(200), split=split)
    assert train.tolist() == [i for i in range(200) if split[i] in ("train", "dev")]
    assert test.tolist() == [i for i in range(200) if split[i] == "test"]
    assert f"3 of the official split's {len(test)} test rows share their text with a train or dev row" in caplog.text


@pytest.mark.parametrize("split, message", [
    (["train", "validation", "test"], r"split values \['validation'\] are not train, dev or test"),
    (["train", "dev", "train"], "the official split needs train and test rows"),
    (["dev", "test", "test"], "the official split needs train and test rows"),
])
def test_unusable_official_splits_are_named(split, message):
    with pytest.raises(DataError, match=message):
        assign_folds(np.array(["a", "b", "c"], dtype=object), split=split)


def test_jobs_group_by_the_prepared_tables_text():
    from emoprobe.jobs import _job_folds

    texts, labels = _repeated_texts()
    table = pl.DataFrame({"id": [str(i) for i in range(len(texts))], "text": texts.tolist(), "label_id": labels,
                          "split": ["test" if i % 5 == 0 else "train" for i in range(len(texts))]})
    kfold, official = {"kind": "kfold", "cv_folds": 5}, {"kind": "official"}
    for folds in (_job_folds(table, kfold, 0, labels=labels), _job_folds(table, kfold, 0)):
        assert len(folds) == 5
        for train, test in folds:
            assert not set(texts[train]) & set(texts[test])
    (train, test), = _job_folds(table, official, 0, labels=labels)
    assert test.tolist() == list(range(0, len(texts), 5))
    with pytest.raises(EmoprobeError, match="no `split` column"):
        _job_folds(table.drop("split"), official, 0)


@pytest.mark.parametrize("n_rows, fraction, seed", [(6600, 0.2, 42), (37, 0.3, 0), (5, 0.2, 7)])
def test_holdout_is_sklearns_train_test_split_row_for_row(n_rows, fraction, seed):
    """Tak et al.'s split: the probe job's one (train, test) pair is exactly train_test_split's."""
    from sklearn.model_selection import train_test_split

    from emoprobe.jobs import _job_folds

    table = pl.DataFrame({"text": [f"text {i % (n_rows - 1)}" for i in range(n_rows)]})  # one text twice
    (train, test), = _job_folds(table, {"kind": "holdout", "fraction": fraction, "seed": seed}, 0)
    expected_train, expected_test = train_test_split(np.arange(n_rows), test_size=fraction, random_state=seed)
    assert train.tolist() == expected_train.tolist() and test.tolist() == expected_test.tolist()


def test_shuffled_labels_permute_each_training_fold_and_keep_test_rows():
    from emoprobe.folds import shuffled_within_training

    y = np.repeat(np.arange(4), 25)
    folds = assign_folds(np.arange(len(y)), 5, 0, labels=y)
    shuffled = shuffled_within_training(y, folds, seed=3)
    assert shuffled.shape == (5, len(y))
    for f, (train, test) in enumerate(folds):
        np.testing.assert_array_equal(shuffled[f, test], y[test])
        assert sorted(shuffled[f, train]) == sorted(y[train])  # a permutation of the training labels
        assert (shuffled[f, train] != y[train]).mean() > 0.5  # ~3/4 of them move for 4 classes
    np.testing.assert_array_equal(shuffled, shuffled_within_training(y, folds, seed=3))
    assert not np.array_equal(shuffled, shuffled_within_training(y, folds, seed=4))
