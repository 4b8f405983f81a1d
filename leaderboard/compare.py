"""Comparisons over run records: one row per task x method x options x density, mean +- std over seeds.

Records of one task are only compared when they were made the same way. ``differences`` finds the spec fields and
versions that vary within a task (grain-bench version, recipe, backbone, task version, data); ``check_comparable``
refuses such a selection with a message that says what differs, unless the caller allows mixing, in which case every
row carries a ``setup`` label and rows of different setups are never averaged together. Measured latency is compared
only within one environment (the machine plus the measurement settings): the most common one per task; the others are
left out with a note.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from grain_bench.errors import GrainBenchError
from grain_bench.quality import converged
from grain_bench.records import LatencyEntry, RunRecord

GROUP_KEYS = ["task", "setup", "method", "options", "target_density"]
#: rows that are references, never contenders (no bold, no fronts)
REFERENCE_ROWS = ("teacher", "chance")
TEACHER_WARNING = "the teacher did not learn this task under this recipe: rows do not compare methods"
# what must be equal across a comparison: field name -> where it comes from
SETUP_FIELDS = ("grain-bench", "recipe", "backbone", "task_version", "data")


class MixedRecordsError(GrainBenchError):
    """The records were made with different versions, recipes, backbones or task versions."""


def target_label(row) -> str:
    """A row's target as tables show it: its density (``0.05``) or, for a run pruned to a speed, the speedup
    (``8x``)."""
    from grain_bench.types import target_text

    speedup = row.get("target_speedup") if hasattr(row, "get") else None
    if isinstance(speedup, (int, float)) and math.isfinite(speedup):
        return target_text(row["target_density"], speedup, row.get("cost_kind") or "")
    return target_text(row["target_density"], None)


def target_key(row) -> tuple[float, float | None]:
    """What a row's target is, hashable: its density and its target speedup (None for a density target)."""
    speedup = row.get("target_speedup") if hasattr(row, "get") else None
    if isinstance(speedup, (int, float)) and math.isfinite(speedup):
        return float(row["target_density"]), float(speedup)
    return float(row["target_density"]), None


def group_keys(frame: pd.DataFrame) -> list[str]:
    """What rows are grouped by: ``GROUP_KEYS``, and ``target_speedup`` when some run was pruned to a speed."""
    return GROUP_KEYS + (["target_speedup", "cost_kind"] if "target_speedup" in frame else [])


def options_label(options: dict[str, Any]) -> str:
    """Stable short label of a spec's method options (stored without the values equal to their defaults), sorted."""
    return ",".join(f"{k}={v}" for k, v in sorted(options.items())) if options else ""


def recipe_label(recipe: dict[str, Any]) -> str:
    """Recipe name plus a short hash of its content, so two edits of one named recipe are told apart."""
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:6]
    return f"{recipe.get('name', 'custom')}#{digest}"


def problem_with(record: RunRecord) -> str | None:
    """Why an ``ok`` record cannot be compared, or None when it can (reading checked every field's type already)."""
    if record.ok:
        if record.primary_metric not in record.scores:
            return f"primary metric {record.primary_metric!r} is not among the scores"
        value = record.scores[record.primary_metric]
        if value is None and f"scores.{record.primary_metric}" not in record.nonfinite:
            return "the primary score is null"  # a non-finite score is shown, never ranked
    return None


def setup_values(record: RunRecord) -> dict[str, str]:
    """The values of ``SETUP_FIELDS`` for one record."""
    spec = record.spec
    return {"grain-bench": str(record.versions.get("grain-bench", "?")), "recipe": recipe_label(spec.recipe),
            "backbone": spec.backbone, "task_version": f"{spec.task} v{spec.task_version}", "data": spec.data}


def differences(records: list[RunRecord]) -> dict[str, Counter]:
    """Setup fields with more than one value among the records of one task, with run counts.

    Comparability is a per-task question: rows of different tasks never compete, so tasks run with their own recipe
    values (a longer ``max_length`` for SQuAD, say) or different versions do not make a selection mixed."""
    out: dict[str, Counter] = {}
    for name in SETUP_FIELDS:
        by_task: dict[str, Counter] = {}
        for record in records:
            by_task.setdefault(record.spec.task, Counter())[setup_values(record)[name]] += 1
        merged: Counter = Counter()
        for counts in by_task.values():
            if len(counts) > 1:
                merged.update(counts)
        if merged:
            out[name] = merged
    return out


def describe_differences(diffs: dict[str, Counter]) -> str:
    """One line per differing field: its values and how many runs have each."""
    def runs(count: int) -> str:
        return f"{count} run{'s' if count != 1 else ''}"

    return "; ".join(f"{name}: " + ", ".join(f"{value} ({runs(count)})" for value, count in sorted(counts.items()))
                     for name, counts in diffs.items())


