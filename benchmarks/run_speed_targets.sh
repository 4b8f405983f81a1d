#!/usr/bin/env bash
# Speed targets on the offline default (issue 26): MiniLM-L6 on `tweets`, recipe `quick`, beside the density rows of
# benchmarks/run_comparison.sh in the same store (same teachers, same recipe).
#   grain, grain[granularity=8], heads, movement at --target-speedup 4, 8, 12 (seeds 1, 2, 3), planned on the
#   committed CPU cost model (batch 32 x 64, eager, 2 threads: benchmarks/results/speed-targets/).
# Then, on a quiet machine, bash benchmarks/run_speed_target_latency.sh times every model with the best runtime beside
# the dense one. Two workers (one torch thread each) share the lock-protected store; re-run to resume.
#   bash benchmarks/run_speed_targets.sh          (NICE=19 to yield the CPU to other work)
set -euo pipefail
cd "$(dirname "$0")/.."
RESULTS=${RESULTS:-benchmarks/results/tweets-minilm}
COST_MODEL=${COST_MODEL:-benchmarks/results/speed-targets/cost-model-cpu-b32x64.json}
export OMP_NUM_THREADS=1 GRAIN_BENCH_THREADS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
run() { nice -n "${NICE:-0}" grain-bench run --tasks tweets --backbone minilm-l6 --recipe quick --results "$RESULTS" \
          --cost-model "$COST_MODEL" --target-speedup 4,8,12 --retry-failed -q --no-save-models "$@" || true; }

# One worker per teacher seed at first (the teacher cache has no lock: two workers on one new seed would both train it).
worker_a() {
  run --methods grain,heads --seeds 1
  run --methods grain -o grain.granularity=8 --seeds 1
  run --methods movement --seeds 1
  run --methods grain,heads --seeds 2
  run --methods grain -o grain.granularity=8 --seeds 2
}

worker_b() {
  run --methods grain,heads --seeds 3
  run --methods grain -o grain.granularity=8 --seeds 3
  run --methods movement --seeds 3,2
}

mkdir -p "$RESULTS"
worker_a > "$RESULTS/speed-worker-a.log" 2>&1 &
worker_b > "$RESULTS/speed-worker-b.log" 2>&1 &
wait
grain-bench leaderboard show --results "$RESULTS" --versus grain

# MRPC and STS-B (their `quick` values, seed 1) beside the density rows of benchmarks/run_tasks.sh: grain and heads at
# 8x and 12x, one worker per task (SPEED_TASKS=0 skips them).
if [ "${SPEED_TASKS:-1}" != 0 ]; then
  for task in mrpc stsb; do
    nice -n "${NICE:-0}" grain-bench run --methods grain,heads --target-speedup 8,12 --tasks "$task" --seeds 1 \
      --backbone minilm-l6 --recipe quick --data-dir "${DATA:-../shared/datapack}" --cost-model "$COST_MODEL" \
      --results benchmarks/results/tasks-minilm --retry-failed -q --no-save-models \
      > "benchmarks/results/tasks-minilm/speed-$task.log" 2>&1 || true &
  done
  wait
  grain-bench leaderboard show --results benchmarks/results/tasks-minilm
fi
