"""Measurement: parameter counts from the real modules, FLOPs from ``ModelShape``, and latency.

Latency protocol: warm-up calls, then repeated timed calls; median and interquartile range. The models compared
(dense and compact) are timed in the same process, interleaved round by round in a shuffled order, so machine load
drifts hit both alike. CPU runs at a fixed torch thread count (set, then restored); GPU runs are timed with CUDA events,
in eager, CUDA-graph or ``torch.compile`` mode on CUDA and eager, ``torch.compile``, AOTInductor, ragged-attention
kernel or ONNX Runtime mode on CPU (``grain_bench.runtimes``), in fp32/fp16/bf16. Every result names its device,
dtype, batch, sequence length, mode and threads.
"""

from __future__ import annotations

import contextlib
import copy
import os
import random
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from grain_bench.errors import GrainBenchError, TrainingDiverged
from grain_bench.files import RunWarnings
from grain_bench.prepared import head_outputs
from grain_bench.records import Density, Flops, LatencyEntry, ParamCounts, latency_entry
from grain_bench.shape import ModelShape

SCHEMA_VERSION = 1
EQUIVALENCE_ATOL = 1e-4
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Threads of the CPU protocol in run records; the protocol is 2 threads. Env var so a user can match a machine.
THREADS_ENV = "GRAIN_BENCH_THREADS"
DEFAULT_CPU_THREADS = 2
#: the fewest timed rounds a time budget stops at (3 gave medians with no spread to speak of)
MIN_ROUNDS = 5


# ---- parameters and FLOPs ---------------------------------------------------------------------------------------
def param_counts(model) -> dict[str, int]:
    """Parameters of the real modules: total, encoder, encoder linear (weights and biases), embeddings."""
    base = model.base_model
    encoder_params = list(base.encoder.parameters())
    norms = {id(p) for m in base.encoder.modules() if isinstance(m, torch.nn.LayerNorm) for p in m.parameters()}
    return {
        "total": sum(p.numel() for p in model.parameters()),
        "encoder": sum(p.numel() for p in encoder_params),
        # Everything in the encoder but LayerNorms: the linears, plus the kept output biases of empty blocks.
        "encoder_linear": sum(p.numel() for p in encoder_params if id(p) not in norms),
        "embeddings": sum(p.numel() for p in base.embeddings.parameters()),
    }


def check_param_counts(model, shape: ModelShape) -> dict[str, int]:
    """``param_counts`` of ``model``, after checking they agree with ``shape`` (raises ``GrainBenchError`` if not)."""
    counts = param_counts(model)
    expected = {"encoder": shape.encoder_params(), "encoder_linear": shape.encoder_linear_params()}
    if shape.vocab_size:
        expected["embeddings"] = shape.embedding_params()
    wrong = {k: (counts[k], v) for k, v in expected.items() if counts[k] != v}
    if wrong:
        raise GrainBenchError(f"parameter counts of the model disagree with its ModelShape (model, shape): {wrong}")
    return counts


def flops(shape: ModelShape, seq_len: int, dense: ModelShape | None = None) -> dict[str, Any]:
    """FLOPs per sequence of ``seq_len`` tokens (encoder and total), and the predicted speedup over ``dense``."""
    out: dict[str, Any] = {"seq_len": seq_len, "encoder": shape.encoder_flops(seq_len),
                           "total": shape.total_flops(seq_len)}
    if dense is not None:
        out["dense_encoder"] = dense.encoder_flops(seq_len)
        out["dense_total"] = dense.total_flops(seq_len)
        out["predicted_speedup"] = out["dense_total"] / out["total"]
    return out


# ---- latency ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LatencySettings:
    """How to time: device, dtype, batch, length, mode, threads, warm-up and timed calls (or a time budget)."""

    device: str = "cpu"
    dtype: str = "fp32"
    batch: int = 32
    seq_len: int = 64
    mode: str = "eager"
    threads: int = DEFAULT_CPU_THREADS
    warmup: int = 2
    runs: int = 10
    budget_s: float | None = None  # stop early (after MIN_ROUNDS rounds) once the timed rounds took this long
    seed: int = 0
    # CPU: calls of one model back to back in each round, timed together (a time is their mean). 1 times a model
    # right after the others, with their weights in the caches; more is the steady state of serving one model, which
    # matters at batch 1, where a compact model's weights fit in the caches and a call takes milliseconds.
    calls: int = 1

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise GrainBenchError(f"dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")
        if self.calls < 1 or (self.calls > 1 and self.device.startswith("cuda")):
            raise GrainBenchError(f"calls per round must be 1 on CUDA and at least 1 on CPU, got {self.calls}")


