"""Interventions: edits at the last prompt position, the cached-prefix runner against the full
re-forward, ablation's edits and sample, and the effect metrics against brute force."""

from __future__ import annotations

import re
import shutil

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

from .conftest import (REPO, SHARED_DATA, SMOLLM2, build_config, build_tokenizer, crowd_envent_path, job_counts,
                       make_tiny_model, require_smollm2, run_snakemake)

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


def _tiny_decoder(family: str, n_layers: int, **config_changes):
    from transformers import AutoModelForCausalLM

    tokenizer = build_tokenizer("left", family)
    config = build_config(family, len(tokenizer), n_layers)
    for key, value in config_changes.items():
        setattr(config, key, value)
    torch.manual_seed(0)
    return tokenizer, AutoModelForCausalLM.from_config(config).eval()


def test_gemma3_sliding_window_shorter_than_the_prompts(crowd_envent_slice):
    """Gemma 3 with a 4-token sliding window on 5 of its 6 layers (prompts of 20+ tokens): the
    cached path equals the full re-forward and unbatched passes, and the window does change the
    logits (a 512-token window gives others)."""
    prompts = crowd_envent_slice["prompt"].to_list()[:6]
    results = {}
    for window in (4, 512):
        tokenizer, model = _tiny_decoder("gemma3", 6, sliding_window=window)
        token_lists = tokenizer(prompts)["input_ids"]
        assert min(map(len, token_lists)) > 4 * window or window == 512
        edits = _edits(6, model.config.hidden_size, len(prompts))
        runner = EditRunner(model, tokenizer, LABEL_TOKENS, max_rows=40)
        cached = runner.run(token_lists, edits, text_batch=4)
        np.testing.assert_allclose(cached, runner.run(token_lists, edits, cached=False), atol=1e-5, rtol=0)
        with torch.inference_mode():
            unbatched = np.stack([model(torch.tensor([tokens])).logits[0, -1, LABEL_TOKENS].numpy()
                                  for tokens in token_lists])
        np.testing.assert_allclose(cached[:, 0], unbatched, atol=1e-5, rtol=0)
        results[window] = cached
    assert "sliding_attention" in model.config.layer_types and "full_attention" in model.config.layer_types
    assert np.abs(results[4] - results[512]).max() > 1e-3


def test_edits_run_from_their_lowest_layer_up(tiny_models, crowd_envent_slice):
    """The blocks below an edit's lowest layer do not run for its rows (counted at each block's
    attention): the prefix and the clean last tokens run through every block, an edit at layer l
    through blocks l.. only; the LM head computes the label words' logits only."""
    tokenizer, model, _ = _load(tiny_models["llama"]["left"])
    token_lists = tokenizer(crowd_envent_slice["prompt"].to_list()[:5])["input_ids"]
    rows = {block: [] for block in range(3)}

    def count(block):
        return lambda module, args, kwargs, output: rows[block].append(output[0].shape[0])

    counters = [model.model.layers[block].self_attn.register_forward_hook(count(block), with_kwargs=True)
                for block in rows]
    runner = EditRunner(model, tokenizer, LABEL_TOKENS)
    top = [Edit("mlp_out", (3,)), Edit("residual", (3,)), Edit("attn_out", (3,))]
    try:
        runner.run(token_lists, top, text_batch=5)
        assert rows == {0: [5, 5], 1: [5, 5], 2: [5, 5, 15]}  # prefix, clean, the 3 edits x 5 texts
        rows = {block: [] for block in range(3)}
        runner.run(token_lists, [None, Edit("mlp_out", (2,)), (Edit("mlp_out", (3,)), Edit("attn_out", (2, 3)))],
                   text_batch=5)
        assert rows == {0: [5, 5], 1: [5, 5, 10], 2: [5, 5, 10]}
    finally:
        for handle in counters:
            handle.remove()
    head = model.get_output_embeddings()
    widths = []
    handle = head.register_forward_hook(lambda m, args, output: widths.append(output.shape[-1]))
    runner.run(token_lists, top, text_batch=5)
    handle.remove()
    assert widths == [model.config.vocab_size]  # the prefix pass alone ran the whole (stock) head
    assert model.get_output_embeddings() is head


