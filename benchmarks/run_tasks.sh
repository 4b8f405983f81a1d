#!/usr/bin/env bash
# The task benchmark (issues 6, 17): MiniLM-L6, recipe `quick` with its per-task values
# (grain_bench.recipes.TASK_VALUES, chosen from benchmarks/results/task-curves), seed 1: the dense student and grain
# and heads at density 0.2, on the real files: GLUE TSV (STS-B, MRPC, RTE, SST-2), CoNLL-2003 (IOB1 column files)
# and SQuAD v1.1 (dev split by article).
# Tables show each task's chance row and teacher, flag collapsed students and warn where the teacher did not learn.
#   DATA=../shared/datapack bash benchmarks/run_tasks.sh              (2 CPU workers, one torch thread each; SQuAD
#                                                                      is left out: no CPU budget makes it meaningful)
#   JOBS=6 TASKS="stsb mrpc rte conll2003 sst2 squad" bash benchmarks/run_tasks.sh   (one process a task, on a GPU)
#   METHODS=grain,heads TASKS="stsb mrpc rte" bash benchmarks/run_tasks.sh      (a subset)
# Workers share the content-hashed store; re-run the script to resume.
set -euo pipefail
cd "$(dirname "$0")/.."
export DATA=${DATA:-../shared/datapack} RESULTS=${RESULTS:-benchmarks/results/tasks-minilm}
export METHODS=${METHODS:-dense,grain,heads}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
JOBS=${JOBS:-2}
if [ "$JOBS" -le 2 ]; then export OMP_NUM_THREADS=1 GRAIN_BENCH_THREADS=1; else export OMP_NUM_THREADS=3; fi
mkdir -p "$RESULTS"
printf '%s\n' ${TASKS:-conll2003 stsb mrpc rte sst2} | xargs -P "$JOBS" -I{} sh -c \
  'grain-bench run --methods "$METHODS" --densities 0.2 --tasks {} --backbone minilm-l6 --recipe quick \
     --data-dir "$DATA" --results "$RESULTS" --retry-failed --no-save-models -q > "$RESULTS/run-{}.log" 2>&1 || true'
grain-bench leaderboard show --results "$RESULTS"
