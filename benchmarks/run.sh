#!/usr/bin/env bash
# All benchmarks, one command: extraction speed and memory, probe backends, MLP vs logistic probe, DAG build time.
# Needs the default run's shards for the probe benchmark (make run), and `pip install -e .[bench]`.
#   bash benchmarks/run.sh [TEXTS]     TEXTS: crowd-enVENT texts for the extraction benchmark (default 600)
# With a GPU, or with FULL=1, it also times extraction of all 6,600 texts with SmolLM2 and
# Gemma 3 270M in the workflow's dtype (bf16 on CUDA, fp32 on CPU: about 15 min on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
TEXTS=${1:-600}
SHARDS=$(ls -d results/activations/smollm2-135m-instruct/crowd_envent/layers_* 2>/dev/null | head -1)
echo "== extraction throughput (SmolLM2-135M, $TEXTS texts, all layers, positions -1..-5)"
$PY benchmarks/bench_extraction.py --texts "$TEXTS" 2> >(grep -v -e Converting -e "Loading weights" >&2)
CUDA=$($PY -c "import torch; print(int(torch.cuda.is_available()))")
if [ "$CUDA" = 1 ] || [ "${FULL:-0}" = 1 ]; then
  APPROACH=$([ "$CUDA" = 1 ] && echo emoprobe_bf16 || echo emoprobe)
  for MODEL in smollm2 gemma3-270m; do
    echo "== extraction wall time, all crowd-enVENT texts, $MODEL ($APPROACH)"
    $PY benchmarks/bench_extraction.py --model "$MODEL" --texts 0 --approaches "$APPROACH" \
      2> >(grep -v -e Converting -e "Loading weights" >&2)
  done
fi
echo "== extraction peak memory"
$PY benchmarks/bench_extraction.py --memory --texts "$TEXTS" 2>/dev/null
echo "== probe sweep: sklearn per (position, fold) vs batched torch"
if [ -n "$SHARDS" ]; then
  $PY benchmarks/bench_probes.py "$SHARDS" results/data/crowd_envent.parquet --layers 12 30
  echo "== MLP probe vs logistic probe, torch, one thread, as one probe job"
  $PY benchmarks/bench_mlp.py "$SHARDS" results/data/crowd_envent.parquet --layers 0 10 20 30 2> /dev/null
else
  echo "skipped: no shards under results/activations/smollm2-135m-instruct/crowd_envent (run 'make run' first)"
fi
echo "== snakemake -n for 10 models x 5 datasets x 32 layers x 5 positions"
$PY benchmarks/bench_dag.py
