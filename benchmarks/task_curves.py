"""Score against training steps on the real task files, to choose CPU recipe values that make each task meaningful.

For each task: the teacher's learning curve (one fine-tuning of ``--teacher-steps`` steps, scored on the reported
split every ``--every`` steps; the learning rate decays over the whole run, so a shorter run that decays to zero
usually does at least as well at its end), the trivial predictor's score, and dense, grain and heads students at
density 0.2 after ``--student-steps`` steps each (full runs through the harness, the teacher at ``--teacher-steps``).

    DATA=../shared/datapack python benchmarks/task_curves.py --tasks stsb,mrpc,rte,conll2003,squad \\
        --out benchmarks/results/task-curves

writes ``<out>/curve-<task>.json`` (the teacher curve, the trivial predictor's scores, settings, machine) and the
student records in ``<out>/records.jsonl`` (a results directory). Re-running skips what is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

#: per-task settings of the curves: sequence length and the teacher's learning rate (the recipe's by default)
LENGTHS = {"stsb": 128, "mrpc": 128, "rte": 128, "conll2003": 128, "squad": 256}
TEACHER_LR = {"conll2003": 1e-4}  # the reference's CoNLL rate (GRAIN's code)


def teacher_curve(task_name: str, data_dir: str, recipe, every: int, results: str, seed: int = 1) -> dict:
    """Fine-tune a MiniLM-L6 teacher, scoring it on the reported split every ``every`` steps; the final teacher goes
    into ``results``' teacher cache, where the student runs find it (it is the teacher they would train)."""
    from grain_bench.backbones import load_backbone
    from grain_bench.distill import finetune, set_seed
    from grain_bench.grid import build_specs
    from grain_bench.harness import Harness
    from grain_bench.plugins import get_registries
    from grain_bench.quality import assess
    from grain_bench.teachers import save_teacher, teacher_key

    regs = get_registries()
    (spec,) = build_specs(regs, ["dense"], [task_name], [1.0], [seed], "minilm-l6", recipe, data_dir=data_dir)
    harness = Harness(os.devnull, regs=regs, progress=False)
    task, provenance = harness.task_for(spec)
    set_seed(seed)
    model, tokenizer = load_backbone("minilm-l6", task.head, task.num_labels)
    data = harness.data(spec, task, tokenizer, recipe)
    points = []
    started = time.time()

    def evaluate(step, model):
        if step % every == 0 or step == recipe.teacher_max_steps:
            scores = task.evaluate(model, data.eval, tokenizer, recipe.eval_batch_size, progress=False)
            points.append({"step": step, "scores": scores, "seconds": time.time() - started})
            print(f"{task_name} teacher step {step}: {scores}", file=sys.stderr, flush=True)

    seconds = finetune(model, task, data, recipe, seed, progress=False, on_step=evaluate)
    predictions = task.predict(model, data.eval, tokenizer, recipe.eval_batch_size, progress=False)
    key = teacher_key(task, spec.data, "minilm-l6", recipe, seed)
    meta = {"key": key, "task": task.name, "backbone": "minilm-l6", "seed": seed,
            "scores": task.score(predictions, data.eval), "train_seconds": seconds, "recipe": recipe.teacher_dict(),
            "warnings": [], "quality": assess(task, predictions, data.eval)}
    save_teacher(os.path.join(results, "teachers"), key, model, meta)
    return {"task": task_name, "metric": task.primary_metric, "chance": data.chance, "curve": points,
            "data": provenance["key"], "recipe": recipe.to_dict()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="stsb,mrpc,rte,conll2003,squad")
    parser.add_argument("--data-dir", default=os.environ.get("DATA", "../shared/datapack"))
    parser.add_argument("--out", default="benchmarks/results/task-curves")
    parser.add_argument("--teacher-steps", type=int, default=600)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--student-steps", default="120,360")
    parser.add_argument("--methods", default="dense,grain,heads")
    parser.add_argument("--skip-teachers", action="store_true", help="only the student runs")
    args = parser.parse_args(argv)

    import torch

    import grain_bench
    from grain_bench.recipes import get_recipe

    os.makedirs(args.out, exist_ok=True)
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
               "torch": torch.__version__}
    command = " ".join(["python benchmarks/task_curves.py", *(argv if argv is not None else sys.argv[1:])])
    for task in args.tasks.split(","):
        overrides = {"max_length": LENGTHS.get(task, 128), "teacher_max_steps": args.teacher_steps}
        if task in TEACHER_LR:
            overrides["teacher_lr"] = TEACHER_LR[task]
        path = os.path.join(args.out, f"curve-{task}.json")  # one file per task: workers run tasks in parallel
        if not args.skip_teachers and not os.path.exists(path):
            curve = teacher_curve(task, args.data_dir, get_recipe("quick", overrides, task), args.every, args.out)
            with open(path + ".tmp", "w") as handle:
                json.dump({**curve, "machine": machine, "command": command}, handle, indent=1)
            os.replace(path + ".tmp", path)
        for steps in (int(s) for s in args.student_steps.split(",")):
            grain_bench.run(methods=args.methods.split(","), tasks=[task], densities=[0.2], seeds=[1],
                            backbone="minilm-l6", recipe="quick", recipe_options={**overrides, "max_steps": steps},
                            data_dir=args.data_dir, results=args.out, save_models=False, progress=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
