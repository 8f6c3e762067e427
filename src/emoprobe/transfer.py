"""Cross-dataset transfer: the logistic probe fitted on all of one dataset's texts and scored on
another's, on the labels the two share after their label maps (data/label_maps.py), beside the
target's own k-fold CV score on the same labels (the in-domain ceiling of that label subset)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import bootstrap
from .folds import assign_folds
from .probes import proba_torch

METRICS = ("accuracy", "macro_f1")


def shared_labels(source: Sequence[str | None], target: Sequence[str | None]) -> list[str]:
    """The mapped labels both datasets' texts carry (None, a label left out, is none), sorted."""
    return sorted((set(source) & set(target)) - {None})


def transfer_scores(source_X: np.ndarray, source_y: np.ndarray, target_X: np.ndarray, target_y: np.ndarray,
                    target_groups: np.ndarray, cv_folds: int = 5, seed: int = 0, C: float = 1.0,
                    max_iter: int = 1000, n_resamples: int = 1000) -> list[dict]:
    """Rows (position index, kind "transfer" or "in_domain", metric, value, ci_low, ci_high) for
    activations [P, N, H] (or [N, H]) of the source's and the target's texts with labels 0..K-1 (every label in
    both): transfer fits on every source text and predicts every target text; in_domain is the
    target's stratified k-fold CV (texts grouped by `target_groups`). 95% bootstrap CIs over the
    target's texts."""
    source_X, target_X = (X[None] if X.ndim == 2 else X for X in (source_X, target_X))
    n_source = source_X.shape[1]
    stacked = np.concatenate([source_X, target_X], axis=1)
    folds = [(np.arange(n_source), np.arange(n_source, n_source + target_X.shape[1]))]
    proba = proba_torch(stacked, np.concatenate([source_y, target_y]), folds, C, max_iter)[:, n_source:]
    in_domain = proba_torch(target_X, target_y, assign_folds(target_groups, cv_folds, seed, labels=target_y), C,
                            max_iter)
    rows = []
    for kind, probabilities in (("transfer", proba), ("in_domain", in_domain)):
        for position, predicted in enumerate(probabilities.argmax(-1)):
            rows += [{"position_index": position, "kind": kind, "metric": metric, "value": value, "ci_low": low,
                      "ci_high": high}
                     for metric, (value, low, high) in bootstrap.bootstrap_cis(target_y, predicted, METRICS,
                                                                               n_resamples, seed).items()]
    return rows