def check_comparable(records: list[RunRecord], allow_mixed: bool = False) -> dict[str, Counter]:
    """Raise ``MixedRecordsError`` when records differ in version, recipe, backbone or task version (unless allowed)."""
    diffs = differences(records)
    if diffs and not allow_mixed:
        raise MixedRecordsError(
            "the results mix runs that are not comparable: " + describe_differences(diffs)
            + ". Select one setup (--task, --backbone NAME, --recipe NAME, or separate results directories), or pass "
              "--allow-mixed to show each setup in its own rows, labelled by what differs")
    return diffs


def latency_environment(record: RunRecord, entry: LatencyEntry) -> str:
    """Label of the machine and the measurement settings of one latency entry."""
    env = record.environment
    device = env.get("gpu") or entry.device or env.get("device", "?")
    parts = [str(device), f"{entry.threads} threads", entry.dtype, f"batch {entry.batch} x {entry.seq_len}"]
    if entry.mode:
        parts.append(entry.mode)
    # the CPU model name; older records have only processor (empty on Linux), then the platform string
    machine = env.get("cpu") or env.get("processor") or env.get("platform", "?")
    source = "re-timed by grain-bench measure" if entry.source else "timed during the run"
    return ", ".join(parts) + f" on {machine} ({env.get('cpu_count', '?')} CPUs), {source}"


def _number(value: Any) -> float:
    """A finite number as float; anything else (missing, null, a non-finite value) as NaN, which no table ranks."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return math.nan


def method_seconds(record: RunRecord) -> float:
    """What the method's pruned model cost to make, in compute seconds: its calibration and distillation phases
    (``method_info.phase_seconds``; ``train_seconds`` in records older than the phases, where it is the distillation
    alone). The shared teacher's fine-tuning, compaction, timing and scoring are the same work for every method and
    are left out."""
    phases = record.method_info.get("phase_seconds")
    if isinstance(phases, dict) and phases:
        return float(sum(phases[name] for name in ("calibration", "distillation")
                         if isinstance(phases.get(name), (int, float))))
    return _number(record.method_info.get("train_seconds"))


#: what the per-setup teacher summary knows beside its score: the split's chance score and whether a teacher collapsed
TEACHER_FACTS = ["chance_mean", "teacher_collapsed"]


#: per table row, how many seeds each verdict flagged (``render.flag_text`` words them); those of ``NOT_RESULTS`` make a
#: row no result: never best (``render.best_mask``), never on a front
FLAG_COUNTS = ("collapsed_seeds", "noisy_seeds", "unconverged_seeds")
NOT_RESULTS = ("collapsed_seeds", "unconverged_seeds")


def is_result(table: pd.DataFrame) -> pd.Series:
    """Per row: no seed collapsed and no learned-mask seed missed its target (a table without a column has none)."""
    out = pd.Series(True, index=table.index)
    for column in NOT_RESULTS:
        if column in table:
            out &= table[column].fillna(0) == 0
    return out


def expected_at_freeze(record: RunRecord) -> float | None:
    """A learned-mask record's expected density at the freeze step (``density.expected_at_freeze``). CoFi records
    from before that field have the expected density its last Lagrangian step logged (``method_info``), which is the
    freeze step's forward pass, one gate update before the freeze."""
    if record.density.expected_at_freeze is not None:
        return record.density.expected_at_freeze
    logged = record.method_info.get("expected_density") if record.spec.method == "cofi" else None
    return float(logged) if isinstance(logged, (int, float)) else None


def near_zero_share(record: RunRecord) -> float | None:
    """The share of the dense cost a learned-mask method's landing spent on units brought back at a near-zero scale
    (``method_info.landing``), or None where the record does not say."""
    landing = record.method_info.get("landing")
    value = landing.get("near_zero_share") if isinstance(landing, dict) else None
    return float(value) if isinstance(value, (int, float)) else None


