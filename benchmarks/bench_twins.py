"""Each real mask's compact model against its ``twin-heads`` stock model, paired round by round (issue 14's
implementation target: at least as fast as a stock BERT with the same heads per layer and the layer's widths spread
evenly over them).

    python benchmarks/bench_twins.py --masks benchmarks/results/tweets-minilm [--methods grain,heads] [--rounds 81]
        [--batch 32] [--runtime eager] [--out FILE.json]

Only the compact models and their twins run (no dense model, no other runtime), so many rounds fit in a minute or two:
the IQR overlap of ``bench_latency.py`` cannot tell a 3% gap from noise, a paired ratio over 81 rounds can. A row is
the median over rounds of (compact time / twin time) in the same round, with a bootstrap 95% interval of that median;
above 1 the compact model is slower. CPU, fp32, 2 threads; run it with nothing else on the machine.
``--runtime`` runs the compact models under a ``grain_bench.runtimes`` runtime (``ragged``: the ragged-width attention
kernel), prepared and checked against the eager model first; the twins, stock BERT models, stay eager.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from bench_latency import (  # noqa: E402
    SEQ_LEN,
    THREADS,
    allocator,
    load_dense,
    machine,
    real_mask_models,
    timing_inputs,
    write_report,
)


def paired_ratio(ours: list[float], twin: list[float], resamples: int = 2000, seed: int = 0) -> dict:
    """Median of the per-round ratios ours/twin and a bootstrap 95% interval of that median."""
    ratios = [a / b for a, b in zip(ours, twin)]
    generator = random.Random(seed)
    medians = sorted(statistics.median(generator.choices(ratios, k=len(ratios))) for _ in range(resamples))
    return {"median_ratio": statistics.median(ratios), "ci95": [medians[int(0.025 * resamples)],
                                                                medians[int(0.975 * resamples) - 1]]}


def main(argv=None) -> int:
    """Time every mask beside its twin; print and optionally write the paired ratios."""
    from grain_bench.measure import LatencySettings, time_models

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--masks", required=True, metavar="RESULTS")
    parser.add_argument("--methods", default="grain,heads")
    parser.add_argument("--rounds", type=int, default=81)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--runtime", default="eager", help="runtime of the compact models (grain_bench.runtimes)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    malloc = allocator("tuned", argv, script=__file__)
    torch.manual_seed(0)
    models, _ = real_mask_models(load_dense(), args.masks, SEQ_LEN, tuple(args.methods.split(",")))
    labels = [label for label in models if label != "dense" and ":" not in label]
    chosen = {name: models[name] for label in labels for name in (label, f"{label}:twin-heads")}
    inputs = timing_inputs(models["dense"].config, args.batch, SEQ_LEN)
    if args.runtime != "eager":
        from grain_bench.measure import torch_threads
        from grain_bench.runtimes import prepare

        with torch_threads(THREADS):
            chosen.update({label: prepare(models[label], args.runtime, inputs, threads=THREADS) for label in labels})
    settings = LatencySettings(device="cpu", dtype="fp32", batch=args.batch, seq_len=SEQ_LEN, threads=THREADS,
                               warmup=3, runs=args.rounds, seed=0)
    started = time.time()
    timed = time_models(chosen, settings, inputs=inputs)
    rows = {}
    for label in labels:
        ours, twin = timed[label], timed[f"{label}:twin-heads"]
        rows[label] = {"median_ms": ours.median_ms, "twin_median_ms": twin.median_ms,
                       **paired_ratio(list(ours.times_ms), list(twin.times_ms))}
        row = rows[label]
        print(f"{label:42s} {row['median_ms']:7.1f} ms  twin {row['twin_median_ms']:7.1f} ms  "
              f"ratio {row['median_ratio']:.3f} [{row['ci95'][0]:.3f}, {row['ci95'][1]:.3f}]")
    report = {"machine": machine(), "command": " ".join(["python benchmarks/bench_twins.py", *sys.argv[1:]]),
              "settings": {"batch": args.batch, "seq_len": SEQ_LEN, "threads": THREADS, "rounds": args.rounds,
                           "runtime": args.runtime,
                           "malloc": malloc}, "results": rows, "seconds": time.time() - started}
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
