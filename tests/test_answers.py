"""The model's own answer: label words, answers read in the extraction's forward pass, the
correct-only subset, and the Tak et al. 2025 preset."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from emoprobe import answers, models
from emoprobe.config import resolve_template
from emoprobe.answer_metrics import answer_scores
from emoprobe.subset import correct_only_rows
from emoprobe.errors import ConfigError, DataError, ExtractionError
from emoprobe.extract import extract_to_shards
from emoprobe.shards import shard_file

from .conftest import REPO, SMOLLM2, job_counts, read_metrics, require_smollm2, run_snakemake

DECODERS = ("llama", "qwen2", "gemma3", "gpt2")
CLASSES = {0: "good", 1: "bad", 2: "happy"}  # words of the tiny models' vocabulary
TEXTS = ["i feel good about the day", "the house is cold", "we love the people here", "he said no",
         "what a great and happy time", "the food was bad", "she wants to go home now", "it is a good day",
         "they never come back", "my family is here", "the old man is sad and alone", "you can do it"]


def _load(directory):
    return models.load({"source": "local", "path": str(directory)}, torch.device("cpu"), "float32")


def _read_answers(model, tokenizer, prompts, tokens, batch_size, tmp_path):
    """(label-word logits [N, L], top-1 ids [N]) as the extraction job reads them, with layer 1's shard."""
    return extract_to_shards(model, tokenizer, prompts, [str(i) for i in range(len(prompts))], [1], [-1], batch_size,
                             lambda layer, site: str(tmp_path / f"b{batch_size}_{shard_file(layer, site)}"), {},
                             progress=False, answer_tokens=list(tokens.values()))


def _unbatched_logits(model, tokenizer, prompt):
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids).logits[0, -1]


@pytest.mark.parametrize("family", DECODERS)
@pytest.mark.parametrize("side", ["left", "right"])
def test_batched_answers_equal_one_at_a_time_and_an_unbatched_causal_lm(tiny_models, family, side, tmp_path):
    """The label words' logits read in batches (padded left or right) equal those read one text
    at a time and those of a plain unbatched AutoModelForCausalLM forward, loaded on its own."""
    from transformers import AutoModelForCausalLM

    tokenizer, model, _ = _load(tiny_models[family][side])
    # transformers 5 loads the tiny Qwen2's word-level tokenizer as a Qwen2Tokenizer, whose
    # byte-level BPE keeps only the fixture's punctuation: its label "words" are punctuation marks.
    words = {"good": ".", "bad": ",", "happy": "?"} if family == "qwen2" else {word: word for word in CLASSES.values()}
    tokens = answers.label_tokens(tokenizer, words)
    prompts = [f"{text} answer:" for text in TEXTS]
    batched, top1 = _read_answers(model, tokenizer, prompts, tokens, 8, tmp_path)
    alone, top1_alone = _read_answers(model, tokenizer, prompts, tokens, 1, tmp_path)
    np.testing.assert_allclose(batched, alone, atol=1e-5, rtol=1e-5)
    reference = AutoModelForCausalLM.from_pretrained(tiny_models[family][side]).eval()
    for row, prompt in enumerate(prompts):
        logits = _unbatched_logits(reference, tokenizer, prompt)
        np.testing.assert_allclose(batched[row], logits[list(tokens.values())].numpy(), atol=1e-5, rtol=1e-5)
        assert top1[row] == top1_alone[row] == int(logits.argmax())


def _constructed_model(directory, tmp_path):
    """The tiny Llama with an LM head that scores "good" +10 x and "bad" -10 x the first unit of
    the final-normed last hidden state, every other token 0: its answer is "good" exactly where
    that unit is positive. Saved to and returned as a folder."""
    tokenizer, model, _ = _load(directory)
    tokens = answers.label_tokens(tokenizer, {"good": "good", "bad": "bad"})
    head = model.get_output_embeddings()
    weight = torch.zeros_like(head.weight)
    weight[tokens["good"], 0], weight[tokens["bad"], 0] = 10.0, -10.0
    head.weight = torch.nn.Parameter(weight)  # untied from the embeddings
    model.config.tie_word_embeddings = False
    folder = tmp_path / "constructed"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, tokens