def test_saved_directions_must_cover_every_class(tmp_path):
    """Promotion and the geometry read a directions file's weight at a position, and refuse one
    fitted on other classes (e.g. a correct_only subset that lost one), naming the fix."""
    from safetensors.numpy import save_file

    from emoprobe.errors import EmoprobeError
    from emoprobe.jobs import _saved_weight

    path = tmp_path / "layer_3.safetensors"
    weight = np.arange(2 * 3 * 4, dtype=np.float64).reshape(2, 3, 4)
    save_file({"weight": weight}, str(path), metadata={"positions": "[-2, -1]", "label_ids": "[0, 1, 2]"})
    np.testing.assert_array_equal(_saved_weight(path, -1, np.arange(3), "promotion"), weight[1])
    with pytest.raises(EmoprobeError, match=r"label ids \[0, 1, 2\], the dataset has \[0, 1, 2, 3\]: promotion needs "
                                            r"one per emotion.*`subset: all`"):
        _saved_weight(path, -1, np.arange(4), "promotion")


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


# ---------------------------------------------------------------------------------------------
# The causal_ablation rule, end to end


def _causal_config(model_dir, **changes) -> dict:
    config = {
        "data_dir": str(SHARED_DATA), "layers": "all", "positions": [-1],
        "sites": ["residual", "attn_out", "mlp_out"], "probe": {"cv_folds": 2},
        "causal": {"experiments": ["ablation", "patching", "heads", "promotion", "steering"], "max_texts": 26,
                   "patching": {"n_pairs": 20}, "promotion": {"max_texts": None, "alphas": [0.5, 4.0]},
                   "steering": {"appraisals": ["pleasantness", "predict_event"], "max_texts": 20}},
        "geometry": {"enabled": True, "n_permutations": 200},
        "models": {"tiny": {"source": "local", "path": str(model_dir)}},
        "datasets": {"crowd_envent": {"type": "crowd_envent", "max_per_class": 4,
                                      "targets": ["pleasantness", "predict_event"]}},
    }
    return {**config, **changes}


@pytest.fixture(scope="module")
def ablation_run(tmp_path_factory):
    crowd_envent_path()
    root = tmp_path_factory.mktemp("ablation")
    config = _causal_config(make_tiny_model(root / "tiny", "llama", "left"))
    result = run_snakemake(root / "run", config)
    assert result.returncode == 0, result.stderr[-3000:]
    return {"workdir": root / "run", "config": config, "output": result.stdout + result.stderr}


def _table(workdir, experiment="ablation"):
    return pl.read_parquet(workdir / "results" / "causal" / "tiny" / "crowd_envent" / f"{experiment}.parquet")


def test_ablation_rule_writes_its_table_metrics_and_report(ablation_run):
    counts = job_counts(ablation_run["output"])
    assert counts["causal_experiment"] == 5 and counts["aggregate_causal"] == 1
    table = _table(ablation_run["workdir"])
    assert table.columns == ["model", "dataset", "experiment", "layer", "site", "kind", "span", "metric", "value",
                             "ci_low", "ci_high", "n_texts", "clean_accuracy", "n_layers"]
    assert table.height == 3 * 3 * 3 * 4  # centres 1-3 x sites x kinds x metrics
    assert set(table["n_texts"]) == {26}
    assert table.filter(layer=1)["span"].unique().to_list() == ["1-2"]  # clipped at the first block
    assert table.filter(layer=2)["span"].unique().to_list() == ["1-3"]
    assert ((table["ci_low"] <= table["value"]) & (table["value"] <= table["ci_high"])).all()
    patching = _table(ablation_run["workdir"], "patching")
    assert patching.height == 3 * 3 * 2 and set(patching["n_texts"]) == {20}  # centres x sites x metrics
    assert set(patching["metric"]) == {"flip_to_source", "normalised_logit_difference"}
    assert patching.filter(layer=2)["span"].unique().to_list() == ["1-3"]  # span 5, clipped to 1..3
    heads = _table(ablation_run["workdir"], "heads")
    assert heads.height == 3 * 4 * 4 and set(heads["site"]) == {"heads"}  # layers x heads x metrics
    assert sorted(heads.filter(layer=2, metric="kl")["head"]) == [0, 1, 2, 3] and set(heads["span"]) == {"1-1", "2-2", "3-3"}
    promotion = _table(ablation_run["workdir"], "promotion")
    # centres x alphas x (probe, random) x (13 emotions x 2 metrics + the pooled rate)
    assert promotion.height == 3 * 2 * 2 * (13 * 2 + 1) and set(promotion["n_texts"]) == {26}
    assert set(promotion.filter(emotion="all")["metric"]) == {"promotion_rate"}
    steering = _table(ablation_run["workdir"], "steering")
    assert set(steering["n_texts"]) == {20}
    assert steering.filter(kind="expected").height == 2 * 13
    # agreement: centres x (2 appraisals + random against each) x 2 signs; changes: (2 + 1 random) x 2 x 13
    assert steering.filter(metric="agreement").height == 3 * 4 * 2
    assert steering.filter(metric="logprob_change").height == 3 * 3 * 2 * 13
    metrics = pl.read_parquet(ablation_run["workdir"] / "results" / "metrics" / "causal_metrics.parquet")
    assert metrics.equals(pl.concat([table, patching, heads, promotion, steering], how="diagonal_relaxed"))
    report = ablation_run["workdir"] / "results" / "report"
    for chart in ("ablation_by_layer", "patching_by_layer", "heads_heatmap", "promotion_by_layer", "steering_by_layer",
                  "steering_heatmap"):
        assert (report / "tiny" / "crowd_envent" / f"{chart}.png").stat().st_size > 5000
    index = (report / "index.html").read_text()
    for reading in ("Ablation (clean accuracy", "Activation patching (20 pairs)", "Knocking out one attention head",
                    "Adding an emotion&#x27;s probe direction (26 texts)", "Steering along an appraisal&#x27;s direction (20 texts)"):
        assert reading in index
    assert run_snakemake(ablation_run["workdir"], ablation_run["config"], "-n").stdout.count("causal_experiment") == 0