@dataclass(frozen=True)
class LatencyResult:
    """One timed model under one setting; times in milliseconds per batch."""

    label: str
    device: str
    dtype: str
    batch: int
    seq_len: int
    mode: str
    threads: int | None
    median_ms: float
    iqr_ms: float
    runs: int
    warmup: int
    min_ms: float | None = None  # on a shared machine the least-disturbed call; medians carry the load
    times_ms: tuple[float, ...] = field(default=(), repr=False)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (raw times left out; ``extra`` merged in, e.g. speedups)."""
        out = asdict(self)
        out.pop("times_ms")
        out.update(out.pop("extra"))
        return out


def quantiles(times: list[float]) -> tuple[float, float]:
    """Median and interquartile range."""
    if len(times) < 2:
        return (times[0], 0.0) if times else (float("nan"), float("nan"))
    q1, median, q3 = statistics.quantiles(times, n=4, method="inclusive")
    return median, q3 - q1


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """Run the block with ``torch.set_num_threads(threads)`` and restore the previous count afterwards."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def synthetic_inputs(config, batch: int, seq_len: int, device, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random token ids of the given shape with a full attention mask (``grain_bench.runtimes.example_inputs``)."""
    from grain_bench.runtimes import example_inputs

    return example_inputs(config, device, batch, seq_len, seed)


def _prepare(model, settings: LatencySettings):
    """``model`` in eval mode on the timing device and dtype: a copy when either differs, so that timing never
    changes the weights that are scored and saved (an fp16 cast and back rounds them)."""
    if not isinstance(model, torch.nn.Module):  # a prepared runtime (grain_bench.runtimes): already set up
        return model
    reference = next(model.parameters())
    target = torch.device(settings.device)
    same_device = reference.device.type == target.type and target.index in (None, reference.device.index)
    if reference.dtype != DTYPES[settings.dtype] or not same_device:
        model = copy.deepcopy(model)
    return model.eval().to(device=settings.device, dtype=DTYPES[settings.dtype])


def _cpu_call(model, inputs, calls: int = 1) -> Callable[[], float]:
    def call() -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            for _ in range(calls):
                model(**inputs)
        return (time.perf_counter() - start) * 1000.0 / calls
    return call


def _cuda_call(model, inputs) -> Callable[[], float]:
    """A timed call on CUDA: CUDA events around the (prepared) model's call."""
    def call() -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        with torch.inference_mode():
            model(**inputs)
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    return call


def _timed_calls(models: dict[str, Any], settings: LatencySettings, inputs, threads, runtime) -> dict[str, Callable]:
    """One timed call per model: each on the timing device and dtype, prepared by ``runtime`` (checked against the
    eager model on CPU; a model prepared beforehand is taken as it is)."""
    on_cuda = settings.device.startswith("cuda")
    calls = {}
    for label, model in models.items():
        model = _prepare(model, settings)
        model_inputs = inputs if inputs is not None else synthetic_inputs(
            model.config, settings.batch, settings.seq_len, settings.device, settings.seed)
        model_inputs = {k: v.to(settings.device) for k, v in model_inputs.items()}
        if isinstance(model, torch.nn.Module):
            model = runtime.prepare(model, model_inputs, threads, check=not on_cuda)
        calls[label] = _cuda_call(model, model_inputs) if on_cuda else _cpu_call(model, model_inputs, settings.calls)
    return calls


#: ``mode="best"``: each model under the fastest of these runtimes of its device that reproduces it. ``compile`` is
#: not among them: its max-autotune compilation takes minutes a model on a GPU and tens of seconds on CPU (ask for it
#: by name); ``ragged`` needs a C compiler on CPU and is left out where its check fails.
BEST = "best"
BEST_CANDIDATES = {"cpu": ("eager", "ragged"), "cuda": ("eager", "cuda_graph")}


