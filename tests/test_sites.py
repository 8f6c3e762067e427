"""Probe sites: the attention and MLP sub-blocks' outputs beside the residual stream."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emoprobe import models
from emoprobe.errors import ExtractionError
from emoprobe.extract import extract, site_module, transformer_blocks
from emoprobe.shards import SITES, read_pairs

from .conftest import SMOLLM2, require_smollm2, run_snakemake

POSITIONS = [-1, -2, -5]
DECODERS = ("llama", "qwen2", "gemma3", "gpt2")


def _load(directory):
    return models.load({"source": "local", "path": str(directory)}, torch.device("cpu"))


def _collect(model, tokenizer, prompts, layers, sites, batch_size):
    """{(layer, site): [N, P, H]} as the extraction hands it over."""
    out = {}

    def sink(rows, captured):
        for key, values in captured.items():
            out.setdefault(key, np.full((len(prompts), *values.shape[1:]), np.nan, np.float32))[rows] = values.numpy()

    extract(model, tokenizer, prompts, [f"t{i}" for i in range(len(prompts))], layers, POSITIONS, batch_size, sink,
            progress=False, sites=sites)
    return out


def _check_sum(read, n_layers, atol):
    for layer in range(1, n_layers + 1):
        total = read[layer - 1, "residual"] + read[layer, "attn_out"] + read[layer, "mlp_out"]
        np.testing.assert_allclose(read[layer, "residual"], total, atol=atol, rtol=0)
        # not vacuous: each sub-block adds something of the residual stream's own size
        assert np.abs(read[layer, "attn_out"]).max() > 100 * atol and np.abs(read[layer, "mlp_out"]).max() > 100 * atol


@pytest.mark.parametrize("family", DECODERS)
@pytest.mark.parametrize("side", ["left", "right"])
def test_the_sub_blocks_add_up_to_the_residual_stream(tiny_models, crowd_envent_slice, family, side):
    """residual[L] = residual[L - 1] + attn_out[L] + mlp_out[L] at every gathered position (Gemma 3:
    its post-attention and post-feed-forward norms' outputs are what is added); batched with
    padding equals one text at a time for every site; the residual stream is the one read without
    the other sites."""
    tokenizer, model, _ = _load(tiny_models[family][side])
    prompts = crowd_envent_slice["prompt"].to_list()
    n_layers = model.config.num_hidden_layers
    layers = list(range(n_layers + 1))
    batched = _collect(model, tokenizer, prompts, layers, SITES, batch_size=7)
    single = _collect(model, tokenizer, prompts, layers, SITES, batch_size=1)
    residual_only = _collect(model, tokenizer, prompts, layers, ["residual"], batch_size=7)
    assert sorted(batched) == sorted(read_pairs(layers, SITES))  # no sub-block site at layer 0
    _check_sum(single, n_layers, atol=1e-5)
    for key in batched:
        np.testing.assert_allclose(batched[key], single[key], atol=1e-4, rtol=0)
    for layer in layers:
        np.testing.assert_array_equal(residual_only[layer, "residual"], batched[layer, "residual"])


def test_sub_blocks_of_real_smollm2_add_up():
    """The same identity through a real pretrained model (SmolLM2-135M, Llama layout, GGUF)."""
    require_smollm2()
    tokenizer, model, _ = models.load(SMOLLM2, torch.device("cpu"), "float32")
    prompts = ["Context: I passed my driving test on the first try. Answer:",
               "Context: My dog died last week and the house feels empty. Answer:"]
    read = _collect(model, tokenizer, prompts, list(range(31)), SITES, batch_size=2)
    scale = np.abs(read[30, "residual"]).max()
    _check_sum(read, 30, atol=1e-5 * max(scale, 1.0))


def test_only_the_requested_sites_are_read_and_the_pass_stops_after_them(tiny_models, crowd_envent_slice,
                                                                       monkeypatch):
    """An extraction of the sub-block sites alone reads no residual stream and still stops after
    the deepest layer's MLP (the final norm never runs; the shared prefix, run once through the
    whole model, is switched off here)."""
    from emoprobe import extract as extraction

    monkeypatch.setattr(extraction, "MIN_SHARED_PREFIX", 10_000)
    tokenizer, model, _ = _load(tiny_models["llama"]["right"])
    calls = []
    handle = model.model.norm.register_forward_hook(lambda *args: calls.append(1))
    read = _collect(model, tokenizer, crowd_envent_slice["prompt"].to_list()[:4], [0, 2], ["attn_out", "mlp_out"], 4)
    handle.remove()
    assert sorted(read) == [(2, "attn_out"), (2, "mlp_out")] and not calls


def test_bert_has_no_sub_block_sites(tiny_models):
    """A post-norm block adds nothing to a residual stream that the sites could name: refused."""
    tokenizer, model, _ = _load(tiny_models["bert"]["right"])
    with pytest.raises(ExtractionError, match=r"site 'attn_out' is not defined for BertLayer.*sites: \[residual\]"):
        site_module(transformer_blocks(model)[0], "attn_out")
    with pytest.raises(ExtractionError, match="site 'mlp_out' is not defined for BertLayer"):
        _collect(model, tokenizer, ["Context: a b c d e . Answer:"], [1], ["residual", "mlp_out"], 1)
    from transformers import DistilBertConfig, DistilBertModel

    with torch.device("meta"):  # another post-norm layout, with other module names
        distilbert = DistilBertModel(DistilBertConfig(dim=32, hidden_dim=64, n_layers=2, n_heads=4, vocab_size=100))
    with pytest.raises(ExtractionError, match="site 'attn_out' is not defined for TransformerBlock"):
        site_module(transformer_blocks(distilbert)[0], "attn_out")
    info = models.model_info({"source": "local", "path": str(tiny_models["bert"]["right"])})
    assert info["sites"]["attn_out"].startswith("site 'attn_out' is not defined for BertLayer")
    for family in DECODERS:
        assert models.model_info({"source": "local", "path": str(tiny_models[family]["right"])})["sites"] == {
            "attn_out": None, "mlp_out": None}


def test_a_site_the_model_lacks_stops_the_run_before_any_job(tmp_path, tiny_models):
    from .conftest import SHARED_DATA, crowd_envent_path

    crowd_envent_path()
    config = {"data_dir": str(SHARED_DATA), "positions": [-1], "sites": ["residual", "attn_out"], "answers": False,
              "models": {"tiny-bert": {"source": "local", "path": str(tiny_models["bert"]["right"])}},
              "datasets": {"crowd_envent": {"type": "crowd_envent", "max_per_class": 6}}}
    result = run_snakemake(tmp_path / "run", config, "-n")
    assert result.returncode != 0
    assert "model 'tiny-bert': site 'attn_out' is not defined for BertLayer" in result.stdout + result.stderr
    assert not (tmp_path / "run" / "results").exists()


def test_an_architecture_that_cannot_be_built_rules_out_only_the_sub_block_sites(tiny_models, monkeypatch):
    """model_info still gives the depth and the decoder flag; each sub-block site says why it is
    unavailable, so a residual-only run goes on and a run asking for the site stops naming it."""
    import transformers

    def fail(*args, **kwargs):
        raise RuntimeError("no such module")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_config", fail)
    info = models.model_info({"source": "local", "path": str(tiny_models["llama"]["right"])})
    assert info["n_layers"] == 3 and info["decoder"]
    assert set(info["sites"]) == {"attn_out", "mlp_out"}
    assert all("model type 'llama' cannot be found: building its architecture failed (RuntimeError: no such module)"
               in why for why in info["sites"].values())
