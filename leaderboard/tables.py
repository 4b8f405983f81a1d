"""Read a results directory (never writing to it) and render its comparison: ``show`` and ``export``."""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field

from grain_bench.errors import GrainBenchError
from grain_bench.leaderboard.compare import Comparison, compare, describe_differences, problem_with
from grain_bench.leaderboard.render import exporter
from grain_bench.leaderboard.store import RecordStore
from grain_bench.records import SCHEMA_VERSION, RunRecord
from grain_bench.types import Recipe

AUTO = "auto"  # ``versus``: grain when the records have it


@dataclass
class Report:
    """Everything a table, plot or page shows about one results directory."""

    results_dir: str
    records: list[RunRecord]
    comparison: Comparison
    caption: str
    notes: list[str] = field(default_factory=list)
    errors: list[RunRecord] = field(default_factory=list)


@dataclass(frozen=True)
class Only:
    """A selection of a store's records beside ``task``: one backbone, one recipe (its name, as tables show it:
    ``quick``, ``quick+custom``). A store holding two backbones compares each on its own without ``--allow-mixed``."""

    backbone: str | None = None
    recipe: str | None = None

    def keeps(self, record: RunRecord) -> bool:
        """Whether ``record`` is in the selection."""
        return ((self.backbone is None or record.spec.backbone == self.backbone)
                and (self.recipe is None or record.spec.recipe.get("name", "custom") == self.recipe))

    def check(self, latest: dict[str, RunRecord], path: str) -> None:
        """Raise ``GrainBenchError`` for a backbone or recipe none of the records has, naming those there."""
        for name, value, present in (
                ("backbone", self.backbone, {r.spec.backbone for r in latest.values()}),
                ("recipe", self.recipe, {str(r.spec.recipe.get("name", "custom")) for r in latest.values()})):
            if value is not None and latest and value not in present:
                raise GrainBenchError(f"no records with {name} {value!r} in {path}; {name}s there: "
                                      f"{', '.join(sorted(present))}")


def load_records(results_dir: str, task: str | None = None, run_ids=None, only: Only | None = None
                 ) -> tuple[list[RunRecord], list[str]]:
    """The latest record of every run in ``results_dir`` (read-only; ``task`` and ``only`` select), and notes on
    lines or records left out."""
    store = RecordStore(results_dir)
    if not os.path.isdir(results_dir):
        raise GrainBenchError(f"results directory {results_dir!r} does not exist; pass the --results of a "
                              f"`grain-bench run`")
    if not os.path.isfile(store.path):
        raise GrainBenchError(f"no records in {results_dir!r} (expected a file {store.path}); run `grain-bench run` "
                              f"first")
    try:
        latest = store.latest()
    except OSError as exc:
        raise GrainBenchError(f"cannot read {store.path}: {exc}") from None
    if store.outdated:
        raise GrainBenchError(f"{store.path} holds {len(store.outdated)} record(s) of an older schema than this "
                              f"grain-bench reads ({SCHEMA_VERSION}); upgrade them once with `grain-bench leaderboard "
                              f"upgrade --results {results_dir}` (the old file is kept beside)")
    if run_ids is None:  # a whole store asked for (not a sweep's own runs, which may all wait aside)
        _check_selection(store, latest, task)
        (only or Only()).check(latest, store.path)
    notes = [f"skipped unreadable {p}" for p in store.problems]
    from grain_bench.leaderboard.store import load_measurements, with_measurement

    measurements = load_measurements(results_dir)  # quiet re-timings replace the runs' own latency figures
    records = []
    for record in latest.values():
        reason = problem_with(record)
        if reason is not None:
            notes.append(f"skipped malformed record {record.run_id}: {reason}")
            continue
        if run_ids is not None and record.run_id not in run_ids:
            continue
        if (task is not None and record.spec.task != task) or (only is not None and not only.keeps(record)):
            continue
        records.append(with_measurement(record, measurements.get(record.run_id)))
    usable = len(latest) - sum(1 for note in notes if note.startswith("skipped malformed"))
    if usable == 0 and notes:
        raise GrainBenchError(f"{store.path} has no usable record: " + "; ".join(notes[:5])
                              + (f" (and {len(notes) - 5} more problems)" if len(notes) > 5 else ""))
    return records, notes


