#!/usr/bin/env bash
# The comparison on the offline default (issues 4, 14, 15, 17): MiniLM-L6 on `tweets`, recipe `quick`, one recipe and
# one teacher per seed for every method.
#   grain, heads, random, movement, cofi at 0.05 (seeds 1, 2, 3), 0.1 and 0.2 (seed 1); magnitude at 0.05, 0.1, 0.2
#   and ffn-only at 0.05 (seed 1); dense; GRAIN ablations at 0.05 (seed 1): no gradient separation, no structure
#   regularisation, random scores.
# Every run stores its predictions (paired intervals, collapse flags) and its final masks (re-timing: afterwards, on a
# quiet machine, `grain-bench measure --results "$RESULTS"`). Two workers (one torch thread each) share the
# content-hashed, lock-protected store with disjoint grids; re-run the script to resume after an interruption.
#   bash benchmarks/run_comparison.sh          (NICE=19 to yield the CPU to other work)
set -euo pipefail
cd "$(dirname "$0")/.."
RESULTS=${RESULTS:-benchmarks/results/tweets-minilm}
export OMP_NUM_THREADS=1 GRAIN_BENCH_THREADS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
run() { nice -n "${NICE:-0}" grain-bench run --tasks tweets --backbone minilm-l6 --recipe quick --results "$RESULTS" \
          --retry-failed -q --no-save-models "$@" || true; }

worker_a() {
  run --methods dense --seeds 1
  run --methods grain,heads --densities 0.05,0.2,0.1 --seeds 1
  run --methods grain -o grain.gradient_separation=false --densities 0.05 --seeds 1
  run --methods grain -o grain.alpha=0 --densities 0.05 --seeds 1
  run --methods grain -o grain.score=random --densities 0.05 --seeds 1
  run --methods movement,cofi --densities 0.05,0.1,0.2 --seeds 1
}

worker_b() {
  run --methods grain,heads --densities 0.05 --seeds 2,3
  run --methods random --densities 0.05 --seeds 1,2,3
  run --methods movement,cofi --densities 0.05 --seeds 2,3
  run --methods random,magnitude --densities 0.1,0.2 --seeds 1
  run --methods magnitude,ffn-only --densities 0.05 --seeds 1
}

mkdir -p "$RESULTS"
worker_a > "$RESULTS/worker-a.log" 2>&1 &
worker_b > "$RESULTS/worker-b.log" 2>&1 &
wait
grain-bench leaderboard show --results "$RESULTS" --versus grain
