"""What a sweep will cost before anything trains: the rates runs measured on this machine, and ``grain-bench run
--dry-run``'s estimate of every run of a grid.

**Rates.** Every finished run adds what it measured to ``$GRAIN_BENCH_HOME/run-rates.json`` (``RateBook``), under
this machine (device kind, the CPU's or GPU's model name, torch threads) and the work (backbone, task, sequence
length): seconds per teacher fine-tuning example (when the run trained its teacher), and per method seconds per
distillation example, per calibration example and the seconds of compaction, timing and scoring. A rate is the
median of its last ``KEEP`` observations. The book is a cache: losing it loses estimates, never a result.

**Estimates** (``estimate_runs``) multiply the recipe's planned quantities by those rates: the teacher's steps x its
batch (when the seed's teacher is neither cached in the results directory nor trained by an earlier run of the
grid), the method's distillation steps x batch per option variant, its calibration sample (``min(
calibration_examples, training examples)``) and retraining steps, and the rest. A method without rates of its own on
this work borrows the median of the other methods' (marked ``~``); a quantity without any rate is left out and said.
"""

from __future__ import annotations

import json
import os
import statistics
from dataclasses import dataclass, field
from typing import Any

from grain_bench.environment import cpu_name
from grain_bench.files import grain_bench_home, write_atomically
from grain_bench.sweep import will_run

#: the observations a rate keeps (the median of them is the rate)
KEEP = 5
RATES_FILE = "run-rates.json"


def rates_path() -> str:
    """Where this user's rates are kept (``$GRAIN_BENCH_HOME/run-rates.json``)."""
    return os.path.join(grain_bench_home(), RATES_FILE)


def machine_key(device: Any) -> str:
    """This machine as rates are filed under: device kind, the GPU's or CPU's model name, torch threads."""
    import torch

    kind = str(device).split(":")[0]
    name = torch.cuda.get_device_name(device) if kind == "cuda" else cpu_name()
    return f"{kind} | {name} | {torch.get_num_threads()} threads"


def work_key(backbone: str, task: str, max_length: int) -> str:
    """The work rates are filed under: a backbone on a task at a sequence length."""
    return f"{backbone} | {task} | length {max_length}"


class RateBook:
    """The rates of ``path`` (default ``rates_path()``): ``rate(machine, work, name)`` reads one, ``add`` files new
    observations (under a lock, the file rewritten atomically: two workers of a sweep may finish at once)."""

    def __init__(self, path: str | None = None):
        self.path = path or rates_path()
        self.data = self._read()

    def _read(self) -> dict[str, Any]:
        try:
            with open(self.path, encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, ValueError):  # absent or unreadable: a cache, so no estimates rather than an error
            return {}
        return data if isinstance(data, dict) else {}

    def rate(self, machine: str, work: str, name: str) -> float | None:
        """The median of the observations of ``name`` (None when there are none)."""
        values = self.data.get(machine, {}).get(work, {}).get(name)
        good = [v for v in values if isinstance(v, (int, float))] if isinstance(values, list) else []
        return statistics.median(good) if good else None

    def names(self, machine: str, work: str) -> list[str]:
        """The rates filed for ``work`` on ``machine``."""
        return sorted(self.data.get(machine, {}).get(work, {}))

    def add(self, machine: str, work: str, observations: dict[str, float]) -> None:
        """Append ``observations`` (name -> value), keeping each rate's last ``KEEP``."""
        from filelock import FileLock

        if not observations:
            return
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        with FileLock(self.path + ".lock", timeout=30):
            self.data = self._read()
            entry = self.data.setdefault(machine, {}).setdefault(work, {})
            for name, value in observations.items():
                entry[name] = ([*entry.get(name, []), float(value)])[-KEEP:]
            write_atomically(self.path, (json.dumps(self.data, indent=1, sort_keys=True) + "\n").encode())


