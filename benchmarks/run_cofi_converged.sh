#!/usr/bin/env bash
# Issue 29: CoFi with a schedule its gates can converge in, beside GRAIN on the same training steps (tweets, MiniLM-L6,
# seed 1, densities 0.05, 0.1 and 0.2). One recipe for both: `quick` at 600 steps with the pruning window from 10% to
# 60% of training (60 dense steps, then the gates learn for 300 steps, a 60-step target warm-up included, then 240
# steps of fine-tuning at fixed structure); CoFi's gates and multipliers at lr 0.1 (the reference's
# reg_learning_rate). The records store the expected density at the freeze (`density.expected_at_freeze`) and the
# gates' curve (`method_info.constraint_curve`); a row more than 0.01 off its target is flagged `not converged`.
#   bash benchmarks/run_cofi_converged.sh          (NICE=19 to yield the CPU to other work)
set -euo pipefail
cd "$(dirname "$0")/.."
RESULTS=${RESULTS:-benchmarks/results/tweets-minilm-cofi}
export OMP_NUM_THREADS=1 GRAIN_BENCH_THREADS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
run() { nice -n "${NICE:-0}" grain-bench run --tasks tweets --backbone minilm-l6 --recipe quick -r max_steps=600 \
          -r prune_start=0.1 -r prune_end=0.6 --seeds 1 --results "$RESULTS" --retry-failed -q --no-save-models "$@" \
          || true; }
mkdir -p "$RESULTS"
run --methods cofi -o cofi.lr=0.1 --densities 0.05,0.1,0.2 > "$RESULTS/worker-a.log" 2>&1 &
run --methods grain --densities 0.05,0.1,0.2 > "$RESULTS/worker-b.log" 2>&1 &
wait
grain-bench leaderboard show --results "$RESULTS" --versus grain
