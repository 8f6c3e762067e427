"""Configuration validation: every mistake is named, defaults are filled in."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from emoprobe.config import PROMPT_TEMPLATES, load_schema, resolve_layers, resolve_template, validate_config
from emoprobe.data import crowd_envent, emobank
from emoprobe.data.prepare import resolve_spec
from emoprobe.errors import ConfigError

from .conftest import REPO

MINIMAL = {"models": {"m": {"source": "local", "path": "/tmp/m"}},
           "datasets": {"crowd_envent": {"type": "crowd_envent"}}}


def with_changes(**changes):
    config = copy.deepcopy(MINIMAL)
    config.update(changes)
    return config


def type_options(kind: str) -> dict:
    """The options that the schema's allOf/then branches give one dataset type."""
    branches = load_schema()["properties"]["datasets"]["additionalProperties"]["allOf"]
    return {key: option for branch in branches if jsonschema.Draft202012Validator(branch["if"]).is_valid({"type": kind})
            for key, option in branch["then"]["properties"].items()}


def test_defaults_are_filled_in():
    config = validate_config(MINIMAL)
    assert config["positions"] == [-1, -2, -3, -4, -5]
    assert config["layers"] == "all" and config["seed"] == 0
    assert config["probe"] == {"cv_folds": 5, "split": "kfold", "holdout_fraction": 0.2, "holdout_seed": 42,
                               "shuffled_control": True, "control_task": None,
                               "save_directions": False, "mem_mb": 4000, "runtime": 60}
    assert config["probes"] == [{"name": "logreg", "kind": "logreg", "backend": "torch", "C": 1.0, "max_iter": 1000,
                                 "standardise": True}]
    assert config["lexical_baseline"] is True and config["answers"] is True
    assert config["models"]["m"]["trust_remote_code"] is False
    assert config["prompt"]["template"] == "zero_shot"
    assert config["extraction"]["dtype"] == "auto"


def test_model_keys_and_defaults_per_source():
    config = validate_config(with_changes(models={
        "hub": {"source": "hub", "id": "org/model"}, "local": {"source": "local", "path": "/m"},
        "gguf": {"source": "gguf", "id": "org/repo", "file": "m.gguf", "revision": "main", "sha256": "ab" * 32}}))
    weights = {"random_init": False, "init_seed": 0}
    assert config["models"]["hub"] == {"source": "hub", "id": "org/model", "revision": None, "quantisation": None,
                                       "trust_remote_code": False, **weights}
    assert config["models"]["local"] == {"source": "local", "path": "/m", "quantisation": None,
                                         "trust_remote_code": False, **weights}
    assert config["models"]["gguf"]["sha256"] == "ab" * 32
    gguf = validate_config(with_changes(models={"g": {"source": "gguf", "path": "m.gguf"}}))["models"]["g"]
    assert gguf["sha256"] is None and gguf["revision"] is None


def test_dataset_options_come_from_the_schema_alone():
    """validate_config and resolve_spec (direct callers' partial specs) fill the same defaults, those of a
    type's allOf/then branch included, and refuse what the schema refuses."""
    expected = {"type": "goemotions", "labels": "single_label", "max_per_class": None, "max_rows": None,
                "official_split": False, "bad_rows": "error", "duplicate_texts": "keep", "answer_words": None,
                "subset": "all", "label_map": None}
    assert validate_config(with_changes(datasets={"go": {"type": "goemotions"}}))["datasets"]["go"] == expected
    assert resolve_spec({"type": "goemotions"}) == expected
    custom = resolve_spec({"type": "custom", "path": "x.csv"})
    assert custom["missing_values"] == type_options("custom")["missing_values"]["default"] and custom["header"] is True
    with pytest.raises(ConfigError, match=r"'datasets.<name>.max_rows': 0 is less than the minimum of 1"):
        resolve_spec({"type": "isear", "max_rows": 0})
    with pytest.raises(ConfigError, match=r"'datasets.<name>': 'labels' does not apply to type 'isear'"):
        resolve_spec({"type": "isear", "labels": "ekman"})


def test_schema_lists_the_loaders_names():
    """The schema alone checks the options; the loaders' own name lists must agree with it."""
    assert tuple(type_options("crowd_envent")["targets"]["oneOf"][1]["items"]["enum"]) == crowd_envent.APPRAISALS
    assert tuple(type_options("emobank")["targets"]["items"]["enum"]) == emobank.DIMENSIONS