def test_geometry_table_matches_the_direction_files(ablation_run):
    """The geometry rule's cosines, principal-map variance and RSA recomputed with numpy from the
    saved direction files (read here with safetensors) and the prepared table's ratings."""
    import json

    from safetensors import safe_open
    from scipy.stats import spearmanr

    workdir = ablation_run["workdir"]
    table = pl.read_parquet(workdir / "results" / "geometry" / "tiny" / "crowd_envent.parquet")
    weights = {}
    for layer in (1, 2, 3):
        (path,) = (workdir / "results" / "probes" / "tiny" / "crowd_envent" / f"layer_{layer}").glob("*.logreg.directions.safetensors")
        with safe_open(str(path), "numpy") as file:
            weights[layer] = file.get_tensor("weight")[json.loads(file.metadata()["positions"]).index(-1)]
    unit = {layer: w / np.linalg.norm(w, axis=1, keepdims=True) for layer, w in weights.items()}
    across = table.filter(analysis="layer_similarity", layer=1, layer_b=3)
    assert across.filter(emotion="mean")["value"][0] == pytest.approx(np.mean(np.sum(unit[1] * unit[3], axis=1)))
    assert across.filter(emotion="joy")["value"][0] == pytest.approx(unit[1][5] @ unit[3][5])  # joy: label id 5
    within = table.filter(analysis="emotion_similarity", layer=2, emotion="anger", emotion_b="fear")
    assert within["value"][0] == pytest.approx(unit[2][0] @ unit[2][3])
    centred = unit[2] - unit[2].mean(axis=0)
    variance = np.linalg.svd(centred, compute_uv=False) ** 2
    explained = table.filter(analysis="principal_map", layer=2, metric="explained_pc1")["value"][0]
    assert explained == pytest.approx(variance[0] / variance.sum())
    prepared = pl.read_parquet(workdir / "results" / "data" / "crowd_envent.parquet")
    ratings = prepared.select("pleasantness", "predict_event").to_numpy().astype(float)
    z = (ratings - ratings.mean(0)) / ratings.std(0)
    profiles = np.stack([z[prepared["label_id"].to_numpy() == k].mean(0) for k in range(13)])
    profiles /= np.linalg.norm(profiles, axis=1, keepdims=True)
    upper = np.triu_indices(13, 1)
    rsa = table.filter(analysis="rsa", layer=2).row(0, named=True)
    assert rsa["value"] == pytest.approx(spearmanr((unit[2] @ unit[2].T)[upper], (profiles @ profiles.T)[upper]).statistic)
    assert rsa["ci_low"] <= rsa["value"] <= rsa["ci_high"] and 1 / 201 <= rsa["p_value"] <= 1
    # layer 0 at -1 is the embedding of the same last token in every prompt: its directions are zero
    assert table.filter(analysis="valence")["layer"].to_list() == [1, 2, 3] and set(table["position"]) == {"-1"}
    metrics = pl.read_parquet(workdir / "results" / "metrics" / "geometry.parquet")
    assert metrics.equals(table)
    report = workdir / "results" / "report"
    for chart in ("direction_layer_similarity", "emotion_map", "rsa_by_layer"):
        assert (report / "tiny" / "crowd_envent" / f"{chart}.png").stat().st_size > 5000
    assert "The emotion space looks most like the human one at layer" in (report / "index.html").read_text()


