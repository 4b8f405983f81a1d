"""Issue 26's figures: accuracy against measured CPU speedup, density rows beside speed-target rows.

    python benchmarks/speed_targets.py --results benchmarks/results/tweets-minilm --batch 32 \
        --out benchmarks/results/speed-targets/latency-b32.json
    python benchmarks/speed_targets.py --report benchmarks/results/speed-targets   (the markdown tables)

Timing: every stored mask of the chosen methods (every seed) is compacted from the dense backbone's weights and
timed side by side with the dense model in one process (shuffled order each round, 2 threads, fp32), under each of
``--runtimes`` (default eager and the ragged-width kernel); a model's speedup is its median against the dense
model's median at the dense model's fastest runtime, and its *best* speedup the largest over the runtimes. Run it on a
quiet machine: nothing else may run. ``--report`` joins the JSON reports with the records' accuracies (mean over
seeds), pairs every grain row with the heads row of the closest measured speed (paired bootstrap over the seeds) and
gives the planning cost model's error on the speed-target masks.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_latency import THREADS, load_dense, machine, timing_inputs, write_report  # noqa: E402

#: the methods the issue compares
METHODS = ("grain", "heads", "movement")
#: the density rows shown beside the speed targets
DENSITIES = (0.05, 0.1, 0.2)


def label_of(spec) -> str:
    """``grain[granularity=8]@8x seed 1``: method, options, target (a density or a speedup) and seed."""
    from grain_bench.leaderboard.compare import options_label

    options = options_label(spec.method_options)
    return f"{spec.method}{f'[{options}]' if options else ''}@{spec.target()} seed {spec.seed}"


def chosen_runs(results_dir: str, task: str) -> list:
    """The ok runs of ``task`` of the compared methods with stored masks: every speed target, and the densities of
    ``DENSITIES``."""
    from grain_bench.leaderboard.tables import load_records

    records, _ = load_records(results_dir)
    return [r for r in records if r.ok and r.masks and r.spec.task == task and r.spec.method in METHODS
            and (r.spec.target_speedup or any(abs(r.spec.target_density - d) < 1e-9 for d in DENSITIES))]


def build(dense, results_dir: str, runs, seq_len: int) -> tuple[dict, dict]:
    """{label: compact model} (dense included) and {label: info}, each compact model checked against its masked
    model's logits on the timing inputs' shape."""
    from grain_bench.compaction import compact
    from grain_bench.predictions import load_masks

    models, info = {"dense": dense}, {"dense": {"density": 1.0}}
    for record in sorted(runs, key=lambda r: label_of(r.spec)):
        masks, space = load_masks(results_dir, record.masks, record)
        shape = masks.model_shape(space)
        label = label_of(record.spec)
        models[label] = compact(dense, masks, space).eval()
        info[label] = {"run_id": record.run_id, "density": masks.density(space),
                       "target_speedup": record.spec.target_speedup,
                       "predicted_speedup": record.speed.predicted if record.speed else None,
                       "flops_predicted_speedup": space.dense_shape().total_flops(seq_len) / shape.total_flops(seq_len),
                       "heads": sum(len(layer.heads) for layer in shape.layers),
                       "distinct_head_widths": len({h for layer in shape.layers for h in layer.heads})}
    return models, info


def with_runtimes(models: dict, info: dict, runtimes, inputs) -> dict:
    """``models`` plus ``<label> [<runtime>]`` for every runtime other than eager (checked against eager by
    ``grain_bench.runtimes.prepare``)."""
    from grain_bench.measure import torch_threads
    from grain_bench.runtimes import prepare

    out = dict(models)
    for runtime in (r for r in runtimes if r != "eager"):
        for label, model in models.items():
            with torch_threads(THREADS):
                out[f"{label} [{runtime}]"] = prepare(model, runtime, inputs, threads=THREADS)
            info[f"{label} [{runtime}]"] = {**info[label], "runtime": runtime}
    return out


def rows(results: dict, info: dict) -> dict:
    """{label: row}: median ms per runtime, the speedups against the dense model at its best runtime, and the best."""
    out: dict[str, dict] = {}
    for label, result in results.items():
        base, _, runtime = label.partition(" [")
        row = out.setdefault(base, {**info[base], "ms": {}})
        row["ms"][runtime.rstrip("]") or "eager"] = result.median_ms
    return with_speedups(out)


def with_speedups(table: dict) -> dict:
    """``table`` with each row's ``speedups`` (per runtime) and ``best_speedup``/``best_runtime``, all against the
    dense model's fastest runtime (its median ms)."""
    dense_ms = min(table["dense"]["ms"].values())
    for row in table.values():
        row["speedups"] = {runtime: dense_ms / ms for runtime, ms in row["ms"].items()}
        row["best_runtime"] = max(row["speedups"], key=row["speedups"].get)
        row["best_speedup"] = row["speedups"][row["best_runtime"]]
    return table


