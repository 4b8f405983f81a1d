#!/usr/bin/env bash
# Issue 14 on a quiet machine (nothing else running): time the masks that training produced.
#   1. re-time every run of the tweets comparison against its dense backbone (grain-bench measure; the tables then
#      show these figures and say so);
#   2. the real masks of grain (with its ablations) and heads beside their stock twins at batch 32 x 64 and 1 x 64,
#      2 threads, side by side in one process per runtime: eager alone, then eager + torch.compile, eager +
#      AOTInductor, eager + the ragged-width attention kernel and eager + ONNX Runtime (each ratio against the dense eager model of its own process; one
#      runtime's threads never share a process with another's, which disturbed the eager timings when all three did);
#   3. batch 1 again with 20 calls back to back per model and round (--calls 20: warm caches, as when serving), eager,
#      eager + torch.compile, eager + AOTInductor and eager + ragged;
#   4. each mask against its twin-heads alone, paired over 81 rounds (bench_twins.py), eager and ragged;
#   5. print the tables of benchmarks/results/latency-real-masks.md from the JSON reports;
#   6. the ragged kernel against SDPA per (sequence, head) at equal widths (bench_ragged_kernel.py).
#   bash benchmarks/run_real_mask_latency.sh          (MEASURE=0 skips step 1)
set -euo pipefail
cd "$(dirname "$0")/.."
RESULTS=${RESULTS:-benchmarks/results/tweets-minilm}
OUT=${OUT:-benchmarks/results}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
if [ "${MEASURE:-1}" != 0 ]; then grain-bench measure --results "$RESULTS" --batch 32 --threads 2 --runs 15 -q; fi
for batch in 32 1; do
  for runtimes in eager eager,compile eager,aoti eager,ragged eager,onnx; do
    python benchmarks/bench_latency.py --masks "$RESULTS" --methods grain,heads --runtimes "$runtimes" \
      --batch "$batch" --runs 21 --out "$OUT/latency-real-masks-b$batch-${runtimes//,/-}.json"
  done
done
for runtimes in eager eager,compile eager,aoti eager,ragged; do
  python benchmarks/bench_latency.py --masks "$RESULTS" --methods grain,heads --runtimes "$runtimes" --batch 1 \
    --calls 20 --runs 21 --out "$OUT/latency-real-masks-b1-calls20-${runtimes//,/-}.json"
done
python benchmarks/bench_twins.py --masks "$RESULTS" --rounds 81 --out "$OUT/latency-real-masks-b32-twins.json"
python benchmarks/bench_twins.py --masks "$RESULTS" --rounds 81 --runtime ragged \
  --out "$OUT/latency-real-masks-b32-twins-ragged.json"
python benchmarks/real_mask_tables.py "$OUT"
python benchmarks/bench_ragged_kernel.py --out "$OUT/ragged-kernel.json"
