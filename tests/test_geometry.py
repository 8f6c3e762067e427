"""Probe geometry against brute force and constructed cases: cosines, the layer x layer matrix,
a circumplex's principal map, appraisal profiles, and the RSA's correlation, p-value and CI."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from emoprobe import geometry


def test_cosine_and_layer_similarity():
    rng = np.random.default_rng(0)
    directions = [rng.normal(size=(4, 12)) for _ in range(5)]
    similarity = geometry.layer_similarity(directions)
    assert similarity.shape == (4, 5, 5)
    np.testing.assert_allclose(similarity, similarity.transpose(0, 2, 1))
    np.testing.assert_allclose(np.diagonal(similarity, axis1=1, axis2=2), 1.0)
    for c in range(4):
        for i in range(5):
            for j in range(5):
                a, b = directions[i][c], directions[j][c]
                assert similarity[c, i, j] == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    np.testing.assert_allclose(geometry.cosine_matrix(directions[0] * 7.0), geometry.cosine_matrix(directions[0]))


def test_a_circumplex_gives_its_map_up_to_rotation():
    """Eight emotions on a circle in a random 2-D plane of a 50-D space (plus a shared offset):
    the principal map holds them at the circle's angles, up to a rotation or reflection, and
    explains all the variance."""
    rng = np.random.default_rng(1)
    angles = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    plane = np.linalg.qr(rng.normal(size=(50, 3)))[0]
    circle = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    directions = circle @ plane[:, :2].T + 2.0 * plane[:, 2]  # equal norms: unit-normalising keeps the circle
    coordinates, explained = geometry.principal_map(directions)
    assert explained.sum() == pytest.approx(1.0)
    # pairwise distances are those of the circle, scaled
    found = np.linalg.norm(coordinates[:, None] - coordinates[None], axis=2)
    truth = np.linalg.norm(circle[:, None] - circle[None], axis=2)
    np.testing.assert_allclose(found / found.max(), truth / truth.max(), atol=1e-9)


def test_appraisal_profiles_against_a_loop():
    rng = np.random.default_rng(2)
    ratings, labels = rng.uniform(1, 5, size=(90, 3)), rng.integers(0, 4, 90)
    profiles = geometry.appraisal_profiles(ratings, labels, 4)
    for k in range(4):
        for a in range(3):
            z = (ratings[:, a] - ratings[:, a].mean()) / ratings[:, a].std()
            assert profiles[k, a] == pytest.approx(z[labels == k].mean())


def _symmetric(rng, k=13):
    a = rng.normal(size=(k, 6))
    return geometry.cosine_matrix(a)


def test_rsa_of_identical_matrices_is_one_and_of_shuffled_ones_near_zero():
    rng = np.random.default_rng(3)
    matrix = _symmetric(rng)
    same = geometry.rsa(matrix, matrix, n_permutations=500, n_resamples=200)
    assert same["value"] == pytest.approx(1.0) and same["p_value"] < 0.01 and same["ci_low"] > 0.9
    shuffled = []
    for seed in range(40):
        order = np.random.default_rng(seed).permutation(13)
        shuffled.append(geometry.rsa(matrix[np.ix_(order, order)], matrix, n_permutations=1, n_resamples=2)["value"])
    assert abs(np.mean(shuffled)) < 0.1


def test_rsa_p_value_and_interval_against_brute_force():
    rng = np.random.default_rng(4)
    model = _symmetric(rng)
    human = model + rng.normal(scale=0.6, size=model.shape)
    human = (human + human.T) / 2
    result = geometry.rsa(model, human, n_permutations=300, n_resamples=200, seed=9)
    upper = np.triu_indices(13, 1)
    observed = spearmanr(model[upper], human[upper]).statistic
    assert result["value"] == pytest.approx(observed)
    draws = np.random.default_rng(9)
    orders = np.argsort(draws.random((300, 13)), axis=1)
    higher = sum(spearmanr(model[np.ix_(o, o)][upper], human[upper]).statistic >= observed - 1e-12 for o in orders)
    assert result["p_value"] == pytest.approx((1 + higher) / 301)
    boot = []
    for _ in range(200):
        pick = draws.integers(0, 13, 13)
        pairs = [(pick[i], pick[j]) for i, j in zip(*upper) if pick[i] != pick[j]]
        boot.append(spearmanr([model[p] for p in pairs], [human[p] for p in pairs]).statistic)
    assert (result["ci_low"], result["ci_high"]) == pytest.approx(tuple(np.quantile(boot, [0.025, 0.975])))


def test_valence_alignment_ignores_the_component_sign():
    coordinates = np.array([[1.0, 0.0], [2.0, 1.0], [3.0, 0.0], [4.0, 2.0]])
    pleasantness = np.array([4.0, 3.0, 2.0, 1.0])
    assert geometry.valence_alignment(coordinates, pleasantness) == pytest.approx(1.0)
