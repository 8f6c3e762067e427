"""Configuration validation: every mistake is named, defaults are filled in."""

from __future__ import annotations

import copy

import pytest
import yaml

from emoprobe.config import PROMPT_TEMPLATES, resolve_layers, resolve_template, validate_config
from emoprobe.errors import ConfigError

from .conftest import REPO

MINIMAL = {"models": {"m": {"source": "local", "path": "/tmp/m"}},
           "datasets": {"crowd_envent": {"type": "crowd_envent"}}}


def with_changes(**changes):
    config = copy.deepcopy(MINIMAL)
    config.update(changes)
    return config


def test_defaults_are_filled_in():
    config = validate_config(MINIMAL)
    assert config["positions"] == [-1, -2, -3, -4, -5]
    assert config["layers"] == "all" and config["seed"] == 0
    assert config["probe"] == {"cv_folds": 5, "backend": "torch", "C": 1.0, "max_iter": 1000,
                               "mem_mb": 4000, "runtime": 60}
    assert config["models"]["m"]["trust_remote_code"] is False
    assert config["prompt"]["template"] == "zero_shot"


def test_shipped_config_is_valid():
    config = validate_config(yaml.safe_load((REPO / "config" / "config.yaml").read_text()))
    assert list(config["models"]) == ["smollm2-135m-instruct"]


@pytest.mark.parametrize(("config", "message"), [
    (with_changes(modles={}), r"'<top level>'.*'modles' was unexpected"),
    (with_changes(probe={"cv_fold": 5}), r"'probe'.*'cv_fold' was unexpected.*cv_folds"),
    (with_changes(seed="zero"), r"'seed': 'zero' is not of type 'integer'"),
    (with_changes(positions=[-1, 0]), r"'positions.1': position 0 is not allowed"),
    (with_changes(positions=[-1, -2, -1]), r"'positions'.*duplicated"),
    (with_changes(models={}), r"'models': is empty"),
    (with_changes(layers="some"), r"'layers': 'some' is not valid"),
    (with_changes(models={"m": {"source": "hub"}}), r"'models.m': source 'hub' needs more.*id"),
    (with_changes(models={"m": {"source": "gguf", "file": "x.gguf"}}), r"'models.m'.*package"),
    (with_changes(datasets={"d": {"type": "crowd_envnet"}}), r"'datasets.d.type'"),
    (with_changes(prompt={"template": "Tell me the emotion"}), r"'prompt.template'.*\{text\}"),
    (with_changes(prompt={"template": "{text} {answer}"}), r"'prompt.template'.*placeholder"),
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
