"""Score a model the suite did not just train: ``grain-bench evaluate --model PATH_OR_HUB_ID --tasks T`` and
``grain_bench.evaluate(model=...)``.

The model is a compact model grain-bench saved (recognised by its config, loaded with ``load_pruned``: verified, no
prompt), any checkpoint of the task's head class (a folder or a hub id: ``AutoModelFor...``), or an in-memory
``torch.nn.Module`` with its tokenizer. It is scored on the task's scored split with the same adapter, encoding,
metrics, collapse verdict and stored per-example predictions as every run, timed under the record's CPU or GPU
protocol (a compact model beside a dense model of the shape it was pruned from, so it has a measured speedup; any other
model alone), and recorded as a run of the method ``evaluated`` (option ``model``: where
it came from), so it is its own row of the tables, beside nothing it was not compared with: it has no teacher.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from grain_bench.backbones import first_line
from grain_bench.errors import UsageError

METHOD = "evaluated"
DEFAULT_RESULTS = "grain-bench-evaluations"


@dataclass
class Loaded:
    """A model to score, its tokenizer and where it came from (``source``: the path or hub id, or ``in-memory``)."""

    model: Any
    tokenizer: Any
    source: str
    compact: bool


def load_model(model, task, tokenizer=None) -> Loaded:
    """The model to score on ``task``: a saved compact folder (``load_pruned``), a checkpoint of the task head's
    class (folder or hub id), or a module given as it is (then ``tokenizer`` is needed)."""
    import torch

    if isinstance(model, torch.nn.Module):
        if tokenizer is None:
            raise UsageError("an in-memory model needs its tokenizer: evaluate(model=module, tokenizer=tokenizer, ...)")
        return Loaded(model.eval(), tokenizer, "in-memory", hasattr(model.config, "layer_shapes"))
    if not isinstance(model, str) or not model.strip():
        raise UsageError(f"--model needs a model folder, a hub id (ORG/NAME) or a module; got {model!r}")
    from transformers import AutoTokenizer

    from grain_bench.backbones import is_compact_folder

    path = os.path.expanduser(model)
    if os.path.isdir(path) and is_compact_folder(path):
        from grain_bench.compaction import load_pruned

        loaded = load_pruned(path)
        return Loaded(loaded, tokenizer or AutoTokenizer.from_pretrained(path, trust_remote_code=True), model, True)
    return Loaded(_checkpoint(path if os.path.isdir(path) else model, task), tokenizer or _tokenizer(path, model),
                  model, False)


def _checkpoint(where: str, task):
    """A checkpoint of the task head's transformers class, with the task's number of labels."""
    import transformers

    from grain_bench.heads import HEADS

    cls = getattr(transformers, HEADS[task.head].auto_class)
    try:
        model = cls.from_pretrained(where, **({"num_labels": task.num_labels} if task.num_labels else {}))
    except (OSError, ValueError) as exc:
        raise UsageError(f"--model {where!r} could not be loaded as {cls.__name__}: {first_line(exc)}") from None
    return model.eval()


def _tokenizer(path: str, model: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path if os.path.isdir(path) else model)
    except (OSError, ValueError) as exc:
        raise UsageError(f"--model {model!r} has no tokenizer that loads: {first_line(exc)}") from None


def evaluate_on(loaded: Loaded, task_name: str, harness, recipe, data_dir: str | None = None):
    """Score ``loaded`` on one task and return its ``RunRecord`` (ok, or an error record saying why, as a run's)."""
    from grain_bench.harness import error_record

    spec = _spec(loaded, task_name, harness, recipe, data_dir)
    start = time.time()
    try:
        return _scored_record(loaded, spec, harness, recipe, start)
    except Exception as exc:  # noqa: BLE001 - like a run: an error record, the other tasks go on
        return error_record(spec, exc, start)


def _spec(loaded: Loaded, task_name: str, harness, recipe, data_dir: str | None):
    """The run spec an evaluation is recorded under: method ``evaluated``, option ``model``, the task's data."""
    from grain_bench.types import RunSpec

    cls = harness.regs.tasks.get(task_name)
    identity = cls(data_dir).data_identity()
    return RunSpec(method=METHOD, task=cls.name, backbone=loaded.source, target_density=1.0, seed=0,
                   recipe=recipe.to_dict(), method_options={"model": loaded.source}, task_version=cls.version,
                   data=identity.key, data_dir=data_dir)


def _scored_record(loaded: Loaded, spec, harness, recipe, start: float):
    from grain_bench.environment import environment, package_versions
    from grain_bench.files import RunWarnings
    from grain_bench.harness import utc_now
    from grain_bench.records import ParamCounts, RunRecord, quality_of

    task, provenance = harness.task_for(spec)
    model = loaded.model.to(harness.device)
    data = harness.data(spec, task, loaded.tokenizer, recipe)
    warnings = RunWarnings()
    scored = harness.score_model(spec, task, model, data, recipe, warnings)
    latency = _latency(loaded, task, recipe, harness) if harness.config.measure_latency else ()
    return RunRecord(
        run_id=spec.run_id, spec=spec, status="ok", scores=scored.scores, standard_errors=scored.standard_errors,
        primary_metric=task.primary_metric,
        chance_scores=data.chance, higher_is_better={m: task.higher_is_better(m) for m in scored.scores},
        data=provenance, quality=quality_of(scored.quality), warnings=tuple(warnings.items),
        params=ParamCounts(total=sum(p.numel() for p in model.parameters())), latency=latency,
        method_info={"model": loaded.source, "compact": loaded.compact,
                     "examples_seen": {"scoring": len(data.eval.features)}},
        wall_time_s=time.time() - start, versions=package_versions(), environment=environment(harness.device),
        predictions=scored.predictions, created=utc_now())


def _latency(loaded: Loaded, task, recipe, harness) -> tuple:
    """Timing under the record's protocol (synthetic inputs at the recipe's length): a compact model as ``compact``
    beside a dense model of the shape it was pruned from (``dense``, random weights: only its time counts), so its row
    has a measured speedup like a run's; any other model alone, as ``model``."""
    from grain_bench.measure import record_settings, speedup_entries, time_models
    from grain_bench.records import latency_entry

    settings = record_settings(str(harness.device), recipe.max_length)
    if not loaded.compact:
        return tuple(latency_entry(r.to_dict()) for r in time_models({"model": loaded.model}, settings).values())
    models = {"dense": dense_twin(loaded.model, task), "compact": loaded.model}
    return tuple(latency_entry(entry) for entry in speedup_entries(time_models(models, settings), "dense",
                                                                   {"dense": 1.0}))


def dense_twin(compact, task):
    """A stock transformers model of the task's head class with the dense shape a compact model was pruned from (its
    config without the per-layer widths, at the original hidden width where hidden dimensions were pruned), randomly
    initialised."""
    from transformers import BertConfig

    from grain_bench.backbones import auto_class

    own = ("layer_shapes", "original_head_dim", "pruned_format_version", "model_type", "auto_map", "architectures",
           "pooler_size")
    values = {k: v for k, v in compact.config.to_dict().items() if k not in own}
    values["hidden_size"] = getattr(compact.config, "pooler_size", None) or compact.config.hidden_size  # dense width
    config = BertConfig(**values)
    return auto_class(task.head).from_config(config).to(next(compact.parameters()).device).eval()


def evaluate(model, tasks=("tweets",), data_dir: str | None = None, recipe: str = "quick",
             results: str = DEFAULT_RESULTS, tokenizer=None, device: str | None = None, measure_latency: bool = True,
             progress: bool = True, regs=None):
    """Score ``model`` (a saved compact folder, a checkpoint folder or hub id, or a module with ``tokenizer``) on each
    of ``tasks`` (names or suites, as ``grain-bench run --tasks``), record each as a run of the method ``evaluated`` in
    ``results`` and return those records as a DataFrame (``load_results``' columns). The recipe gives the encoding
    length, the scored-example limit and the eval batch size. Bad input raises ``GrainBenchError`` first."""
    import pandas as pd

    from grain_bench.api import record_row
    from grain_bench.harness import Harness
    from grain_bench.leaderboard.store import RecordStore
    from grain_bench.plugins import get_registries
    from grain_bench.preflight import check_device
    from grain_bench.recipes import get_recipe

    regs = regs or get_registries()
    check_device(device)
    names = regs.expand_tasks([tasks] if isinstance(tasks, str) else list(tasks))
    harness = Harness(results, regs=regs, progress=progress, measure_latency=measure_latency, device=device)
    store = RecordStore(results)
    store.check_writable()
    records = []
    for name in names:
        task_cls = regs.tasks.get(name)
        loaded = load_model(model, task_cls(data_dir), tokenizer)
        record = evaluate_on(loaded, task_cls.name, harness, get_recipe(recipe, task=task_cls), data_dir)
        store.append(record)
        records.append(record)
    return pd.DataFrame([record_row(r, results) for r in records])
