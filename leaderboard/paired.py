"""Paired confidence intervals of each row's score difference against a reference method (``--versus``).

A row (a method, options and target density; its seeds) is paired with the reference method's runs of the same task,
setup and seed, which were distilled from the same teacher and scored on the same examples: at the same target
density when the reference has one, else at its only density (``dense``). Both runs' stored per-example statistics
(``grain_bench.predictions``) go into a paired bootstrap (``grain_bench.significance``): the difference is the mean
over the paired seeds, the interval a 95% percentile interval over resampled examples. Imports no torch.
"""

from __future__ import annotations

import math
from collections import defaultdict

import pandas as pd

from grain_bench.leaderboard.compare import target_key
from grain_bench.predictions import load_predictions
from grain_bench.records import RunRecord
from grain_bench.significance import paired_bootstrap

COLUMNS = ("versus", "diff", "diff_low", "diff_high", "diff_seeds")


def default_reference(table: pd.DataFrame) -> str | None:
    """``grain`` when the table has it, else None (no comparison column)."""
    methods = set(table["method"]) if not table.empty else set()
    return "grain" if "grain" in methods else None


def add_paired_intervals(table: pd.DataFrame, records: list[RunRecord], results_dir: str, versus: str | None,
                         resamples: int = 1000) -> tuple[pd.DataFrame, list[str]]:
    """``table`` with the columns of ``COLUMNS`` filled where a row can be paired with ``versus``; notes."""
    table = table.copy()
    table["versus"], table["diff_seeds"] = None, 0
    for column in ("diff", "diff_low", "diff_high"):
        table[column] = math.nan
    if versus is None or table.empty:
        return table, []
    if versus not in set(table["method"]):
        return table, [f"no runs of method {versus!r} to compare with (--versus): no paired intervals"]
    by_id = {r.run_id: r for r in records}
    references = _references(table, by_id, versus)
    documents: dict[str, dict | None] = {}
    problems: list[str] = []  # malformed predictions files: skipped, each with a note

    def stats(run_id: str):
        record = by_id.get(run_id)
        if run_id not in documents:
            documents[run_id] = load_predictions(results_dir, record.predictions, record, problems) \
                if record and record.predictions else None
        doc = documents[run_id]
        return (doc.get("stat_kind"), doc.get("stats")) if doc and "stats" in doc else (None, None)

    missing = 0
    for index, row in table.iterrows():
        if row["method"] in ("teacher",) or not row.get("run_ids"):
            continue
        if row["method"] == versus and row["options"] == "":
            table.at[index, "versus"] = "reference"
            continue
        pairs: list[tuple] = []
        kinds: set[str] = set()
        for run_id in str(row["run_ids"]).split(","):
            seed = by_id[run_id].spec.seed
            reference = references.get((row["task"], row["setup"], seed, target_key(row)))
            kind, mine = stats(run_id)
            ref_kind, theirs = stats(reference) if reference else (None, None)
            if mine is None or theirs is None or kind != ref_kind or len(mine) != len(theirs):
                pairs = []
                break
            pairs.append((mine, theirs))
            kinds.add(kind)
        if not pairs:
            missing += 1
            continue
        result = paired_bootstrap(pairs, kinds.pop(), resamples=resamples)
        table.at[index, "versus"] = versus
        table.at[index, "diff"], table.at[index, "diff_low"], table.at[index, "diff_high"] = (
            result.difference, result.low, result.high)
        table.at[index, "diff_seeds"] = result.seeds
    notes = list(problems)
    if missing:
        notes.append(f"{missing} row(s) have no paired interval against {versus} (no {versus} run at the same seed "
                     f"and density, or no stored predictions: runs with --no-predictions or from before they were "
                     f"stored)")
    return table, notes


def _references(table: pd.DataFrame, by_id: dict[str, RunRecord], versus: str) -> dict[tuple, str]:
    """(task, setup, seed, target) -> the reference run to pair with (default options preferred; ``target_key``: the
    density, or the speedup of a run pruned to a speed)."""
    rows = table[(table["method"] == versus) & table["run_ids"].astype(bool)]
    rows = rows.sort_values("options", key=lambda s: s != "", kind="stable")  # default options first
    found: dict[tuple, str] = {}
    targets: dict[tuple, set] = defaultdict(set)
    for _, row in rows.iterrows():
        for run_id in str(row["run_ids"]).split(","):
            seed = by_id[run_id].spec.seed
            found.setdefault((row["task"], row["setup"], seed, target_key(row)), run_id)
            targets[(row["task"], row["setup"], seed)].add(target_key(row))
    # a reference with one target (dense) serves every target
    for (task, setup, seed), values in targets.items():
        if len(values) == 1:
            only = found[(task, setup, seed, next(iter(values)))]
            for _, other in table[table["task"] == task].iterrows():
                found.setdefault((task, setup, seed, target_key(other)), only)
    return found