def best_candidates(device: str, regs=None) -> list[str]:
    """The runtimes ``mode="best"`` tries on ``device`` (those registered and usable here)."""
    from grain_bench.runtimes import runtime_names

    names = runtime_names(device, regs)
    return [name for name in BEST_CANDIDATES.get(device.split(":")[0], ("eager",)) if name in names]


def _time_best(models: dict[str, Any], settings: LatencySettings, inputs, regs) -> dict[str, LatencyResult]:
    """``time_models`` under every candidate runtime (each in its own interleaved rounds, every model in each), then
    each model's fastest: its result keeps mode "best" and names the runtime (``extra["runtime"]``) and every
    candidate's median (``extra["candidates_ms"]``). A candidate that cannot run or does not reproduce the models
    (``GrainBenchError``) is left out (``extra["left_out"]``); none left is an error naming why."""
    import dataclasses

    timed: dict[str, dict[str, LatencyResult]] = {}
    left_out: dict[str, str] = {}
    for mode in best_candidates(settings.device, regs):
        try:
            timed[mode] = time_models(models, dataclasses.replace(settings, mode=mode), inputs, regs)
        except GrainBenchError as exc:
            left_out[mode] = str(exc)
    if not timed:
        raise GrainBenchError(f"no runtime of {settings.device} could time the models: "
                              + "; ".join(f"{mode}: {why}" for mode, why in left_out.items()))
    results = {}
    for label in models:
        fastest = min((results_of[label] for results_of in timed.values()), key=lambda r: r.median_ms)
        extra = {**fastest.extra, "runtime": fastest.mode,
                 "candidates_ms": {mode: results_of[label].median_ms for mode, results_of in timed.items()},
                 **({"left_out": left_out} if left_out else {})}
        results[label] = dataclasses.replace(fastest, mode=BEST, extra=extra)
    return results


def time_models(models: dict[str, Any], settings: LatencySettings, inputs: dict[str, torch.Tensor] | None = None,
                regs=None) -> dict[str, LatencyResult]:
    """Time every model under ``settings``, interleaved in a shuffled order each round, in this one process
    (``settings.mode``: a runtime of ``regs``, default the process-wide registries, or ``best``: ``_time_best``)."""
    from grain_bench.runtimes import get_runtime

    if settings.mode == BEST:
        return _time_best(models, settings, inputs, regs)

    on_cuda = settings.device.startswith("cuda")
    runtime = get_runtime(settings.mode, settings.device, regs, what="latency mode")
    if on_cuda and not torch.cuda.is_available():
        raise GrainBenchError(f"latency on {settings.device!r} asked for, but CUDA is not available")
    threads = None if on_cuda else settings.threads
    rng = random.Random(settings.seed)
    times: dict[str, list[float]] = {label: [] for label in models}
    with torch_threads(threads):
        calls = _timed_calls(models, settings, inputs, threads, runtime)
        labels = list(calls)
        for _ in range(settings.warmup):
            for label in labels:
                calls[label]()
        started = time.perf_counter()
        for round_index in range(settings.runs):
            rng.shuffle(labels)
            for label in labels:
                times[label].append(calls[label]())
            if (settings.budget_s is not None and round_index >= MIN_ROUNDS - 1
                    and time.perf_counter() - started > settings.budget_s):
                break
    results = {}
    for label, values in times.items():
        median, iqr = quantiles(values)
        results[label] = LatencyResult(label=label, device=_device_name(settings.device), dtype=settings.dtype,
                                       batch=settings.batch, seq_len=settings.seq_len, mode=settings.mode,
                                       threads=threads, median_ms=median, iqr_ms=iqr, runs=len(values),
                                       min_ms=min(values) if values else None,
                                       warmup=settings.warmup, times_ms=tuple(values),
                                       extra={"calls_per_round": settings.calls} if settings.calls > 1 else {})
    return results


def _device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return device


