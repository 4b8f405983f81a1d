"""Each real mask's compact model against its ``twin-heads`` stock model, paired round by round (issue 14's
implementation target: at least as fast as a stock BERT with the same heads per layer and the layer's widths spread
evenly over them).

    python benchmarks/bench_twins.py --masks benchmarks/results/tweets-minilm [--methods grain,heads] [--rounds 81]
        [--batch 32] [--out FILE.json]

Only the compact models and their twins run (no dense model, no other runtime), so many rounds fit in a minute or two:
the IQR overlap of ``bench_latency.py`` cannot tell a 3% gap from noise, a paired ratio over 81 rounds can. A row is
the median over rounds of (compact time / twin time) in the same round, with a bootstrap 95% interval of that median;
above 1 the compact model is slower. CPU, fp32, 2 threads; run it with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from bench_latency import MALLOC_TUNED, SEQ_LEN, THREADS, load_dense, machine, real_mask_models  # noqa: E402


def paired_ratio(ours: list[float], twin: list[float], resamples: int = 2000, seed: int = 0) -> dict:
    """Median of the per-round ratios ours/twin and a bootstrap 95% interval of that median."""
    ratios = [a / b for a, b in zip(ours, twin)]
    generator = random.Random(seed)
    medians = sorted(statistics.median(generator.choices(ratios, k=len(ratios))) for _ in range(resamples))
    return {"median_ratio": statistics.median(ratios), "ci95": [medians[int(0.025 * resamples)],
                                                                medians[int(0.975 * resamples) - 1]]}


def main(argv=None) -> int:
    """Time every mask beside its twin; print and optionally write the paired ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--masks", required=True, metavar="RESULTS")
    parser.add_argument("--methods", default="grain,heads")
    parser.add_argument("--rounds", type=int, default=81)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if any(os.environ.get(key) != value for key, value in MALLOC_TUNED.items()):  # as bench_latency.py: re-exec
        os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *(argv or sys.argv[1:])],
                  {**os.environ, **MALLOC_TUNED})
    malloc = {key: os.environ.get(key) for key in MALLOC_TUNED}
    torch.manual_seed(0)
    torch.set_num_threads(THREADS)
    models, _ = real_mask_models(load_dense(), args.masks, SEQ_LEN, tuple(args.methods.split(",")))
    pairs = {label: (models[label], models[f"{label}:twin-heads"]) for label in models
             if label != "dense" and ":" not in label}
    chosen = {name: model for label, pair in pairs.items() for name, model in zip((label, f"{label}:twin-heads"), pair)}
    from grain_bench.measure import synthetic_inputs

    inputs = synthetic_inputs(models["dense"].config, args.batch, SEQ_LEN, "cpu")
    inputs["attention_mask"][0, SEQ_LEN // 2:] = 0
    times: dict[str, list[float]] = {name: [] for name in chosen}
    order = list(chosen.items())
    shuffle = random.Random(0)
    started = time.time()
    with torch.inference_mode():
        for model in chosen.values():
            for _ in range(3):
                model(**inputs)
        for _ in range(args.rounds):
            shuffle.shuffle(order)
            for name, model in order:
                start = time.perf_counter()
                model(**inputs)
                times[name].append((time.perf_counter() - start) * 1000.0)
    rows = {}
    for label in pairs:
        rows[label] = {"median_ms": statistics.median(times[label]),
                       "twin_median_ms": statistics.median(times[f"{label}:twin-heads"]),
                       **paired_ratio(times[label], times[f"{label}:twin-heads"])}
        row = rows[label]
        print(f"{label:42s} {row['median_ms']:7.1f} ms  twin {row['twin_median_ms']:7.1f} ms  "
              f"ratio {row['median_ratio']:.3f} [{row['ci95'][0]:.3f}, {row['ci95'][1]:.3f}]")
    report = {"machine": machine(), "command": " ".join(["python benchmarks/bench_twins.py", *sys.argv[1:]]),
              "settings": {"batch": args.batch, "seq_len": SEQ_LEN, "threads": THREADS, "rounds": args.rounds,
                           "malloc": malloc}, "results": rows, "seconds": time.time() - started}
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(report, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
