#!/usr/bin/env bash
# Issue 14 on a quiet machine (nothing else running): time the masks that training produced.
#   1. re-time every run of the tweets comparison against its dense backbone (grain-bench measure; the tables then
#      show these figures and say so);
#   2. the real masks of grain (with its ablations) and heads beside their stock twins, under each runtime (eager,
#      torch.compile, ONNX Runtime), at batch 32 x 64 and 1 x 64, 2 threads, side by side in one process.
#   bash benchmarks/run_real_mask_latency.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RESULTS=${RESULTS:-benchmarks/results/tweets-minilm}
OUT=${OUT:-benchmarks/results}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
grain-bench measure --results "$RESULTS" --batch 32 --threads 2 --runs 15 -q
for batch in 32 1; do
  python benchmarks/bench_latency.py --masks "$RESULTS" --methods grain,heads --runtimes eager,compile,onnx \
    --batch "$batch" --runs 21 --out "$OUT/latency-real-masks-b$batch.json"
done
