#!/usr/bin/env bash
# All benchmarks, one command: extraction speed and memory, probe backends, DAG build time.
# Needs the default run's shards for the probe benchmark (make run), and `pip install -e .[bench]`.
#   bash benchmarks/run.sh [TEXTS]     TEXTS: crowd-enVENT texts for the extraction benchmark (default 600)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
TEXTS=${1:-600}
SHARDS=$(ls -d results/activations/smollm2-135m-instruct/crowd_envent/layers_* 2>/dev/null | head -1)
echo "== extraction throughput (SmolLM2-135M, $TEXTS texts, all 31 layers, positions -1..-5)"
$PY benchmarks/bench_extraction.py --texts "$TEXTS" 2> >(grep -v -e Converting -e "Loading weights" >&2)
echo "== extraction peak memory"
$PY benchmarks/bench_extraction.py --memory --texts "$TEXTS" 2>/dev/null
echo "== probe sweep: sklearn per (position, fold) vs batched torch"
if [ -n "$SHARDS" ]; then
  $PY benchmarks/bench_probes.py "$SHARDS" results/data/crowd_envent.parquet --layers 12 30
else
  echo "skipped: no shards under results/activations/smollm2-135m-instruct/crowd_envent (run 'make run' first)"
fi
echo "== snakemake -n for 10 models x 5 datasets x 32 layers x 5 positions"
$PY benchmarks/bench_dag.py
