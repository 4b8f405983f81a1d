#!/bin/bash
# Issue 30: kwon (Kwon et al. 2022, retraining-free) on the offline default beside the committed comparison: FLOPs
# ratios 0.5, 0.4 and 0.3 (--target-speedup 2,2.5,3.3333 under --cost-model flops), seeds 1-3, without retraining
# and followed by the shared distillation for the recipe's 120 steps (-o kwon.retrain_steps=120: the same training
# as every other row). Two workers, one torch thread each, sharing the store; resumable.
set -euo pipefail
cd "$(dirname "$0")/.."
RESULTS=${RESULTS:-benchmarks/results/tweets-minilm}
export OMP_NUM_THREADS=1 GRAIN_BENCH_THREADS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
run() { nice -n "${NICE:-0}" grain-bench run --tasks tweets --backbone minilm-l6 --recipe quick --results "$RESULTS" \
          --methods kwon --target-speedup 2,2.5,3.3333 --cost-model flops --retry-failed -q --no-save-models "$@" \
          || true; }

worker_a() {
  run --seeds 1
  run --seeds 1 -o kwon.retrain_steps=120
  run --seeds 3
}

worker_b() {
  run --seeds 2
  run --seeds 2 -o kwon.retrain_steps=120
  run --seeds 3 -o kwon.retrain_steps=120
}

mkdir -p "$RESULTS"
worker_a > "$RESULTS/kwon-worker-a.log" 2>&1 &
worker_b > "$RESULTS/kwon-worker-b.log" 2>&1 &
wait
grain-bench leaderboard show --results "$RESULTS" --versus grain
