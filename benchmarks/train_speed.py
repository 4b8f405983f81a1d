"""Training steps per second of the shared trainer in each precision: dense KD (``dense``) and GRAIN (``grain``, whose
observed steps take two backward passes), side by side in one process.

For each precision (``fp32``, ``tf32``, ``bf16``, ``fp16``; the ones the device cannot run are reported as skipped)
and each method, ``--steps`` steps of ``grain_bench.distill.distill`` on the task's training split with the ``paper``
recipe's batch and length (``--batch``, ``--seq-len`` override them), the teacher the backbone itself (its values do
not change the cost). The first ``--warmup`` steps are not counted. Steps per second are over the steps after them,
and every precision is also given as a ratio to fp32's of the same method, measured in the same process.

    python benchmarks/train_speed.py --device cuda --task rte --data-dir DATA --out speed.json
    python benchmarks/train_speed.py --device cpu --backbone test-bert-tiny --steps 6 --warmup 2   # a dry run

The JSON holds the machine, the command, the settings and one row per (method, precision).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def time_training(method_name: str, precision: str, task_name: str, backbone: str, data_dir: str | None,
                  device: str, steps: int, warmup: int, batch: int | None, seq_len: int | None) -> dict:
    """One method's training speed in one precision: steps per second after ``warmup`` steps."""
    import torch

    from grain_bench.backbones import load_backbone
    from grain_bench.distill import distill, set_seed
    from grain_bench.grid import build_specs
    from grain_bench.harness import Harness
    from grain_bench.plugins import get_registries
    from grain_bench.recipes import get_recipe

    regs = get_registries()
    overrides = {"max_steps": steps, "precision": precision, "max_train_examples": 4 * steps * (batch or 32),
                 **({"batch_size": batch} if batch else {}), **({"max_length": seq_len} if seq_len else {})}
    recipe = get_recipe("paper", overrides, regs.tasks.get(task_name))
    (spec,) = build_specs(regs, ["dense"], [task_name], [1.0], [1], backbone, recipe, data_dir=data_dir)
    harness = Harness(os.devnull, regs=regs, progress=False)
    task, _ = harness.task_for(spec)
    set_seed(1)
    teacher, tokenizer = load_backbone(backbone, task.head, task.num_labels, regs=regs)
    student, _ = load_backbone(backbone, task.head, task.num_labels, regs=regs)
    teacher.to(device).eval()
    student.to(device)
    data = harness.data(spec, task, tokenizer, recipe)
    stamps: list[float] = []

    def on_step(step, state):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    method = regs.methods.get(method_name).from_spec({}, seed=1)  # as the committed figures ran (cofi.hidden off)
    distill(method, task, teacher, student, data, recipe, 1.0 if method_name == "dense" else 0.2, seed=1,
            progress=False, on_step=on_step)
    counted = stamps[warmup:]
    seconds = counted[-1] - counted[0] if len(counted) > 1 else float("nan")
    return {"method": method_name, "precision": precision, "steps": len(counted) - 1, "seconds": seconds,
            "steps_per_s": (len(counted) - 1) / seconds if seconds > 0 else None,
            "batch": recipe.batch_size, "seq_len": recipe.max_length}


def runnable(precision: str, device: str) -> str | None:
    """Why ``precision`` cannot train on ``device`` (None when it can)."""
    from grain_bench.errors import UsageError
    from grain_bench.precision import resolve_precision

    try:
        resolve_precision(precision, device)
    except UsageError as exc:
        return str(exc)
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--task", default="rte")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--backbone", default="minilm-l6")
    parser.add_argument("--methods", default="dense,grain")
    parser.add_argument("--precisions", default="fp32,tf32,bf16")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--seq-len", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from bench_latency import machine  # the side-by-side latency benchmark's description of the machine

    report = {"machine": {**machine(), "threads": torch.get_num_threads()},
              "command": " ".join(["python benchmarks/train_speed.py", *sys.argv[1:]]),
              "settings": vars(args), "rows": [], "skipped": {}}
    for precision in args.precisions.split(","):
        why = runnable(precision, args.device)
        if why:
            report["skipped"][precision] = why
            continue
        for method in args.methods.split(","):
            row = time_training(method, precision, args.task, args.backbone, args.data_dir, args.device, args.steps,
                                args.warmup, args.batch, args.seq_len)
            report["rows"].append(row)
            print(f"{method:6} {precision:5} {row['steps_per_s']:.2f} steps/s", file=sys.stderr, flush=True)
            write(report, args.out)  # after each row: a run cut off by a time limit keeps what it measured
    print(json.dumps(report["rows"], indent=1))
    return 0


def write(report: dict, path: str | None) -> None:
    """Each row's ratio to fp32's of the same method (where measured), then the report as JSON to ``path``."""
    fp32 = {row["method"]: row["steps_per_s"] for row in report["rows"] if row["precision"] == "fp32"}
    for row in report["rows"]:
        if fp32.get(row["method"]) and row["steps_per_s"]:
            row["vs_fp32"] = row["steps_per_s"] / fp32[row["method"]]
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path + ".tmp", "w") as handle:
            json.dump(report, handle, indent=1)
        os.replace(path + ".tmp", path)


if __name__ == "__main__":
    sys.exit(main())