def test_a_constructed_head_gives_exactly_the_constructed_accuracy(tiny_models, tmp_path):
    """Labels are the sign rule's answer on two rows in three and its opposite on the third: the
    answers table's accuracy is exactly 2/3, each answer is the sign rule's (computed here from an
    unbatched base-model forward), and its logits equal an unbatched AutoModelForCausalLM's."""
    from transformers import AutoModel, AutoModelForCausalLM

    folder, tokens = _constructed_model(tiny_models["llama"]["right"], tmp_path)
    tokenizer, model, _ = _load(folder)
    prompts = [f"{text} answer:" for text in TEXTS * 2]
    base = AutoModel.from_pretrained(folder).eval()
    positive = []
    for prompt in prompts:
        with torch.no_grad():
            normed = base(**tokenizer(prompt, return_tensors="pt")).last_hidden_state[0, -1]
        positive.append(bool(normed[0] > 0))
    rule = np.where(positive, 0, 1)  # 0 = good, 1 = bad
    truth = np.where(np.arange(len(prompts)) % 3 == 0, 1 - rule, rule)
    logits, top1 = _read_answers(model, tokenizer, prompts, tokens, 5, tmp_path)
    table = answers.answer_table([str(i) for i in range(len(prompts))], truth, {0: "good", 1: "bad"}, logits, top1,
                                 tokenizer, tokens)
    assert table["answer_id"].to_list() == rule.tolist()
    assert table["correct"].sum() == 2 * len(prompts) // 3 and table["correct"].mean() == pytest.approx(2 / 3)
    assert 0 < rule.sum() < len(rule)  # both answers occur
    reference = AutoModelForCausalLM.from_pretrained(folder).eval()
    for row, prompt in enumerate(prompts):
        expected = _unbatched_logits(reference, tokenizer, prompt)[list(tokens.values())].numpy()
        np.testing.assert_allclose(table.select("logit_good", "logit_bad").row(row), expected, atol=1e-5)
    scores = answer_scores(table).filter(metric="accuracy")
    assert scores["pooled"][0] == pytest.approx(2 / 3) and scores["ci_low"][0] < 2 / 3 < scores["ci_high"][0]


def test_label_words_sharing_a_first_token_are_named(tiny_models):
    tokenizer, _, _ = _load(tiny_models["llama"]["right"])
    with pytest.raises(DataError, match=r"'happy -> good morning', 'good -> good' both start with token"):
        answers.label_tokens(tokenizer, {"happy": "good morning", "good": "good", "bad": "bad"})
    with pytest.raises(DataError, match=r"'a -> zyx', 'b -> qwv', 'c -> vvz' all start with token 1 \('\[UNK\]', the "
                                        r"unknown token: the tokenizer does not know these words\)"):
        answers.label_tokens(tokenizer, {"a": "zyx", "b": "qwv", "c": "vvz", "d": "good"})
    with pytest.raises(ConfigError, match=r"answer_words names labels \['joyful'\]"):
        answers.label_words(["good", "bad"], {"joyful": "happy"})
    assert answers.label_words(["good", "bad"], {"bad": "sad"}) == {"good": "good", "bad": "sad"}


def test_label_words_follow_the_templates_ending(tiny_models):
    tokenizer, _, _ = _load(tiny_models["llama"]["right"])
    assert answers.prompt_ending(resolve_template("two_shot")) == " Answer:"
    assert answers.prompt_ending("{{braces}} {text}\nFeeling:") == "\nFeeling:"
    assert answers.label_tokens(tokenizer, {"good": "good"}, "feeling :") == {"good": tokenizer.convert_tokens_to_ids("good")}
    with pytest.raises(DataError, match=r"does not know the label word 'good -> zyxw'"):
        answers.label_tokens(tokenizer, {"good": "zyxw", "bad": "bad"})


def test_an_encoder_gives_no_answer(tiny_models, tmp_path):
    tokenizer, model, _ = _load(tiny_models["bert"]["right"])
    with pytest.raises(ExtractionError, match="has no LM head, so it gives no answer"):
        _read_answers(model, tokenizer, ["i feel good answer:"], {"good": 5}, 1, tmp_path)


def _answers_frame(correct, labels):
    n = len(correct)
    return pl.DataFrame({"id": [str(i) for i in range(n)], "label_id": labels, "correct": correct})


