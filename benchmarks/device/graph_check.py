"""Diagnose CUDA-graph replay of one model on the GPU (fp16, batch 128 x 128), with synchronous launches so that a
device-side error names its kernel: ``python benchmarks/device/graph_check.py dense|grain@0.05 [pad|nopad]``."""

import os
import sys
import traceback

os.environ["CUDA_LAUNCH_BLOCKING"] = "1"
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import torch  # noqa: E402
from bench_latency import load_dense, real_mask_models  # noqa: E402

from grain_bench.measure import _cuda_call, synthetic_inputs  # noqa: E402

which, padding = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "pad")
dense = load_dense()
if which == "dense":
    model = dense
else:
    models, _ = real_mask_models(dense, "benchmarks/results/tweets-minilm", 128, (which.split("@")[0],))
    model = models[which]
model = model.eval().to("cuda", torch.float16)
inputs = {k: v.cuda() for k, v in synthetic_inputs(dense.config, 128, 128, "cpu").items()}
if padding == "pad":
    inputs["attention_mask"][0, 64:] = 0
try:
    with torch.inference_mode():
        eager = model(**inputs).logits.float()
    call = _cuda_call(model, inputs, "cuda_graph")
    print(which, padding, "graph replays (ms):", [round(call(), 3) for _ in range(3)], flush=True)
except Exception:  # noqa: BLE001 - a diagnosis prints whatever failed
    print(which, padding, "FAILED:", "".join(traceback.format_exc().splitlines(True)[-6:]), flush=True)
