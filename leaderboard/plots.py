"""Plots of a comparison: score vs encoder density (log x) and score vs speedup, one row of panels per task.

Matplotlib is imported only here, lazily, with the Agg backend (no display needed). When a task has no measured
latency the speedup panel uses the FLOPs-predicted speedup and says so on its axis.
"""

from __future__ import annotations

import math
import os

import pandas as pd

from grain_bench.errors import GrainBenchError

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise GrainBenchError("plots need matplotlib: pip install 'grain-bench[plots]'") from None
    matplotlib.use("Agg", force=True)
    matplotlib.rcParams["svg.hashsalt"] = "grain-bench"  # stable ids: the same data gives the same SVG
    import matplotlib.pyplot as plt

    return plt


def speedup_axis(table: pd.DataFrame) -> tuple[str, str]:
    """The speedup column a task's panel uses and its axis label (measured when any row has it)."""
    rows = table[table["method"] != "teacher"]
    if "speedup" in rows and rows["speedup"].notna().any():
        return "speedup", "measured speedup over dense (x)"
    return "flops_speedup", "FLOPs-predicted speedup (x) - no latency measured"


def _plain(value: float, _position=None) -> str:
    return f"{value:g}"


def _plain_minor(value: float, _position=None) -> str:
    """Label only the minor ticks at 2 and 5 times a power of ten, so a log axis reads 0.05, 0.1, 0.2, 0.5, 1."""
    leading = value / 10 ** math.floor(math.log10(value)) if value > 0 else 0
    return f"{value:g}" if round(leading, 6) in (2.0, 5.0) else ""


def _label(row) -> str:
    return row["method"] + (f" [{row['options']}]" if row["options"] else "")


def plot_comparison(table: pd.DataFrame, title: str = ""):
    """A matplotlib figure: for every task (and setup) a density panel and a speedup panel."""
    plt = _pyplot()
    from matplotlib import ticker

    panels = list(table.groupby(["task", "setup"], sort=True)) if not table.empty else []
    if not panels:
        raise GrainBenchError("nothing to plot: no successful runs")
    labels = sorted({_label(r) for _, r in table[table["method"] != "teacher"].iterrows()})
    markers = {label: MARKERS[i % len(MARKERS)] for i, label in enumerate(labels)}
    colors = {label: f"C{i % 10}" for i, label in enumerate(labels)}
    fig, axes = plt.subplots(len(panels), 2, figsize=(11, 4.0 * len(panels)), squeeze=False)
    for row_axes, ((task, setup), group) in zip(axes, panels):
        metric = group["metric"].iloc[0]
        teacher = group[group["method"] == "teacher"]
        contenders = group[group["method"] != "teacher"]
        speed_column, speed_label = speedup_axis(group)
        for ax, x_column, x_label in ((row_axes[0], "density", "encoder density (fraction of parameters, log)"),
                                      (row_axes[1], speed_column, speed_label)):
            for label, points in contenders.groupby(contenders.apply(_label, axis=1), sort=True):
                points = points.sort_values(x_column)
                xs, ys = points[x_column].astype(float), points["score_mean"].astype(float)
                keep = xs.notna() & ys.notna()
                if not keep.any():
                    continue
                ax.errorbar(xs[keep], ys[keep], yerr=points["score_std"].astype(float)[keep].fillna(0.0),
                            marker=markers[label], color=colors[label], capsize=3, linestyle="-", linewidth=1,
                            markersize=6, label=label)
            if not teacher.empty and not math.isnan(float(teacher["score_mean"].iloc[0])):
                value = float(teacher["score_mean"].iloc[0])
                ax.axhline(value, color="0.3", linestyle="--", linewidth=1, label=f"teacher ({value:.3f})")
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(_plain))
            ax.xaxis.set_minor_formatter(ticker.FuncFormatter(_plain_minor))
            ax.set_xlabel(x_label)
            ax.set_ylabel(metric)
            ax.grid(True, which="both", alpha=0.3)
            heading = task + (f" ({setup})" if setup else "")
            ax.set_title(f"{heading}: {metric} vs " + ("density" if x_column == "density" else "speedup"), fontsize=10)
        row_axes[0].legend(fontsize=8, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def write_plots(table: pd.DataFrame, out_dir: str, stem: str = "leaderboard", title: str = "") -> list[str]:
    """Write ``<stem>.svg`` and ``<stem>.png`` into ``out_dir``; returns their paths."""
    plt = _pyplot()
    fig = plot_comparison(table, title)
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    try:
        for ext, kwargs in (("svg", {"metadata": {"Date": None}}), ("png", {"dpi": 110, "metadata": {"Software": None}})):
            path = os.path.join(out_dir, f"{stem}.{ext}")
            fig.savefig(path, format=ext, **kwargs)
            paths.append(path)
    finally:
        plt.close(fig)
    return paths