def speedup_entries(results: dict[str, LatencyResult], baseline: str,
                    predicted: Mapping[str, float | None] | None = None
                    ) -> list[dict[str, Any]]:
    """Latency entries for a record: each with ``speedup`` over ``baseline`` and the FLOPs-predicted speedup beside."""
    base = results[baseline].median_ms
    entries = []
    for label, result in results.items():
        entry = result.to_dict()
        entry["speedup"] = base / result.median_ms if result.median_ms > 0 else None
        if predicted and label in predicted:
            entry["flops_predicted_speedup"] = predicted[label]
        entries.append(entry)
    return entries


# ---- equivalence ------------------------------------------------------------------------------------------------


def max_output_diff(reference, candidate, inputs: dict[str, torch.Tensor]) -> float:
    """Largest absolute difference between the two models' logits on ``inputs`` (both in eval mode, no grad)."""
    modes = (reference.training, candidate.training)
    reference.eval()
    candidate.eval()
    try:
        with torch.inference_mode():
            ref = head_outputs(reference(**inputs))
            out = head_outputs(candidate(**inputs))
    finally:
        reference.train(modes[0])
        candidate.train(modes[1])
    if set(ref) != set(out):
        raise GrainBenchError(f"compact model outputs {sorted(out)} but the masked model outputs {sorted(ref)}")
    if not all(bool(torch.isfinite(t).all()) for t in ref.values()):
        raise TrainingDiverged("the trained student's outputs are not finite (NaN or infinite logits): training "
                               "diverged; lower the learning rate")
    return max(float((ref[k].float() - out[k].float()).abs().max()) for k in ref)


def check_equivalence(masked_model, compact_model, inputs: dict[str, torch.Tensor],
                      atol: float = EQUIVALENCE_ATOL) -> float:
    """Raise ``GrainBenchError`` unless the compact model's logits equal the masked model's within ``atol``."""
    diff = max_output_diff(masked_model, compact_model, inputs)
    if not diff <= atol:  # also catches NaN
        raise GrainBenchError(f"compact model does not match the masked model: max |logit difference| {diff:.3g} > "
                              f"{atol:g}; no latency recorded. This is a bug in grain_bench.compaction: please "
                              f"report it "
                              f"with the run spec")
    return diff


# ---- the run-record hook ----------------------------------------------------------------------------------------
def _eval_batch(data, task, device, rows: int = 16) -> dict[str, torch.Tensor]:
    features = data.eval.features
    count = min(rows, len(features))
    if count == 0:
        raise GrainBenchError("the evaluation split is empty: cannot check the compact model against the masked one")
    batch = data.collate([features[i] for i in range(count)])
    return {k: v.to(device) for k, v in task.model_inputs(batch).items()}


def _cpu_threads() -> int:
    value = os.environ.get(THREADS_ENV)
    if value:
        try:
            return max(1, int(value))
        except ValueError:
            raise GrainBenchError(f"{THREADS_ENV}={value!r} is not a whole number of threads") from None
    return min(DEFAULT_CPU_THREADS, os.cpu_count() or 1)


def record_settings(device: str, seq_len: int) -> LatencySettings:
    """The cheap protocol used inside run records: batch 32 at the recipe length, a few seconds in all (on CUDA in
    fp16, each model under its fastest of eager and CUDA-graph replay, ``mode="best"``)."""
    if device.startswith("cuda"):
        return LatencySettings(device=device, dtype="fp16", batch=32, seq_len=seq_len, mode=BEST, threads=0,
                               warmup=3, runs=30, budget_s=3.0)
    return LatencySettings(device="cpu", dtype="fp32", batch=32, seq_len=seq_len, mode="eager", threads=_cpu_threads(),
                           warmup=1, runs=7, budget_s=4.0)


@dataclass
class Measured:
    """What ``measure_run`` found out about a distilled student, each computed once."""

    model: Any  # the compact model, checked against the masked one, on the student's device: what gets scored
    shape: ModelShape
    dense_shape: ModelShape
    params: ParamCounts
    flops: Flops
    density: Density
    latency: list[LatencyEntry]
    artifact: str | None  # the saved model, relative to the results directory
    compact: dict[str, Any]  # the equivalence check's max |logit difference| and the compact model's parameter counts


