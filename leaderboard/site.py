"""The static leaderboard page: one self-contained ``index.html`` (inline CSS and JS, plots as data URIs).

The page needs no network: it opens from a file. Next to it go the plots as SVG and PNG files (for download) and
``leaderboard.json`` (the same rows as ``export --format json``). Every table sorts by a click on its header; every row
has a details box with the method options, recipe, versions, environment and the runs behind it.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from typing import Any

import pandas as pd

from grain_bench.errors import GrainBenchError
from grain_bench.leaderboard.compare import TEACHER_WARNING, setup_label, target_label
from grain_bench.leaderboard.render import (
    best_mask,
    difference_text,
    flag_text,
    paired_reference,
    render_json,
    seconds_text,
)
from grain_bench.leaderboard.tables import AUTO, Report, build_report, guard_output

CSS = """
:root { --fg: #1d2330; --muted: #5b6475; --line: #d9dee8; --accent: #2f5fb3; --best: #e8f0ff; --head: #f4f6fa; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--fg);
       margin: 0 auto; max-width: 1180px; padding: 24px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 28px 0 8px; }
.caption, .meta { color: var(--muted); margin: 4px 0; }
.notes { background: #fff6e0; border: 1px solid #f0d48a; border-radius: 6px; padding: 8px 12px; margin: 12px 0; }
.notes li { margin: 2px 0; }
table.board { border-collapse: collapse; width: 100%; margin: 8px 0 4px; font-variant-numeric: tabular-nums; }
table.board th, table.board td { border-bottom: 1px solid var(--line); padding: 6px 8px; text-align: right;
                                  vertical-align: top; }
table.board th { background: var(--head); cursor: pointer; user-select: none; white-space: nowrap; position: sticky;
                 top: 0; }
table.board th.text, table.board td.text { text-align: left; }
table.board td:not(.text) { white-space: nowrap; }
table.board th::after { content: " \\2195"; color: #9aa3b5; font-size: 11px; }
table.board th[aria-sort="ascending"]::after { content: " \\25B2"; color: var(--accent); }
table.board th[aria-sort="descending"]::after { content: " \\25BC"; color: var(--accent); }
table.board th.nosort { cursor: default; }
table.board th.nosort::after { content: ""; }
table.board tr.teacher td { color: var(--muted); font-style: italic; }
table.board tr.collapsed td { color: #9a3b2f; }
table.board td.flag { font-weight: 600; color: #9a3b2f; }
p.warning { color: #9a3b2f; font-weight: 600; margin: 4px 0; }
td.best { font-weight: 700; background: var(--best); }
td.front span { display: inline-block; min-width: 16px; padding: 0 4px; margin-right: 2px; border-radius: 3px;
                background: #e3f4e8; color: #1f6b35; font-size: 12px; text-align: center; }
details summary { cursor: pointer; color: var(--accent); }
details { position: relative; }
details dl { position: absolute; right: 0; top: 20px; z-index: 5; background: #fff; border: 1px solid var(--line);
             border-radius: 6px; box-shadow: 0 4px 14px rgba(0, 0, 0, .15); padding: 8px 12px; margin: 0;
             text-align: left; width: 480px; max-width: 80vw; font-size: 12px; white-space: normal; }
details dt { font-weight: 600; margin-top: 4px; }
details dd { margin: 0 0 0 8px; word-break: break-word; }
details code { font-size: 11px; }
.legend { color: var(--muted); font-size: 12px; }
figure { margin: 16px 0; }
figure img { max-width: 100%; border: 1px solid var(--line); border-radius: 6px; }
figcaption { color: var(--muted); font-size: 12px; }
"""

JS = """
(function () {
  function key(cell) {
    var raw = cell.getAttribute('data-sort');
    if (raw === null) raw = cell.textContent.trim();
    var num = parseFloat(raw);
    return (raw !== '' && !isNaN(num) && isFinite(raw)) ? {n: num} : {s: raw.toLowerCase()};
  }
  function compare(a, b) {
    var missingA = (a.s === '' || a.s === '-'), missingB = (b.s === '' || b.s === '-');
    if (missingA || missingB) return missingA === missingB ? 0 : (missingA ? 1 : -1);
    if (a.n !== undefined && b.n !== undefined) return a.n - b.n;
    var sa = a.n !== undefined ? String(a.n) : a.s, sb = b.n !== undefined ? String(b.n) : b.s;
    return sa < sb ? -1 : (sa > sb ? 1 : 0);
  }
  function sortBy(table, column, th) {
    var body = table.tBodies[0];
    var descending = th.getAttribute('aria-sort') === 'ascending';
    var rows = Array.prototype.slice.call(body.rows);
    var keyed = rows.map(function (row, i) { return {row: row, k: key(row.cells[column]), i: i}; });
    keyed.sort(function (x, y) {
      var missing = (x.k.s === '' || x.k.s === '-') || (y.k.s === '' || y.k.s === '-');
      var c = compare(x.k, y.k);
      if (!missing && descending) c = -c;  // missing values stay last either way
      return c !== 0 ? c : x.i - y.i;
    });
    keyed.forEach(function (item) { body.appendChild(item.row); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) { h.removeAttribute('aria-sort'); });
    th.setAttribute('aria-sort', descending ? 'descending' : 'ascending');
  }
  document.querySelectorAll('table.board').forEach(function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, column) {
      if (th.classList.contains('nosort')) return;
      th.setAttribute('title', 'sort by ' + th.textContent.trim());
      th.addEventListener('click', function () { sortBy(table, column, th); });
    });
  });
  document.documentElement.setAttribute('data-ready', '1');
})();
"""

COLUMNS = [  # header, css class, sortable
    ("method", "text", True), ("options", "text", True), ("target", "", True), ("density", "", True),
    ("score", "", True), ("seeds", "", True), ("rel. teacher", "", True), ("FLOPs speedup", "", True),
    ("speedup", "", True), ("cost", "", True), ("front", "text", True), ("flag", "text", True),
    ("details", "text nosort", False),
]


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any) -> str:
    """A sort key attribute value ('' for missing)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return repr(float(value))


def _fmt(value: Any, pattern: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return pattern.format(value)


def _common(dicts: list[dict[str, Any]]) -> dict[str, str]:
    """Keys of a list of dicts with their value, or every distinct value joined when they differ."""
    out: dict[str, str] = {}
    for key in sorted({k for d in dicts for k in d}):
        values = sorted({json.dumps(d.get(key), sort_keys=True, default=str) for d in dicts})
        out[key] = " | ".join(v.strip('"') for v in values)
    return out


def _details(row, records_by_id) -> str:
    ids = [i for i in str(row.get("run_ids") or "").split(",") if i]
    runs = [records_by_id[i] for i in ids if i in records_by_id]
    items: list[tuple[str, str]] = []
    if row["method"] == "teacher":
        items.append(("what", "the fine-tuned teacher each student was distilled from (mean over the seeds' teachers)"))
        return _dl(items)
    items.append(("options", _esc(row["options"] or "(defaults)")))
    if runs:
        from grain_bench.leaderboard.tables import caption_for

        spec = runs[0].spec
        items.append(("recipe", _esc(caption_for(runs[:1]).split("; backbone")[0])))
        items.append(("recipe fields", "<code>" + _esc(json.dumps(spec.recipe, sort_keys=True)) + "</code>"))
        items.append(("backbone", _esc(spec.backbone)
                      + _esc(f" · task version {spec.task_version} · data {spec.data}")))
        versions = _common([r.versions for r in runs])
        items.append(("versions", "<br>".join(f"{_esc(k)} {_esc(v)}" for k, v in versions.items())))
        environment = _common([r.environment for r in runs])
        items.append(("environment", "<br>".join(f"{_esc(k)}: {_esc(v)}" for k, v in environment.items())))
        latency = [e for r in runs for e in r.latency if e.label == "compact"]
        if latency:
            keys = ("device", "dtype", "batch", "seq_len", "mode", "threads")
            items.append(("latency settings", _esc(", ".join(f"{k} {v}" for k, v in _common(
                [{k: getattr(e, k) for k in keys} for e in latency]).items()))))
        metric = row["metric"]
        items.append(("runs", "<br>".join(
            f"seed {_esc(r.spec.seed)}: {_esc(metric)} {_fmt(r.scores.get(metric), '{:.4f}')}{_se(r, metric)}, "
            f"density {_fmt(_density(r), '{:.4f}')} "
            f"<code>{_esc(r.run_id)}</code>" for r in sorted(runs, key=lambda r: str(r.spec.seed)))))
    return _dl(items)


def _se(record, metric: str) -> str:
    """`` ± SE`` of a run's score (the bootstrap over its scored examples), or nothing for a record without one."""
    se = record.standard_errors.get(metric)
    return "" if se is None else f" ± {se:.4f} (SE)"


def _density(record) -> float | None:
    """The kept share of the encoder's parameters (the unit-cost density of records that lack it)."""
    density = record.density
    return density.encoder_params if density.encoder_params is not None else density.achieved


def _dl(items: list[tuple[str, str]]) -> str:
    body = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items)
    return f"<details><summary>details</summary><dl>{body}</dl></details>"


def _table(group: pd.DataFrame, best: pd.DataFrame, records_by_id, table_id: str) -> str:
    metric = group["metric"].iloc[0]
    versus = paired_reference(group)
    columns = [*COLUMNS[:-1], *([(f"vs {versus} (pts, 95% CI)", "paired", True)] if versus else []), COLUMNS[-1]]
    head = "".join(f'<th class="{cls}" scope="col">{_esc(metric if name == "score" else name)}</th>'
                   for name, cls, _ in columns)
    rows = []
    for index, row in group.iterrows():
        def cell(text, sort=None, cls="", best_column=None, index=index):
            classes = " ".join(c for c in (cls, "best" if best_column and best.loc[index, best_column] else "") if c)
            sort_attr = "" if sort is None else f' data-sort="{_esc(sort)}"'
            return f'<td class="{classes}"{sort_attr}>{text}</td>' if classes else f"<td{sort_attr}>{text}</td>"

        std = row["score_std"]
        score = _fmt(row["score_mean"], "{:.4f}") + ("" if pd.isna(std) else f" ± {std:.4f}")
        fronts = [(mark, column) for mark, column in (("d", "pareto_density"), ("f", "pareto_flops"),
                                                      ("l", "pareto_latency")) if bool(row.get(column, False))]
        axes = {"d": "density", "f": "FLOPs speedup", "l": "measured speedup"}
        front_html = "".join(f'<span title="on the Pareto front of score vs {axes[m]}">{m}</span>' for m, _ in fronts)
        cells = [
            cell(_esc(row["method"]), cls="text"), cell(_esc(row["options"]), cls="text"),
            cell(target_label(row), _num(row["target_density"])),
            cell(_fmt(row["density"], "{:.4f}"), _num(row["density"])),
            cell(score, _num(row["score_mean"]), best_column="score_mean"),
            cell("-" if row["method"] == "chance" else str(int(row["seeds"])), _num(row["seeds"])),
            cell(_fmt(row["relative"] * 100 if not pd.isna(row["relative"]) else None, "{:.1f}%"),
                 _num(row["relative"]), best_column="relative"),
            cell(_fmt(row["flops_speedup"], "{:.2f}x"), _num(row["flops_speedup"]), best_column="flops_speedup"),
            cell(_fmt(row["speedup"], "{:.2f}x"), _num(row["speedup"]), best_column="speedup"),
            cell(seconds_text(row.get("cost_s")), _num(row.get("cost_s"))),
            cell(front_html, "".join(m for m, _ in fronts), cls="text front"),
            cell(_esc(flag_text(row)), flag_text(row), cls="text flag"),
            *([cell(_esc(difference_text(row)), _num(row.get("diff")), cls="paired")] if versus else []),
            cell(_details(row, records_by_id), "", cls="text"),
        ]
        kind = "teacher" if row["method"] in ("teacher", "chance") else "collapsed" if flag_text(row) else ""
        method_class = f' class="{kind}"' if kind else ""
        rows.append(f'<tr{method_class} data-method="{_esc(row["method"])}" data-options="{_esc(row["options"])}" '
                    f'data-target="{_esc(_num(row["target_density"]))}" '
                    f'data-run-ids="{_esc(row.get("run_ids") or "")}">'
                    + "".join(cells) + "</tr>")
    return (f'<table class="board" id="{_esc(table_id)}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def _data_uri(path: str, mime: str) -> str:
    with open(path, "rb") as handle:
        return f"data:{mime};base64," + base64.b64encode(handle.read()).decode("ascii")


def render_page(report: Report, plot_files: list[str] | None = None, title: str = "grain-bench leaderboard") -> str:
    """The HTML of the page (plots embedded from ``plot_files`` when given)."""
    table = report.comparison.table
    best = best_mask(table)
    records_by_id = {r.run_id: r for r in report.records}
    sections = []
    for number, ((task, setup), group) in enumerate(table.groupby(["task", "setup"], sort=True)):
        env = report.comparison.latency_environments.get(setup_label(task, setup))
        heading = _esc(task) + (f" <small>({_esc(setup)})</small>" if setup else "")
        speed_note = (f"measured speedup: {_esc(env)}" if env else
                      "no latency measured: the speedup column is empty; FLOPs speedup is predicted from shapes")
        runs = int(group.loc[~group["method"].isin(("teacher", "chance")), "seeds"].sum())
        where = setup_label(task, setup)
        warning = (f'<p class="warning">{_esc(TEACHER_WARNING)}</p>'
                   if f"{where}: {TEACHER_WARNING}" in report.comparison.teacher_warnings else "")
        sections.append(
            f'<section class="task" data-task="{_esc(task)}"><h2>{heading}</h2>'
            f'<p class="meta">{runs} runs · metric {_esc(group["metric"].iloc[0])} · {speed_note}</p>{warning}'
            + _table(group, best, records_by_id, f"table-{number}") + "</section>")
    figures = []
    for path in plot_files or []:
        if path.endswith(".svg"):
            name = os.path.basename(path)
            png = os.path.splitext(name)[0] + ".png"
            files = f'Files: <a href="plots/{_esc(name)}">SVG</a>, <a href="plots/{_esc(png)}">PNG</a>.'
            if name.endswith("-structure.svg"):
                figures.append(f'<figure class="structure"><img alt="pruned structures per layer" '
                               f'src="{_data_uri(path, "image/svg+xml")}"><figcaption>The structure each pruned row '
                               f'kept (its first seed): per layer, the kept heads with their value (blue) and query '
                               f'(dark) widths, and the FFN width (orange). {files}</figcaption></figure>')
                continue
            figures.append(f'<figure><img alt="score vs density and speedup" src="{_data_uri(path, "image/svg+xml")}">'
                           f'<figcaption>Mean score over seeds (error bars: std) against encoder density (log scale) '
                           f'and speedup; dashed line: teacher. {files}</figcaption></figure>')
    notes = "".join(f"<li>{_esc(n)}</li>" for n in report.notes)
    created = sorted(r.created for r in report.records if r.created)
    span = f"runs from {_esc(created[0])} to {_esc(created[-1])}" if created else ""
    data = render_json(table, report.caption, report.notes).replace("</", "<\\/")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_esc(title)}</title><style>{CSS}</style></head>
<body>
<header><h1>{_esc(title)}</h1>
<p class="caption">{_esc(report.caption)}</p>
<p class="meta">{len(report.records)} records · {span}</p></header>
{f'<ul class="notes">{notes}</ul>' if notes else ''}
<p class="legend">Click a column header to sort. Bold: best per column (teacher excluded). front: on the Pareto front
of score vs d = encoder density, f = FLOPs speedup, l = measured speedup.</p>
{''.join(sections)}
{''.join(figures)}
<script type="application/json" id="leaderboard-data">{data}</script>
<script>{JS}</script>
</body></html>
"""


def publish(results_dir: str, out_dir: str, task: str | None = None, allow_mixed: bool = False,
            title: str = "grain-bench leaderboard", versus: str | None = AUTO, only=None) -> str:
    """Write the page, its plots and ``leaderboard.json`` to ``out_dir``; returns the path of ``index.html``."""
    guard_output(out_dir, results_dir)
    report = build_report(results_dir, task, allow_mixed=allow_mixed, versus=versus, only=only)
    if report.comparison.table.empty:
        raise GrainBenchError(f"no successful runs in {results_dir!r}" + (f" for task {task!r}" if task else "")
                              + "; nothing to publish")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise GrainBenchError(f"--out {out_dir!r} exists and is not a directory")
    from grain_bench.leaderboard.plots import check_plots, write_plots

    check_plots()  # a missing matplotlib is said before any folder is made
    created = not os.path.exists(out_dir)
    try:
        os.makedirs(out_dir, exist_ok=True)
        plot_files = write_plots(report.comparison.table, os.path.join(out_dir, "plots"), records=report.records)
        page = render_page(report, plot_files, title)
        index = os.path.join(out_dir, "index.html")
        with open(index, "w", encoding="utf-8") as handle:
            handle.write(page)
        with open(os.path.join(out_dir, "leaderboard.json"), "w", encoding="utf-8") as handle:
            handle.write(render_json(report.comparison.table, report.caption, report.notes))
    except BaseException as exc:
        if created:  # a failed publish leaves no half-written site behind (an existing folder stays)
            import shutil

            shutil.rmtree(out_dir, ignore_errors=True)
        if isinstance(exc, OSError):
            raise GrainBenchError(f"cannot write the site to {out_dir!r}: {exc}") from None
        raise
    return index