def measure(args) -> int:
    """Time and write the JSON report."""
    from grain_bench.measure import LatencySettings, time_models

    torch.manual_seed(0)
    started = time.time()
    dense = load_dense()
    runs = chosen_runs(args.results, args.task)
    if not runs:
        raise SystemExit(f"no stored masks of {', '.join(METHODS)} on {args.task} in {args.results}")
    models, info = build(dense, args.results, runs, args.seq_len)
    inputs = timing_inputs(dense.config, args.batch, args.seq_len)
    timed = with_runtimes(models, info, args.runtimes.split(","), inputs)
    print(f"timing {len(timed)} models, {args.runs} rounds", file=sys.stderr, flush=True)
    settings = LatencySettings(device="cpu", dtype="fp32", batch=args.batch, seq_len=args.seq_len, threads=THREADS,
                               warmup=2, runs=args.runs, seed=0, calls=args.calls)
    report = {"machine": machine(), "command": " ".join(["python benchmarks/speed_targets.py", *sys.argv[1:]]),
              "settings": {"batch": args.batch, "seq_len": args.seq_len, "threads": THREADS, "runs": args.runs,
                           "calls": args.calls, "runtimes": args.runtimes.split(","), "results": args.results},
              "rows": rows(time_models(timed, settings, inputs=inputs), info)}
    report["seconds"] = round(time.time() - started)
    report["machine"]["load_average_at_end"] = os.getloadavg()
    write_report(args.out, report)
    print(json.dumps({k: round(v["best_speedup"], 2) for k, v in report["rows"].items()}, indent=1))
    return 0


def _group(label: str) -> str:
    """A row's label without its seed."""
    return label.rpartition(" seed ")[0] or label


