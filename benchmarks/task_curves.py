"""Score against training steps on the real task files, to choose CPU recipe values that make each task meaningful.

For each task, on MiniLM-L6 with the ``quick`` recipe's settings at the task's length:

- the teacher's learning curve: one fine-tuning of ``--teacher-steps`` steps scored on the reported split every
  ``--every`` steps (the learning rate decays over the whole run, so a shorter run that decays to zero usually does at
  least as well at its end);
- students distilled from that teacher (``dense``, and ``grain`` and ``heads`` at density 0.2) for
  ``--student-steps`` steps, scored every ``--every`` steps once the schedule has reached its target (the masked
  model; the schedule prunes from 20% to 40% of training, so later points show the recovery at fixed structure);
- the trivial predictor's score (majority class, mean label, all ``O``, the first context token).

    DATA=../shared/datapack python benchmarks/task_curves.py --tasks stsb,mrpc --out benchmarks/results/task-curves

writes ``<out>/curve-<task>.json`` (one file per task, rewritten after each phase; several workers can share
``--out``) and, with ``--plot``, ``<out>/curves.{svg,png}`` from every curve file. Re-running skips the finished tasks
and resumes an interrupted one with its kept teacher.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

#: per-task sequence length of the curves (a few percent of examples are cut at these lengths)
LENGTHS = {"stsb": 64, "mrpc": 128, "rte": 128, "conll2003": 128, "squad": 256}
TEACHER_LR = {"conll2003": 1e-4}  # the reference's CoNLL rate (GRAIN's code)


def curves(task_name: str, data_dir: str, recipe, every: int, student_steps: int, methods: list[str],
           seed: int = 1, out_dir: str | None = None, common: dict | None = None, device: str = "cpu") -> dict:
    """The teacher's and the students' learning curves of one task (see the module docstring). With ``out_dir`` the
    curve file is written after each phase and the fine-tuned teacher is kept in the suite's teacher cache under
    ``<out_dir>/teachers/`` (``grain_bench.teachers.TeacherCache``: verified on load; ignored by git), so an
    interrupted task resumes with the students it has not finished."""
    from grain_bench.backbones import load_backbone
    from grain_bench.distill import distill, finetune, set_seed
    from grain_bench.grid import build_specs
    from grain_bench.harness import Harness
    from grain_bench.plugins import get_registries
    from grain_bench.recipes import get_recipe
    from grain_bench.teachers import TeacherCache, teacher_key

    regs = get_registries()
    (spec,) = build_specs(regs, ["dense"], [task_name], [1.0], [seed], "minilm-l6", recipe, data_dir=data_dir)
    harness = Harness(os.devnull, regs=regs, progress=False)
    task, provenance = harness.task_for(spec)
    set_seed(seed)
    teacher, tokenizer = load_backbone("minilm-l6", task.head, task.num_labels, regs=regs)
    teacher.to(device)
    data = harness.data(spec, task, tokenizer, recipe)
    started = time.time()
    path = os.path.join(out_dir, f"curve-{task_name}.json") if out_dir else None
    cache = TeacherCache(os.path.join(out_dir, "teachers")) if out_dir else None
    key = teacher_key(task, spec.data, spec.backbone, recipe, seed)
    out = {"task": task_name, "metric": task.primary_metric, "chance": data.chance, "data": provenance.key,
           "recipe": recipe.to_dict(), "teacher": [], "students": {}, "complete": False, **(common or {})}
    if path and cache and os.path.exists(path):
        with open(path) as handle:
            previous = json.load(handle)
        if previous.get("recipe") == out["recipe"] and previous.get("data") == out["data"] \
                and cache.load(key, teacher) is not None:
            out.update(teacher=previous["teacher"], students=previous["students"])
            print(f"{task_name}: resumed with the cached teacher", file=sys.stderr, flush=True)

    def save():
        if path:
            out["wall_s"] = time.time() - started
            with open(path + ".tmp", "w") as handle:
                json.dump(out, handle, indent=1)
            os.replace(path + ".tmp", path)

    def score(model) -> dict:
        return task.evaluate(model, data.eval, tokenizer, recipe.eval_batch_size, progress=False)

    def teacher_point(step, model):
        if step % every == 0 or step == recipe.teacher_max_steps:
            out["teacher"].append({"step": step, "scores": score(model), "seconds": time.time() - started})
            print(f"{task_name} teacher {step}: {out['teacher'][-1]['scores']}", file=sys.stderr, flush=True)

    if not out["teacher"]:
        finetune(teacher, task, data, recipe, seed, progress=False, on_step=teacher_point)
        if cache:
            last = out["teacher"][-1]["scores"] if out["teacher"] else {}
            cache.save(key, teacher, {"key": key, "task": task_name, "scores": last, "curve": out["teacher"]})
        save()
    teacher.eval()
    student_recipe = get_recipe("quick", {**_overrides(recipe), "max_steps": student_steps}, type(task))
    for name in methods:
        if out["students"].get(name):
            continue
        method = regs.methods.get(name).from_spec({}, seed=seed)  # as the committed curves ran (cofi.hidden off)
        set_seed(seed)
        student, _ = load_backbone("minilm-l6", task.head, task.num_labels, regs=regs)
        student.to(device)
        points = out["students"][name] = []
        end = int(student_recipe.prune_end * student_steps)

        def student_point(step, state, points=points, name=name, end=end):
            if step >= end and ((step - end) % every == 0 or step == student_steps):
                points.append({"step": step, "scores": score(state.model), "seconds": time.time() - started,
                               "density": state.masks.density(state.space)})
                print(f"{task_name} {name} {step}: {points[-1]['scores']}", file=sys.stderr, flush=True)

        distill(method, task, teacher, student, data, student_recipe, 1.0 if name == "dense" else 0.2, seed,
                progress=False, on_step=student_point)
        save()
    out["complete"] = True
    save()
    return out


def _overrides(recipe) -> dict:
    return {"max_length": recipe.max_length, "teacher_max_steps": recipe.teacher_max_steps,
            "teacher_lr": recipe.teacher_lr}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="stsb,mrpc,rte,conll2003,squad")
    parser.add_argument("--data-dir", default=os.environ.get("DATA", "../shared/datapack"))
    parser.add_argument("--out", default="benchmarks/results/task-curves")
    parser.add_argument("--teacher-steps", type=int, default=400)
    parser.add_argument("--student-steps", type=int, default=400)
    parser.add_argument("--every", type=int, default=80)
    parser.add_argument("--methods", default="dense,grain,heads")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--plot", action="store_true", help="only draw <out>/curves.{svg,png} from the curve files")
    args = parser.parse_args(argv)

    import torch

    from grain_bench.plugins import get_registries
    from grain_bench.recipes import get_recipe

    os.makedirs(args.out, exist_ok=True)
    if args.plot:
        for path in plot(args.out):
            print(path)
        return 0
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
               "torch": torch.__version__, "device": device,
               "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else None}
    command = " ".join(["python benchmarks/task_curves.py", *(argv if argv is not None else sys.argv[1:])])
    for task in args.tasks.split(","):
        path = os.path.join(args.out, f"curve-{task}.json")
        if os.path.exists(path):
            with open(path) as handle:
                if json.load(handle).get("complete", True):
                    continue
        overrides = {"max_length": LENGTHS.get(task, 128), "teacher_max_steps": args.teacher_steps,
                     "teacher_lr": TEACHER_LR.get(task, get_recipe("quick").teacher_lr)}
        curves(task, args.data_dir, get_recipe("quick", overrides, get_registries().tasks.get(task)), args.every,
               args.student_steps,
               [m for m in args.methods.split(",") if m], out_dir=args.out,
               common={"machine": machine, "command": command}, device=device)
    return 0


def plot(folder: str) -> list[str]:
    """One panel per task: the teacher's and the students' primary score against steps, and the trivial predictor."""
    import glob

    from grain_bench.leaderboard.plots import _pyplot

    docs = []
    for path in sorted(glob.glob(os.path.join(folder, "curve-*.json"))):
        with open(path) as handle:
            docs.append(json.load(handle))
    if not docs:
        return []
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(docs), figsize=(3.6 * len(docs), 3.2), squeeze=False)
    for ax, doc in zip(axes[0], docs):
        metric = doc["metric"]
        series = [("teacher", doc["teacher"], "0.2", "-")]
        series += [(f"{name} @ {'1' if name == 'dense' else '0.2'}", points, f"C{i}", "-")
                   for i, (name, points) in enumerate(doc["students"].items())]
        for label, points, color, style in series:
            if points:
                ax.plot([p["step"] for p in points], [p["scores"][metric] for p in points], marker="o", ms=3,
                        color=color, linestyle=style, label=label)
        if metric in doc["chance"]:
            ax.axhline(doc["chance"][metric], color="#9a3b2f", linestyle=":", label="trivial predictor")
        ax.set_title(f"{doc['task']} (length {doc['recipe']['max_length']})", fontsize=9)
        ax.set_xlabel("training steps (batch 16)")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    paths = []
    for ext in ("svg", "png"):
        path = os.path.join(folder, f"curves.{ext}")
        fig.savefig(path, format=ext, **({"metadata": {"Date": None}} if ext == "svg" else {"dpi": 110}))
        paths.append(path)
    plt.close(fig)
    return paths


if __name__ == "__main__":
    sys.exit(main())
