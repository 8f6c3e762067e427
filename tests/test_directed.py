"""Head knockout, emotion promotion and appraisal steering: the edits against hand-written hooks
and constructed cases, the effect metrics against brute force, the directions and the human-data
expectation against planted structure."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import log_softmax
from scipy.stats import spearmanr

from emoprobe import bootstrap, models
from emoprobe.interventions.edits import HEADS, Edit, attention_heads
from emoprobe.interventions.effects import promotion_effects, steering_effects
from emoprobe.interventions.heads import head_edits
from emoprobe.geometry import probe_directions
from emoprobe.interventions.promotion import RANDOM, promotion_edits, random_directions
from emoprobe.interventions.runner import EditRunner
from emoprobe.interventions.steering import expected_changes, ridge_directions, steering_edits, surgery

from .conftest import make_tiny_model

DECODERS = ("llama", "qwen2", "gemma3", "gpt2")
LABEL_TOKENS = [10, 11, 12, 13, 14]


def _load(directory):
    return models.load({"source": "local", "path": str(directory)}, torch.device("cpu"))


def _projection(model, layer: int) -> torch.nn.Module:
    """The attention output projection of block layer - 1, found by each family's own attribute path."""
    if model.config.model_type == "gpt2":
        return model.transformer.h[layer - 1].attn.c_proj
    return model.model.layers[layer - 1].self_attn.o_proj


def _hand_knockout(model, token_lists, layer: int, channels: slice) -> np.ndarray:
    """Unbatched forward passes with the channels of the projection's input zeroed at the last token
    by a hand-written pre-hook: the label tokens' logits [N, L]."""
    def hook(module, args):
        args[0][0, -1, channels] = 0

    handle = _projection(model, layer).register_forward_pre_hook(hook)
    try:
        with torch.inference_mode():
            return np.stack([model(torch.tensor([tokens])).logits[0, -1, LABEL_TOKENS].numpy() for tokens in token_lists])
    finally:
        handle.remove()


@pytest.mark.parametrize("family", DECODERS)
def test_head_knockout_equals_a_hand_written_hook(tiny_models, crowd_envent_slice, family):
    """Every head of every layer knocked out through the cached-prefix runner equals an unbatched
    forward with the head's channels zeroed by hand (at 1e-5), and the full re-forward path agrees."""
    tokenizer, model, _ = _load(tiny_models[family]["left"])
    token_lists = tokenizer(crowd_envent_slice["prompt"].to_list()[:6])["input_ids"]
    n_layers = model.config.num_hidden_layers
    _, n_heads, width = attention_heads(model, _projection(model, 1) and (
        model.transformer.h[0] if family == "gpt2" else model.model.layers[0]))
    assert n_heads == model.config.num_attention_heads and n_heads * width == _projection(model, 1).weight.shape[
        0 if family == "gpt2" else 1]
    edits = head_edits(range(1, n_layers + 1), n_heads, width)
    assert len(edits) == n_layers * n_heads
    runner = EditRunner(model, tokenizer, LABEL_TOKENS)
    cached = runner.run(token_lists, [edit for *_, edit in edits])
    full = runner.run(token_lists, [edit for *_, edit in edits], cached=False)
    np.testing.assert_allclose(cached, full, atol=1e-5, rtol=0)
    for index, (layer, head, _) in enumerate(edits):
        by_hand = _hand_knockout(model, token_lists, layer, slice(head * width, (head + 1) * width))
        np.testing.assert_allclose(cached[:, index], by_hand, atol=1e-5, rtol=0)
    clean = runner.run(token_lists, [None])[:, 0]
    assert np.abs(cached - clean[:, None]).max() > 1e-4  # the knockouts do something


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_knocking_out_every_head_zeroes_the_attention_output(tiny_models, crowd_envent_slice, family):
    """All heads of a layer knocked out together (no projection bias) = attn_out set to zero there."""
    tokenizer, model, _ = _load(tiny_models[family]["right"])
    token_lists = tokenizer(crowd_envent_slice["prompt"].to_list()[:6])["input_ids"]
    _, n_heads, width = attention_heads(model, model.model.layers[1])
    every_head = tuple(edit for _, _, edit in head_edits([2], n_heads, width))
    logits = EditRunner(model, tokenizer, LABEL_TOKENS).run(token_lists, [every_head, Edit("attn_out", (2,)), None])
    np.testing.assert_allclose(logits[:, 0], logits[:, 1], atol=1e-5, rtol=0)
    assert np.abs(logits[:, 0] - logits[:, 2]).max() > 1e-4


def _residual_norms(n_layers):
    return {layer: 2.0 for layer in range(1, n_layers + 1)}


