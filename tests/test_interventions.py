"""Interventions: edits at the last prompt position, the cached-prefix runner against the full
re-forward, ablation's edits and sample, and the effect metrics against brute force."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
from scipy.special import log_softmax

from emoprobe import models
from emoprobe.errors import ExtractionError
from emoprobe.interventions.ablation import ablation_edits
from emoprobe.interventions.plan import centred_span, donor_rows, sample_texts
from emoprobe.interventions.edits import Edit
from emoprobe.interventions.effects import effects
from emoprobe.interventions.runner import EditRunner

from .conftest import SMOLLM2, require_smollm2

DECODERS = ("llama", "qwen2", "gemma3", "gpt2")
LABEL_TOKENS = [10, 11, 12, 13, 14]


def _load(directory):
    return models.load({"source": "local", "path": str(directory)}, torch.device("cpu"))


def _edits(n_layers: int, hidden: int, n_texts: int) -> list:
    """One of each kind of edit, on every site, plus the clean run and a composite edit."""
    generator = torch.Generator().manual_seed(0)
    per_text = torch.randn(n_layers + 1, n_texts, hidden, generator=generator)
    mean = torch.randn(n_layers + 1, hidden, generator=generator)
    centres = list(range(1, n_layers + 1))
    means = {(layer, site): mean[layer] for layer in range(n_layers + 1) for site in ("residual", "attn_out", "mlp_out")}
    donors = {(layer, site): per_text[layer] for layer in range(n_layers + 1)
              for site in ("residual", "attn_out", "mlp_out")}
    ablations = [edit for *_, edit in ablation_edits(centres, ["residual", "attn_out", "mlp_out"],
                                                      ["zero", "mean", "random"], 3, n_layers, means, donors)]
    added = Edit("residual", (2,), lambda layer, texts: per_text[layer][texts], add=True)
    return [None, *ablations, added, (Edit("attn_out", (1,)), Edit("mlp_out", (n_layers,)))]


@pytest.mark.parametrize("family", DECODERS)
@pytest.mark.parametrize("side", ["left", "right"])
def test_cached_prefix_equals_full_re_forward(tiny_models, crowd_envent_slice, family, side):
    """Every kind of edit (zero, mean, random, add; residual, attn_out, mlp_out; several at once):
    the cached-prefix path gives the full re-forward's logits to 1e-5; the clean run equals an
    unbatched forward pass; the edits do change the logits."""
    tokenizer, model, _ = _load(tiny_models[family][side])
    prompts = crowd_envent_slice["prompt"].to_list()[:10]
    token_lists = tokenizer(prompts)["input_ids"]
    n_layers = model.config.num_hidden_layers
    edits = _edits(n_layers, model.config.hidden_size, len(prompts))
    runner = EditRunner(model, tokenizer, LABEL_TOKENS, max_rows=64)
    cached = runner.run(token_lists, edits, cached=True, text_batch=4)
    full = runner.run(token_lists, edits, cached=False, text_batch=3)
    np.testing.assert_allclose(cached, full, atol=1e-5, rtol=0)
    with torch.inference_mode():
        unbatched = np.stack([model(torch.tensor([tokens])).logits[0, -1, LABEL_TOKENS].numpy()
                              for tokens in token_lists])
    np.testing.assert_allclose(cached[:, 0], unbatched, atol=1e-5, rtol=0)
    changed = np.abs(cached[:, 1:] - cached[:, :1]).max(axis=(0, 2))
    assert (changed > 1e-3).all(), "every edit moves the logits"


def test_zero_ablating_every_sub_block_leaves_the_embeddings(tiny_models, crowd_envent_slice):
    """With every layer's attention and MLP outputs zeroed, the last position's residual stream is
    its embedding: the logits equal the final norm and LM head applied to the embedding alone."""
    tokenizer, model, _ = _load(tiny_models["llama"]["right"])
    token_lists = tokenizer(crowd_envent_slice["prompt"].to_list()[:6])["input_ids"]
    layers = tuple(range(1, model.config.num_hidden_layers + 1))
    runner = EditRunner(model, tokenizer, LABEL_TOKENS)
    logits = runner.run(token_lists, [(Edit("attn_out", layers), Edit("mlp_out", layers))])[:, 0]
    with torch.inference_mode():
        embedded = model.get_input_embeddings()(torch.tensor([tokens[-1] for tokens in token_lists]))
        expected = model.lm_head(model.model.norm(embedded))[:, LABEL_TOKENS].numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-5, rtol=0)


def test_the_runner_refuses_an_encoder(tiny_models):
    tokenizer, model, _ = _load(tiny_models["bert"]["right"])
    with pytest.raises(ExtractionError, match="not a decoder LM"):
        EditRunner(model, tokenizer, LABEL_TOKENS)


def test_real_smollm2_cached_equals_full():
    """The real SmolLM2-135M (GGUF): both paths agree on zero and mean ablations."""
    require_smollm2()
    tokenizer, model, _ = models.load(SMOLLM2, torch.device("cpu"), "float32")
    prompts = ["Context: I passed my driving test on the first try. Answer:",
               "Context: My dog died last week and the house feels empty. Answer:",
               "Context: Someone took credit for my work. Answer:"]
    token_lists = tokenizer(prompts)["input_ids"]
    mean = {(layer, site): torch.full((576,), 0.1) for layer in range(31) for site in ("residual", "mlp_out")}
    edits = [None] + [edit for *_, edit in ablation_edits([1, 15, 29], ["attn_out", "mlp_out"], ["zero"], 3, 30,
                                                           mean, {})] + \
        [edit for *_, edit in ablation_edits([10], ["mlp_out"], ["mean"], 3, 30, mean, {})]
    runner = EditRunner(model, tokenizer, [tokenizer.convert_tokens_to_ids(t) for t in ("Ġjoy", "Ġsad", "Ġanger")])
    cached, full = runner.run(token_lists, edits), runner.run(token_lists, edits, cached=False)
    scale = np.abs(full).max()
    np.testing.assert_allclose(cached, full, atol=1e-4 * scale, rtol=0)
    assert np.abs(cached[:, 1:] - cached[:, :1]).max() > 0.1


def test_centred_span():
    assert centred_span(5, 3, 30) == (4, 5, 6)
    assert centred_span(1, 3, 30) == (1, 2)  # clipped at the first block
    assert centred_span(30, 5, 30) == (28, 29, 30)
    assert centred_span(5, 1, 30) == (5,)
    assert centred_span(5, 4, 30) == (4, 5, 6, 7)


def test_donors_are_other_rows():
    rows = np.arange(0, 1000, 7)
    donors = donor_rows(rows, 1000, seed=3)
    assert (donors != rows).all() and donors.min() >= 0 and donors.max() < 1000
    assert len(set(donors.tolist())) > len(rows) * 0.8
    np.testing.assert_array_equal(donors, donor_rows(rows, 1000, seed=3))


def test_sample_is_stratified_and_takes_correct_texts_first():
    labels = np.repeat([0, 1, 2], [100, 50, 50])
    correct = np.zeros(200, dtype=bool)
    correct[[0, 5, 9, 120, 121]] = True
    answers = pl.DataFrame({"label_id": labels, "correct": correct})
    rows = sample_texts(answers, 40, seed=0)
    assert len(rows) == 40 and np.bincount(labels[rows]).tolist() == [20, 10, 10]
    assert {0, 5, 9, 120, 121} <= set(rows.tolist())
    assert (rows == sample_texts(answers, 40, seed=0)).all()
    assert sample_texts(answers, 500, seed=0).tolist() == list(range(200))


def test_effects_against_brute_force():
    rng = np.random.default_rng(0)
    clean, edited = rng.normal(size=(300, 4)), rng.normal(size=(300, 4))
    labels = rng.integers(0, 4, 300)
    result = effects(clean, edited, labels, seed=1)
    accuracy = lambda logits: np.mean([row.argmax() == y for row, y in zip(logits, labels)])  # noqa: E731
    assert result["accuracy_change"][0] == pytest.approx(accuracy(edited) - accuracy(clean))
    logprob = [log_softmax(e)[y] - log_softmax(c)[y] for c, e, y in zip(clean, edited, labels)]
    assert result["logprob_change"][0] == pytest.approx(np.mean(logprob))
    assert result["flip_rate"][0] == pytest.approx(np.mean([c.argmax() != e.argmax() for c, e in zip(clean, edited)]))
    kl = [sum(np.exp(log_softmax(c)[k]) * (log_softmax(c)[k] - log_softmax(e)[k]) for k in range(4))
          for c, e in zip(clean, edited)]
    assert result["kl"][0] == pytest.approx(np.mean(kl))
    for value, low, high in result.values():
        assert low <= value <= high and high > low
    same = effects(clean, clean, labels)
    assert same["accuracy_change"] == (0.0, 0.0, 0.0) and same["flip_rate"][0] == 0 and same["kl"][0] == pytest.approx(0)