def _ablated_logits(model, tokenizer, prompts, label_tokens, outputs: dict) -> np.ndarray:
    """Unbatched forward passes with the output of block i (0-based) at the last position set to
    outputs[i], by hand-written hooks: the label words' logits [N, L]."""
    def setter(value):
        def hook(module, args, output):
            (output if torch.is_tensor(output) else output[0])[0, -1] = torch.as_tensor(value)
        return hook

    handles = [model.model.layers[block].register_forward_hook(setter(value)) for block, value in outputs.items()]
    try:
        with torch.inference_mode():
            return np.stack([model(torch.tensor([tokenizer(prompt)["input_ids"]])).logits[0, -1, label_tokens].numpy()
                             for prompt in prompts])
    finally:
        for handle in handles:
            handle.remove()


def test_mean_ablation_uses_the_shards_mean(ablation_run, tmp_path):
    """A row of the table recomputed by hand from the shards' own means (read here with
    safetensors) and unbatched forward passes; then a shard changed on disk changes exactly the
    mean rows whose span reads it, and no zero row."""
    import json

    from safetensors.numpy import load_file, save_file

    from emoprobe.interventions.plan import sample_texts
    from emoprobe.shards import read_metadata

    workdir = tmp_path / "run"
    shutil.copytree(ablation_run["workdir"], workdir, symlinks=True)
    table = _table(workdir)
    prepared = pl.read_parquet(workdir / "results" / "data" / "crowd_envent.parquet")
    answers_file = workdir / "results" / "answers" / "tiny" / "crowd_envent.parquet"
    label_tokens = list(json.loads(pl.read_parquet_metadata(answers_file)["answer_token_ids"]).values())
    rows = sample_texts(pl.read_parquet(answers_file), 26, 0)
    prompts, labels = prepared["prompt"].to_numpy()[rows], prepared["label_id"].to_numpy()[rows]  # 13 classes: ids = columns
    (part,) = (workdir / "results" / "activations" / "tiny" / "crowd_envent").iterdir()
    means = {layer: load_file(part / f"layer_{layer}.safetensors")["activations"][:, 0].mean(axis=0)
             for layer in (2, 3)}
    tokenizer, model, _ = models.load({"source": "local", "path": ablation_run["config"]["models"]["tiny"]["path"]},
                                      torch.device("cpu"))
    clean = _ablated_logits(model, tokenizer, prompts, label_tokens, {})
    ablated = _ablated_logits(model, tokenizer, prompts, label_tokens, {1: means[2], 2: means[3]})
    row = table.filter(layer=3, site="residual", kind="mean", metric="logprob_change")
    assert row["span"][0] == "2-3"
    picked = np.arange(len(rows)), labels
    expected = np.mean(log_softmax(ablated, 1)[picked] - log_softmax(clean, 1)[picked])
    assert abs(expected) > 1e-3 and row["value"][0] == pytest.approx(expected, abs=1e-5)
    # the shard changed: the mean and random rows reading layer 3's residual stream move, the zero rows do not
    shard = part / "layer_3.safetensors"
    metadata = read_metadata(shard)
    save_file({"activations": load_file(shard)["activations"] * 3.0}, str(shard), metadata=metadata)
    result = run_snakemake(workdir, ablation_run["config"], "--forcerun", "causal_experiment")
    assert result.returncode == 0, result.stderr[-3000:]
    joined = table.join(_table(workdir), on=["layer", "site", "kind", "metric"], suffix="_new")
    moved = joined.filter((pl.col("value") - pl.col("value_new")).abs() > 1e-9, metric="logprob_change")
    assert set(moved.select("layer", "site", "kind").iter_rows()) == {
        (centre, "residual", kind) for centre in (2, 3) for kind in ("mean", "random")}  # spans 1-3 and 2-3
    assert joined.filter(kind="zero").select((pl.col("value") == pl.col("value_new")).all()).item()


