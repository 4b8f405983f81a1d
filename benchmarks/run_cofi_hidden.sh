#!/usr/bin/env bash
# Issue 29: CoFi with hidden-dimension gates (the reference's hidden_z, `cofi.hidden`, on by default) beside the CoFi
# rows without them and GRAIN, on the recipe of run_cofi_converged.sh (tweets, MiniLM-L6, seed 1, `quick` at 600
# steps, pruning window 10%-60%, gates and multipliers at lr 0.1). 0.05 on the default schedule (the one CoFi without
# hidden dimensions converged in), 0.1 on it and on target warm-ups of 250, 200 and 175 steps, 0.2 on warm-ups of 250
# (the one that converged without them) and 300 steps. Two workers, one thread each; no timing here: re-time the
# store alone afterwards (grain-bench measure, as benchmarks/results/tweets-minilm.md says).
#   bash benchmarks/run_cofi_hidden.sh          (NICE=19 to yield the CPU to other work)
set -euo pipefail
cd "$(dirname "$0")/.."
RESULTS=${RESULTS:-benchmarks/results/tweets-minilm-cofi}
export OMP_NUM_THREADS=1 GRAIN_BENCH_THREADS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
run() { nice -n "${NICE:-0}" grain-bench run --tasks tweets --backbone minilm-l6 --recipe quick -r max_steps=600 \
          -r prune_start=0.1 -r prune_end=0.6 --seeds 1 --results "$RESULTS" --retry-failed -q --no-save-models \
          --methods cofi -o cofi.lr=0.1 -o cofi.hidden=true "$@" || true; }
mkdir -p "$RESULTS"
( run --densities 0.05; run --densities 0.1 -o cofi.warmup_steps=250 ) > "$RESULTS/worker-hidden-a.log" 2>&1 &
( run --densities 0.2 -o cofi.warmup_steps=250; run --densities 0.1 ) > "$RESULTS/worker-hidden-b.log" 2>&1 &
wait
( run --densities 0.1 -o cofi.warmup_steps=200; run --densities 0.2 -o cofi.warmup_steps=300 ) \
  > "$RESULTS/worker-hidden-c.log" 2>&1 &
( run --densities 0.1 -o cofi.warmup_steps=175 ) > "$RESULTS/worker-hidden-d.log" 2>&1 &
wait
grain-bench leaderboard show --results "$RESULTS" --versus grain
