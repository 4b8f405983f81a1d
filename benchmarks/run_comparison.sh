#!/usr/bin/env bash
# Issue 4's comparison on the offline default: MiniLM-L6 on `tweets`, recipe `quick`, one shared recipe for all.
#   dense; grain, heads, random at 0.05 (seeds 1,2,3), 0.1 and 0.2 (seed 1); ffn-only at 0.05, 0.1, 0.2 (seed 1);
#   GRAIN ablations at 0.05 (seed 1): no gradient separation, no structure regularisation, random scores.
# Two workers (one torch thread each) share the grid through the content-hashed, lock-protected store: each skips
# what the other has finished. Re-run the script to resume after an interruption.
set -euo pipefail
cd "$(dirname "$0")/.."
RESULTS=${RESULTS:-benchmarks/results/tweets-minilm}
export OMP_NUM_THREADS=1 GRAIN_BENCH_THREADS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
run() { grain-bench run --tasks tweets --backbone minilm-l6 --recipe quick --results "$RESULTS" --retry-failed -q "$@" || true; }

worker_a() {
  run --methods dense --seeds 1
  run --methods grain,heads,random --densities 0.05 --seeds 1
  run --methods grain -o grain.gradient_separation=false --densities 0.05 --seeds 1
  run --methods grain -o grain.alpha=0 --densities 0.05 --seeds 1
  run --methods grain -o grain.score=random --densities 0.05 --seeds 1
  run --methods grain,heads,random --densities 0.1,0.2 --seeds 1
  run --methods ffn-only --densities 0.05,0.1,0.2 --seeds 1
}

worker_b() {
  run --methods grain,heads,random --densities 0.05 --seeds 2,3
  run --methods ffn-only --densities 0.05,0.1,0.2 --seeds 1
  run --methods grain,heads,random --densities 0.2,0.1 --seeds 1
}

worker_a > "$RESULTS.worker-a.log" 2>&1 &
worker_b > "$RESULTS.worker-b.log" 2>&1 &
wait
grain-bench leaderboard show --results "$RESULTS"
