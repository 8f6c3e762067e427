"""MLP probe against the logistic probe, side by side on the same shards and folds.

For each layer shard and each of its positions, as one workflow probe job does: the logistic
probe (torch backend, a position's 5 folds batched) and the MLP probe (torch backend, the
registry's defaults: 256 hidden units, AdamW, early stopping), timed in the same process; prints
wall times, the MLP / logistic ratio (issue 13's budget: at most 2) and both held-out accuracies.

    python benchmarks/bench_mlp.py results/activations/smollm2-135m-instruct/crowd_envent/layers_0to30.positions_-5to-1 \
        results/data/crowd_envent.parquet --layers 0 10 20 30
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from emoprobe.folds import assign_folds
from emoprobe.probes import probabilities
from emoprobe.registry import KINDS
from emoprobe.shards import read_metadata, read_position


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shard_dir", type=Path)
    parser.add_argument("table", type=Path)
    parser.add_argument("--layers", type=int, nargs="+", required=True)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a probe job has 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    table = pl.read_parquet(args.table)
    y = table["label_id"].to_numpy()
    texts = table["text"].to_numpy()
    folds = assign_folds(texts, 5, 0, labels=y)  # the probe jobs' folds
    print(f"threads={args.threads} rows={len(y)} mlp={KINDS['mlp']}")
    print(f"{'layer':>5} {'logreg_s':>8} {'mlp_s':>7} {'ratio':>5}  accuracy by position (logreg / mlp)")
    totals = {"logreg": 0.0, "mlp": 0.0}
    for layer in args.layers:
        shard = args.shard_dir / f"layer_{layer}.safetensors"
        positions = json.loads(read_metadata(shard)["positions"])
        seconds, accuracy = {}, {}
        for kind in ("logreg", "mlp"):
            start = time.perf_counter()
            accuracy[kind] = [float((probabilities(kind, {}, read_position(shard, i), y, folds, 0, texts).argmax(1)
                                     == y).mean()) for i in range(len(positions))]
            seconds[kind] = time.perf_counter() - start
            totals[kind] += seconds[kind]
        pairs = " ".join(f"{p}:{a:.3f}/{b:.3f}" for p, a, b in zip(positions, accuracy["logreg"], accuracy["mlp"]))
        print(f"{layer:>5} {seconds['logreg']:>8.1f} {seconds['mlp']:>7.1f} {seconds['mlp'] / seconds['logreg']:>5.2f}  "
              f"{pairs}", flush=True)
    print(f"total {totals['logreg']:.1f} s logistic, {totals['mlp']:.1f} s MLP: ratio {totals['mlp'] / totals['logreg']:.2f}")


if __name__ == "__main__":
    main()