def test_correct_only_keeps_exactly_the_rows_answered_correctly():
    labels = np.repeat([0, 1, 2], 10)
    correct = np.random.default_rng(0).random(30) < 0.7
    table = pl.DataFrame({"id": [str(i) for i in range(30)], "text": [f"t{i}" for i in range(30)],
                          "label": [CLASSES[i] for i in labels]})
    spec = {"bad_rows": "error", "official_split": False, "max_per_class": None, "max_rows": None}
    rows = correct_only_rows(_answers_frame(correct, labels), table, {"cv_folds": None, "spec": spec})
    assert rows.tolist() == np.flatnonzero(correct).tolist()
    # a class left with fewer texts than folds: refused, or dropped with bad_rows: drop
    correct[10:18] = False  # class 1 keeps at most 2 texts
    with pytest.raises(DataError, match=r"subset correct_only .* fewer texts than probe.cv_folds=3"):
        correct_only_rows(_answers_frame(correct, labels), table, {"cv_folds": 3, "spec": spec})
    kept = correct_only_rows(_answers_frame(correct, labels), table,
                                {"cv_folds": 3, "spec": spec | {"bad_rows": "drop"}})
    assert kept.tolist() == [row for row in np.flatnonzero(correct) if labels[row] != 1]
    with pytest.raises(DataError, match="are not those of the prepared table"):
        correct_only_rows(_answers_frame(correct[:-1], labels[:-1]), table, {"cv_folds": None, "spec": spec})


def _words_dataset(tmp_path, n_per_class=12):
    rng = np.random.default_rng(1)
    vocabulary = (REPO / "tests" / "fixtures" / "vocabulary.txt").read_text().split()[40:200]
    rows = [(f"{' '.join(rng.choice(vocabulary, 6))}", label) for label in CLASSES.values() for _ in range(n_per_class)]
    path = tmp_path / "words.csv"
    pl.DataFrame(rows, schema=["text", "emotion"], orient="row").write_csv(path)
    return path


def test_workflow_reads_answers_and_probes_the_correct_only_subset(tiny_models, tmp_path):
    """One run of the constructed tiny Llama (it answers "good" or "bad", never "happy") with
    `subset: correct_only`: the answers file, its scores in the metrics table, the confusion
    matrix, and probes fitted on exactly the rows answered correctly (class "happy", left with
    none, dropped as bad_rows: drop says)."""
    folder, _ = _constructed_model(tiny_models["llama"]["left"], tmp_path)
    config = {
        "models": {"tiny": {"source": "local", "path": str(folder)}},
        "datasets": {"words": {"type": "custom", "path": str(_words_dataset(tmp_path)), "label_column": "emotion",
                               "subset": "correct_only", "bad_rows": "drop"}},
        "prompt": {"template": "{text} answer:"}, "positions": [-1, -2], "layers": [1, 3],
        "probe": {"cv_folds": 2},
    }
    result = run_snakemake(tmp_path / "run", config)
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout + result.stderr)
    assert counts["collect_answers"] == 1 and counts["fit_probe"] == 2 and "lexical_baseline" not in counts
    results = tmp_path / "run" / "results"
    answered = pl.read_parquet(results / "answers" / "tiny" / "words.parquet")
    table = pl.read_parquet(results / "data" / "words.parquet")
    assert answered["id"].to_list() == table["id"].to_list()
    assert answered["correct"].to_list() == (answered["answer_id"] == table["label_id"]).to_list()
    metadata = pl.read_parquet_metadata(results / "answers" / "tiny" / "words.parquet")
    assert metadata["answer_words"] == '{"bad": "bad", "good": "good", "happy": "happy"}'
    # the subset: correct rows of the classes with at least cv_folds of them
    correct = answered.filter("correct")
    assert set(answered["answer"]) == {"good", "bad"} and correct["label"].n_unique() == 2
    big = [label for label, n in correct.group_by("label_id").len().iter_rows() if n >= 2]
    expected = sorted(correct.filter(pl.col("label_id").is_in(big))["row"].to_list())
    predictions = pl.read_parquet(next((results / "probes" / "tiny" / "words" / "layer_1").glob("*.logreg.predictions.parquet")))
    assert sorted(predictions.filter(probe="logreg", position="-1")["row"].to_list()) == expected
    metrics = read_metrics(tmp_path / "run")
    assert set(metrics.filter(probe="logreg")["n_rows"]) == {len(expected)}
    answer = metrics.filter(probe="answer", metric="accuracy").row(0, named=True)
    assert answer["mean"] == pytest.approx(answered["correct"].mean()) and answer["layer"] is None
    classes = pl.read_parquet(results / "answers" / "tiny" / "words.classes.parquet")
    assert classes["n_correct"].to_list() == [correct.filter(label_id=i).height for i in range(3)]
    assert classes["n_probed"].sum() == len(expected)
    assert (results / "report" / "tiny" / "words" / "answer_confusion.png").stat().st_size > 1000
    assert "The model's answer." in (results / "report" / "index.html").read_text()
    # subset and answer_words never change the prepared table: probing all texts refits the probes only
    config["datasets"]["words"]["subset"] = "all"
    dry = run_snakemake(tmp_path / "run", config, "-n")
    assert dry.returncode == 0, dry.stderr[-2000:]
    planned = job_counts(dry.stdout + dry.stderr)
    assert planned.get("fit_probe") == 2 and "prepare_dataset" not in planned and "extract_activations" not in planned