def test_custom_dataset_path_must_exist(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = with_changes(datasets={"d": {"type": "custom", "path": "mine.csv", "label_column": "label"}})
    with pytest.raises(ConfigError, match=rf"'datasets.d.path': 'mine.csv' does not exist.*working directory, "
                                          rf"{re.escape(str(Path.cwd()))}"):
        validate_config(config)
    (tmp_path / "mine.csv").write_text("text,label\na,joy\n")
    assert validate_config(config)["datasets"]["d"]["path"] == "mine.csv"


def test_shipped_config_is_valid():
    config = validate_config(yaml.safe_load((REPO / "config" / "config.yaml").read_text()))
    assert list(config["models"]) == ["smollm2-135m-instruct"]


@pytest.mark.parametrize(("config", "message"), [
    (with_changes(modles={}), r"'<top level>'.*'modles' was unexpected"),
    (with_changes(probe={"cv_fold": 5}), r"'probe'.*'cv_fold' was unexpected.*cv_folds"),
    (with_changes(seed="zero"), r"'seed': 'zero' is not of type 'integer'"),
    (with_changes(seed=-1), r"'seed': -1 is less than the minimum of 0"),
    (with_changes(seed=2**32), r"'seed': 4294967296 is greater than the maximum of 4294967295"),
    (with_changes(extraction={"dtype": "float16"}),
     r"'extraction.dtype': 'float16' is not one of \['auto', 'float32', 'bfloat16'\]"),
    (with_changes(positions=[-1, 0]), r"'positions.1': 0 is not valid: a position is a negative integer"),
    (with_changes(positions=[-1, "text_men"]), r"'positions.1': 'text_men' is not valid: .*text_last or text_mean"),
    (with_changes(positions=[-1, -2, -1]), r"'positions'.*duplicated"),
    (with_changes(models={}), r"'models': is empty"),
    (with_changes(layers="some"), r"'layers': 'some' is not valid"),
    (with_changes(models={"m": {"source": "hub"}}), r"'models.m': source 'hub' needs more.*id"),
    (with_changes(models={"m": {"source": "gguf", "file": "x.gguf"}}), r"'models.m'.*package"),
    (with_changes(models={"m": {"source": "gguf", "id": "org/repo"}}), r"'models.m': source 'gguf' needs more"),
    (with_changes(models={"m": {"source": "local", "path": "/m", "revision": "abc"}}),
     r"'models.m': 'revision' does not apply to source 'local'. Allowed keys: init_seed, path, quantisation, random_init, source, "
     r"trust_remote_code\."),
    (with_changes(models={"m": {"source": "local", "path": "/m", "id": "org/model"}}),
     r"'models.m': 'id' does not apply to source 'local'"),
    (with_changes(models={"m": {"source": "local", "path": "/m", "package": "p"}}),
     r"'models.m': 'package' does not apply to source 'local'"),
    (with_changes(models={"m": {"source": "hub", "id": "org/model", "file": "m.gguf"}}),
     r"'models.m': 'file' does not apply to source 'hub'. Allowed keys: id, init_seed, quantisation, random_init, revision, source, "
     r"trust_remote_code\."),
    (with_changes(models={"m": {"source": "hub", "id": "org/model", "package": "p"}}),
     r"'models.m': 'package' does not apply to source 'hub'"),
    (with_changes(models={"m": {"source": "hub", "id": "org/model", "sha256": "0" * 64}}),
     r"'models.m': 'sha256' does not apply to source 'hub'"),
    (with_changes(models={"m": {"source": "gguf", "path": "m.gguf", "sha256": "ABC"}}),
     r"'models.m.sha256': 'ABC' does not match"),
    (with_changes(models={"m": {"source": "gguf", "path": "m.gguf", "revision": "main"}}),
     r"'models.m': `revision` applies only with `id`"),
    (with_changes(models={"m": {"source": "gguf", "path": "m.gguf", "file": "x.gguf"}}),
     r"'models.m': `file` does not apply with `path`"),
    (with_changes(models={"m": {"source": "gguf", "package": "p", "id": "org/repo", "file": "x.gguf"}}),
     r"'models.m': `id` and `package` both say where the GGUF file is; keep one"),
    (with_changes(datasets={"d": {"type": "crowd_envnet"}}), r"'datasets.d.type'"),
    (with_changes(prompt={"template": "Tell me the emotion"}), r"'prompt.template'.*\{text\}"),
    (with_changes(prompt={"template": "{text} {answer}"}), r"'prompt.template'.*placeholder"),
    (with_changes(prompt={"template": "Text: {{text}}"}),
     r"'prompt.template': 'Text: \{\{text\}\}' .*exactly one placeholder, \{text\}.*it has none"),
    (with_changes(prompt={"template": "Text: {text:>20}"}), r"'prompt.template'.*exactly one.*it has \{text:>20\}"),
    (with_changes(prompt={"template": "Text: {text!r}"}), r"'prompt.template'.*exactly one.*it has \{text!r\}"),
    (with_changes(prompt={"template": "{text} or {text}"}), r"'prompt.template'.*exactly one.*\{text\}, \{text\}"),
    (with_changes(prompt={"template": "Text: {text"}), r"'prompt.template'.*literal braces as \{\{ and \}\}"),
    (with_changes(datasets={"d": {"type": "crowd_envent", "official_split": True}}),
     r"'datasets.d.official_split': crowd_envent and isear have no official train/test split"),
    (with_changes(datasets={"d": {"type": "isear", "official_split": True}}),
     r"'datasets.d.official_split': crowd_envent and isear have no official train/test split"),
    (with_changes(datasets={"d": {"type": "custom", "path": "x.csv", "label_column": "y", "official_split": True}}),
     r"'datasets.d.official_split': official_split needs split_column"),
    (with_changes(datasets={"d": {"type": "empathetic_dialogues", "path": "ed.tar.gz"}}),
     r"'datasets.d.path': `path` is only for format: official"),
    (with_changes(datasets={"d": {"type": "emobank", "official_split": True}}, probe={"split": "holdout"}),
     r"'datasets.d.official_split': the dataset's own split and `probe.split: holdout` both"),
    (with_changes(probe={"split": "holdout", "holdout_fraction": 1.0}), r"'probe.holdout_fraction'"),
    (with_changes(probe={"split": "stratified"}), r"'probe.split'"),
    (with_changes(datasets={"d": {"type": "crowd_envent", "subset": "correct"}}), r"'datasets.d.subset'"),
    (with_changes(datasets={"d": {"type": "crowd_envent", "answer_words": {"joy": ""}}}),
     r"'datasets.d.answer_words.joy'"),
    (with_changes(probes=[{"name": "answer", "kind": "logreg"}]), r"\['answer'\] are the workflow's own baselines"),
    (with_changes(probes=[{"name": "m", "kind": "mlp", "standardise": False}]), r"'standardise' does not apply"),
])
def test_bad_config_is_named(config, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(config)


def test_templates():
    assert resolve_template("two_shot").count("Context:") == 3
    assert resolve_template("zero_shot") == PROMPT_TEMPLATES["zero_shot"]
    assert resolve_template("Text: {text}\nEmotion:") == "Text: {text}\nEmotion:"


def test_layers_resolve_against_model_depth():
    assert resolve_layers("all", 3, "m") == [0, 1, 2, 3]
    assert resolve_layers([3, 0], 3, "m") == [0, 3]
    with pytest.raises(ConfigError, match=r"\[4\] out of range for model 'm'.*0\.\.3"):
        resolve_layers([0, 4], 3, "m")


def test_probe_entries_take_their_kind_s_defaults():
    config = validate_config(with_changes(probes=[{"name": "linear", "kind": "logreg", "C": 0.5},
                                                  {"name": "mlp32", "kind": "mlp", "hidden": 32, "backend": "sklearn"}]))
    linear, mlp = config["probes"]
    assert linear == {"name": "linear", "kind": "logreg", "backend": "torch", "C": 0.5, "max_iter": 1000,
                      "standardise": True}
    assert mlp["hidden"] == 32 and mlp["backend"] == "sklearn" and "C" not in mlp
    assert mlp["patience"] == 10 and mlp["max_epochs"] == 200  # sklearn's own defaults for its backend
    torch_mlp = validate_config(with_changes(probes=[{"name": "m", "kind": "mlp"}]))["probes"][0]
    assert (torch_mlp["hidden"], torch_mlp["patience"], torch_mlp["max_epochs"]) == (256, 3, 20)


@pytest.mark.parametrize(("probes", "message"), [
    ([{"name": "a", "kind": "svm"}], r"probes\[0\]|kind"),
    ([{"name": "a", "kind": "mlp", "C": 1.0}], r"C"),                      # a key of another kind
    ([{"name": "a", "kind": "logreg", "hiden": 3}], r"hiden"),             # a typo
    ([{"name": "a", "kind": "logreg"}, {"name": "a", "kind": "mlp"}], r"\['a'\] appear more than once"),
    ([{"name": "ridge", "kind": "logreg"}], r"workflow's own baselines"),
    ([{"name": "Log_reg", "kind": "logreg"}], r"Log_reg"),
    ([], r"probes"),
])
def test_bad_probe_entries_are_named(probes, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(with_changes(probes=probes))


def test_old_probe_keys_say_how_to_migrate():
    with pytest.raises(ConfigError, match=r"probe\.backend, probe\.C moved.*\nprobes:\n  - \{name: logreg, kind: logreg, backend: sklearn, C: 0.5\}"):
        validate_config(with_changes(probe={"C": 0.5, "backend": "sklearn"}))