def _check_selection(store: RecordStore, latest: dict[str, RunRecord], task: str | None) -> None:
    """Raise ``GrainBenchError`` for a store with no record at all, or a ``task`` that none of its records has (with
    a did-you-mean among the tasks it holds): an empty table would read as a result."""
    if not latest and not store.problems:
        raise GrainBenchError(f"no records in {store.path} yet (the file is empty); run `grain-bench run --results "
                              f"{store.directory}` first")
    present = sorted({record.spec.task for record in latest.values()})
    if task is not None and latest and task not in present:
        close = difflib.get_close_matches(task, present, n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise GrainBenchError(f"no records of task {task!r} in {store.path}.{hint} Tasks there: {', '.join(present)}")


def caption_for(records, comparison: Comparison | None = None) -> str:
    """Recipe, backbone and environment of the records, for the table caption."""
    ok = [r for r in records if r.ok]
    recipes = {tuple(sorted(r.spec.recipe.items())) for r in ok}
    backbones = sorted({r.spec.backbone for r in ok})
    parts = []
    if len(recipes) == 1:
        try:
            parts.append(Recipe.parse(dict(next(iter(recipes)))).caption())
        except (GrainBenchError, TypeError, ValueError):  # a recipe field this version does not know
            parts.append(f"recipe {dict(next(iter(recipes))).get('name', 'custom')}")
    elif recipes:
        parts.append(f"{len(recipes)} different recipes")
    if backbones:
        parts.append(f"backbone {', '.join(backbones)}")
    versions = sorted({str(r.versions.get("grain-bench", "?")) for r in ok})
    if versions:
        parts.append(f"grain-bench {', '.join(versions)}")
    if ok:
        parts.append("cost: the method's compute seconds for its pruned model (calibration and distillation, as each "
                     "run ran; the shared teacher's fine-tuning, compaction, timing and scoring left out)")
    if comparison is not None and comparison.latency_environments:
        envs = sorted(set(comparison.latency_environments.values()))
        parts.append("latency measured on " + "; ".join(envs))
    else:
        envs = sorted({f"{r.environment.get('gpu') or r.environment.get('device', '?')}, "
                       f"{r.environment.get('torch_threads', '?')} threads" for r in ok})
        if envs:
            parts.append("run on " + "; ".join(envs) + " (no latency measured: speedups are FLOPs-predicted)")
    if comparison is not None and comparison.differences:
        parts.append("setups differ in " + describe_differences(comparison.differences))
    if comparison is not None:
        parts += [f"WARNING {warning}" for warning in comparison.teacher_warnings]
    return "; ".join(parts)


def build_report(results_dir: str, task: str | None = None, run_ids=None, allow_mixed: bool = False,
                 versus: str | None = AUTO, only: Only | None = None) -> Report:
    """Load, check and compare the records of ``results_dir``; raises ``GrainBenchError`` on unusable input.

    ``versus``: the method every row is compared with by a paired confidence interval (``leaderboard.paired``);
    ``AUTO`` picks ``grain`` when present, None leaves the comparison out."""
    from grain_bench.leaderboard.paired import add_paired_intervals, default_reference

    records, notes = load_records(results_dir, task, run_ids, only)
    errors = [r for r in records if not r.ok]
    comparison = compare(records, allow_mixed=allow_mixed)
    notes = notes + comparison.notes
    reference = default_reference(comparison.table) if versus == AUTO else versus
    comparison.table, paired_notes = add_paired_intervals(comparison.table, records, results_dir, reference)
    notes += paired_notes
    if errors:
        notes.append(f"{len(errors)} run(s) ended in error (see records.jsonl)")
    return Report(results_dir, records, comparison, caption_for(records, comparison), notes, errors)


def show_table(results_dir: str, fmt: str = "markdown", task: str | None = None, run_ids=None,
               allow_mixed: bool = False, versus: str | None = AUTO, regs=None, only: Only | None = None
               ) -> tuple[str, list[str]]:
    """The rendered comparison of ``results_dir`` (optionally one task, or only ``run_ids``) and its notes.

    The notes are returned apart (callers print them on stderr) so that the text stays a clean document; JSON and
    LaTeX also carry them inside. ``regs``: where ``fmt`` is looked up (default: the process-wide registries)."""
    writer = exporter(fmt, regs)
    report = build_report(results_dir, task, run_ids, allow_mixed, versus, only)
    table = report.comparison.table
    notes = list(report.notes)
    if table.empty and not writer.renders_empty:
        empty = "no successful runs" + (f" for task {task}" if task else "")
        text = "" if writer.data_only else f"({empty})\n"  # a CSV on stdout stays a CSV: the note goes to stderr
        notes.append(empty)
    else:
        text = writer(table, report.caption, report.notes)  # formats with comments embed the notes
    return text, notes


def export_table(results_dir: str, fmt: str, out: str | None = None, task: str | None = None,
                 allow_mixed: bool = False, versus: str | None = AUTO, regs=None, only: Only | None = None
                 ) -> tuple[str, list[str]]:
    """The rendered table (written to ``out`` when given, never inside the records file) and the notes."""
    writer = exporter(fmt, regs)
    report = build_report(results_dir, task, allow_mixed=allow_mixed, versus=versus, only=only)
    if report.comparison.table.empty:
        raise GrainBenchError(f"no successful runs in {results_dir!r}" + (f" for task {task!r}" if task else ""))
    text = writer(report.comparison.table, report.caption, report.notes)
    if writer.appends_notes and report.notes:
        text += "\n" + "".join(f"note: {n}\n" for n in report.notes)
    if out is not None:
        guard_output(out, results_dir)
        parent = os.path.dirname(os.path.abspath(out))
        if not os.path.isdir(parent):
            raise GrainBenchError(f"cannot write {out!r}: directory {parent!r} does not exist")
        try:
            with open(out, "w", encoding="utf-8") as handle:
                handle.write(text)
        except OSError as exc:
            raise GrainBenchError(f"cannot write {out!r}: {exc}") from None
    return text, report.notes


def guard_output(out: str, results_dir: str) -> None:
    """Refuse an output path that is the results directory itself or one of its files."""
    target = os.path.realpath(out)
    results = os.path.realpath(results_dir)
    if os.path.commonpath([target, results]) == results:
        raise GrainBenchError(f"refusing to write {out!r} into the results directory {results_dir!r}; "
                              "choose an output outside it")