def report_tables(folder: str, results_dir: str, task: str) -> str:
    """Markdown: per method and target, accuracy (mean over seeds) and the best measured speedup (mean over seeds'
    masks) at each batch size reported in ``folder``."""
    from grain_bench.leaderboard.tables import load_records

    records, _ = load_records(results_dir)
    scores: dict[str, list[float]] = {}
    for record in records:
        score = record.scores.get(record.primary_metric or "")
        if record.ok and record.spec.task == task and score is not None:
            scores.setdefault(_group(label_of(record.spec)), []).append(score)
    reports = {}
    for name in sorted(os.listdir(folder)):
        if name.startswith("latency-") and name.endswith(".json"):
            with open(os.path.join(folder, name)) as handle:
                data = json.load(handle)
            data["rows"] = with_speedups(data["rows"])
            reports[f"b{data['settings']['batch']}"] = data
    header = ["method @ target", "seeds", "score", "predicted"] + [f"best {b} (runtime)" for b in reports]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    groups = sorted({_group(label) for data in reports.values() for label in data["rows"] if label != "dense"},
                    key=_sort_key)
    for group in groups:
        accuracy = scores.get(group, [])
        cells = [group, str(len(accuracy)),
                 f"{statistics.mean(accuracy):.4f}" + (f" ± {statistics.stdev(accuracy):.4f}" if len(accuracy) > 1
                                                       else "") if accuracy else "-"]
        predicted = [r["predicted_speedup"] for data in list(reports.values())[:1] for label, r in data["rows"].items()
                     if _group(label) == group and r.get("predicted_speedup")]
        cells.append(f"{statistics.mean(predicted):.2f}x" if predicted else "-")
        for data in reports.values():
            mine = [r for label, r in data["rows"].items() if _group(label) == group]
            best = statistics.mean(r["best_speedup"] for r in mine) if mine else None
            runtimes = sorted({r["best_runtime"] for r in mine})
            cells.append(f"{best:.2f}x ({'/'.join(runtimes)})" if best else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def matched_pairs(folder: str, results_dir: str, task: str, batch: str = "b32") -> str:
    """Markdown: every grain row against the heads row of the closest best measured speedup at ``batch``, with the
    paired 95% bootstrap interval of the accuracy difference over the seeds both have (``grain_bench.significance``)."""
    from grain_bench.leaderboard.tables import load_records
    from grain_bench.predictions import load_predictions
    from grain_bench.significance import paired_bootstrap

    with open(os.path.join(folder, f"latency-{batch}.json")) as handle:
        table = with_speedups(json.load(handle)["rows"])
    speed: dict[str, list[float]] = {}
    for label, row in table.items():
        speed.setdefault(_group(label), []).append(row["best_speedup"])
    mean_speed = {group: statistics.mean(values) for group, values in speed.items() if group != "dense"}
    records, _ = load_records(results_dir)
    runs = {(_group(label_of(r.spec)), r.spec.seed): r for r in records
            if r.ok and r.spec.task == task and r.predictions}
    lines = ["| grain row | speedup | heads row at the closest speed | speedup | seeds | grain - heads (pts, 95%) |",
             "|---|---|---|---|---|---|"]
    heads_rows = [g for g in mean_speed if g.startswith("heads@")]
    for group in sorted((g for g in mean_speed if g.startswith("grain")), key=_sort_key):
        rival = min(heads_rows, key=lambda g: abs(mean_speed[g] - mean_speed[group]))
        pairs = []
        for seed in (1, 2, 3):
            mine, theirs = runs.get((group, seed)), runs.get((rival, seed))
            if mine and theirs:
                a = load_predictions(results_dir, mine.predictions, mine, [])
                b = load_predictions(results_dir, theirs.predictions, theirs, [])
                pairs.append((a["stats"], b["stats"]))
                kind = a["stat_kind"]
        if not pairs:
            continue
        result = paired_bootstrap(pairs, kind, resamples=1000)
        lines.append(f"| {group} | {mean_speed[group]:.2f}x | {rival} | {mean_speed[rival]:.2f}x | {result.seeds} | "
                     f"{100 * result.difference:+.1f} [{100 * result.low:+.1f}, {100 * result.high:+.1f}] |")
    return "\n".join(lines)


def cost_model_errors(folder: str, runtime: str = "eager", batch: str = "b32") -> str:
    """One line: the relative error of the planning cost model's predicted latency against the measured one
    (``runtime``, ``batch``) over every speed-target mask."""
    with open(os.path.join(folder, f"latency-{batch}.json")) as handle:
        table = json.load(handle)["rows"]
    dense_ms = table["dense"]["ms"][runtime]
    errors = sorted(abs(dense_ms / row["predicted_speedup"] - row["ms"][runtime]) / row["ms"][runtime]
                    for row in table.values() if row.get("predicted_speedup"))
    return (f"cost model error on {len(errors)} speed-target masks ({runtime}, {batch}): median "
            f"{100 * statistics.median(errors):.1f}%, worst {100 * errors[-1]:.1f}%")


def _sort_key(group: str):
    """Density rows first (by density, descending), then speed targets (ascending), then the method."""
    method, _, target = group.partition("@")
    if target.endswith("x"):
        return (1, float(target[:-1]), method)
    return (0, -float(target), method)


def main(argv=None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="benchmarks/results/tweets-minilm")
    parser.add_argument("--task", default="tweets")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--calls", type=int, default=1)
    parser.add_argument("--runtimes", default="eager,ragged")
    parser.add_argument("--out", default=None)
    parser.add_argument("--report", default=None, metavar="FOLDER", help="print the tables of FOLDER's reports")
    parser.add_argument("--planned-on", default="eager", metavar="RUNTIME",
                        help="--report: the runtime the speed targets were planned on (whose timing the cost model's "
                             "error is taken against; a target is a speedup over the dense model under it)")
    args = parser.parse_args(argv)
    if args.report:
        print(report_tables(args.report, args.results, args.task))
        print()
        print(matched_pairs(args.report, args.results, args.task))
        print()
        print(cost_model_errors(args.report, runtime=args.planned_on))
        return 0
    return measure(args)


if __name__ == "__main__":
    raise SystemExit(main())
