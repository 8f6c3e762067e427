"""Appraisal steering (Tak et al.): the residual stream moved along the ridge direction of one human
appraisal rating (up or down; optionally with the other steered appraisals' directions projected
out, Tak et al.'s "surgery") over a span of layers centred on each layer; the change in each
emotion's log-probability is compared with the change that a multinomial logistic regression of
the human emotion labels on the human appraisal ratings expects."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from ..regression import fit_ridge_probe
from .edits import Edit, residual_shift
from .plan import centred_span
from ..geometry import unit_rows

SIGNS = {"up": 1.0, "down": -1.0}


def ridge_directions(X: np.ndarray, ratings: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Unit directions [A, H] in the activations' own units (the standardiser folded in) of the ridge
    probes of each rating column [N, A] on the activations X [N, H] (fit_ridge_probe)."""
    pipeline, _ = fit_ridge_probe(X, ratings, groups)
    scaler, ridge = pipeline.named_steps["standardise"], pipeline.named_steps["ridge"]
    return unit_rows(np.atleast_2d(ridge.coef_) / scaler.scale_)


def surgery(directions: np.ndarray) -> np.ndarray:
    """Each unit row of directions [A, H] with the span of the other rows projected out, renormalised."""
    out = np.empty_like(directions)
    for index in range(len(directions)):
        others = np.delete(directions, index, axis=0)
        basis = np.linalg.qr(others.T)[0] if len(others) else np.zeros((directions.shape[1], 0))
        out[index] = directions[index] - basis @ (basis.T @ directions[index])
    return unit_rows(out)


def expected_changes(ratings: np.ndarray, labels: np.ndarray, n_classes: int, seed: int = 0) -> np.ndarray:
    """[A, K]: how each emotion's log-probability should move when an appraisal rating goes up, by
    a multinomial logistic regression of the labels (column indices 0..K-1) on the standardised
    ratings [N, A]: coefficient of emotion k on rating a minus the mean over emotions (the
    log-probability's derivative at a uniform distribution, free of the logits' common shift)."""
    model = LogisticRegression(max_iter=2000, random_state=seed).fit(StandardScaler().fit_transform(ratings), labels)
    coef = np.zeros((n_classes, ratings.shape[1]))
    coef[model.classes_] = model.coef_ if len(model.classes_) > 2 else np.concatenate([-model.coef_, model.coef_]) / 2
    return (coef - coef.mean(axis=0)).T


def steering_edits(centres: Sequence[int], appraisals: Sequence[str], alpha: float, span: int, n_layers: int,
                   directions: Mapping[int, np.ndarray], norms: Mapping[int, float],
                   random: Mapping[int, np.ndarray]) -> list[tuple[int, str, str, Edit]]:
    """(centre layer, appraisal or "random", "up"/"down", edit) for every centre x (appraisal, then
    the random control) x sign: the edit adds sign * alpha * norms[layer] * direction at each layer
    of the span, directions[layer] [A, H] holding a unit row per appraisal."""
    edits = []
    for centre in centres:
        layers = centred_span(centre, span, n_layers)
        for index, appraisal in [*enumerate(appraisals), (None, "random")]:
            vectors = random if index is None else {layer: directions[layer][index] for layer in layers}
            for sign, factor in SIGNS.items():
                edits.append((centre, appraisal, sign, residual_shift(layers, vectors, factor * alpha, norms)))
    return edits
