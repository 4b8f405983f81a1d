"""CPU latency of dense vs compact MiniLM-L6 (batch 32, length 64, fp32, 2 threads) at densities 1.0 ... 0.05.

Two entry points:

- ``pytest benchmarks/bench_latency.py --benchmark-enable -p no:cacheprovider``: the pytest-benchmark suite (one
  benchmark per model; absolute times, not side by side);
- ``python benchmarks/bench_latency.py --out benchmarks/results/latency-cpu.json``: the ratios that the targets are
  about, measured side by side in one process (``grain_bench.measure.time_models``: every model once per round, in a
  shuffled order), with the machine described in the JSON. ``--layouts`` also times the attention layouts that were
  considered for the compact encoder. The script re-executes itself with tuned glibc malloc settings
  (``MALLOC_TUNED``; ``--allocator default`` keeps the system's), recorded in the JSON.

Masks: ``--masks RESULTS`` times the masks that training really produced (every run of a results directory that
stored its masks, one seed per method, options and density), each beside two stock-BERT twins: ``twin-heads``, the
same number of heads per layer with the layer's total query/value widths spread evenly over them (it isolates our
implementation from the cost of the structure itself), and ``twin-64``, the same total widths in 64-wide heads (what
GRAIN's many heads cost against few wide ones). Without ``--masks`` (the synthetic control), masks are GRAIN-like: one
global ranking of all units by their weight norm (``grain_bench.masked.unit_weight_norms``) pruned with
``grain_bench.allocate.prune_to_density`` -- the same ranking and coupling, magnitude standing in for trained scores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

from grain_bench.prepared import GPU_BUCKET_CALL_COST, GPU_WIDTH_MULTIPLE  # noqa: E402

DENSITIES = (1.0, 0.5, 0.2, 0.1, 0.05)
BATCH, SEQ_LEN, THREADS = 32, 64, 2


def load_dense():
    """MiniLM-L6 with a sequence head, eval mode."""
    from grain_bench.backbones import load_minilm

    model, _ = load_minilm("sequence", 2)
    return model.eval()


def density_masks(model, density: float):
    """GRAIN-like masks: global ranking of every unit by weight norm, pruned to ``density`` (coupled)."""
    from grain_bench.allocate import prune_to_density
    from grain_bench.masked import unit_weight_norms
    from grain_bench.masks import MaskSpace, UnitMasks

    space = MaskSpace.from_config(model.config)
    full = UnitMasks.full(space)
    if density >= 1.0:
        return full
    # Norms of query, value and FFN units live on different scales; dividing by each kind's mean lets all three compete.
    scores = unit_weight_norms(model, space).map(lambda t: t / t.mean())
    # Coupling (a head without value units loses its query units) prunes past the request; bisect the requested
    # density so that the achieved density is the one named.
    low, high = density, 1.0
    masks = prune_to_density(scores, full, space, density)
    for _ in range(30):
        if abs(masks.density(space) - density) < 0.002:
            break
        middle = (low + high) / 2
        masks = prune_to_density(scores, full, space, middle)
        low, high = (middle, high) if masks.density(space) < density else (low, middle)
    return masks


def uniform_stock_model(model, shape):
    """A stock transformers BERT with the compact model's total Q/K/V/O and FFN widths spread evenly over layers.

    Stock BERT ties the query/key and value widths, so each layer gets heads of width 64 (fewer, or one narrower
    head, when the width is small) totalling the mean of the compact model's per-layer (qk + vo) / 2; FFN width is the
    mean FFN width. Weights are random: only the time matters.
    """
    import copy

    from torch import nn

    layers = shape.layers
    attention = max(1, round(sum(sum(layer.qk_dims) + sum(layer.vo_dims) for layer in layers) / (2 * len(layers))))
    ffn = max(1, round(sum(layer.ffn_dim for layer in layers) / len(layers)))
    head_dim = shape.original_head_dim
    heads = max(1, round(attention / head_dim))
    width = max(1, round(attention / heads))
    stock = copy.deepcopy(model)
    hidden = shape.hidden
    for layer in stock.bert.encoder.layer:
        self_attention = layer.attention.self
        self_attention.num_attention_heads = heads
        self_attention.attention_head_size = width
        self_attention.all_head_size = heads * width
        self_attention.query = nn.Linear(hidden, heads * width)
        self_attention.key = nn.Linear(hidden, heads * width)
        self_attention.value = nn.Linear(hidden, heads * width)
        layer.attention.output.dense = nn.Linear(heads * width, hidden)
        layer.intermediate.dense = nn.Linear(hidden, ffn)
        layer.output.dense = nn.Linear(ffn, hidden)
    stock.grain_uniform = {"heads": heads, "head_dim": width, "ffn_dim": ffn}
    return stock.eval()


def heads_twin(model, shape):
    """A stock transformers BERT with the compact model's number of heads in every layer and the layer's total
    query/key and value/output widths spread evenly over them (stock heads tie the two: their mean), and the layer's
    FFN width. A layer without heads gets one head of width 1. Weights are random: only the time matters."""
    import copy

    from torch import nn

    stock = copy.deepcopy(model)
    hidden = shape.hidden
    for layer, widths in zip(stock.bert.encoder.layer, shape.layers):
        heads = max(1, len(widths.heads))
        width = max(1, round((sum(widths.qk_dims) + sum(widths.vo_dims)) / (2 * heads)))
        attention = layer.attention.self
        attention.num_attention_heads, attention.attention_head_size = heads, width
        attention.all_head_size = heads * width
        attention.query, attention.key = nn.Linear(hidden, heads * width), nn.Linear(hidden, heads * width)
        attention.value = nn.Linear(hidden, heads * width)
        layer.attention.output.dense = nn.Linear(heads * width, hidden)
        layer.intermediate.dense = nn.Linear(hidden, max(1, widths.ffn_dim))
        layer.output.dense = nn.Linear(max(1, widths.ffn_dim), hidden)
    return stock.eval()


def real_mask_models(dense, results_dir: str, seq_len: int, methods: tuple[str, ...] | None = None,
                     labels: tuple[str, ...] | None = None):
    """{label: model}, {label: info}: every stored mask of ``results_dir`` (first seed of each method, options and
    target density; only ``methods``, and only the ``labels`` such as ``grain@0.05``, when given) compacted from
    ``dense``'s weights, with its ``twin-heads`` and ``twin-64`` stock twins and its ``no-attention`` ceiling (the
    same FFN widths, no heads: what the mask would reach if its attention cost nothing)."""
    from grain_bench.compaction import compact
    from grain_bench.leaderboard.compare import options_label
    from grain_bench.leaderboard.tables import load_records
    from grain_bench.masks import UnitMasks
    from grain_bench.predictions import load_masks

    records, _ = load_records(results_dir)
    chosen = {}
    for record in sorted((r for r in records if r.ok and r.masks), key=lambda r: r.spec.seed):
        spec = record.spec
        if methods and spec.method not in methods:
            continue
        options = options_label(spec.method_options)
        label = f"{spec.method}{f'[{options}]' if options else ''}@{spec.target_density:g}"
        if not labels or label in labels:
            chosen.setdefault(label, record)
    models, info = {"dense": dense}, {"dense": {"density": 1.0, "flops_predicted_speedup": 1.0}}
    for label, record in sorted(chosen.items()):
        masks, space = load_masks(results_dir, record.masks, record)
        shape = masks.model_shape(space)
        dense_shape = type(masks).full(space).model_shape(space)
        models[label] = compact(dense, masks, space).eval()
        if not masks.prunes_hidden():  # stock twins keep the full residual stream: no twin of a narrower one
            models[f"{label}:twin-heads"] = heads_twin(dense, shape)
            models[f"{label}:twin-64"] = uniform_stock_model(dense, shape)
        no_heads = UnitMasks(torch.zeros_like(masks.qk), torch.zeros_like(masks.vo), masks.ffn.clone(), masks.hidden)
        models[f"{label}:no-attention"] = compact(dense, no_heads, space).eval()
        info[label] = {"run_id": record.run_id, "density": masks.density(space),
                       "flops_predicted_speedup": dense_shape.total_flops(seq_len) / shape.total_flops(seq_len),
                       "heads": sum(len(layer.heads) for layer in shape.layers),
                       "heads_per_layer": [len(layer.heads) for layer in shape.layers],
                       "distinct_head_widths": len({h for layer in shape.layers for h in layer.heads}),
                       "shape": shape.summary()}
        info[f"{label}:twin-heads"] = {"twin_of": label}
        info[f"{label}:twin-64"] = {"twin_of": label, "uniform": models[f"{label}:twin-64"].grain_uniform}
        info[f"{label}:no-attention"] = {"ceiling_of": label}
    return models, info


def build_models(dense, densities=DENSITIES, uniform: bool = True):
    """{label: model} plus {label: info} for dense, compact at each density and the uniform stock twins."""
    from grain_bench.compaction import compact
    from grain_bench.masks import MaskSpace, UnitMasks

    space = MaskSpace.from_config(dense.config)
    dense_shape = UnitMasks.full(space).model_shape(space)
    models, info = {"dense": dense}, {"dense": {"density": 1.0, "flops_predicted_speedup": 1.0}}
    for density in densities:
        masks = density_masks(dense, density)
        shape = masks.model_shape(space)
        label = f"compact@{density:g}"
        models[label] = compact(dense, masks).eval()
        predicted = dense_shape.total_flops(SEQ_LEN) / shape.total_flops(SEQ_LEN)
        info[label] = {"density": masks.density(space), "flops_predicted_speedup": predicted,
                       "encoder_flops_predicted_speedup":
                           dense_shape.encoder_flops(SEQ_LEN) / shape.encoder_flops(SEQ_LEN),
                       "heads_per_layer": [len(layer.heads) for layer in shape.layers],
                       "distinct_head_widths": len({h for layer in shape.layers for h in layer.heads}),
                       "shape": shape.summary()}
        if uniform and density < 1.0:
            stock = uniform_stock_model(dense, shape)
            models[f"uniform@{density:g}"] = stock
            info[f"uniform@{density:g}"] = {"density": masks.density(space), "uniform": stock.grain_uniform}
    return models, info


def timing_inputs(config, batch: int, seq_len: int) -> dict:
    """The same tokens for every model timed, with one half-padded row so the mask path runs as in real batches."""
    from grain_bench.measure import synthetic_inputs

    inputs = synthetic_inputs(config, batch, seq_len, "cpu")
    inputs["attention_mask"][0, seq_len // 2:] = 0
    return inputs


def machine() -> dict:
    """CPU model, core count, threads used and library versions."""
    import transformers

    from grain_bench.environment import cpu_name

    cpu = cpu_name()

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "gpu": gpu, "cpu_count": os.cpu_count(), "threads": THREADS, "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "load_average_at_start": load}


# ---- attention layouts --------------------------------------------------------------------------------------------
def _scatter_forward(self, hidden_states, attention_mask=None):
    """The first layout (grain-bench 0.1), kept for comparison: one GEMM of exactly the kept widths, Q/K/V scattered
    (``index_copy_``) into a zero-padded [heads, widest head] layout, one SDPA call, the context gathered back."""
    import torch.nn.functional as F

    if self.qkv is None:
        return self.LayerNorm(hidden_states + self.dense_bias)
    batch, length, _ = hidden_states.shape
    qk_max, vo_max, heads = max([1, *self.qk_dims]), max(self.vo_dims), self.num_heads
    q_index = torch.tensor([h * qk_max + j for h, w in enumerate(self.qk_dims) for j in range(w)], dtype=torch.long)
    v_index = torch.tensor([h * vo_max + j for h, w in enumerate(self.vo_dims) for j in range(w)], dtype=torch.long)

    def pad(flat, index, width):
        padded = flat.new_zeros(batch, length, heads * width)
        padded.index_copy_(2, index, flat)
        return padded.view(batch, length, heads, width).transpose(1, 2)

    q, k, v = self.qkv(hidden_states).split([self.qk_total, self.qk_total, self.vo_total], dim=-1)
    context = F.scaled_dot_product_attention(pad(q, q_index, qk_max), pad(k, q_index, qk_max), pad(v, v_index, vo_max),
                                             attn_mask=attention_mask, scale=self.scaling)
    context = context.transpose(1, 2).reshape(batch, length, heads * vo_max).index_select(2, v_index)
    return self.LayerNorm(self.dense(context) + hidden_states)


#: Layouts compared with the default (``plan_buckets`` at the default call cost, GEMM widths aligned to 8), as the
#: ``set_layout`` arguments of the attention and the FFN: ``one-bucket`` pads every head of a layer to the widest one;
#: ``per-width`` gives every distinct width its own call; ``unaligned`` keeps the buckets but pads no GEMM width;
#: ``scatter`` is the first layout (see ``_scatter_forward``), with unaligned FFN widths as it had; ``gpu`` is one call
#: with widths rounded up to multiples of 8.
LAYOUTS = {"one-bucket": (dict(call_cost=1e9), {}), "per-width": (dict(call_cost=0), {}),
           "unaligned": (dict(align=1), dict(align=1)), "scatter": (None, dict(align=1)),
           # the GPU layout (grain_bench.prepared.gpu_layout; the CUDA runtimes' layout): one call, widths of 8
           "gpu": (dict(call_cost=GPU_BUCKET_CALL_COST, width_multiple=GPU_WIDTH_MULTIPLE), {})}


def layout_models(compact_model, kinds=LAYOUTS) -> dict:
    """Copies of a compact model whose attention (and FFN) use each alternative layout (outputs unchanged)."""
    import copy
    import types

    out = {}
    for kind in kinds:
        attention_layout, ffn_layout = LAYOUTS[kind]
        model = copy.deepcopy(compact_model)
        for layer in model.bert.encoder.layer:
            if attention_layout is None:
                layer.attention.forward = types.MethodType(_scatter_forward, layer.attention)
            elif layer.attention.qkv is not None:
                layer.attention.set_layout(**attention_layout)
            layer.ffn.set_layout(**ffn_layout)
        out[kind] = model
    return out


# ---- the side-by-side script ------------------------------------------------------------------------------------
def add_runtime(models: dict, info: dict, runtime: str, inputs) -> None:
    """Add ``<label> [<runtime>]`` beside the dense model and every compact model of a method's own masks and its
    no-attention ceiling (not the ablations with options, the stock twins, the synthetic uniform twins or the layout
    variants: preparing one takes tens of seconds): prepared by ``grain_bench.runtimes.prepare``, which checks each
    against its eager model on ``inputs``."""
    from grain_bench.measure import torch_threads
    from grain_bench.runtimes import prepare

    for label in list(models):
        variant = label.partition(":")[2]
        if label.startswith("uniform") or variant not in ("", "no-attention") or "[" in label:
            continue
        started = time.time()
        with torch_threads(THREADS):
            models[f"{label} [{runtime}]"] = prepare(models[label], runtime, inputs, threads=THREADS)
        info[f"{label} [{runtime}]"] = {**info.get(label, {}), "runtime": runtime,
                                        "prepare_s": round(time.time() - started, 1)}
        print(f"prepared {label} [{runtime}] in {time.time() - started:.0f} s", file=sys.stderr, flush=True)


def result_rows(results: dict, info: dict, on_cuda: bool, densities, masks_dir: str | None) -> dict:
    """One report row per timed model: its timing, its info, its speedups (each against the dense model of the same
    rounds) and what it is compared with (uniform stock twins, equal-width twins, its no-attention ceiling)."""
    rows = {}
    for label, result in results.items():
        # On CUDA the baseline is the dense model of the same mode (timed in the same rounds); on CPU eager dense.
        mode = label.partition(" [")[2]
        baseline = results[f"dense [{mode}"] if on_cuda and mode else results["dense"]
        row = {**result.to_dict(), **info.get(label, {}), "speedup_vs_dense": baseline.median_ms / result.median_ms,
               "speedup_vs_dense_min": baseline.min_ms / result.min_ms}
        # Spread of the ratio: quartiles of per-round ratios (baseline and this model timed in the same round).
        row["speedup_q1_q3"] = _ratio_quartiles(baseline, result)
        rows[label] = row
    for density in densities:
        c, u = rows.get(f"compact@{density:g}"), rows.get(f"uniform@{density:g}")
        if c and u:
            c["slower_than_uniform_stock"] = c["median_ms"] / u["median_ms"] - 1.0
        if c:
            c["fraction_of_flops_predicted"] = c["speedup_vs_dense"] / c["flops_predicted_speedup"]
    for label, row in rows.items():
        _compare_row(label, row, rows, results, masks_dir)
    return rows


def _compare_row(label: str, row: dict, rows: dict, results: dict, masks_dir: str | None) -> None:
    """A row beside the dense model under its own runtime and, for a real mask, beside its twins and its ceiling."""
    base, _, runtime = label.partition(" [")
    suffix = f" [{runtime}" if runtime else ""
    if suffix and f"dense{suffix}" in rows:  # against the dense model under the same runtime, same rounds
        row["speedup_vs_same_runtime_dense"] = rows[f"dense{suffix}"]["median_ms"] / row["median_ms"]
        row["same_runtime_q1_q3"] = _ratio_quartiles(results[f"dense{suffix}"], results[label])
    if masks_dir and base != "dense" and ":" not in base:
        row["fraction_of_flops_predicted"] = row["speedup_vs_dense"] / row["flops_predicted_speedup"]
        for twin in ("twin-heads", "twin-64"):
            twin_row = rows.get(f"{base}:{twin}{suffix}")
            if twin_row:
                row[f"{twin}_speedup"] = twin_row["speedup_vs_dense"]
                row[f"slower_than_{twin}"] = row["median_ms"] / twin_row["median_ms"] - 1.0
        ceiling = rows.get(f"{base}:no-attention{suffix}")
        if ceiling:  # same runtime, same rounds
            row["no_attention_speedup"] = ceiling["speedup_vs_dense"]


def report_targets(rows: dict, runtimes, densities, masks_dir: str | None, on_cuda: bool, batch: int) -> dict:
    """The targets a report checks: per runtime on real masks (each against the eager dense model), none on CUDA
    (the GPU protocol is reported as measured), the synthetic ones otherwise."""
    if masks_dir and on_cuda:
        return {}  # issue 14 sets CPU targets
    if not masks_dir:
        return _targets(rows, densities)
    targets = {}
    for runtime in runtimes:
        suffix = "" if runtime == "eager" else f" [{runtime}]"
        chosen = {label[:len(label) - len(suffix)]: row for label, row in rows.items()
                  if (label.endswith(suffix) if suffix else " [" not in label)}
        targets[runtime] = _real_mask_targets(chosen, batch)
    return targets


def run(out_path: str | None, runs: int, layouts: bool, densities=DENSITIES, malloc: dict | None = None,
        masks_dir: str | None = None, batch: int = BATCH, seq_len: int = SEQ_LEN, runtimes=("eager",),
        methods: tuple[str, ...] | None = None, device: str = "cpu", calls: int = 1,
        labels: tuple[str, ...] | None = None) -> dict:
    """Measure everything side by side; print a table; write JSON to ``out_path``.

    On ``device="cuda"`` (fp16; ``runtimes`` are then the GPU modes eager, cuda_graph, compile) each mode is timed
    in its own interleaved rounds, and every row's speedup is against the dense model under the same mode."""
    from grain_bench.measure import LatencySettings, time_models
    from grain_bench.runtimes import CompileTimeout, runtime_names

    on_cuda = device.startswith("cuda")
    if on_cuda and not set(runtimes) <= set(runtime_names("cuda")):
        raise SystemExit(f"on CUDA the runtimes are {', '.join(runtime_names('cuda'))}, not {', '.join(runtimes)}")

    torch.manual_seed(0)
    started = time.time()
    source = (f"the masks training produced, stored in {masks_dir}" if masks_dir
              else "global weight-norm ranking (prune_to_density)")
    report = {"machine": machine(),
              "settings": {"device": device, "batch": batch, "seq_len": seq_len, "dtype": "fp16" if on_cuda else "fp32",
                           "threads": None if on_cuda else THREADS, "runs": runs,
                           "masks": source, "malloc": malloc or {}, "runtimes": list(runtimes), "calls": calls,
                           "methods": list(methods) if methods else None, "labels": list(labels) if labels else None},
              "command": " ".join(["python benchmarks/bench_latency.py", *sys.argv[1:]])}
    dense = load_dense()
    if masks_dir:
        models, info = real_mask_models(dense, masks_dir, seq_len, methods, labels)
        densities = ()
    else:
        models, info = build_models(dense, densities)
    inputs = None
    if layouts:  # every pruned compact model (the ones with a shape: not dense, not the stock twins), each layout
        for label in [label for label, meta in info.items() if "shape" in meta and meta["density"] < 1.0]:
            for kind, model in layout_models(models[label]).items():
                models[f"{label}:{kind}"] = model
                info[f"{label}:{kind}"] = dict(info[label], layout=kind)
    inputs = timing_inputs(dense.config, batch, seq_len)
    for runtime in runtimes:
        if runtime != "eager" and not on_cuda:
            add_runtime(models, info, runtime, inputs)
    with torch.inference_mode():  # equivalence of every layout variant before timing (twins are other models)
        reference = {label: m(**inputs).logits for label, m in models.items()
                     if not label.startswith("uniform") and "twin" not in label and " [" not in label
                     and "no-attention" not in label}
    for label, logits in reference.items():
        base = reference[label.split(":")[0]]
        assert (logits - base).abs().max() <= 1e-4, f"{label} differs from {label.split(':')[0]}"

    def publish(results: dict) -> dict:
        """Rows, targets and the report from the timings so far; printed, and written to ``out_path``."""
        rows = result_rows(results, info, on_cuda, densities, masks_dir)
        report["results"] = rows
        report["targets"] = report_targets(rows, runtimes, densities, masks_dir, on_cuda, batch)
        report["seconds"] = time.time() - started
        report["machine"]["load_average_at_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
        _print(rows)
        print(json.dumps(report["targets"], indent=2))
        write_report(out_path, report)
        return report

    if on_cuda:  # one set of interleaved rounds per mode; the labels of modes other than eager carry " [mode]"
        results = {}
        for mode in runtimes:
            settings = LatencySettings(device=device, dtype="fp16", batch=batch, seq_len=seq_len, mode=mode,
                                       threads=0, warmup=3, runs=runs, seed=0)
            suffix = "" if mode == "eager" else f" [{mode}]"
            # compile (max-autotune) tunes every distinct GEMM shape, a minute or more a pruned model: under compile
            # only dense and the methods' own masks at 0.05 and 0.2 (no twins, ablations or 0.1)
            timed = models if mode != "compile" else {
                k: m for k, m in models.items() if k == "dense" or k.endswith(("@0.05", "@0.2")) and "[" not in k}
            try:
                timed_results = time_models(timed, settings, inputs=inputs)
            except CompileTimeout as exc:  # recorded, not hung: the other modes keep their rows
                report.setdefault("not_timed", {})[mode] = str(exc)
                print(f"{mode}: {exc}", file=sys.stderr, flush=True)
                continue
            for label, result in timed_results.items():
                results[f"{label}{suffix}"] = result
                info.setdefault(f"{label}{suffix}", {**info.get(label, {}), "runtime": mode})
            report = publish(results)  # after each mode, so that a run cut off by a time limit keeps what it timed
        return report
    settings = LatencySettings(device="cpu", dtype="fp32", batch=batch, seq_len=seq_len, threads=THREADS,
                               warmup=2, runs=runs, seed=0, calls=calls)
    return publish(time_models(models, settings, inputs=inputs))


def write_report(path: str | None, report: dict) -> None:
    """Write a benchmark's JSON report to ``path`` (its folder made if needed); nothing when ``path`` is None."""
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as handle:
            json.dump(report, handle, indent=2, default=str)


def _ratio_quartiles(baseline, result) -> list[float]:
    """First and third quartiles of the per-round ratios baseline / result (both timed in the same rounds)."""
    ratios = sorted(d / c for d, c in zip(baseline.times_ms, result.times_ms))
    return [ratios[len(ratios) // 4], ratios[(3 * len(ratios)) // 4]]


def _real_mask_targets(rows, batch: int) -> dict:
    """Issue 14's targets on real masks, for the rows at this batch size."""
    out = {}
    grain5 = rows.get("grain@0.05")
    if grain5:
        need = 12.0 if batch >= 32 else 6.0
        out[f"grain 5%, batch {batch}: speedup >= {need:g}x"] = {
            "measured": grain5["speedup_vs_dense"], "met": grain5["speedup_vs_dense"] >= need,
            "no_attention_ceiling": grain5.get("no_attention_speedup")}
    grain20 = rows.get("grain@0.2")
    if grain20:
        out["grain 20%: >= 90% of FLOPs-predicted"] = {"fraction": grain20["fraction_of_flops_predicted"],
                                                       "met": grain20["fraction_of_flops_predicted"] >= 0.9}
    slower = {label: row["slower_than_twin-heads"] for label, row in rows.items() if "slower_than_twin-heads" in row}
    if slower:
        out["every real mask at least as fast as its twin-heads"] = {
            "slower_by": slower, "met": all(value <= 0 for value in slower.values())}
    return out


def _targets(rows, densities) -> dict:
    out = {}
    if "compact@0.05" in rows:
        out["5%: speedup >= 6x"] = {"measured": rows["compact@0.05"]["speedup_vs_dense"],
                                    "met": rows["compact@0.05"]["speedup_vs_dense"] >= 6.0}
    for density in densities:
        row = rows.get(f"compact@{density:g}")
        if row and 0.1 <= density < 1:
            out[f"{density:g}: speedup >= 70% of FLOPs-predicted"] = {
                "measured": row["speedup_vs_dense"], "predicted": row["flops_predicted_speedup"],
                "fraction": row["fraction_of_flops_predicted"], "met": row["fraction_of_flops_predicted"] >= 0.7}
        if row and "slower_than_uniform_stock" in row:
            out[f"{density:g}: at most 10% slower than uniform stock"] = {
                "slower_by": row["slower_than_uniform_stock"], "met": row["slower_than_uniform_stock"] <= 0.10}
    return out


def _print(rows) -> None:
    print(f"{'model':34s} {'median ms':>10s} {'IQR ms':>8s} {'speedup':>8s} {'ratio q1-q3':>14s} {'FLOPs pred':>10s} "
          f"{'min ms':>8s} {'min ratio':>9s}")
    for label, row in rows.items():
        pred = row.get("flops_predicted_speedup")
        q1, q3 = row["speedup_q1_q3"]
        print(f"{label:34s} {row['median_ms']:10.1f} {row['iqr_ms']:8.1f} {row['speedup_vs_dense']:7.2f}x "
              f"{q1:6.2f}-{q3:5.2f}x {'' if pred is None else f'{pred:9.2f}x':>10s} {row['min_ms']:8.1f} "
              f"{row['speedup_vs_dense_min']:8.2f}x")


# ---- pytest-benchmark suite -------------------------------------------------------------------------------------
try:
    import pytest
except ImportError:  # the script entry point does not need pytest
    pytest = None

if pytest is not None:
    @pytest.fixture(scope="module")
    def minilm_models():
        """Dense, compact and uniform-stock MiniLM-L6 models at every density, and fixed inputs."""
        from grain_bench.measure import synthetic_inputs

        dense = load_dense()
        models, info = build_models(dense)
        return models, synthetic_inputs(dense.config, BATCH, SEQ_LEN, "cpu")

    @pytest.mark.parametrize("label", ["dense", *(f"compact@{d:g}" for d in DENSITIES),
                                       *(f"uniform@{d:g}" for d in DENSITIES if d < 1.0)])
    def test_latency_cpu(benchmark, minilm_models, label):
        """One batch of 32 x 64 tokens, fp32, 2 threads."""
        from grain_bench.measure import torch_threads

        models, inputs = minilm_models
        model = models[label]
        benchmark.extra_info.update({"batch": BATCH, "seq_len": SEQ_LEN, "threads": THREADS, "dtype": "fp32"})

        def call():
            with torch.inference_mode():
                model(**inputs)

        with torch_threads(THREADS):
            benchmark.pedantic(call, rounds=5, warmup_rounds=1, iterations=1)


#: glibc malloc tunables that keep freed activation buffers in the heap instead of returning them to the OS: by default
#: every fresh tensor over the mmap threshold is a new mapping whose pages fault in on first touch, which on the VM this
#: was measured on made LayerNorm and copies 2-3x slower inside a model than alone. The same role as the jemalloc or
#: tcmalloc preload that CPU inference guides recommend, without installing anything. Dense and compact share them.
MALLOC_TUNED = {"MALLOC_MMAP_THRESHOLD_": "1000000000", "MALLOC_TRIM_THRESHOLD_": "1000000000",
                "MALLOC_TOP_PAD_": "100000000"}


def allocator(choice: str, argv, script: str = __file__) -> dict:
    """Re-exec ``script`` with the tuned allocator settings when asked for and not yet in effect; the settings in
    effect."""
    if choice == "tuned" and any(os.environ.get(k) != v for k, v in MALLOC_TUNED.items()):
        env = {**os.environ, **MALLOC_TUNED}
        os.execve(sys.executable, [sys.executable, os.path.abspath(script), *(argv or sys.argv[1:])], env)
    return {k: os.environ.get(k) for k in MALLOC_TUNED}


def main(argv=None) -> int:
    """Command-line entry point of the side-by-side measurement."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--allocator", choices=["tuned", "default"], default="tuned",
                        help="glibc malloc settings: tuned (default; see MALLOC_TUNED) or the system default")
    parser.add_argument("--out", default=None, help="write the JSON report here")
    parser.add_argument("--runs", type=int, default=15, help="timed rounds (every model once per round)")
    parser.add_argument("--layouts", action="store_true",
                        help="also time alternative attention layouts of every compact model (with --masks: of the "
                             "methods' own masks)")
    parser.add_argument("--densities", default=",".join(f"{d:g}" for d in DENSITIES))
    parser.add_argument("--masks", default=None, metavar="RESULTS",
                        help="time the masks stored by the runs of this results directory, beside stock twins")
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--seq-len", type=int, default=SEQ_LEN)
    parser.add_argument("--methods", default=None, help="with --masks: only these methods (comma list)")
    parser.add_argument("--labels", default=None, help="with --masks: only these masks (comma list, e.g. grain@0.05)")
    parser.add_argument("--runtimes", default="eager",
                        help="comma list of grain_bench.runtimes to time side by side: eager, compile, aoti, onnx")
    parser.add_argument("--device", default="cpu", help="cpu (fp32, 2 threads) or cuda (fp16, GPU modes as runtimes)")
    parser.add_argument("--calls", type=int, default=1,
                        help="CPU: calls of a model back to back in each round, timed as their mean (warm caches: "
                             "the steady state of serving one model; default 1)")
    args = parser.parse_args(argv)
    malloc = allocator(args.allocator, argv)
    densities = tuple(float(d) for d in args.densities.split(","))
    run(args.out, args.runs, args.layouts, densities, malloc={"allocator": args.allocator, **malloc},
        masks_dir=args.masks, batch=args.batch, seq_len=args.seq_len, runtimes=tuple(args.runtimes.split(",")),
        methods=tuple(args.methods.split(",")) if args.methods else None, device=args.device, calls=args.calls,
        labels=tuple(args.labels.split(",")) if args.labels else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
