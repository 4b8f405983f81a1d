#!/usr/bin/env bash
# Issue 14's default-job figure: the README's first command from a fresh clone of HEAD into a fresh virtual
# environment, set-up and job timed separately. Run it with nothing else on the machine.
#   bash benchmarks/time_default_job.sh            (prints "setup S s, job J s, total T s"; keeps nothing)
#   REV=0e63915 bash benchmarks/time_default_job.sh   (an earlier commit, e.g. a baseline timed beside HEAD: this VM's
#                                                     speed drifts by 25% over an afternoon)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git clone -q "$repo" "$work/clone"
git -C "$work/clone" checkout -q "${REV:-HEAD}"
"${PYTHON:-python3}" -m venv "$work/venv"
# shellcheck disable=SC1091
source "$work/venv/bin/activate"
cd "$work/clone"
unset OMP_NUM_THREADS GRAIN_BENCH_THREADS PYTHONPATH
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
start=$(date +%s.%N)
bash scripts/setup.sh
middle=$(date +%s.%N)
grain-bench run --methods dense,random,magnitude,grain,heads --tasks tweets
end=$(date +%s.%N)
python - "$start" "$middle" "$end" <<'PY'
import sys
start, middle, end = map(float, sys.argv[1:])
total = end - start
print(f"setup {middle - start:.0f} s, job {end - middle:.0f} s, total {total:.0f} s "
      f"({total // 60:.0f} min {total % 60:.0f} s)")
PY
