"""Extraction: batched equals one-at-a-time, hooks equal output_hidden_states, shards are atomic."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from emoprobe import models
from emoprobe.errors import ExtractionError
from emoprobe.extract import extract, extract_to_shards, length_sorted_batches, token_positions
from emoprobe.shards import read_metadata, read_position, shard_file

from .conftest import FAMILIES
from .test_models import damaged_copy

POSITIONS = [-1, -2, -5]


def _load(directory):
    return models.load({"source": "local", "path": str(directory)}, torch.device("cpu"))


def _collect(model, tokenizer, prompts, ids, layers, batch_size, forward=None, batch_tokens=None, streams=1):
    hidden = model.config.hidden_size
    out = {layer: np.full((len(prompts), len(POSITIONS), hidden), np.nan, np.float32) for layer in layers}

    def sink(rows, captured):
        for (layer, site), values in captured.items():
            assert site == "residual"
            out[layer][rows] = values.numpy()

    kwargs = {"forward": forward} if forward else {}
    extract(model, tokenizer, prompts, ids, layers, POSITIONS, batch_size, sink, progress=False,
            batch_tokens=batch_tokens, streams=streams, **kwargs)
    return out


def test_token_positions_left_and_right_padding():
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert token_positions(right, [-1, -3]).tolist() == [[2, 0], [4, 2]]
    assert token_positions(left, [-1, -3]).tolist() == [[4, 2], [4, 2]]


def test_token_budget_batches():
    """Every row once, longest first; no batch over the row or token limit unless a text alone is."""
    lengths = np.array([5, 40, 7, 7, 300, 12, 7, 9, 40, 6] * 5)
    batches = length_sorted_batches(lengths, batch_size=8, batch_tokens=64)
    order = np.concatenate(batches)
    assert sorted(order.tolist()) == list(range(len(lengths)))
    assert (np.diff(lengths[order]) <= 0).all()
    for rows in batches:
        assert len(rows) <= 8
        assert len(rows) * lengths[rows].max() <= 64 or len(rows) == 1
    assert [len(rows) for rows in batches][:6] == [1, 1, 1, 1, 1, 1]  # 300 and 40 tokens: one per batch
    assert max(len(rows) for rows in batches) == 8  # short texts fill the row limit
    subset = length_sorted_batches(lengths, batch_size=8, batch_tokens=64, rows=[0, 1, 2])
    assert [rows.tolist() for rows in subset] == [[1], [2, 0]]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("side", ["left", "right"])
def test_batched_equals_one_at_a_time(tiny_models, crowd_envent_slice, family, side):
    tokenizer, model, _ = _load(tiny_models[family][side])
    assert tokenizer.padding_side == side
    table = crowd_envent_slice
    prompts, ids = table["prompt"].to_list(), table["id"].to_list()
    layers = list(range(model.config.num_hidden_layers + 1))
    batched = _collect(model, tokenizer, prompts, ids, layers, batch_size=7)
    single = _collect(model, tokenizer, prompts, ids, layers, batch_size=1)
    by_tokens = _collect(model, tokenizer, prompts, ids, layers, batch_size=64, batch_tokens=300)
    # Three threads running batches at once through the same hooks: every row lands in its place
    # (equal up to float rounding: each thread runs its ops on fewer torch threads).
    streamed = _collect(model, tokenizer, prompts, ids, layers, batch_size=7, streams=3)
    lengths = [len(t) for t in tokenizer(prompts)["input_ids"]]
    assert len(set(lengths)) > 5, "the slice must mix prompt lengths so that padding happens"
    for layer in layers:
        assert not np.isnan(batched[layer]).any()
        np.testing.assert_allclose(batched[layer], single[layer], atol=1e-4, rtol=0)
        np.testing.assert_allclose(by_tokens[layer], single[layer], atol=1e-4, rtol=0)
        np.testing.assert_allclose(streamed[layer], batched[layer], atol=1e-5, rtol=1e-5)
    # The agreement is meaningful: texts differ from each other far more than batching moves them.
    last = batched[layers[-1]][:, 0]
    spread = np.abs(last - last.mean(axis=0)).max()
    assert spread > 100 * np.abs(batched[layers[-1]] - single[layers[-1]]).max()


@pytest.mark.parametrize("family", FAMILIES)
def test_hooks_match_output_hidden_states(tiny_models, family):
    """Layer L equals HF's hidden_states[L] for every L up to n_layers (HF's last one is normed, so the
    model's final norm is applied to ours before comparing it)."""
    tokenizer, model, _ = _load(tiny_models[family]["right"])
    prompt = "What are the inferred emotions in the following contexts? Context: i was happy . Answer:"
    n_layers = model.config.num_hidden_layers
    ours = _collect(model, tokenizer, [prompt], ["t0"], list(range(n_layers + 1)), batch_size=1)
    encoded = tokenizer(prompt, return_tensors="pt")
    with torch.inference_mode():
        reference = model(**encoded, output_hidden_states=True).hidden_states
    n_tokens = encoded["input_ids"].shape[1]
    # HF's last hidden state has been through the final norm (BERT has none): apply it to ours.
    base = model.base_model  # the decoder inside its causal-LM wrapper
    final_norm = getattr(base, "norm", None) or getattr(base, "ln_f", None) or torch.nn.Identity()
    with torch.inference_mode():
        ours[n_layers] = final_norm(torch.as_tensor(ours[n_layers])).numpy()
    for layer in range(n_layers + 1):
        for p_index, position in enumerate(POSITIONS):
            expected = reference[layer][0, n_tokens + position].numpy()
            np.testing.assert_allclose(ours[layer][0, p_index], expected, atol=1e-5)