def test_zero_promotion_and_zero_steering_change_nothing(tiny_models, crowd_envent_slice):
    tokenizer, model, _ = _load(tiny_models["qwen2"]["left"])
    token_lists = tokenizer(crowd_envent_slice["prompt"].to_list()[:5])["input_ids"]
    n_layers, hidden = model.config.num_hidden_layers, model.config.hidden_size
    rng = np.random.default_rng(0)
    directions = {layer: probe_directions(rng.normal(size=(5, hidden)), 5) for layer in range(1, n_layers + 1)}
    random = random_directions(range(1, n_layers + 1), hidden, 0)
    promoted = promotion_edits([1, 2, 3], [0, 3], [0.0], 3, n_layers, directions, _residual_norms(n_layers), random)
    steered = steering_edits([2], ["a", "b"], 0.0, 3, n_layers, directions, _residual_norms(n_layers), random)
    runner = EditRunner(model, tokenizer, LABEL_TOKENS)
    logits = runner.run(token_lists, [None] + [edit for *_, edit in promoted + steered])
    # equal up to float32 rounding (the passes batch different numbers of rows)
    np.testing.assert_allclose(logits[:, 1:], np.repeat(logits[:, :1], logits.shape[1] - 1, 1), atol=1e-7, rtol=0)
    moved = runner.run(token_lists, [edit for *_, edit in promotion_edits([2], [0], [1.0], 3, n_layers, directions,
                                                                           _residual_norms(n_layers), random)])
    assert np.abs(moved - logits[:, :1]).max() > 1e-3


def test_promotion_raises_the_emotion_monotonically_with_alpha(tmp_path, crowd_envent_slice):
    """Constructed case: the direction of emotion e at the last block is the LM head's row of e's label
    token; its mean log-probability rises with every step of alpha (0 to 8 median norms), and the
    share of answers that become e reaches 1."""
    tokenizer, model, _ = _load(make_tiny_model(tmp_path / "tiny", "llama", "left", n_layers=2, seed=3))
    token_lists = tokenizer(crowd_envent_slice["prompt"].to_list()[:8])["input_ids"]
    head = model.lm_head.weight.detach().numpy()[LABEL_TOKENS].astype(np.float64)
    directions = {2: probe_directions(head, len(LABEL_TOKENS))}
    alphas = [0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0]
    runner = EditRunner(model, tokenizer, LABEL_TOKENS)
    for emotion in (1, 3):
        edits = promotion_edits([2], [emotion], alphas, 1, 2, directions, {2: 1.0}, random_directions([2], 64, 0))
        runs = [edit for _, target, _, edit in edits if target == emotion]
        logits = runner.run(token_lists, runs)
        logprob = log_softmax(logits.astype(np.float64), 2)[:, :, emotion].mean(0)
        assert (np.diff(logprob) > 0).all(), logprob
        assert (logits[:, -1].argmax(1) == emotion).all()


def test_promotion_effects_against_brute_force():
    rng = np.random.default_rng(4)
    n, n_labels = 60, 5
    clean = rng.normal(size=(n, n_labels))
    emotions = np.array([0, 2, 4])
    edited = clean[:, None, :] + rng.normal(size=(n, len(emotions), n_labels)) + 1.5 * np.eye(n_labels)[emotions]
    result = promotion_effects(clean, edited, emotions, seed=1, n_resamples=300)
    successes = eligible = 0
    for index, emotion in enumerate(emotions):
        rows = [t for t in range(n) if clean[t].argmax() != emotion]
        hits = [edited[t, index].argmax() == emotion for t in rows]
        successes, eligible = successes + sum(hits), eligible + len(rows)
        assert result[emotion]["promotion_rate"][0] == pytest.approx(np.mean(hits))
        change = [log_softmax(edited[t, index])[emotion] - log_softmax(clean[t])[emotion] for t in range(n)]
        assert result[emotion]["logprob_change"][0] == pytest.approx(np.mean(change))
        assert result[emotion]["logprob_change"][0] > 0
    assert result[None]["promotion_rate"][0] == pytest.approx(successes / eligible)
    for metrics in result.values():
        for value, low, high in metrics.values():
            assert low <= value <= high