@pytest.mark.parametrize(("changes", "message"), [
    ({"sites": ["residual"]}, r"mean and random kinds read the sites \['attn_out', 'mlp_out'\] .*add them to `sites`"),
    ({"positions": [-2]}, r"add -1 to `positions`"),
    ({"layers": [0, 2]}, r"read layers \[1, 3\] of model 'tiny'.*set `layers: all`"),
    ({"answers": False}, r"set `answers: true`"),
    ({"causal": {"experiments": ["patching"]}, "sites": ["residual"]},
     r"activation patching reads the sites \['attn_out', 'mlp_out'\] .*drop patching"),
    ({"causal": {"experiments": ["steering"], "steering": {"appraisals": ["urgency"]}}},
     r"appraisal steering moves along the ridge directions of the appraisals \['urgency'\].*add them to a "
     r"dataset's `targets`"),
    ({"causal": {"experiments": ["promotion"], "promotion": {"probe": "mlp"}}},
     r"`causal.promotion.probe` is 'mlp', which is not one of the linear `probes` \['logreg'\]"),
    ({"causal": {"experiments": ["heads", "promotion"]}, "positions": [-2]},
     r"emotion promotion reads \(for the residual norms\) position -1 .*drop promotion"),
])
def test_causal_settings_that_cannot_run_stop_before_any_job(tiny_models, tmp_path, changes, message):
    result = run_snakemake(tmp_path, _causal_config(tiny_models["llama"]["left"], **changes), "-n")
    assert result.returncode != 0 and re.search(message, result.stdout + result.stderr), result.stderr[-2000:]


def test_an_encoder_gets_no_causal_job(tiny_models, tmp_path):
    """An encoder beside a decoder (residual stream only: BERT has no sub-block sites): a note, and
    the causal jobs of the decoder alone."""
    config = _causal_config(tiny_models["llama"]["left"], sites=["residual"],
                            causal={"experiments": ["ablation"], "ablation": {"kinds": ["zero"]}})
    config["models"]["encoder"] = {"source": "local", "path": str(tiny_models["bert"]["right"])}
    result = run_snakemake(tmp_path, config, "-n")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "causal experiments do not apply to encoder" in result.stderr
    assert job_counts(result.stdout + result.stderr)["causal_experiment"] == 1
    assert "results/causal/encoder" not in result.stdout


@pytest.mark.slow
def test_smollm2_ablation_end_to_end(tmp_path):
    """The real SmolLM2 on a crowd-enVENT slice: the zero ablation of every site at four centre
    layers; its table, the aggregate, the report's chart; the clean run answers as the extraction did."""
    require_smollm2()
    config = _causal_config(None, layers=[1, 2, 15, 30], sites=["residual"],
                            causal={"experiments": ["ablation"], "ablation": {"kinds": ["zero"]}, "max_texts": 26})
    config["models"] = {"smollm2": SMOLLM2}
    config["datasets"]["crowd_envent"]["max_per_class"] = 2
    result = run_snakemake(tmp_path, config)
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout + result.stderr)
    assert (counts["causal_experiment"], counts["fit_probe"], counts["extract_activations"]) == (1, 4, 1)
    table = pl.read_parquet(tmp_path / "results" / "causal" / "smollm2" / "crowd_envent" / "ablation.parquet")
    assert table.height == 4 * 3 * 1 * 4 and set(table["span"]) == {"1-2", "1-3", "14-16", "29-30"}
    log = (tmp_path / "results" / "logs" / "causal_experiment" / "smollm2" / "crowd_envent" / "ablation.log").read_text()
    assert "clean answers equal the extraction's for 1.000" in log
    assert table.filter(metric="kl")["value"].max() > 0.01  # zeroing whole sites moves the answer
    assert (tmp_path / "results" / "report" / "smollm2" / "crowd_envent" / "ablation_by_layer.png").is_file()


# ---------------------------------------------------------------------------------------------
# Activation patching


def _clean_activations(model, tokenizer, prompts, layers, sites):
    """{(layer, site): [N, H]} at the last prompt position, read by the extraction's own hooks."""
    from emoprobe.extract import extract

    out = {}

    def sink(rows, captured):
        for key, values in captured.items():
            out.setdefault(key, np.zeros((len(prompts), values.shape[-1]), np.float32))[rows] = values[:, 0].numpy()

    extract(model, tokenizer, prompts, [f"t{i}" for i in range(len(prompts))], layers, [-1], 4, sink,
            progress=False, sites=sites)
    return {key: torch.as_tensor(values) for key, values in out.items()}


