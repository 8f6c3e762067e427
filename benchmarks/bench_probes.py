"""Probe sweep: batched torch L-BFGS against sklearn fitted per (position, fold), same shards.

For each layer shard: fits every (position, fold) problem with the sklearn Pipeline in a
loop (the baseline), with the torch backend one position at a time (as one workflow probe
job does: its 5 folds batched), and all positions at once, on the same folds; prints wall
times, speedups over sklearn and the held-out accuracy of both backends.

    python benchmarks/bench_probes.py results/activations/smollm2-135m-instruct/crowd_envent/layers_0to30.positions_-5to-1 \
        results/data/crowd_envent.parquet --layers 0 6 12 18 24 30
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch
from threadpoolctl import threadpool_limits

from emoprobe.folds import assign_folds
from emoprobe.probes import fit_predict_torch, make_logistic_probe
from emoprobe.shards import read_metadata, read_position


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shard_dir", type=Path)
    parser.add_argument("table", type=Path)
    parser.add_argument("--layers", type=int, nargs="+")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--skip-sklearn", action="store_true", help="time only the torch backend")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    table = pl.read_parquet(args.table)
    y = table["label_id"].to_numpy()
    folds = assign_folds(table["text"].to_numpy(), args.folds, 0, labels=y)  # the probe jobs' folds
    layers = args.layers or sorted(int(p.stem.split("_")[1]) for p in args.shard_dir.glob("layer_*.safetensors"))
    print(f"threads={args.threads} folds={args.folds} rows={len(y)}")
    print(f"{'layer':>5} {'sklearn_s':>9} {'torch_pos_s':>11} {'torch_all_s':>11} {'speedup_pos':>11} "
          f"{'speedup_all':>11} {'acc_sklearn':>11} {'acc_torch':>9} {'max_diff':>8}")
    totals = [0.0, 0.0, 0.0]
    for layer in layers:
        shard = args.shard_dir / f"layer_{layer}.safetensors"
        positions = json.loads(read_metadata(shard)["positions"])
        X = np.stack([read_position(shard, i) for i in range(len(positions))])
        start = time.perf_counter()
        for p in range(len(positions)):
            fit_predict_torch(X[p], y, folds)
        per_position_s = time.perf_counter() - start
        start = time.perf_counter()
        predicted = fit_predict_torch(X, y, folds)
        torch_s = time.perf_counter() - start
        acc_torch = (predicted == y[None]).mean(1)
        sk_s, acc_sk = float("nan"), np.full(len(positions), np.nan)
        if not args.skip_sklearn:
            start = time.perf_counter()
            with threadpool_limits(args.threads):
                for p in range(len(positions)):
                    hits = 0
                    for train, test in folds:
                        probe = make_logistic_probe().fit(X[p][train], y[train])
                        hits += (probe.predict(X[p][test]) == y[test]).sum()
                    acc_sk[p] = hits / len(y)
            sk_s = time.perf_counter() - start
        totals[0] += sk_s
        totals[1] += per_position_s
        totals[2] += torch_s
        print(f"{layer:>5} {sk_s:>9.1f} {per_position_s:>11.1f} {torch_s:>11.1f} {sk_s / per_position_s:>11.1f} "
              f"{sk_s / torch_s:>11.1f} {acc_sk.mean():>11.3f} {acc_torch.mean():>9.3f} "
              f"{np.abs(acc_sk - acc_torch).max():>8.3f}", flush=True)
    print(f"total: sklearn {totals[0]:.1f} s, torch per position {totals[1]:.1f} s "
          f"({totals[0] / totals[1]:.1f}x), torch all positions {totals[2]:.1f} s ({totals[0] / totals[2]:.1f}x)")


if __name__ == "__main__":
    main()