def test_steering_effects_against_brute_force():
    rng = np.random.default_rng(5)
    clean = rng.normal(size=(80, 6))
    expected = np.array([1.0, -0.5, 0.2, 0.0, -1.0, 0.7])
    edited = clean + 0.8 * expected + rng.normal(scale=0.5, size=clean.shape)
    agreement, changes = steering_effects(clean, edited, expected, seed=2, n_resamples=300)
    change = log_softmax(edited, 1) - log_softmax(clean, 1)
    assert agreement[0] == pytest.approx(spearmanr(change.mean(0), expected).statistic)
    assert agreement[0] > 0.8 and agreement[1] <= agreement[0] <= agreement[2]
    assert [value for value, _, _ in changes] == pytest.approx(change.mean(0).tolist())
    reversed_agreement, _ = steering_effects(clean, edited, -expected, seed=2, n_resamples=300)
    assert reversed_agreement[0] == pytest.approx(-agreement[0])


def test_mean_statistic_interval_against_a_loop():
    rng = np.random.default_rng(6)
    values = rng.normal(size=(70, 4)) + [0.0, 0.3, 0.6, 0.9]
    expected = np.arange(4.0)

    def statistic(means):
        return spearmanr(means, expected).statistic

    point, low, high = bootstrap.mean_statistic_ci(values, statistic, n_resamples=300, seed=7)
    draws = np.random.default_rng(7)
    loop = [statistic(values[draws.integers(0, 70, 70)].mean(0)) for _ in range(300)]
    assert point == pytest.approx(statistic(values.mean(0)))
    assert (low, high) == pytest.approx(tuple(np.quantile(loop, [0.025, 0.975])))


def test_ridge_directions_recover_planted_directions():
    """Activations built from two ratings along two leaning directions: each ridge direction matches
    the least-squares readout of its rating; after surgery each is orthogonal to the other's
    readout (moving it leaves the other rating's probe unchanged) and still reads its own."""
    rng = np.random.default_rng(8)
    n, hidden = 600, 20
    ratings = rng.uniform(1, 5, size=(n, 2))
    planted = np.linalg.qr(rng.normal(size=(hidden, 2)))[0].T  # orthonormal rows
    mixed = planted.copy()
    mixed[1] = (planted[0] + planted[1]) / np.sqrt(2)  # the second direction leans on the first
    X = ratings @ np.linalg.pinv(mixed).T + rng.normal(scale=0.05, size=(n, hidden))
    found = ridge_directions(X, ratings, np.arange(n))
    np.testing.assert_allclose(np.linalg.norm(found, axis=1), 1.0)
    # the ridge direction of rating a is the row of pinv(mixed).T's dual: it reads a off X
    readout = np.linalg.lstsq(X - X.mean(0), ratings - ratings.mean(0), rcond=None)[0].T
    for a in range(2):
        assert abs(found[a] @ readout[a] / np.linalg.norm(readout[a])) > 0.99
    operated = surgery(found)
    assert abs(operated[0] @ found[1]) < 1e-10 and abs(operated[1] @ found[0]) < 1e-10
    assert np.linalg.norm(operated, axis=1) == pytest.approx([1, 1])
    assert operated[0] @ found[0] > 0 and operated[1] @ found[1] > 0


def test_expected_changes_follow_the_human_ratings():
    """Labels that depend on rating 0 only (high: emotion 2, low: emotion 0, middle: 1): raising
    rating 0 is expected to raise emotion 2 and lower emotion 0; rating 1 (noise) expects little."""
    rng = np.random.default_rng(9)
    ratings = rng.uniform(1, 5, size=(900, 2))
    labels = np.digitize(ratings[:, 0] + rng.normal(scale=0.3, size=900), [2.3, 3.7])
    expected = expected_changes(ratings, labels, 3)
    assert expected.shape == (2, 3) and expected.sum(axis=1) == pytest.approx([0, 0], abs=1e-9)
    assert expected[0, 2] > 1 and expected[0, 0] < -1
    assert np.abs(expected[1]).max() < 0.2 * np.abs(expected[0]).max()


def test_probe_directions_of_two_classes_point_opposite():
    weight = np.array([[3.0, 4.0]])
    directions = probe_directions(weight, 2)
    np.testing.assert_allclose(directions, [[-0.6, -0.8], [0.6, 0.8]])
    assert RANDOM not in (0, 1)
    edits = promotion_edits([1], [0, 1], [1.0], 1, 1, {1: directions}, {1: 10.0}, {1: np.array([1.0, 0.0])})
    assert [(target, edit.span) for _, target, _, edit in edits] == [(0, (1,)), (1, (1,)), (RANDOM, (1,))]
    values = edits[1][3].values(1, torch.arange(3))
    np.testing.assert_allclose(values.numpy(), np.tile([6.0, 8.0], (3, 1)), rtol=1e-6)
    assert edits[1][3].add and edits[1][3].site == "residual"


def test_an_edit_on_heads_writes_only_its_channels():
    assert head_edits([4], 3, 8)[1][2] == Edit(HEADS, (4,), channels=slice(8, 16))