def test_correct_only_with_an_encoder_stops_before_any_job(tiny_models, tmp_path):
    config = {
        "models": {"bert": {"source": "local", "path": str(tiny_models["bert"]["right"])}},
        "datasets": {"words": {"type": "custom", "path": str(_words_dataset(tmp_path)), "label_column": "emotion",
                               "subset": "correct_only"}},
    }
    result = run_snakemake(tmp_path / "run", config, "-n")
    assert result.returncode != 0
    assert "dataset 'words' has `subset: correct_only`" in result.stdout + result.stderr
    assert "['bert'] are encoders, and answers need a decoder LM" in result.stdout + result.stderr
    config["datasets"]["words"]["subset"] = "all"  # answers on: the encoder is left out with a note
    result = run_snakemake(tmp_path / "run", config, "-n")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "bert is an encoder: no answers read" in result.stderr
    assert "collect_answers" not in job_counts(result.stdout + result.stderr)


def test_tak2025_preset_validates_and_plans_its_jobs(tmp_path):
    """config/tak2025.yaml over config/config.yaml: two-shot, correct-only, holdout, sklearn logreg
    without scaling, position -1 of every layer at the three sites (91 probe jobs: no sub-block site
    at layer 0); no lexical baseline (other rows)."""
    import yaml

    from emoprobe.config import PROMPT_TEMPLATES, validate_config

    require_smollm2()
    base = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    preset = yaml.safe_load((REPO / "config" / "tak2025.yaml").read_text())
    merged = validate_config(base | preset | {"datasets": {"crowd_envent": base["datasets"]["crowd_envent"]
                                                           | preset["datasets"]["crowd_envent"]}})
    assert merged["probes"] == [{"name": "logreg", "kind": "logreg", "backend": "sklearn", "C": 1.0, "max_iter": 100,
                                 "standardise": False}]
    assert merged["prompt"]["template"] == "two_shot" and "My dog died last week" in PROMPT_TEMPLATES["two_shot"]
    assert merged["sites"] == ["residual", "attn_out", "mlp_out"] and merged["positions"] == [-1]
    config = base | preset | {"datasets": {"crowd_envent": base["datasets"]["crowd_envent"]
                                           | preset["datasets"]["crowd_envent"]},
                              "data_dir": str(REPO.parent / "shared" / "data")}
    result = run_snakemake(tmp_path / "run", config, "-n")
    assert result.returncode == 0, result.stderr[-2000:]
    assert job_counts(result.stdout + result.stderr) == {
        "prepare_dataset": 1, "extract_activations": 1, "collect_answers": 1, "score_answers": 1, "fit_probe": 91,
        "aggregate_metrics": 1, "build_report": 1, "write_provenance": 1, "all": 1}


@pytest.mark.slow
def test_smollm2_answers_batched_equal_unbatched_and_words_are_one_token(crowd_envent_slice, tmp_path):
    """The real SmolLM2 (GGUF, with its tied LM head) under the two-shot prompt: the 13 emotion
    words have distinct first tokens, the batched answers equal an unbatched forward of the same
    AutoModelForCausalLM, and its top-1 next token is an emotion word for most texts."""
    from emoprobe.config import resolve_template
    from emoprobe.data.crowd_envent import LABELS

    require_smollm2()
    tokenizer, model, _ = models.load(SMOLLM2, torch.device("cpu"), "float32")
    assert type(model).__name__ == "LlamaForCausalLM"
    tokens = answers.label_tokens(tokenizer, answers.label_words(LABELS))
    assert len(set(tokens.values())) == 13
    table = crowd_envent_slice.head(20)
    prompts = [resolve_template("two_shot").format(text=text) for text in table["text"]]
    logits, top1 = _read_answers(model, tokenizer, prompts, tokens, 8, tmp_path)
    for row, prompt in enumerate(prompts):
        expected = _unbatched_logits(model, tokenizer, prompt)
        np.testing.assert_allclose(logits[row], expected[list(tokens.values())].numpy(), atol=2e-4, rtol=1e-4)
        assert top1[row] == int(expected.argmax())
    assert np.isin(top1, list(tokens.values())).mean() >= 0.8
    # a prompt that ends in a space is answered by the word without one: other tokens
    assert answers.prompt_ending("Context: {text} Answer: ") == " Answer: "
    after_space = answers.label_tokens(tokenizer, answers.label_words(LABELS), " Answer: ")
    assert after_space["joy"] == tokenizer("joy", add_special_tokens=False)["input_ids"][0] != tokens["joy"]
