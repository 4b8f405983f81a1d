"""Text renderers of the comparison table: Markdown, CSV, LaTeX (booktabs) and JSON, each an ``Exporter``.

In Markdown and LaTeX the best value of each result column (score, relative score, speedups) is bold, per task and
setup, over every row but the teacher's (the teacher is the reference, not a contender). A mark in the ``front`` column
says on which Pareto fronts a row lies: d (score vs encoder density), f (vs FLOPs speedup), l (vs measured speedup).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
from tabulate import tabulate

from grain_bench.hookspecs import hookimpl
from grain_bench.leaderboard.compare import target_label

# summary column -> True when a larger value is better (the score's direction depends on the metric)
BEST_COLUMNS = {"score_mean": None, "relative": None, "flops_speedup": True, "speedup": True}
_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters in plain text."""
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(text))


def _pm(mean: float, std: float, digits: int = 4, latex: bool = False, bold: bool = False) -> str:
    if _missing(mean):
        return "-"
    text = f"{mean:.{digits}f}" if _missing(std) else (
        f"{mean:.{digits}f} \\pm {std:.{digits}f}" if latex else f"{mean:.{digits}f} ± {std:.{digits}f}")
    if latex:
        return f"$\\mathbf{{{text}}}$" if bold else f"${text}$"
    return f"**{text}**" if bold else text


def best_mask(summary: pd.DataFrame) -> pd.DataFrame:
    """Booleans: the best value of each result column per task and setup (ties are all best; teacher rows never)."""

    mask = pd.DataFrame(False, index=summary.index, columns=list(BEST_COLUMNS))
    from grain_bench.leaderboard.compare import REFERENCE_ROWS, is_result

    contenders = summary[~summary["method"].isin(REFERENCE_ROWS)]
    contenders = contenders[is_result(contenders)]  # a collapse, or gates that missed the target: never best
    for _, group in contenders.groupby(["task", "setup"], sort=False):
        higher_score = bool(group["higher"].iloc[0]) if "higher" in group else True
        for column, higher in BEST_COLUMNS.items():
            values = group[column].astype(float)
            if values.isna().all():
                continue
            direction = higher_score if higher is None else higher
            best = values.max() if direction else values.min()
            mask.loc[group.index[(values == best).to_numpy()], column] = True
    return mask


def _front(row) -> str:
    marks = [mark for mark, column in (("d", "pareto_density"), ("f", "pareto_flops"), ("l", "pareto_latency"))
             if bool(row.get(column, False))]
    return "".join(marks)


def _spread(value: float, std: float, latex: bool) -> str:
    return f"{value:.2f} \\pm {std:.2f}" if latex else f"{value:.2f} ± {std:.2f}x"


def _times(value: Any, bold: bool, latex: bool, std: Any = None) -> str:
    if _missing(value):
        return "-"
    text = f"{value:.2f}x" if _missing(std) else _spread(value, std, latex)
    if latex:
        text = text.replace("x", r"\times") if _missing(std) else text + r"\times"
        return f"$\\mathbf{{{text}}}$" if bold else f"${text}$"
    return f"**{text}**" if bold else text


