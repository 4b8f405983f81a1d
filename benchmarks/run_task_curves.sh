#!/usr/bin/env bash
# Issue 17: learning curves of the teacher and of grain and heads students (0.2) on the real task files, two workers at one
# torch thread each; then the plot. Re-run to resume (finished tasks are skipped, an interrupted one keeps its teacher).
# On the 2-core machine a task takes 30-90 minutes; add a dense student with --methods dense,grain,heads if time allows.
#   DATA=../shared/datapack bash benchmarks/run_task_curves.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/task-curves}
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
mkdir -p "$OUT"
python benchmarks/task_curves.py --tasks stsb,rte --methods grain,heads --out "$OUT" > "$OUT/worker-a.log" 2>&1 &
python benchmarks/task_curves.py --tasks mrpc,conll2003 --methods grain,heads --out "$OUT" > "$OUT/worker-b.log" 2>&1 &
wait
# SQuAD last, alone: its teacher curve decides whether any CPU budget makes the task meaningful
python benchmarks/task_curves.py --tasks squad --methods "" --out "$OUT" > "$OUT/worker-squad.log" 2>&1 || true
python benchmarks/task_curves.py --plot --out "$OUT"
