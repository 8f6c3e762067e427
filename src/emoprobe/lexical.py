"""Lexical baseline: what the words alone give, no language model in it.

TF-IDF word 1-2-grams and character 2-5-grams of a row's raw `text` (not the prompt, which
is the same template around every text), then logistic regression for classes or ridge for
numeric targets. One Pipeline per outer fold, fitted on that fold's training rows only, on
exactly the folds it is given (folds.assign_folds: copies of a text share a fold), so its
out-of-fold predictions are comparable row for row with the hidden-state probes'.

Feature settings, and why:
- lowercase: sentence-initial capitals and shouting should not split a word's counts;
- sublinear_tf (1 + log tf): one text repeating a word is little more evidence than saying it
  once, and long texts (up to ~2,000 characters in crowd-enVENT) should not swamp the counts;
- min_df=2 distinct training texts: an n-gram of a single text cannot carry over to any other
  text and only adds noise features (it removes most of the character n-grams); the
  vectorisers count distinct texts (`TextFeatures` fits them on one copy of each), so a
  copied text neither passes min_df alone nor lowers an idf;
- word token pattern \\b\\w+\\b, keeping one-letter words ("I", "a") that sklearn's default drops;
- char_wb rather than char: n-grams within whitespace-delimited words (padded with a space),
  which catches stems, inflections, misspellings and punctuation attached to words ("!!", ":)")
  with far fewer features than n-grams that straddle two words (the word bigrams cover those);
- each vectoriser l2-normalises its own block (sklearn's default), so words and characters
  weigh alike in the union; float32 halves the memory.
Classifier: LogisticRegression (lbfgs, multinomial, C=1.0 by default, as the probes).
Regression: regression.ridge_by_groups on the TF-IDF features (one penalty per target from
RidgeCV's closed-form leave-one-out CV over one row per text of the training folds, refitted on
all training rows with the penalty scaled by rows / texts), with its own grid, LEXICAL_ALPHAS.
Not regression.fit_ridge_probe: its StandardScaler centres, which a sparse matrix refuses, and
standardising TF-IDF columns would blow rare n-grams up to the weight of common ones. RidgeCV's
LOO accepts sparse X (its 'auto'/'eigen' mode handles the intercept implicitly).

cross_validate_lexical and cross_validate_lexical_ridge give the probes' CrossValidation
(scores with bootstrap CIs, held-out predictions) for probe "lexical".
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import numpy as np
import polars as pl
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, Pipeline
from threadpoolctl import threadpool_limits

from .errors import DataError
from .folds import CrossValidation, Folds, fold_scores, held_out, with_intervals
from .regression import REGRESSION_COLUMNS, ridge_by_groups, target_fold_scores

log = logging.getLogger(__name__)

WORD_NGRAMS = (1, 2)
CHAR_NGRAMS = (2, 5)
MIN_DF = 2
MAX_ITER = 2000
# Ridge penalties 1e-4 ... 1e4 in half decades: regression.DEFAULT_ALPHAS (0.01 ... 1e6) is
# scaled for standardised features (variance 1 each); a TF-IDF column has a variance of about
# 1 / (non-zero n-grams per row), ~100x less, so the useful penalties are ~100x smaller (a number
# word that sets the target chose 0.003 ... 0.03 here, against that grid's floor of 0.01), and
# 1e4 already predicts about the mean.
LEXICAL_ALPHAS = tuple(float(a) for a in np.logspace(-4, 4, 17))


class TextFeatures(FeatureUnion):
    """A FeatureUnion whose vectorisers learn their vocabulary, min_df and idf from the distinct
    texts it is fitted on (one copy of each), and transform every row."""

    def fit(self, X, y=None, **params):
        return super().fit(list(dict.fromkeys(X)))

    def fit_transform(self, X, y=None, **params):
        return self.fit(X).transform(X)


def make_features() -> TextFeatures:
    common = {"lowercase": True, "sublinear_tf": True, "min_df": MIN_DF, "dtype": np.float32}
    return TextFeatures([
        ("word", TfidfVectorizer(analyzer="word", ngram_range=WORD_NGRAMS, token_pattern=r"(?u)\b\w+\b", **common)),
        ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=CHAR_NGRAMS, **common)),
    ])


def make_lexical_classifier(C: float = 1.0, max_iter: int = MAX_ITER, seed: int = 0) -> Pipeline:
    return Pipeline([("tfidf", make_features()),
                     ("logreg", LogisticRegression(C=C, solver="lbfgs", max_iter=max_iter, random_state=seed))])


def _check_texts(texts: Sequence[str], n: int, folds: Folds) -> list[str]:
    texts = list(texts)
    if len(texts) != n:
        raise DataError(f"{len(texts)} texts but {n} rows of labels or targets; pass one text per row.")
    if bad := [i for i, t in enumerate(texts) if not isinstance(t, str)]:
        raise DataError(f"{len(bad)} texts are not strings (rows {bad[:5]}); the lexical baseline needs raw text.")
    for fold, (train, test) in enumerate(folds):
        if np.intersect1d(train, test).size:
            raise DataError(f"fold {fold}'s training and test rows overlap; pass disjoint (train, test) pairs.")
    return texts


def lexical_classification(texts: Sequence[str], y: np.ndarray, folds: Folds, C: float = 1.0,
                           max_iter: int = MAX_ITER, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold (predicted label [N], probability given to the true label [N]) of the TF-IDF +
    logistic regression pipeline, one fit per fold on its training rows; each row is predicted
    by the fold that holds it out (a row in no test fold, e.g. an official split's training row,
    gets probability NaN and an unspecified label). A true label absent from a fold's training
    rows gets probability 0."""
    y = np.asarray(y)
    texts = np.asarray(_check_texts(texts, len(y), folds), dtype=object)
    predicted = np.empty_like(y)
    proba_of_true = np.full(len(y), np.nan)
    unconverged = 0
    for train, test in folds:
        pipeline = make_lexical_classifier(C, max_iter, seed)
        # One BLAS thread: L-BFGS-B's BLAS calls work on vectors too short to share, and
        # threads spinning over them made a fit 20x slower on a busy 2-core machine.
        with warnings.catch_warnings(record=True) as caught, threadpool_limits(1, user_api="blas"):
            warnings.simplefilter("always", ConvergenceWarning)
            pipeline.fit(texts[train], y[train])
        unconverged += any(issubclass(w.category, ConvergenceWarning) for w in caught)
        proba = pipeline.predict_proba(texts[test])
        classes = pipeline.classes_
        predicted[test] = classes[proba.argmax(1)]
        column = np.searchsorted(classes, y[test]).clip(0, len(classes) - 1)
        known = classes[column] == y[test]
        proba_of_true[test] = np.where(known, proba[np.arange(len(test)), column], 0.0)
    if unconverged:
        log.warning("lexical baseline: %d of %d folds stopped at max_iter=%d before converging; raise max_iter "
                    "or lower C", unconverged, len(folds), max_iter)
    return predicted, proba_of_true


