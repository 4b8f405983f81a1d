#!/usr/bin/env bash
# Issue 29: structured movement in the references' forms at density 0.05 (tweets, MiniLM-L6, recipe `quick`, seeds 1-3),
# beside the default movement@0.05 rows of benchmarks/run_comparison.sh in the same store (same teachers, same recipe):
# per-matrix ranking, Adam-learned scores, scores from the whole loss, and all three together (the references' form).
#   bash benchmarks/run_movement_forms.sh          (NICE=19 to yield the CPU to other work)
set -euo pipefail
cd "$(dirname "$0")/.."
RESULTS=${RESULTS:-benchmarks/results/tweets-minilm}
export OMP_NUM_THREADS=1 GRAIN_BENCH_THREADS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
run() { nice -n "${NICE:-0}" grain-bench run --methods movement --tasks tweets --backbone minilm-l6 --recipe quick \
          --densities 0.05 --seeds 1,2,3 --results "$RESULTS" --retry-failed -q --no-save-models "$@" || true; }
mkdir -p "$RESULTS"
{ run -o movement.ranking=per_matrix; run -o movement.scores=adam; } > "$RESULTS/movement-worker-a.log" 2>&1 &
{ run -o movement.gradient_separation=false
  run -o movement.ranking=per_matrix -o movement.scores=adam -o movement.gradient_separation=false; } \
  > "$RESULTS/movement-worker-b.log" 2>&1 &
wait
grain-bench leaderboard show --results "$RESULTS" --versus grain
