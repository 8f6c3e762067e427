"""Pooled positions: the mean over the text's own tokens (text_mean) and its last token (text_last)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emoprobe import models
from emoprobe.config import resolve_template
from emoprobe.errors import ExtractionError
from emoprobe.extract import extract, shared_prefix_length
from emoprobe.prompts import template_parts
from emoprobe.shards import SITES, read_pairs

from .conftest import FAMILIES, SMOLLM2, build_tokenizer, require_smollm2

POSITIONS = [-1, -3, "text_last", "text_mean"]


def _load(directory):
    return models.load({"source": "local", "path": str(directory)}, torch.device("cpu"))


def _text_chars(template: str, texts):
    start = len(template_parts(template)[0])
    return [(start, start + len(text)) for text in texts]


def _collect(model, tokenizer, template, texts, layers, sites=("residual",), batch_size=7, positions=POSITIONS):
    """{(layer, site): [N, P, H]} as the extraction hands it over."""
    prompts = [template.format(text=text) for text in texts]
    out = {}

    def sink(rows, captured):
        for key, values in captured.items():
            out.setdefault(key, np.full((len(prompts), *values.shape[1:]), np.nan, np.float32))[rows] = values.numpy()

    extract(model, tokenizer, prompts, [f"t{i}" for i in range(len(prompts))], layers, positions, batch_size, sink,
            progress=False, sites=sites, text_chars=_text_chars(template, texts))
    return out


def _reference(model, tokenizer, template, text, n_layers):
    """Independently of the workflow's code: the text located by str.rindex, its tokens those whose
    characters (the tokenizer's token_to_chars) overlap it, one unpadded forward pass, and its
    hidden_states averaged from the first to the last of those tokens (HF's last hidden state is
    normed: left out). Returns ({layer: (text_mean, text_last, [-1], [-3])}, the text's tokens)."""
    prompt = template.format(text=text)
    start = prompt.rindex(text)  # the two-shot examples come first: the text is the last occurrence
    encoding = tokenizer(prompt)
    tokens = [k for k in range(len(encoding["input_ids"])) if (chars := encoding.token_to_chars(k))
              and chars.start < start + len(text) and chars.end > start and chars.end > chars.start]
    with torch.inference_mode():
        hidden = model(**tokenizer(prompt, return_tensors="pt"), output_hidden_states=True).hidden_states
    return {layer: (hidden[layer][0, tokens[0]:tokens[-1] + 1].mean(0).numpy(), hidden[layer][0, tokens[-1]].numpy(),
                    hidden[layer][0, -1].numpy(), hidden[layer][0, -3].numpy())
            for layer in range(n_layers)}, tokens


def _check_against_reference(read, model, tokenizer, template, texts, atol=1e-5):
    n_layers = model.config.num_hidden_layers
    for row, text in enumerate(texts):
        reference, tokens = _reference(model, tokenizer, template, text, n_layers)
        for layer, (mean, last, at_end, at_minus_3) in reference.items():
            got = read[layer, "residual"][row]
            np.testing.assert_allclose(got[3], mean, atol=atol, rtol=0)
            np.testing.assert_allclose(got[2], last, atol=atol, rtol=0)
            np.testing.assert_allclose(got[0], at_end, atol=atol, rtol=0)
            np.testing.assert_allclose(got[1], at_minus_3, atol=atol, rtol=0)
        if len(tokens) > 1:  # not vacuous: the mean is not the last token
            assert np.abs(read[n_layers - 1, "residual"][row][3] - read[n_layers - 1, "residual"][row][2]).max() > 1e-3


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("template", ["zero_shot", "two_shot", "{text} Answer:"])
def test_pooled_positions_equal_the_unbatched_text_span(tiny_models, crowd_envent_slice, family, side, template):
    """text_mean and text_last equal the unbatched forward pass's hidden states over the text's
    own tokens (not the template's, not the two-shot examples'), batched with padding on either
    side; the fixed positions in the same pass too. BERT's [CLS]/[SEP] are outside the text. (The
    named templates' shared opening runs once and the rest is right-padded; a template opening
    with the text has no shared prefix, so batches keep the tokenizer's padding side.)"""
    tokenizer, model, _ = _load(tiny_models[family][side])
    template = resolve_template(template)
    texts = crowd_envent_slice["text"].to_list()[:12]
    layers = list(range(model.config.num_hidden_layers + 1))
    read = _collect(model, tokenizer, template, texts, layers)
    _check_against_reference(read, model, tokenizer, template, texts)


def test_a_bos_token_is_not_part_of_the_text(tiny_models, crowd_envent_slice, tmp_path):
    """A tokenizer that starts every prompt with [BOS] (as Gemma's and Llama 2's do), and a template
    whose text comes first: the text's span starts after BOS."""
    from tokenizers import processors

    tokenizer, model, _ = _load(tiny_models["llama"]["left"])
    backend = build_tokenizer("left", "llama").backend_tokenizer
    bos = backend.token_to_id("[BOS]")
    backend.post_processor = processors.TemplateProcessing(single="[BOS] $A", special_tokens=[("[BOS]", bos)])
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]",
                                        bos_token="[BOS]", padding_side="left")
    template = "{text} Answer:"
    texts = crowd_envent_slice["text"].to_list()[:9]
    assert all(ids[0] == bos for ids in tokenizer([template.format(text=t) for t in texts])["input_ids"])
    read = _collect(model, tokenizer, template, texts, [0, 1, 2])
    _check_against_reference(read, model, tokenizer, template, texts)