def fit_lexical_ridge(texts: Sequence[str], Y: np.ndarray, groups: np.ndarray,
                      alphas: Sequence[float] = LEXICAL_ALPHAS) -> tuple[Pipeline, np.ndarray]:
    """TF-IDF + regression.ridge_by_groups (the probes' penalty search, on the sparse features);
    returns the pipeline and the chosen grid penalties [T]."""
    features = make_features()
    ridge, chosen = ridge_by_groups(features.fit_transform(np.asarray(texts, dtype=object)), Y, groups, alphas)
    return Pipeline([("tfidf", features), ("ridge", ridge)]), chosen


def lexical_regression(texts: Sequence[str], Y: np.ndarray, folds: Folds, groups: np.ndarray | None = None,
                       alphas: Sequence[float] = LEXICAL_ALPHAS) -> np.ndarray:
    """Out-of-fold predictions [N, T] (NaN for rows in no test fold) of fit_lexical_ridge, one fit
    per fold on its training rows; `groups` (default: the texts) are the copies that the penalty
    search counts once."""
    Y = np.asarray(Y, dtype=np.float64)
    Y = Y[:, None] if Y.ndim == 1 else Y
    texts = np.asarray(_check_texts(texts, len(Y), folds), dtype=object)
    if not np.isfinite(Y).all():
        raise DataError("targets contain NaN or inf; prepare the dataset with `bad_rows: drop` or fill them in.")
    groups = np.unique(texts if groups is None else np.asarray(groups), return_inverse=True)[1]
    predicted = np.full(Y.shape, np.nan)
    at_edge = 0
    for train, test in folds:
        pipeline, chosen = fit_lexical_ridge(texts[train], Y[train], groups[train], alphas)
        predicted[test] = pipeline.predict(texts[test]).reshape(len(test), -1)
        at_edge += int(np.isin(chosen, (min(alphas), max(alphas))).any())
    if at_edge:
        log.warning("lexical ridge: the chosen penalty sits at the edge of the grid (%g .. %g) in %d of %d folds; "
                    "widen the alphas", min(alphas), max(alphas), at_edge, len(folds))
    return predicted


def cross_validate_lexical(texts: Sequence[str], y: np.ndarray, folds: Folds, seed: int = 0) -> CrossValidation:
    """lexical_classification as probe "lexical": per-fold scores with bootstrap CIs and held-out
    predictions (row, fold, probe, predicted, p_true), as probes.cross_validate_probe gives them."""
    y = np.asarray(y)
    predicted, p_true = lexical_classification(texts, y, folds, seed=seed)
    predictions = held_out(folds, "lexical", predicted=predicted, p_true=p_true).sort("row")
    scores = with_intervals(fold_scores(y, predicted, folds, "lexical"), predictions,
                            lambda group: y[group["row"]], seed)
    return CrossValidation(scores, predictions)


def cross_validate_lexical_ridge(texts: Sequence[str], Y: np.ndarray, targets: Sequence[str], folds: Folds,
                                 seed: int = 0) -> CrossValidation:
    """lexical_regression as probe "lexical", as regression.cross_validate_ridge gives its scores
    (r2, pearson_r per fold and target, bootstrap CIs) and predictions (row, fold, probe, target,
    predicted)."""
    targets = list(targets)
    Y = np.asarray(Y, dtype=np.float64)
    predicted = lexical_regression(texts, Y, folds)
    predictions = pl.concat([held_out(folds, "lexical", target=name, predicted=predicted[:, j])
                             for j, name in enumerate(targets)]).sort("target", "row")
    rows = [score for j, name in enumerate(targets) for fold, (_, test) in enumerate(folds)
            for score in target_fold_scores(Y[test, j], predicted[test, j], "lexical", fold, name)]
    scores = with_intervals(pl.DataFrame(rows, schema=REGRESSION_COLUMNS), predictions,
                            lambda group: Y[group["row"], targets.index(group["target"])], seed, ("probe", "target"))
    return CrossValidation(scores, predictions)