def display_frame(summary: pd.DataFrame, latex: bool = False, bold: bool = True) -> pd.DataFrame:
    """The columns a reader wants, formatted (best values bold when ``bold``)."""
    best = best_mask(summary) if bold else pd.DataFrame(False, index=summary.index, columns=list(BEST_COLUMNS))
    one_metric = summary["metric"].nunique() == 1
    versus = paired_reference(summary)
    mixed = summary["setup"].astype(str).str.len().gt(0).any() if "setup" in summary else False
    esc = latex_escape if latex else str
    rows = []
    for index, row in summary.iterrows():
        method = row["method"] + (f" [{row['options']}]" if row["options"] else "")
        relative = row["relative"]
        rel_text = "-" if _missing(relative) else (f"{relative * 100:.1f}\\%" if latex else f"{relative * 100:.1f}%")
        if best.loc[index, "relative"] and rel_text != "-":
            rel_text = f"\\textbf{{{rel_text}}}" if latex else f"**{rel_text}**"
        out: dict[str, str | int] = {"task": esc(row["task"])}
        if mixed:
            out["setup"] = esc(row["setup"])
        out.update({
            "method": esc(method), "target": target_label(row),
            "density": "-" if _missing(row["density"]) else f"{row['density']:.4f}",
            esc(row["metric"]) if one_metric else "score": _pm(row["score_mean"], row["score_std"], latex=latex,
                                                               bold=bool(best.loc[index, "score_mean"])),
            "seeds": "-" if row["method"] == "chance" else int(row["seeds"]), "rel. teacher": rel_text,
            "FLOPs speedup": _times(row.get("flops_speedup"), bool(best.loc[index, "flops_speedup"]), latex),
            "speedup": _times(row.get("speedup"), bool(best.loc[index, "speedup"]), latex),
            "cost": seconds_text(row.get("cost_s")),
            "front": _front(row), "flag": flag_text(row),
        })
        if versus:
            out[f"vs {esc(versus)} (pts)"] = difference_text(row, latex)
        rows.append(out)
    frame = pd.DataFrame(rows)
    if latex:
        frame.columns = [c.replace("%", r"\%") for c in frame.columns]
    return frame


def seconds_text(value: Any) -> str:
    """A row's compute cost: ``"-"`` when unknown, seconds under two minutes (``"48 s"``), else ``"3m05s"``."""
    if _missing(value):
        return "-"
    seconds = int(round(float(value)))
    return f"{seconds} s" if seconds < 120 else f"{seconds // 60}m{seconds % 60:02d}s"


def flag_text(row) -> str:
    """What a reader of a row must know: ``collapsed`` (all seeds) or ``collapsed k/n`` for runs that collapsed,
    ``not converged`` (or ``k/n``) for learned-mask runs whose gates missed the target (``grain_bench.quality``), and
    ``noisy timing`` (or ``k/n``) for runs whose timing rounds spread wider than their median; empty otherwise."""
    seeds = int(row.get("seeds", 0) or 0)
    flags = []
    for column, word in (("collapsed_seeds", "collapsed"), ("unconverged_seeds", "not converged"),
                         ("noisy_seeds", "noisy timing")):
        count = row.get(column, 0)
        count = 0 if _missing(count) else int(count)
        if count:
            flags.append(word if count >= seeds else f"{word} {count}/{seeds}")
    return ", ".join(flags)


def paired_reference(summary: pd.DataFrame) -> str | None:
    """The method the table's paired intervals compare with, or None when it has none."""
    if "versus" not in summary:
        return None
    named = [v for v in summary["versus"].dropna() if v != "reference"]
    return named[0] if named else None


def difference_text(row, latex: bool = False) -> str:
    """Score difference against the reference in points (x100) with its 95% interval: ``+8.7 [6.1, 11.2]``."""
    if row.get("versus") == "reference":
        return "ref."
    if _missing(row.get("diff")):
        return "-"
    text = f"{row['diff'] * 100:+.1f} [{row['diff_low'] * 100:.1f}, {row['diff_high'] * 100:.1f}]"
    return f"${text}$" if latex else text