def test_prompt_shorter_than_position_names_the_text(tiny_models):
    tokenizer, model, _ = _load(tiny_models["llama"]["right"])
    with pytest.raises(ExtractionError, match=r"short-one \(2 tokens\)"):
        _collect(model, tokenizer, ["a long enough prompt with many words in it", "i was"],
                 ["long-one", "short-one"], [1], batch_size=2)


def test_shards_stream_every_layer_with_metadata(tmp_path, tiny_models, crowd_envent_slice):
    tokenizer, model, _ = _load(tiny_models["qwen2"]["left"])
    prompts, ids = crowd_envent_slice["prompt"].to_list(), crowd_envent_slice["id"].to_list()
    layers = [0, 2, 3]
    extract_to_shards(model, tokenizer, prompts, ids, layers, POSITIONS, 4,
                      lambda layer, site: str(tmp_path / shard_file(layer, site)),
                      {"model_id": "tiny", "prepared_sha256": "abc"}, progress=False)
    reference = _collect(model, tokenizer, prompts, ids, layers, batch_size=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"layer_{layer}.safetensors" for layer in layers]
    for layer in layers:
        path = tmp_path / f"layer_{layer}.safetensors"
        meta = read_metadata(path)
        assert meta["layer"] == str(layer) and meta["n_rows"] == str(len(prompts))
        assert json.loads(meta["positions"]) == POSITIONS and meta["prepared_sha256"] == "abc"
        from safetensors.numpy import load_file
        tensor = load_file(path)["activations"]
        assert tensor.shape == (len(prompts), len(POSITIONS), model.config.hidden_size)
        np.testing.assert_allclose(tensor, reference[layer], atol=1e-4)
        np.testing.assert_array_equal(read_position(path, 1), tensor[:, 1])


