"""Comparisons over run records: one row per task x method x options x density, mean +- std over seeds."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from grain_bench.types import RunRecord


def options_label(options: dict[str, Any]) -> str:
    """Stable short label of method options."""
    return ",".join(f"{k}={v}" for k, v in sorted(options.items())) if options else ""


def records_frame(records: list[RunRecord]) -> pd.DataFrame:
    """One row per ok record with the columns tables need."""
    rows = []
    for record in records:
        if not record.ok:
            continue
        spec = record.spec
        metric = record.primary_metric
        latency = {r.get("label"): r for r in record.latency}
        rows.append({
            "run_id": record.run_id, "task": spec["task"], "method": spec["method"],
            "options": options_label(spec.get("method_options", {})), "target_density": spec["target_density"],
            "seed": spec["seed"], "backbone": spec["backbone"], "recipe": spec["recipe"].get("name", "custom"),
            "recipe_json": json.dumps(spec["recipe"], sort_keys=True), "metric": metric,
            "score": record.scores.get(metric), "teacher": record.teacher_scores.get(metric),
            "density": record.density.get("achieved"), "encoder_params": record.params.get("encoder"),
            "flops_speedup": record.flops.get("predicted_speedup"),
            "speedup": (latency.get("compact") or {}).get("speedup"),
            "version": record.versions.get("grain-bench"),
        })
    return pd.DataFrame(rows)


def summary(records: list[RunRecord]) -> pd.DataFrame:
    """Mean/std over seeds per task, method, options and target density, with the teacher row and relative score."""
    frame = records_frame(records)
    if frame.empty:
        return frame
    keys = ["task", "method", "options", "target_density"]
    grouped = frame.groupby(keys, dropna=False, sort=False)
    out = grouped.agg(score_mean=("score", "mean"), score_std=("score", "std"), seeds=("seed", "nunique"),
                      density=("density", "mean"), encoder_params=("encoder_params", "mean"),
                      flops_speedup=("flops_speedup", "mean"), speedup=("speedup", "mean"),
                      metric=("metric", "first")).reset_index()
    teachers = frame.drop_duplicates(["task", "seed"]).groupby("task").agg(
        teacher_mean=("teacher", "mean"), teacher_std=("teacher", "std"), teacher_seeds=("seed", "nunique"),
        metric=("metric", "first")).reset_index()
    teacher_rows = teachers.rename(columns={"teacher_mean": "score_mean", "teacher_std": "score_std",
                                            "teacher_seeds": "seeds"})
    teacher_rows["method"] = "teacher"
    teacher_rows["options"] = ""
    teacher_rows["target_density"] = 1.0
    teacher_rows["density"] = 1.0
    out = pd.concat([teacher_rows, out], ignore_index=True)
    out = out.merge(teachers[["task", "teacher_mean"]], on="task", how="left")
    out["relative"] = out["score_mean"] / out["teacher_mean"]
    order = {"teacher": 0, "dense": 1}
    out["_order"] = out["method"].map(lambda m: order.get(m, 2))
    out = out.sort_values(["task", "_order", "target_density", "method", "options"],
                          ascending=[True, True, False, True, True], kind="stable")
    return out.drop(columns=["_order", "teacher_mean"]).reset_index(drop=True)