def render_latex(summary: pd.DataFrame, caption: str = "", notes: list[str] | None = None,
                 label: str = "tab:grain-bench") -> str:
    """A booktabs ``table`` with a task column, ``\\midrule`` between tasks, best values bold and ± in math mode."""
    frame = display_frame(summary, latex=True)
    aligns = "".join("l" if c in ("task", "setup", "method", "front") else "r" for c in frame.columns)
    lines = [r"% requires \usepackage{booktabs}", r"\begin{table}[t]", r"\centering", r"\small"]
    if caption:
        lines.append(r"\caption{" + latex_escape(caption) + "}")
    lines += [r"\label{" + label + "}", r"\begin{tabular}{" + aligns + "}", r"\toprule",
              " & ".join(frame.columns) + r" \\", r"\midrule"]
    previous = None
    for (_, row), task in zip(frame.iterrows(), summary["task"]):
        if previous is not None and task != previous:
            lines.append(r"\midrule")
        previous = task
        lines.append(" & ".join(str(v) for v in row.tolist()) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    lines += [f"% note: {latex_escape(n)}" for n in notes or []]
    return "\n".join(lines) + "\n"


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return _jsonable(value.item())
    return value


def render_json(summary: pd.DataFrame, caption: str = "", notes: list[str] | None = None,
                extra: dict[str, Any] | None = None) -> str:
    """The summary rows as JSON numbers (NaN as null), with the caption and notes."""
    rows = [{k: _jsonable(v) for k, v in row.items()} for row in summary.to_dict(orient="records")]
    doc = {"caption": caption, "notes": list(notes or []), **(extra or {}), "rows": rows}
    return json.dumps(doc, indent=2, sort_keys=False, default=str) + "\n"


def render_markdown(summary: pd.DataFrame, caption: str = "", notes: list[str] | None = None,
                    extra: dict[str, Any] | None = None) -> str:
    """A GitHub-flavoured Markdown table (best values bold) followed by the caption; notes are left to the caller."""
    text = tabulate(display_frame(summary), headers="keys", tablefmt="github", showindex=False, disable_numparse=True)
    return text + (f"\n\n{caption}\n" if caption else "\n")


def render_csv(summary: pd.DataFrame, caption: str = "", notes: list[str] | None = None,
               extra: dict[str, Any] | None = None) -> str:
    """Every column of the comparison, one row per table row (numbers unformatted)."""
    return summary.to_csv(index=False)


@dataclass(frozen=True)
class Exporter:
    """A table format: the function that writes the comparison, and what kind of document it writes, so that the
    commands around it (``show``, ``export``, the closing table of ``run``) need no format names.

    A plugin registers one (``register_exporters``), or a plain function ``(summary, caption, notes, extra) -> str``,
    which becomes an ``Exporter`` with the defaults below."""

    render: Callable[..., str]  # (summary, caption, notes, extra) -> the document's text
    #: ``export`` writes the notes after the document as ``note:`` lines (Markdown); otherwise the document carries
    #: them itself, as comments or fields, or leaves them out
    appends_notes: bool = False
    #: the document is data rows alone (CSV): no text stands in for an empty table, no blank line follows it on stdout
    data_only: bool = False
    #: an empty comparison is still a document of this format (JSON: no rows), rendered like any other
    renders_empty: bool = False

    def __call__(self, summary: pd.DataFrame, caption: str = "", notes: list[str] | None = None,
                 extra: dict[str, Any] | None = None) -> str:
        return self.render(summary, caption, list(notes or []), extra)

    @classmethod
    def of(cls, obj: Exporter | Callable[..., str]) -> Exporter:
        """``obj`` as an ``Exporter`` (a plain function gets the defaults)."""
        return obj if isinstance(obj, Exporter) else cls(obj)


def render(summary: pd.DataFrame, fmt: str = "markdown", caption: str = "", notes: list[str] | None = None,
           extra: dict[str, Any] | None = None, regs=None) -> str:
    """The table in format ``fmt``: a registered exporter (``register_exporters``; built in: markdown, csv, latex,
    json) of ``regs`` (default: the process-wide registries). Notes go after the table, as comments where the format
    has them."""
    return exporter(fmt, regs)(summary, caption, notes, extra)


def exporter(fmt: str, regs=None) -> Exporter:
    """The registered ``Exporter`` of ``fmt`` (``UnknownExporterError`` with a did-you-mean otherwise)."""
    if regs is None:
        from grain_bench.plugins import get_registries

        regs = get_registries()
    return Exporter.of(regs.exporters.get(fmt))


def formats(regs=None) -> list[str]:
    """Names of the registered table formats."""
    if regs is None:
        from grain_bench.plugins import get_registries

        regs = get_registries()
    return regs.exporters.names()


@hookimpl
def register_exporters(register):
    """The built-in table formats."""
    register("markdown", Exporter(render_markdown, appends_notes=True), "GitHub Markdown, best values bold, caption "
                                                                       "below")
    register("csv", Exporter(render_csv, data_only=True), "every column, unformatted numbers")
    register("latex", Exporter(lambda summary, caption="", notes=None, extra=None: render_latex(summary, caption,
                                                                                              notes)),
             "a booktabs table with the caption; notes as comments")
    register("json", Exporter(render_json, renders_empty=True),
             "rows as JSON numbers (NaN as null) with the caption and notes")