def run_observations(record) -> dict[str, float]:
    """The rates an ``ok`` record measured: its method's seconds per distillation and calibration example and the
    seconds of compaction, timing and scoring (``method_info.phase_seconds`` and ``examples_seen``)."""
    info = record.method_info
    phases, examples = info.get("phase_seconds") or {}, info.get("examples_seen") or {}
    method = record.spec.method
    out = {f"{method}.{phase}": phases[phase] / examples[phase] for phase in ("distillation", "calibration")
           if phases.get(phase) and examples.get(phase)}
    rest = [phases.get(name) for name in ("compaction_and_timing", "scoring")]
    if all(isinstance(value, (int, float)) for value in rest):
        out[f"{method}.rest"] = float(sum(value for value in rest if value is not None))
    return out


# ---- estimates ------------------------------------------------------------------------------------------------------
@dataclass
class RunEstimate:
    """One run of a grid as the dry run prints it: whether it runs, and its estimated seconds by part (None: no rate
    measured for that part; ``borrowed``: the parts estimated from other methods' rates)."""

    spec: Any
    state: str
    runs: bool = False  # whether the sweep runs it (``grain_bench.sweep.will_run``)
    teacher: str = ""
    teacher_s: float | None = 0.0
    method_s: float | None = 0.0
    rest_s: float | None = 0.0
    borrowed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def total_s(self) -> float:
        return sum(value or 0.0 for value in (self.teacher_s, self.method_s, self.rest_s))


def estimate_runs(sweep, rates: RateBook | None = None) -> list[RunEstimate]:
    """Every run of ``sweep`` (a planned ``grain_bench.api.Sweep``) with what it would do and cost on this machine;
    reads the store, the teacher cache and the task's training split, writes nothing."""
    rates = rates if rates is not None else RateBook()
    machine = machine_key(sweep.harness.device)
    latest = sweep.store.latest() if os.path.isfile(sweep.store.path) else {}
    context = _Context(sweep, rates, machine)
    out = []
    for spec in sweep.specs:
        runs = will_run(spec, latest, sweep.request.retry_failed, sweep.request.rerun)
        estimate = RunEstimate(spec, _state(spec, latest.get(spec.run_id), runs), runs)
        if runs:
            context.fill(estimate)
        out.append(estimate)
    return out


def _state(spec, record, runs: bool) -> str:
    """What the sweep does with ``spec`` (``runs``), said with its ``record`` (None when not recorded yet)."""
    if record is None:
        return "to run" + (" (its cost model is profiled first)" if spec.target_speedup and not spec.cost_model else "")
    if runs:
        return "rerun" if record.ok else "rerun (failed)"
    return "recorded" if record.ok else "failed (skipped: --retry-failed reruns it)"


class _Context:
    """What the estimates of one grid share: the rates, the teachers cached or trained by an earlier run of the
    grid, and the training split sizes."""

    def __init__(self, sweep, rates: RateBook, machine: str):
        self.sweep, self.rates, self.machine = sweep, rates, machine
        self.teachers: set[str] = set()
        self.sizes: dict[tuple, int] = {}

    def fill(self, estimate: RunEstimate) -> None:
        from grain_bench.types import Recipe

        spec = estimate.spec
        recipe = Recipe.parse(spec.recipe)
        task, _ = self.sweep.harness.task_for(spec)
        examples = self._train_size(spec, task, recipe)
        work = work_key(spec.backbone, spec.task, recipe.max_length)
        self._teacher(estimate, task, recipe, examples, work)
        method_cls = self.sweep.harness.regs.methods.get(spec.method)
        method = method_cls.from_spec(spec.method_options, seed=spec.seed)
        parts = _method_examples(method_cls, method, recipe, examples)
        seconds = [self._seconds(estimate, work, f"{spec.method}.{part}", count) for part, count in parts.items()]
        estimate.method_s = None if None in seconds else sum(s or 0.0 for s in seconds)
        estimate.rest_s = self._seconds(estimate, work, f"{spec.method}.rest", 1)

    def _train_size(self, spec, task, recipe) -> int:
        import datasets

        key = (spec.task, spec.data, recipe.max_train_examples)
        if key not in self.sizes:
            shown = datasets.is_progress_bar_enabled()
            datasets.disable_progress_bars()  # a count, not work the user waits for
            try:
                self.sizes[key] = len(task.select("train", recipe.max_train_examples))
            finally:
                if shown:
                    datasets.enable_progress_bars()
        return self.sizes[key]

    def _teacher(self, estimate: RunEstimate, task, recipe, examples: int, work: str) -> None:
        from grain_bench.distill import steps_for
        from grain_bench.teachers import teacher_key

        spec = estimate.spec
        key = teacher_key(task, spec.data, spec.backbone, recipe, spec.seed)
        if self.sweep.harness.teachers.has(key):
            estimate.teacher, estimate.teacher_s = "cached", 0.0
        elif key in self.teachers:
            estimate.teacher, estimate.teacher_s = "shared", 0.0
        else:
            self.teachers.add(key)
            steps = steps_for(recipe.teacher_max_steps, recipe.teacher_epochs, examples, recipe.teacher_batch_size)
            estimate.teacher = f"trains ({steps} steps)"
            estimate.teacher_s = self._seconds(estimate, work, "teacher", steps * recipe.teacher_batch_size)

    def _seconds(self, estimate: RunEstimate, work: str, name: str, count: int) -> float | None:
        """``count`` x the rate of ``name``; another method's median when this one has none (borrowed)."""
        rate = self.rates.rate(self.machine, work, name)
        if rate is None and "." in name:
            part = name.split(".", 1)[1]
            others = [self.rates.rate(self.machine, work, other) for other in self.rates.names(self.machine, work)
                      if other.endswith(f".{part}")]
            known = [value for value in others if value is not None]
            if known:
                rate = statistics.median(known)
                estimate.borrowed.append(part)
        if rate is None:
            estimate.missing.append(name)
            return None
        return rate * count


