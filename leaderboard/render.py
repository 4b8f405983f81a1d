"""Text renderers of the comparison table: Markdown, CSV, LaTeX (tabulate)."""

from __future__ import annotations

import math

import pandas as pd
from tabulate import tabulate

FORMATS = ("markdown", "csv", "latex")


def _pm(mean: float, std: float, digits: int = 4, latex: bool = False) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.{digits}f}"
    return f"${mean:.{digits}f} \\pm {std:.{digits}f}$" if latex else f"{mean:.{digits}f} ± {std:.{digits}f}"


def display_frame(summary: pd.DataFrame, latex: bool = False) -> pd.DataFrame:
    """The columns a reader wants, formatted."""
    rows = []
    for _, row in summary.iterrows():
        speedup = row.get("speedup")
        rows.append({
            "task": row["task"], "method": row["method"] + (f" [{row['options']}]" if row["options"] else ""),
            "target": f"{row['target_density']:g}", "density": f"{row['density']:.4f}",
            row["metric"] if len(set(summary["metric"])) == 1 else "score": _pm(row["score_mean"], row["score_std"], latex=latex),
            "seeds": int(row["seeds"]), "rel. teacher": f"{row['relative'] * 100:.1f}%",
            "FLOPs speedup": "-" if pd.isna(row.get("flops_speedup")) else f"{row['flops_speedup']:.2f}x",
            "speedup": "-" if speedup is None or pd.isna(speedup) else f"{speedup:.2f}x",
        })
    return pd.DataFrame(rows)


def render(summary: pd.DataFrame, fmt: str = "markdown", caption: str = "") -> str:
    """The table as Markdown, CSV or LaTeX."""
    if fmt == "csv":
        return summary.to_csv(index=False)
    frame = display_frame(summary, latex=fmt == "latex")
    if fmt == "latex":
        body = tabulate(frame, headers="keys", tablefmt="latex_raw", showindex=False)
        return body + (f"\n% {caption}\n" if caption else "\n")
    text = tabulate(frame, headers="keys", tablefmt="github", showindex=False)
    return text + (f"\n\n{caption}\n" if caption else "\n")