@pytest.mark.parametrize("family", DECODERS)
def test_patching_a_text_with_its_own_activations_changes_nothing(tiny_models, crowd_envent_slice, family):
    from emoprobe.interventions.patching import patch_edits

    tokenizer, model, _ = _load(tiny_models[family]["left"])
    prompts = crowd_envent_slice["prompt"].to_list()[:8]
    n_layers = model.config.num_hidden_layers
    sites = ("residual", "attn_out", "mlp_out")
    own = _clean_activations(model, tokenizer, prompts, list(range(n_layers + 1)), sites)
    edits = [edit for *_, edit in patch_edits(range(1, n_layers + 1), sites, 3, n_layers, own)]
    logits = EditRunner(model, tokenizer, LABEL_TOKENS).run(tokenizer(prompts)["input_ids"], [None] + edits)
    np.testing.assert_allclose(logits[:, 1:], np.repeat(logits[:, :1], len(edits), 1), atol=1e-5, rtol=0)


def test_patching_the_last_residual_gives_the_source_logits(tiny_models, crowd_envent_slice):
    """The last layer's residual stream at the last position is all the last position's logits
    depend on: patched into the target, the target answers exactly as the source; the patching
    metrics then read 1 (normalised logit difference) and the source's own flip rate."""
    from emoprobe.interventions.effects import patching_effects
    from emoprobe.interventions.patching import patch_edits
    from emoprobe.interventions.plan import text_pairs

    tokenizer, model, _ = _load(tiny_models["qwen2"]["right"])
    prompts = crowd_envent_slice["prompt"].to_list()
    labels = crowd_envent_slice["label_id"].to_numpy() % len(LABEL_TOKENS)
    n_layers = model.config.num_hidden_layers
    sources, targets = text_pairs(labels, 12, seed=1)
    assert (labels[sources] != labels[targets]).all()
    final = _clean_activations(model, tokenizer, prompts, [n_layers], ["residual"])[n_layers, "residual"]
    ((_, _, edit),) = patch_edits([n_layers], ["residual"], 1, n_layers, {(n_layers, "residual"): final[sources]})
    runner = EditRunner(model, tokenizer, LABEL_TOKENS)
    token_lists = tokenizer(prompts)["input_ids"]
    patched = runner.run([token_lists[t] for t in targets], [None, edit])
    clean = runner.run(token_lists, [None])[:, 0]
    np.testing.assert_allclose(patched[:, 1], clean[sources], atol=1e-5, rtol=0)
    metrics = patching_effects(clean[targets], clean[sources], patched[:, 1], labels[sources], labels[targets])
    assert metrics["normalised_logit_difference"][0] == pytest.approx(1.0)
    assert metrics["flip_to_source"][0] == pytest.approx(np.mean(clean[sources].argmax(1) == labels[sources]))
    unmoved = patching_effects(clean[targets], clean[sources], clean[targets], labels[sources], labels[targets])
    assert unmoved["normalised_logit_difference"][0] == pytest.approx(0.0, abs=1e-12)


def test_ratio_interval_against_a_loop():
    from emoprobe import bootstrap

    rng = np.random.default_rng(2)
    numerator, denominator = rng.normal(1, 1, 150), rng.normal(3, 1, 150)
    point, low, high = bootstrap.ratio_ci(numerator, denominator, n_resamples=400, seed=5)
    draws = np.random.default_rng(5)
    ratios = []
    for _ in range(400):
        rows = draws.integers(0, 150, 150)
        ratios.append(numerator[rows].sum() / denominator[rows].sum())
    assert point == pytest.approx(numerator.sum() / denominator.sum())
    assert (low, high) == pytest.approx(tuple(np.quantile(ratios, [0.025, 0.975])))


def test_causal_preset_validates_and_plans_its_jobs(tmp_path):
    """config/causal.yaml over config/config.yaml: SmolLM2's three sites at -1, and the five
    experiments' jobs planned on top of the default run's, with the directions promotion adds
    and the appraisal ridge probes steering needs."""
    import yaml

    require_smollm2()
    base = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    preset = yaml.safe_load((REPO / "config" / "causal.yaml").read_text())
    config = base | preset | {"data_dir": str(SHARED_DATA)}
    result = run_snakemake(tmp_path, config, "-n")
    assert result.returncode == 0, result.stderr[-2000:]
    counts = job_counts(result.stdout + result.stderr)
    assert (counts["causal_experiment"], counts["aggregate_causal"], counts["fit_probe"]) == (5, 1, 91)
    assert counts["save_directions"] == 30  # the residual stream at layers 1-30, for promotion
    assert counts["fit_ridge"] == 91  # the five appraisals at every layer and site
    for experiment in ("ablation", "patching", "heads", "promotion", "steering"):
        assert f"results/causal/smollm2-135m-instruct/crowd_envent/{experiment}.parquet" in result.stdout