def _method_examples(method_cls, method, recipe, examples: int) -> dict[str, int]:
    """The examples each phase of a method's run goes through, planned from the recipe."""
    from grain_bench.distill import steps_for

    if method_cls.calibrates:
        parts = {"calibration": min(recipe.calibration_examples, examples)}
        if method.retraining_steps():
            parts["distillation"] = method.retraining_steps() * recipe.batch_size
        return parts
    steps = steps_for(recipe.max_steps, recipe.epochs, examples, recipe.batch_size)
    return {"distillation": steps * recipe.batch_size * max(1, len(method.variants()))}


def report(estimates: list[RunEstimate], machine: str) -> str:
    """The dry run's printout: the grid with each run's state and estimate, then the total and what is unknown."""
    from tabulate import tabulate

    from grain_bench.leaderboard.render import seconds_text

    rows = []
    for item in estimates:
        if not item.runs:
            rows.append([item.spec.label(), item.state, "", "", ""])
            continue
        mark = "~" if item.borrowed else ""
        method = "?" if item.method_s is None else mark + seconds_text(item.method_s)
        teacher = item.teacher + ("" if item.teacher_s is not None else ", ?")
        known = item.total_s > 0 or not item.missing
        total = (mark + seconds_text(item.total_s) + (" + ?" if item.missing else "")) if known else "?"
        rows.append([item.spec.label(), item.state, teacher, method, total])
    lines = [tabulate(rows, headers=["run", "state", "teacher", "method", "estimate"], tablefmt="github")]
    lines += _summary(estimates, machine)
    return "\n".join(lines) + "\n"


def _summary(estimates: list[RunEstimate], machine: str) -> list[str]:
    from grain_bench.leaderboard.render import seconds_text

    todo = [item for item in estimates if item.runs]
    total = sum(item.total_s for item in todo)
    missing = sorted({name for item in todo for name in item.missing})
    # parts without a rate add nothing to the total: it is then a lower bound, or no estimate at all
    estimate = (f"estimated {seconds_text(total)}" if not missing else
                f"estimated at least {seconds_text(total)}" if total > 0 else "no estimate yet")
    lines = [f"{len(todo)} of {len(estimates)} runs would run: {estimate} of compute on {machine} (nothing was run "
             f"or written: this was a dry run)"]
    if missing:
        lines.append(f"no rate measured yet on this machine for {', '.join(missing)} (the '?' above): a finished run "
                     f"files its rates in {rates_path()}, and later estimates use them")
    if any(item.borrowed for item in todo):
        lines.append("~: estimated from other methods' rates on this work (this method has none of its own yet)")
    return lines