def records_frame(records: list[RunRecord], diffs: dict[str, Counter] | None = None) -> pd.DataFrame:
    """One row per ok record with the columns tables need; ``setup`` names the differing fields' values."""
    diffs = differences(records) if diffs is None else diffs
    rows = []
    for record in records:
        if not record.ok:
            continue
        spec = record.spec
        metric = record.primary_metric or ""
        compact = record.latency_of("compact")
        values = setup_values(record)
        rows.append({
            "run_id": record.run_id, "task": spec.task, "method": spec.method,
            "options": options_label(spec.method_options), "target_density": float(spec.target_density),
            "setup": ", ".join(values[name] for name in diffs), "seed": spec.seed,
            "backbone": spec.backbone, "recipe": spec.recipe.get("name", "custom"),
            "recipe_json": json.dumps(spec.recipe, sort_keys=True), "metric": metric,
            "score": _number(record.scores.get(metric)), "teacher": _number(record.teacher_scores.get(metric)),
            "higher": bool(record.higher_is_better.get(metric, True)),
            "chance": _number(record.chance_scores.get(metric)),
            "collapsed": record.quality.collapsed, "teacher_collapsed": record.teacher_quality.collapsed,
            "unconverged": converged(expected_at_freeze(record), spec.target_density,
                                     near_zero_share(record)) is False,
            "density": _number(record.density.encoder_params), "encoder_params": _number(record.params.encoder),
            "flops_speedup": _number(record.flops.predicted_speedup),
            "speedup": _number(compact.speedup if compact else None),
            "latency_env": latency_environment(record, compact) if compact else None,
            "noisy": bool(compact and any(entry.noisy for entry in (compact, record.latency_of("dense")) if entry)),
            "version": record.versions.get("grain-bench"),
            "cost_s": method_seconds(record),
            **({"target_speedup": spec.target_speedup, "cost_kind": (spec.cost_model or "").partition(":")[0]}
               if spec.target_speedup else {}),
        })
    return pd.DataFrame(rows)


@dataclass
class Comparison:
    """The summary table of a selection of records, with what a reader must know about it."""

    table: pd.DataFrame
    frame: pd.DataFrame
    differences: dict[str, Counter] = field(default_factory=dict)
    #: ``setup_label(task, setup)`` -> the latency environment compared there
    latency_environments: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    teacher_warnings: list[str] = field(default_factory=list)  # "task: the teacher did not learn ..." (captions)


def setup_label(task: str, setup: str) -> str:
    """A task, and its setup where the store mixes setups: ``tweets`` or ``tweets (0.0.9)``."""
    return task + (f" ({setup})" if setup else "")


def _pareto(points: list[tuple[float, float]], lower_x: bool, higher_y: bool) -> list[bool]:
    """Which points no other point beats on both coordinates (NaN points are never on the front)."""
    out = []
    for i, (x, y) in enumerate(points):
        if math.isnan(x) or math.isnan(y):
            out.append(False)
            continue
        dominated = False
        for j, (x2, y2) in enumerate(points):
            if i == j or math.isnan(x2) or math.isnan(y2):
                continue
            better_x = x2 <= x if lower_x else x2 >= x
            better_y = y2 >= y if higher_y else y2 <= y
            strictly = (x2 != x) or (y2 != y)
            if better_x and better_y and strictly:
                dominated = True
                break
        out.append(not dominated)
    return out


