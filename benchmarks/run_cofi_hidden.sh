#!/usr/bin/env bash
# Issue 29: CoFi with hidden-dimension gates (the reference's hidden_z, `cofi.hidden`, on by default) beside the CoFi
# rows without them and GRAIN, on the recipe of run_cofi_converged.sh (tweets, MiniLM-L6, seed 1, `quick` at 600
# steps, pruning window 10%-60%, gates and multipliers at lr 0.1). 0.05 on the default schedule (the one CoFi without
# hidden dimensions converged in), 0.1 on it and on a 250-step target warm-up, 0.2 on the 250-step warm-up (the one
# that converged without them). Two workers, one thread each; no timing here: re-time the store alone afterwards
# (benchmarks/retime_cofi_hidden.sh).
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
grain-bench leaderboard show --results "$RESULTS" --versus grain