def measure_run(config, spec, task, result, data, tokenizer, recipe, extra: dict | None = None,
                warnings: RunWarnings | None = None) -> Measured:
    """Compact the student, check it against the masked model on an eval batch, count its parameters and FLOPs,
    time it against the dense model (``config.measure_latency``), save it (``config.save_models``).

    ``config`` is the harness's ``SweepRequest``; ``extra`` the method's ``finalize`` shape fields. A storage error
    while saving costs the saved model, not the run: it is noted in ``warnings``."""
    from grain_bench.compaction import compact

    student, space, masks = result.model, result.space, result.masks
    device = next(student.parameters()).device
    compact_model = compact(student, masks, space).eval()
    diff = check_equivalence(student, compact_model, _eval_batch(data, task, device))  # a wrong model is never timed
    shape, dense_shape = masks.model_shape(space, extra), type(masks).full(space).model_shape(space)
    counts = check_param_counts(compact_model, masks.model_shape(space))
    head = _head_params(compact_model)  # the compact pooler and head: narrower inputs where hidden dims are pruned
    params = ParamCounts(total=shape.encoder_params() + shape.embedding_params() + head,
                         encoder=shape.encoder_params(), encoder_linear=shape.encoder_linear_params(),
                         embeddings=shape.embedding_params(), dense_encoder=dense_shape.encoder_params(), head=head)
    expected = result.expected_at_freeze
    density = Density(target=spec.target_density, achieved=masks.density(space),
                      encoder_params=shape.encoder_params() / dense_shape.encoder_params(), expected_at_freeze=expected,
                      gap_at_freeze=None if expected is None else expected - spec.target_density)
    counted = Flops(**flops(shape, recipe.max_length, dense_shape))
    latency = _run_latency(student, compact_model, recipe, counted) if config.measure_latency else []
    artifact = None
    if config.save_models:
        metadata = {"run_id": spec.run_id, "spec": spec.to_dict(), "max_abs_logit_diff": diff,
                    "density": density.achieved, "masks": masks.to_dict()}
        artifact = _save(compact_model, config.results, os.path.join("models", spec.run_id), tokenizer, metadata,
                         warnings if warnings is not None else RunWarnings())
    return Measured(compact_model, shape, dense_shape, params, counted, density, latency, artifact,
                    {"max_abs_logit_diff": diff, "params": counts})


def _run_latency(student, compact_model, recipe, counted: Flops) -> list[LatencyEntry]:
    """The run's own quick timing: the compact model beside a hook-free dense copy of the student."""
    settings = record_settings(str(next(student.parameters()).device), recipe.max_length)
    results = time_models({"dense": _dense_copy(student), "compact": compact_model}, settings)
    return [latency_entry(entry) for entry in speedup_entries(
        results, "dense", {"compact": counted.predicted_speedup, "dense": 1.0})]


def _save(compact_model, results: str, relative: str, tokenizer, metadata: dict, warnings: RunWarnings) -> str | None:
    """Save the compact model at ``relative`` in the results directory (from the CPU, then back on its device);
    returns ``relative`` (a record's paths are relative to its results directory, so a copied folder is whole) or
    None: a full or read-only disk costs the saved model, not the trained result."""
    from grain_bench.compaction import save_pruned

    device = next(compact_model.parameters()).device
    path = os.path.join(results, relative)
    saved = warnings.store(f"the compact model could not be saved to {path}",
                           lambda: save_pruned(compact_model.to("cpu"), path, tokenizer=tokenizer, metadata=metadata))
    compact_model.to(device)
    return None if saved is None else relative


def _head_params(model) -> int:
    """Parameters outside the encoder and embeddings: the task head and the pooler."""
    head = sum(p.numel() for n, p in model.named_parameters() if not n.startswith(model.base_model_prefix + "."))
    pooler = model.base_model.pooler
    return head + (sum(p.numel() for p in pooler.parameters()) if pooler is not None else 0)


def _dense_copy(model):
    # A hook-free dense model of the same class and config: the latency baseline (its weights do not matter).
    dense = type(model)(model.config)
    dense.load_state_dict(model.state_dict())
    return dense.eval()