def compare(records: list[RunRecord], allow_mixed: bool = False) -> Comparison:
    """Group ok records, average over seeds, add teacher rows, relative scores and Pareto fronts."""
    diffs = check_comparable([r for r in records if r.ok], allow_mixed)
    frame = records_frame(records, diffs)
    notes: list[str] = []
    envs: dict[str, str] = {}
    if frame.empty:
        return Comparison(frame, frame, diffs, envs, notes, [])
    # latency: keep only the most common measurement environment per task and setup (each setup of a mixed store
    # keeps its own: setups differ by what they were run with, often the machine too)
    for (task, setup), group in frame.groupby(["task", "setup"], sort=True):
        counts = Counter(e for e in group["latency_env"] if isinstance(e, str) and e)  # NaN: a run never timed
        if not counts:
            continue
        where = setup_label(task, setup)
        chosen = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[0][0]
        envs[where] = chosen
        others = group["latency_env"].notna() & (group["latency_env"] != chosen)
        if others.any():
            frame.loc[others[others].index, "speedup"] = math.nan
            notes.append(f"{where}: measured speedups of {int(others.sum())} run(s) from other environments "
                         f"({'; '.join(sorted(set(group.loc[others, 'latency_env'])))}) are left out; "
                         f"speedups are compared only within {chosen}")
    unscored = frame[frame["score"].isna()]
    if not unscored.empty:
        notes.append(f"{len(unscored)} run(s) have no finite score ({', '.join(sorted(unscored['run_id']))}); "
                     f"they are left out of means, seed counts and fronts")
    grouped = frame.groupby(group_keys(frame), dropna=False, sort=False)
    # ``seeds`` counts the runs with a finite score: the ones the mean is over
    out = grouped.agg(score_mean=("score", "mean"), score_std=("score", "std"), seeds=("score", "count"),
                      collapsed_seeds=("collapsed", "sum"), noisy_seeds=("noisy", "sum"),
                      unconverged_seeds=("unconverged", "sum"), higher=("higher", "first"),
                      density=("density", "mean"), encoder_params=("encoder_params", "mean"),
                      flops_speedup=("flops_speedup", "mean"), speedup=("speedup", "mean"),
                      speedup_std=("speedup", "std"), cost_s=("cost_s", "mean"), metric=("metric", "first"),
                      run_ids=("run_id", lambda ids: ",".join(ids))).reset_index()
    teachers = frame.drop_duplicates(["task", "setup", "seed"]).groupby(["task", "setup"], sort=False).agg(
        teacher_mean=("teacher", "mean"), teacher_std=("teacher", "std"), teacher_seeds=("seed", "nunique"),
        metric=("metric", "first"), higher=("higher", "first"), chance_mean=("chance", "mean"),
        teacher_collapsed=("teacher_collapsed", "any")).reset_index()
    teacher_rows = teachers.drop(columns=TEACHER_FACTS).rename(
        columns={"teacher_mean": "score_mean", "teacher_std": "score_std", "teacher_seeds": "seeds"})
    teacher_rows = teacher_rows.dropna(subset=["score_mean"])  # rows without a teacher (evaluated models): none
    teacher_rows["method"] = "teacher"
    teacher_rows["options"] = ""
    teacher_rows["target_density"] = 1.0
    teacher_rows["density"] = 1.0
    teacher_rows["flops_speedup"] = 1.0
    teacher_rows["run_ids"] = ""
    for column in FLAG_COUNTS:
        teacher_rows[column] = 0
    # the trivial predictor on the scored split (majority class, mean label, all O, first context token)
    chance_rows = frame.groupby(["task", "setup"], sort=False).agg(
        score_mean=("chance", "mean"), metric=("metric", "first"), higher=("higher", "first")).reset_index()
    chance_rows = chance_rows.dropna(subset=["score_mean"])
    chance_rows = chance_rows.assign(method="chance", options="", target_density=1.0, density=math.nan,
                                     flops_speedup=math.nan, run_ids="", seeds=0, **dict.fromkeys(FLAG_COUNTS, 0))
    out = pd.concat([teacher_rows, chance_rows, out], ignore_index=True)
    out = out.merge(teachers[["task", "setup", "teacher_mean", *TEACHER_FACTS]], on=["task", "setup"], how="left")
    out["relative"] = (out["score_mean"] / out["teacher_mean"]).where(_teacher_learned(out))
    for column in ("pareto_density", "pareto_flops", "pareto_latency"):
        out[column] = False
    contenders = out[~out["method"].isin(REFERENCE_ROWS)]
    for _, group in contenders.groupby(["task", "setup"], sort=False):
        higher = bool(group["higher"].iloc[0])
        scores = group["score_mean"].where(is_result(group)).tolist()  # a row that is no result: never on a front
        for column, xs, lower in (("pareto_density", group["density"], True),
                                  ("pareto_flops", group["flops_speedup"], False),
                                  ("pareto_latency", group["speedup"], False)):
            front = _pareto(list(zip(xs.astype(float).tolist(), scores)), lower_x=lower, higher_y=higher)
            out.loc[group.index, column] = front
    order = {"teacher": 0, "chance": 1, "dense": 2}
    out["_order"] = out["method"].map(lambda m: order.get(m, 3))
    # density rows first, then the speed targets from the lowest
    out = out.sort_values(["task", "setup", "_order", *(["target_speedup"] if "target_speedup" in out else []),
                           "target_density", "method", "options"],
                          ascending=[True, True, True, *([True] if "target_speedup" in out else []), False, True,
                                     True], kind="stable", na_position="first")
    table = out.drop(columns=["_order", "teacher_mean", *TEACHER_FACTS]).reset_index(drop=True)
    for column in FLAG_COUNTS:
        table[column] = table[column].fillna(0).astype(int)
    warnings = [f"{setup_label(row.task, row.setup)}: {TEACHER_WARNING}"
                for row in teachers.sort_values(["task", "setup"]).itertuples() if row.teacher_collapsed]
    return Comparison(table, frame, diffs, envs, notes, warnings)


def _teacher_learned(out: pd.DataFrame) -> pd.Series:
    """Per table row, whether a share of the teacher's score means something: the teacher's mean is positive (a
    correlation can be <= 0), above the chance score of the split, and no seed's teacher collapsed. A teacher that
    learned nothing makes "35529% of the teacher" out of a near-zero score."""
    beats_chance = out["chance_mean"].isna() | (out["teacher_mean"] > out["chance_mean"])
    return (out["teacher_mean"] > 0) & beats_chance & ~out["teacher_collapsed"].fillna(False).astype(bool)


def summary(records: list[RunRecord], allow_mixed: bool = False) -> pd.DataFrame:
    """Mean/std over seeds per task, setup, method, options and target density, with teacher rows and relative score."""
    return compare(records, allow_mixed).table
