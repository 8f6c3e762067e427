"""The suite cannot pass by skipping: under CI a missing prerequisite fails, and the tiny test
models need no dataset."""

from __future__ import annotations

import pytest

from . import conftest


@pytest.mark.parametrize(("ci", "outcome"), [("true", pytest.fail.Exception), ("", pytest.skip.Exception)])
def test_a_missing_prerequisite_fails_under_ci_and_skips_elsewhere(monkeypatch, ci, outcome):
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="seed data not found"):
        conftest.require(False, "seed data not found at /nowhere")
    conftest.require(True, "present")  # no effect


def test_tiny_models_are_built_without_the_shared_data(monkeypatch, tmp_path):
    monkeypatch.setattr(conftest, "SHARED_DATA", tmp_path / "no-data-here")
    tokenizer = conftest.build_tokenizer("right", "llama")
    ids = tokenizer("What are the inferred emotions in the following contexts? Context: my friend was late . "
                    "Answer:")["input_ids"]
    assert tokenizer.unk_token_id not in ids  # the prompt's and common words are in the fixed vocabulary
    conftest.make_tiny_model(tmp_path / "tiny", "llama", n_layers=1)
    assert (tmp_path / "tiny" / "model.safetensors").is_file()
