#!/usr/bin/env bash
# Issue 15: GRAIN's rivals beside the tweets comparison (benchmarks/run_comparison.sh): cofi and movement at densities
# 0.05, 0.1 and 0.2, three seeds at 0.05, MiniLM-L6, recipe `quick`, in the same results directory, so the rows share
# the recipe and the teachers (a teacher is keyed by task data, backbone, teacher recipe and seed).
#   bash benchmarks/run_rivals.sh
# Two workers (one torch thread each) share the content-hashed store; re-run the script to resume.
set -euo pipefail
cd "$(dirname "$0")/.."
RESULTS=${RESULTS:-benchmarks/results/tweets-minilm}
export OMP_NUM_THREADS=1 GRAIN_BENCH_THREADS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
run() { grain-bench run --tasks tweets --backbone minilm-l6 --recipe quick --results "$RESULTS" --retry-failed -q \
          --no-save-models "$@" || true; }

worker_a() {
  run --methods cofi,movement --densities 0.05 --seeds 1
  run --methods cofi,movement --densities 0.1,0.2 --seeds 1
}

worker_b() {
  run --methods cofi,movement --densities 0.05 --seeds 2,3
}

mkdir -p "$RESULTS"
worker_a > "$RESULTS.rivals-a.log" 2>&1 &
worker_b > "$RESULTS.rivals-b.log" 2>&1 &
wait
grain-bench leaderboard show --results "$RESULTS" --versus grain
