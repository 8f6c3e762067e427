"""The geometry of the saved linear-probe directions (one weight row per emotion, in the residual
stream's own units) and its likeness to the human emotion space.

Per layer: the emotion x emotion cosine similarity of the directions and their 2-D principal-
component map; across layers: each emotion's direction at one layer against another's (where the
representation settles); against human appraisals (representational similarity analysis): the
Spearman correlation over emotion pairs of the directions' similarity with the similarity of the
emotions' mean appraisal profiles, with a permutation p-value (emotion labels shuffled) and a
bootstrap CI over emotions (emotions drawn with replacement, pairs of one emotion with itself left
out; Nili et al. 2014's stimulus bootstrap).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import pearsonr, rankdata, spearmanr


def unit_rows(weight: np.ndarray) -> np.ndarray:
    """Each row of weight [K, H] divided by its Euclidean norm."""
    weight = np.asarray(weight, dtype=np.float64)
    return weight / np.linalg.norm(weight, axis=1, keepdims=True)


def probe_directions(weight: np.ndarray, n_classes: int) -> np.ndarray:
    """Unit directions [K, H] that raise each class's probe logit against the others, from a saved
    logistic probe's weight (probes.fit_directions): its rows as they are for K > 2 classes; for two
    classes, where one row is the second class's logit, minus it for the first and it for the second."""
    weight = np.asarray(weight, dtype=np.float64)
    if n_classes == 2 and len(weight) == 1:
        weight = np.concatenate([-weight, weight])
    return unit_rows(weight)


def cosine_matrix(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Cosine similarity of each row of a [K, H] with each row of b [M, H] (default a): [K, M]."""
    a = np.asarray(a, dtype=np.float64)
    b = a if b is None else np.asarray(b, dtype=np.float64)
    return (a / np.linalg.norm(a, axis=1, keepdims=True)) @ (b / np.linalg.norm(b, axis=1, keepdims=True)).T


def layer_similarity(directions: Sequence[np.ndarray]) -> np.ndarray:
    """[C, L, L]: for each class c, the cosine of its direction at layer i with its direction at
    layer j, from directions[i] [C, H] (one entry per layer, in layer order)."""
    stacked = np.stack([np.asarray(d, dtype=np.float64) for d in directions], axis=1)  # [C, L, H]
    unit = stacked / np.linalg.norm(stacked, axis=2, keepdims=True)
    return np.einsum("clh,cmh->clm", unit, unit)


def principal_map(directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(coordinates [K, 2], explained variance ratio [2]) of the emotions' unit directions [K, H] on
    their first two principal components (centred over the emotions; each component's sign fixed
    so that its largest loading among the emotions is positive)."""
    unit = directions / np.linalg.norm(directions, axis=1, keepdims=True)
    centred = unit - unit.mean(axis=0)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    coordinates = u[:, :2] * s[:2]
    coordinates *= np.sign(coordinates[np.abs(coordinates).argmax(axis=0), [0, 1]])
    return coordinates, s[:2] ** 2 / (s ** 2).sum()


def appraisal_profiles(ratings: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """[K, A]: each class's mean of the standardised ratings [N, A] (z-scored over all rows)."""
    z = (ratings - ratings.mean(axis=0)) / ratings.std(axis=0)
    return np.stack([z[labels == k].mean(axis=0) for k in range(n_classes)])


def _upper(matrix: np.ndarray) -> np.ndarray:
    return matrix[np.triu_indices(len(matrix), 1)]


def rsa(model: np.ndarray, human: np.ndarray, n_permutations: int = 10000, n_resamples: int = 1000,
        seed: int = 0, level: float = 0.95) -> dict[str, float]:
    """Spearman correlation between the upper triangles of two K x K similarity matrices, with a
    permutation p-value (one matrix's emotions shuffled, rows and columns together; one-sided, the
    share of shuffles at least as high, counting the observed one) and a percentile bootstrap CI
    over emotions (K emotions drawn with replacement; the pairs of two different draws of
    different emotions)."""
    observed = spearmanr(_upper(model), _upper(human)).statistic
    rng = np.random.default_rng(seed)
    k = len(model)
    rows, cols = np.triu_indices(k, 1)
    # a shuffle of the emotions permutes the pairs: the ranks of the model's pairs move with them
    pair_index = np.zeros((k, k), dtype=np.int64)
    pair_index[rows, cols] = pair_index[cols, rows] = np.arange(len(rows))
    orders = np.argsort(rng.random((n_permutations, k)), axis=1)
    shuffled = rankdata(_upper(model))[pair_index[orders[:, rows], orders[:, cols]]]  # [P, pairs]
    human_ranks = rankdata(_upper(human))
    higher = (_pearson_rows(shuffled, human_ranks) >= observed - 1e-12).sum()
    draws = []
    for _ in range(n_resamples):
        pick = rng.integers(0, k, k)
        keep = pick[rows] != pick[cols]
        a, b = model[pick[rows], pick[cols]][keep], human[pick[rows], pick[cols]][keep]
        if np.ptp(a) > 0 and np.ptp(b) > 0:
            draws.append(spearmanr(a, b).statistic)
    low, high = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return {"value": float(observed), "ci_low": float(low), "ci_high": float(high),
            "p_value": float((1 + higher) / (1 + n_permutations))}


def _pearson_rows(rows: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Pearson r of each row of rows [P, n] with other [n]."""
    a = rows - rows.mean(axis=1, keepdims=True)
    b = other - other.mean()
    return (a @ b) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b))


def valence_alignment(coordinates: np.ndarray, pleasantness: np.ndarray) -> float:
    """|Pearson r| between the emotions' first principal coordinate and their mean human
    pleasantness (a component's sign is arbitrary, so only the size of r is read)."""
    return float(abs(pearsonr(coordinates[:, 0], pleasantness).statistic))