def test_the_shared_prefix_stops_before_the_text(tiny_models):
    """Texts that all begin with the same words: the prompts' shared prefix (run once) must stop
    before the text, or the text's first tokens would never reach the hooks."""
    tokenizer, model, _ = _load(tiny_models["llama"]["right"])
    template = resolve_template("zero_shot")
    texts = ["i felt happy when i passed the exam", "i felt angry when he lied to me",
             "i felt sad when my dog died", "i felt afraid when the car slid on the ice"]
    assert shared_prefix_length(tokenizer([template.format(text=t) for t in texts])["input_ids"], 1) > \
        len(tokenizer(template_parts(template)[0])["input_ids"])  # the words "i felt" are shared too
    read = _collect(model, tokenizer, template, texts, [0, 1, 2], batch_size=3)
    _check_against_reference(read, model, tokenizer, template, texts)


def test_pooled_positions_of_every_site_batched_equal_one_at_a_time(tiny_models, crowd_envent_slice):
    """Every site at the pooled positions, batched with padding equals one text at a time (the
    five test families' residual stream is covered above), and the mean, being linear, keeps
    residual[L] = residual[L - 1] + attn_out[L] + mlp_out[L]."""
    texts = crowd_envent_slice["text"].to_list()
    template = resolve_template("two_shot")
    for family in ("llama", "qwen2", "gemma3", "gpt2"):
        tokenizer, model, _ = _load(tiny_models[family]["left"])
        layers = list(range(model.config.num_hidden_layers + 1))
        batched = _collect(model, tokenizer, template, texts, layers, SITES, batch_size=7)
        single = _collect(model, tokenizer, template, texts, layers, SITES, batch_size=1)
        assert sorted(batched) == sorted(read_pairs(layers, SITES))
        for key in batched:
            np.testing.assert_allclose(batched[key], single[key], atol=1e-4, rtol=0)
        for layer in layers[1:]:
            total = single[layer - 1, "residual"] + single[layer, "attn_out"] + single[layer, "mlp_out"]
            np.testing.assert_allclose(single[layer, "residual"], total, atol=1e-5, rtol=0)


def test_pooled_positions_alone(tiny_models, crowd_envent_slice):
    """Only pooled positions (no fixed one): the same values as beside the fixed ones."""
    tokenizer, model, _ = _load(tiny_models["qwen2"]["left"])
    template = resolve_template("zero_shot")
    texts = crowd_envent_slice["text"].to_list()
    both = _collect(model, tokenizer, template, texts, [0, 2])
    alone = _collect(model, tokenizer, template, texts, [0, 2], positions=["text_mean", "text_last"])
    for layer in (0, 2):
        np.testing.assert_allclose(alone[layer, "residual"][:, 0], both[layer, "residual"][:, 3], atol=1e-5)
        np.testing.assert_allclose(alone[layer, "residual"][:, 1], both[layer, "residual"][:, 2], atol=1e-5)


def test_real_smollm2_text_mean():
    """The same through a real pretrained model and its own (GGUF-converted, byte-level BPE)
    tokenizer: SmolLM2-135M, two-shot template."""
    require_smollm2()
    tokenizer, model, _ = models.load(SMOLLM2, torch.device("cpu"), "float32")
    template = resolve_template("two_shot")
    texts = ["I passed my driving test on the first try.", "My dog died last week and the house feels empty.",
             "Someone took credit for my work in front of the whole team."]
    read = _collect(model, tokenizer, template, texts, [0, 10, 29], batch_size=3)
    reference_read = {(layer, "residual"): read[layer, "residual"] for layer in (0, 10, 29)}
    for row, text in enumerate(texts):
        reference, tokens = _reference(model, tokenizer, template, text, 30)
        assert len(tokens) >= 9
        for layer in (0, 10, 29):
            scale = max(1.0, float(np.abs(reference[layer][0]).max()))
            np.testing.assert_allclose(reference_read[layer, "residual"][row][3], reference[layer][0], atol=1e-4 * scale)
            np.testing.assert_allclose(reference_read[layer, "residual"][row][2], reference[layer][1], atol=1e-4 * scale)


def test_a_text_of_no_tokens_stops_with_its_id(tiny_models):
    tokenizer, model, _ = _load(tiny_models["llama"]["right"])
    template = resolve_template("zero_shot")
    texts = ["i was happy", ""]
    with pytest.raises(ExtractionError, match=r"text t1 tokenises to nothing.*drop the pooled positions"):
        _collect(model, tokenizer, template, texts, [0, 1])


def test_a_slow_tokenizer_is_refused_for_pooled_positions(tiny_models):
    """Character offsets come from fast tokenizers only (a slow one silently ignores the request
    for them): a clear error; the fixed positions still work with it."""
    from transformers import ByT5Tokenizer

    _, model, _ = _load(tiny_models["bert"]["right"])
    slow = ByT5Tokenizer()  # a python-backend tokenizer: bytes + 3, within the tiny model's vocabulary
    assert not slow.is_fast and model.config.vocab_size > 259
    template = "{text} answer:"
    with pytest.raises(ExtractionError, match=r"ByT5Tokenizer \(a slow tokenizer\).*fast tokenizer"):
        _collect(model, slow, template, ["i was happy"], [0, 1])
    fixed = _collect(model, slow, template, ["i was happy"], [0, 1], positions=[-1])
    assert fixed[1, "residual"].shape == (1, 1, model.config.hidden_size)
