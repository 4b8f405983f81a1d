"""Plots of a comparison: score vs encoder density (log x) and score vs speedup, one row of panels per task.

Matplotlib is imported only here, lazily, with the Agg backend (no display needed). When a task has no measured
latency the speedup panel uses the FLOPs-predicted speedup and says so on its axis.
"""

from __future__ import annotations

import math
import os

import pandas as pd

from grain_bench.errors import GrainBenchError
from grain_bench.leaderboard.compare import setup_label, target_label
from grain_bench.records import RecordShape

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")


def check_plots() -> None:
    """Raise ``GrainBenchError`` (what to install) unless matplotlib can be imported: before anything is written."""
    _pyplot()


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise GrainBenchError("plots and the leaderboard page need matplotlib, which this environment lacks: "
                              "pip install matplotlib (from a checkout, pip install -e '.[plots]' does the same)"
                              ) from None
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
    labels = sorted({_label(r) for _, r in table[~table["method"].isin(("teacher", "chance"))].iterrows()})
    markers = {label: MARKERS[i % len(MARKERS)] for i, label in enumerate(labels)}
    colors = {label: f"C{i % 10}" for i, label in enumerate(labels)}
    fig, axes = plt.subplots(len(panels), 2, figsize=(11, 4.0 * len(panels)), squeeze=False)
    for row_axes, ((task, setup), group) in zip(axes, panels):
        metric = group["metric"].iloc[0]
        teacher = group[group["method"] == "teacher"]
        chance = group[group["method"] == "chance"]
        contenders = group[~group["method"].isin(("teacher", "chance"))]
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
            if not chance.empty and not math.isnan(float(chance["score_mean"].iloc[0])):
                value = float(chance["score_mean"].iloc[0])
                ax.axhline(value, color="#9a3b2f", linestyle=":", linewidth=1, label=f"trivial predictor ({value:.3f})")
            for column, label, style in (("collapsed_seeds", "collapsed", "solid"),
                                         ("unconverged_seeds", "not converged", "dashed")):
                ringed = contenders[contenders[column] > 0] if column in contenders else contenders.iloc[0:0]
                if not ringed.empty:  # ringed: these points are collapses or unconverged gates, not results
                    ax.scatter(ringed[x_column].astype(float), ringed["score_mean"].astype(float), s=160,
                               facecolors="none", edgecolors="#9a3b2f", linewidths=1.2, linestyles=style,
                               label=label)
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(_plain))
            ax.xaxis.set_minor_formatter(ticker.FuncFormatter(_plain_minor))
            ax.set_xlabel(x_label)
            ax.set_ylabel(metric)
            ax.grid(True, which="both", alpha=0.3)
            heading = setup_label(task, setup)
            ax.set_title(f"{heading}: {metric} vs " + ("density" if x_column == "density" else "speedup"), fontsize=10)
        row_axes[0].legend(fontsize=8, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def write_plots(table: pd.DataFrame, out_dir: str, stem: str = "leaderboard", title: str = "",
                records=None) -> list[str]:
    """Write ``<stem>.svg`` and ``<stem>.png`` into ``out_dir``, and ``<stem>-structure.{svg,png}`` (the pruned
    structures, ``plot_structures``) when ``records`` describe them; returns the paths."""
    plt = _pyplot()
    os.makedirs(out_dir, exist_ok=True)
    figures = [(stem, plot_comparison(table, title))]
    structures = plot_structures(table, records or [])
    if structures is not None:
        figures.append((f"{stem}-structure", structures))
    paths = []
    for name, fig in figures:
        try:
            for ext, kwargs in (("svg", {"metadata": {"Date": None}}),
                                ("png", {"dpi": 110, "metadata": {"Software": None}})):
                path = os.path.join(out_dir, f"{name}.{ext}")
                fig.savefig(path, format=ext, **kwargs)
                paths.append(path)
        finally:
            plt.close(fig)
    return paths


def structure_rows(table: pd.DataFrame, records) -> list[tuple[str, RecordShape]]:
    """(label, record.shape) of each pruned row's first run that recorded its per-head widths."""
    by_id = {r.run_id: r for r in records}
    out = []
    for _, row in table.iterrows():
        if row["method"] in ("teacher", "chance", "dense") or not row.get("run_ids"):
            continue
        for run_id in str(row["run_ids"]).split(","):
            shape = by_id[run_id].shape if run_id in by_id else None
            if shape is not None and shape.head_widths and shape.dense is not None:
                options = f" [{row['options']}]" if row["options"] else ""
                seed = by_id[run_id].spec.seed
                out.append((f"{row['task']}: {row['method']}{options} @ {target_label(row)} (seed {seed})",
                            shape))
                break
    return out


def plot_structures(table: pd.DataFrame, records):
    """Small multiples of pruned structures, one panel per pruned row (its first seed), as the GRAIN paper draws
    them: per layer (top = layer 1), each kept head is a cell whose shaded width is its value units and whose dark
    underline is its query units (both as shares of the original head size), and a bar for the FFN width. None when
    no record has per-head widths (records from before they were stored)."""
    rows = structure_rows(table, records)
    if not rows:
        return None
    plt = _pyplot()
    from matplotlib.patches import Rectangle

    columns = min(3, len(rows))
    lines = math.ceil(len(rows) / columns)
    fig, axes = plt.subplots(lines, columns, figsize=(4.3 * columns, 2.6 * lines), squeeze=False)
    for ax in axes.flat[len(rows):]:
        ax.axis("off")
    for ax, (label, shape) in zip(axes.flat, rows):
        dense = shape.dense
        assert dense is not None  # structure_rows keeps only shapes that have it
        heads, head_dim, ffn_dim = dense.num_heads, dense.head_dim, dense.ffn_dim
        layers = len(shape.head_widths)
        ffn_left = heads + 0.6
        for index, (layer_heads, ffn) in enumerate(zip(shape.head_widths, shape.ffn)):
            y = layers - 1 - index
            for slot in range(heads):
                ax.add_patch(Rectangle((slot + 0.05, y + 0.1), 0.9, 0.8, fill=False, lw=0.4, ec="#c8cdd8"))
            for slot, (qk, vo) in enumerate(layer_heads):
                ax.add_patch(Rectangle((slot + 0.05, y + 0.1), 0.9 * vo / head_dim, 0.8, color="#2f5fb3", lw=0))
                ax.add_patch(Rectangle((slot + 0.05, y + 0.1), 0.9 * qk / head_dim, 0.14, color="#1d2330", lw=0))
            ax.add_patch(Rectangle((ffn_left, y + 0.1), 4.0, 0.8, fill=False, lw=0.4, ec="#c8cdd8"))
            ax.add_patch(Rectangle((ffn_left, y + 0.1), 4.0 * ffn / ffn_dim, 0.8, color="#d08a2e", lw=0))
            ax.text(ffn_left + 4.15, y + 0.5, f"{ffn}", va="center", fontsize=6, color="#5b6475")
            ax.text(-0.2, y + 0.5, f"L{index + 1}: {len(layer_heads)}", va="center", ha="right", fontsize=6)
        ax.set_xlim(-2.2, ffn_left + 5.6)
        ax.set_ylim(0, layers)
        ax.axis("off")
        ax.set_title(label, fontsize=7.5)
    fig.suptitle("Kept heads (blue: value units, dark: query units, per head) and FFN width (orange) per layer",
                 fontsize=8)
    fig.tight_layout()
    return fig
