"""Snakemake DAG-building time for a large sweep: 10 models x 5 datasets x 32 layers x 5 positions.

The models are "fake" local models: a config.json each (31 blocks -> layers 0..31), no
weights, which is all `snakemake -n` needs. Prints the wall time of `snakemake -n` and the
number of probe jobs it scheduled (one per model x dataset x layer: 1,600 jobs fitting the
8,000 (layer, position) probes).

    python benchmarks/bench_dag.py
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def make_config(root: Path, n_models: int, n_datasets: int, n_blocks: int) -> Path:
    from transformers import LlamaConfig

    models = {}
    for i in range(n_models):
        directory = root / f"model{i}"
        LlamaConfig(num_hidden_layers=n_blocks, hidden_size=64, intermediate_size=128,
                    num_attention_heads=4, vocab_size=100).save_pretrained(directory)
        models[f"model{i}"] = {"source": "local", "path": str(directory)}
    config = {"models": models, "positions": [-1, -2, -3, -4, -5],
              "datasets": {f"data{j}": {"type": "crowd_envent"} for j in range(n_datasets)}}
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=10)
    parser.add_argument("--datasets", type=int, default=5)
    parser.add_argument("--blocks", type=int, default=31)
    args = parser.parse_args()
    snakemake = str(Path(sys.executable).with_name("snakemake"))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = make_config(root, args.models, args.datasets, args.blocks)
        command = [snakemake, "-s", str(REPO / "Snakefile"), "-d", str(root / "run"), "--configfile", str(config),
                   "--replace-workflow-config", "-n", "--quiet", "rules"]
        timings = []
        for attempt in ("first (layer counts read from configs)", "second (layer counts cached)"):
            start = time.perf_counter()
            result = subprocess.run(command, capture_output=True, text=True)
            timings.append(time.perf_counter() - start)
            if result.returncode:
                sys.exit(result.stderr[-3000:])
            probes = re.search(r"^fit_probe\s+(\d+)$", result.stdout + result.stderr, re.M)
            print(f"snakemake -n, {attempt}: {timings[-1]:.1f} s, fit_probe jobs: {probes.group(1) if probes else '?'}")


if __name__ == "__main__":
    main()