@pytest.mark.parametrize("streams", [1, 2])
def test_crash_leaves_no_shard(tmp_path, tiny_models, crowd_envent_slice, streams):
    """An exception in any stream reaches the caller, and no shard appears."""
    from emoprobe.extract import forward_batch

    tokenizer, model, _ = _load(tiny_models["llama"]["right"])
    calls = []

    def crashing_forward(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return forward_batch(*args)

    with pytest.raises(KeyboardInterrupt):
        extract_to_shards(model, tokenizer, crowd_envent_slice["prompt"].to_list(),
                          crowd_envent_slice["id"].to_list(), [0, 1], POSITIONS, 4,
                          lambda layer, site: str(tmp_path / shard_file(layer, site)), {},
                          forward=crashing_forward, progress=False, streams=streams)
    assert list(tmp_path.iterdir()) == []
    assert len(calls) < 10  # the other stream stopped too (39 texts: 10 batches of at most 4)


def test_out_of_memory_halves_the_batch(tiny_models, crowd_envent_slice):
    """A simulated CUDA OOM on batches above 4 rows: the run finishes with identical results."""
    from emoprobe.extract import forward_batch

    tokenizer, model, _ = _load(tiny_models["llama"]["right"])
    prompts, ids = crowd_envent_slice["prompt"].to_list(), crowd_envent_slice["id"].to_list()
    sizes = []

    def small_memory_forward(model_, run, input_ids, *rest):
        sizes.append(len(input_ids))
        if len(input_ids) > 4:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return forward_batch(model_, run, input_ids, *rest)

    limited = _collect(model, tokenizer, prompts, ids, [1, 3], 16, forward=small_memory_forward)
    reference = _collect(model, tokenizer, prompts, ids, [1, 3], 16)
    assert sizes[:3] == [16, 8, 4] and max(sizes[3:]) <= 4
    for layer in (1, 3):
        np.testing.assert_allclose(limited[layer], reference[layer], atol=1e-4)


def test_left_padding_without_position_ids_pads_right(tiny_models, crowd_envent_slice, caplog):
    """A left-padding tokenizer on a model whose forward() takes no position_ids (GPT-2's absolute
    positions would count the pads): batches are padded on the right and equal one-at-a-time runs."""
    tokenizer, model, _ = _load(tiny_models["gpt2"]["left"])
    original = model.forward

    def forward(input_ids=None, attention_mask=None, use_cache=None):
        return original(input_ids=input_ids, attention_mask=attention_mask, use_cache=use_cache)

    model.forward = forward
    prompts, ids = crowd_envent_slice["prompt"].to_list(), crowd_envent_slice["id"].to_list()
    caplog.set_level("INFO", logger="emoprobe")
    batched = _collect(model, tokenizer, prompts, ids, [1, 3], batch_size=7)
    single = _collect(model, tokenizer, prompts, ids, [1, 3], batch_size=1)
    for layer in (1, 3):
        np.testing.assert_allclose(batched[layer], single[layer], atol=1e-4, rtol=0)
    assert caplog.text.count("takes no position_ids") == 2  # once per run


def test_non_finite_activations_stop_extraction(tmp_path, tiny_models):
    """An infinite embedding for one word: the run stops naming the model and that word's text, no shard."""
    tokenizer, model, _ = _load(tiny_models["llama"]["right"])
    with torch.no_grad():
        model.get_input_embeddings().weight[tokenizer.convert_tokens_to_ids("birthday")] = float("inf")
    prompts = ["i was happy today at home", "on my birthday i was sad", "we went home and it was good"]
    with pytest.raises(ExtractionError, match=r"'tiny-llama'.*NaN or inf.*layer 1.*bad-2.*corrupt.*overflowed"):
        extract_to_shards(model, tokenizer, prompts, ["ok-1", "bad-2", "ok-3"], [0, 1, 2], [-1], 3,
                          lambda layer, site: str(tmp_path / shard_file(layer, site)), {"model_id": "tiny-llama"},
                          progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # gguf dequantising the noise
def test_corrupt_gguf_weights_stop_extraction(tmp_path):
    """The real SmolLM2 GGUF with 4 MB of its block weights overwritten: NaN activations are refused
    naming the file, and neither a shard nor a .partial file is left."""
    def overwrite(data):
        start = len(data) // 2  # in the blocks' weights: the header and token embeddings end at 32 MB
        data[start:start + (4 << 20)] = np.random.default_rng(0).integers(0, 256, 4 << 20, dtype=np.uint8).tobytes()
        return data

    corrupt = damaged_copy(tmp_path, overwrite)
    tokenizer, model, resolved = models.load({"source": "gguf", "path": str(corrupt)}, torch.device("cpu"), "float32")
    shards = tmp_path / "shards"
    prompts = ["Context: i was happy today . Answer:", "Context: we went home and it was sad . Answer:"]
    with pytest.raises(ExtractionError, match=f"'{re.escape(str(corrupt))}'.*NaN or inf.*(t0|t1)"):
        extract_to_shards(model, tokenizer, prompts, ["t0", "t1"], list(range(31)), POSITIONS, 8,
                          lambda layer, site: str(shards / shard_file(layer, site)), {"model_id": resolved.model_id},
                          progress=False)
    assert not [p for p in shards.rglob("*") if p.suffix in (".safetensors", ".partial")]


def test_shared_prefix_length_leaves_the_positions_to_every_prompt():
    from emoprobe.extract import shared_prefix_length

    lists = [[1, 2, 3, 4, 5], [1, 2, 3, 9, 9, 9], [1, 2, 3, 4]]
    assert shared_prefix_length(lists, 1) == 3
    assert shared_prefix_length(lists, 2) == 2  # the 4-token prompt keeps its last 2
    assert shared_prefix_length([[1, 2], [3, 4]], 1) == 0
    assert shared_prefix_length([[7, 8, 9]], 1) == 2


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma3", "gpt2", "bert"])
def test_the_shared_prefix_runs_once_and_changes_nothing(tiny_models, crowd_envent_slice, family, monkeypatch,
                                                         caplog):
    """A decoder runs the template's shared opening once and each batch only the rest, attending
    to its cached keys and values: the activations equal a run without the cache (an encoder,
    whose tokens see later ones, never uses it)."""
    from emoprobe import extract as extraction

    tokenizer, model, _ = _load(tiny_models[family]["left"])
    prompts, ids = crowd_envent_slice["prompt"].to_list(), crowd_envent_slice["id"].to_list()
    caplog.set_level("INFO", logger="emoprobe")
    cached = _collect(model, tokenizer, prompts, ids, [0, 2, 3], batch_size=8)
    assert ("tokens are shared: run once" in caplog.text) == (family != "bert")
    monkeypatch.setattr(extraction, "MIN_SHARED_PREFIX", 10_000)
    plain = _collect(model, tokenizer, prompts, ids, [0, 2, 3], batch_size=8)
    for layer in (0, 2, 3):
        np.testing.assert_allclose(cached[layer], plain[layer], atol=1e-5, rtol=1e-5)
