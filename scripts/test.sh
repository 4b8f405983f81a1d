#!/usr/bin/env bash
# Set up and run the default test suite (no network, tiny models). Exit code 5 (no tests collected) is an error.
set -euo pipefail
cd "$(dirname "$0")/.."
GRAIN_BENCH_EXTRAS=test,plots,ray bash scripts/setup.sh  # the Ray executor's tests need the ray extra
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
set +e
python -m pytest -q "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "pytest collected no tests: treating as failure" >&2; exit 1; fi
exit "$rc"
