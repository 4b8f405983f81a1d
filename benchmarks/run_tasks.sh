#!/usr/bin/env bash
# Issue 6's end-to-end runs on real task files: MiniLM-L6, dense and GRAIN at density 0.2, recipe `quick`, seed 1,
# on RTE and SST-2 (GLUE TSV), CoNLL-2003 (IOB1 column files) and SQuAD v1.1 (dev file split by article).
#   DATA=../shared/datapack bash benchmarks/run_tasks.sh
# Two workers (one torch thread each) share the content-hashed store; re-run the script to resume.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/datapack}
RESULTS=${RESULTS:-benchmarks/results/tasks-minilm}
export OMP_NUM_THREADS=1 GRAIN_BENCH_THREADS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
run() { grain-bench run --methods dense,grain --densities 0.2 --backbone minilm-l6 --recipe quick --data-dir "$DATA" \
          --results "$RESULTS" --retry-failed --no-save-models -q "$@" || true; }

worker_a() {
  run --tasks rte -r max_length=128
  run --tasks sst2
  # CoNLL again with the reference's CoNLL learning rate (1e-4) and longer schedules: 200 teacher steps (about a
  # quarter epoch) leave the teacher at entity F1 0.55
  RESULTS="$RESULTS-conll-long" run --tasks conll2003 -r max_length=128 -r max_eval_examples=4000 -r teacher_lr=1e-4 \
      -r teacher_max_steps=600 -r max_steps=300  # a second setup of the task: its own results directory
}

worker_b() {
  run --tasks conll2003 -r max_length=128 -r max_eval_examples=4000
  run --tasks squad -r max_length=256
}

mkdir -p "$RESULTS" "$RESULTS-conll-long"
worker_a > "$RESULTS/worker-a.log" 2>&1 &
worker_b > "$RESULTS/worker-b.log" 2>&1 &
wait
grain-bench leaderboard show --results "$RESULTS"
grain-bench leaderboard show --results "$RESULTS-conll-long"
