#!/usr/bin/env bash
# Set up and run the test suite (no network, tiny models): the default tests, then each costly marker as its own step
# (runtime: compiled runtimes; signals: sweeps that are signalled; browser: the page in headless Chromium, which skips
# without `bash scripts/setup-browser.sh`; device: the GPU device script's dry run on CPU). Arguments run one pytest
# call with them instead (e.g. a file, or -m slow).
# Exit code 5 of pytest (no tests collected) counts as a failure; the script exits non-zero if any step failed.
set -euo pipefail
cd "$(dirname "$0")/.."
GRAIN_BENCH_EXTRAS=test,plots,ray bash scripts/setup.sh  # the Ray executor's tests need the ray extra
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
COSTLY=(runtime signals browser device)

step() {  # step NAME PYTEST-ARGS...: one pytest call; returns its exit code (5, no tests collected, as 1)
    local name=$1 rc=0
    shift
    echo "== tests: $name" >&2
    python -m pytest -q "$@" || rc=$?
    if [ "$rc" -eq 5 ]; then echo "pytest collected no tests ($name): treating as failure" >&2; rc=1; fi
    return "$rc"
}

if [ "$#" -gt 0 ]; then
    step "as asked" "$@"
    exit $?
fi
default="not slow and not gpu"
for marker in "${COSTLY[@]}"; do default="$default and not $marker"; done
failed=()
step default -m "$default" || failed+=(default)
for marker in "${COSTLY[@]}"; do
    step "$marker" -m "$marker" || failed+=("$marker")
done
if [ "${#failed[@]}" -gt 0 ]; then
    echo "== tests failed in: ${failed[*]}" >&2
    exit 1
fi
echo "== tests: every step passed" >&2
