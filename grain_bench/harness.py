"""The run harness: expands a grid into run specs, runs each one (teacher, distillation, evaluation, measurement)
and turns it into a ``RunRecord``. A failed run becomes an ``error`` record and the sweep goes on."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import importlib.metadata
import numbers
import os
import platform
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

from tqdm.auto import tqdm

from grain_bench.errors import GrainBenchError, UsageError
from grain_bench.types import Recipe, RunRecord, RunSpec

DEFAULT_RESULTS = "grain-bench-results"


def build_specs(regs, methods: list[str], tasks: list[str], densities: list[float], seeds: list[int], backbone: str,
                recipe: Recipe | Callable[[str], Recipe], method_options: dict[str, dict[str, Any]] | None = None,
                data_dir: str | None = None, data_revisions: dict[str, str] | None = None) -> list[RunSpec]:
    """The grid methods x tasks x densities x seeds as run specs (methods that do not prune get density 1 once).

    ``recipe`` is one recipe for every task, or a function of the task name (``lambda task: get_recipe(name,
    overrides, task)`` applies a named recipe's per-task values). Each task's data is identified here (``RunSpec.data``:
    a content hash of the files it reads from ``data_dir`` or its package, or the hub commit that ``data_revisions``
    ({task or "*": branch, tag or commit}, default each task's ``hub_ref``) names now). Every name and option is
    validated here, before anything runs or is written.
    """
    for what, given in (("methods", methods), ("tasks", tasks), ("densities", densities), ("seeds", seeds)):
        if not given:
            raise UsageError(f"no {what} given: the grid needs at least one")
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**32:
            raise UsageError(f"seed {seed!r} is not an integer in [0, 2^32), the range numpy's random seed takes")
    method_options = dict(method_options or {})
    methods = regs.resolve_methods(methods)
    tasks = regs.expand_tasks(tasks)
    for key in method_options:
        if regs.methods.entry(key).name not in methods:
            raise UsageError(f"options given for method {key!r}, which is not in --methods ({', '.join(methods)})")
    for density in densities:
        if not 0 < density <= 1:  # also refuses NaN
            raise UsageError(f"density {density:g} is outside (0, 1]; give fractions such as 0.05,0.1")
    options = {}
    for name in methods:
        cls = regs.methods.get(name)
        given = {}
        for key, values in method_options.items():
            if regs.methods.entry(key).name == name:
                given.update(values)
        options[name] = cls.canonical_options(given)  # validates; defaults left out, so equal runs share one id
    specs = []
    for task_name in tasks:
        task_cls = regs.tasks.get(task_name)
        revisions = data_revisions or {}
        revision = revisions.get(task_name, revisions.get("*"))  # for hub data: a branch, tag or commit
        data = task_cls(data_dir, revision).data_identity().key  # content hash or hub commit; DataError if unreadable
        task_recipe = (recipe(task_name) if callable(recipe) else recipe).to_dict()
        for name in methods:
            cls = regs.methods.get(name)
            method_densities = densities if getattr(cls, "prunes", True) else [1.0]
            for density in method_densities:
                for seed in seeds:
                    specs.append(RunSpec(method=name, task=task_name, backbone=backbone, target_density=float(density),
                                         seed=int(seed), recipe=task_recipe, method_options=options[name],
                                         task_version=task_cls.version, data=data,
                                         data_dir=os.path.abspath(data_dir) if data_dir else None))
    return list({spec.run_id: spec for spec in specs}.values())


def package_versions() -> dict[str, str]:
    """Versions of grain-bench and the libraries that shape its numbers."""
    out = {}
    for dist in ("grain-bench", "torch", "transformers", "datasets", "evaluate", "pluggy", "numpy", "pandas"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def environment(device) -> dict[str, Any]:
    """Where the run happened."""
    import torch

    env = {"platform": platform.platform(), "python": platform.python_version(), "processor": platform.processor(),
           "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": str(device)}
    if str(device).startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


@dataclass
class TaskData:
    """Encoded splits of one task for one tokenizer and recipe."""

    task: Any
    tokenizer: Any
    train: Any
    dev: Any
    eval: Any
    collate: Any
    #: a trivial predictor's scores on the eval split ({} when the task defines none)
    chance: dict[str, float] = field(default_factory=dict)


class Harness:
    """Runs specs one at a time, caching task data and teachers in memory (and teachers on disk)."""

    def __init__(self, results_dir: str = DEFAULT_RESULTS, regs=None, pm=None, progress: bool = True,
                 device: str | None = None, save_models: bool = True, measure_latency: bool = True,
                 save_predictions: bool = True):
        from grain_bench.plugins import get_plugin_manager, get_registries

        self.results_dir = results_dir
        self.regs = regs or get_registries()
        if not progress:
            import datasets

            datasets.disable_progress_bars()
        self.pm = pm or get_plugin_manager()
        self.progress = progress
        self.device = device
        self.save_models = save_models
        self.save_predictions = save_predictions
        self.measure_latency = measure_latency
        self._data: dict[tuple, TaskData] = {}
        self._teachers: dict[str, tuple[Any, dict]] = {}
        self._teacher_outputs: tuple[tuple, Any] | None = None  # (key, TeacherOutputs) of the latest stream

    def task_for(self, spec: RunSpec):
        """The task adapter of ``spec``, reading ``spec.data_dir`` (or the hub commit in ``spec.data``), and its data
        provenance; ``DataError`` when the data is no longer what the spec was planned with."""
        from grain_bench.errors import DataError

        cls = self.regs.tasks.get(spec.task)
        hub = spec.data.startswith("hub:")
        task = cls(None if hub else spec.data_dir, spec.data.rpartition("@")[2] if hub else None)
        identity = task.data_identity()
        if identity.key != spec.data:
            raise DataError(f"{spec.task}: the data read from {identity.source} ({identity.key}) is not the data "
                            f"this run was planned with ({spec.data}): a file changed meanwhile; start the command "
                            f"again to plan the runs with the data as it is now")
        return task, {**identity.to_dict(), "data_dir": spec.data_dir}

    def teacher_outputs(self, spec: RunSpec, task, recipe: Recipe):
        """The shared cache of teacher outputs for this teacher, seed and batch stream (one stream kept at a time)."""
        from grain_bench.distill import TeacherOutputs, teacher_key

        key = (teacher_key(task, spec.data, spec.backbone, recipe, spec.seed), spec.seed, recipe.batch_size, recipe.max_steps,
               recipe.epochs, recipe.max_length, recipe.max_train_examples, recipe.hidden_loss, recipe.hidden_layer_step)
        if self._teacher_outputs is None or self._teacher_outputs[0] != key:
            self._teacher_outputs = (key, TeacherOutputs())
        return self._teacher_outputs[1]

    @property
    def teacher_cache(self) -> str:
        """Folder of cached fine-tuned teachers."""
        return os.path.join(self.results_dir, "teachers")

    def _device(self):
        import torch

        return torch.device(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))

    def load_model(self, spec: RunSpec, task):
        """A fresh backbone with the task's head, and its tokenizer."""
        from grain_bench.backbones import load_backbone

        model, tokenizer = load_backbone(spec.backbone, task.head, task.num_labels, pm=self.pm, regs=self.regs)
        if task.label_names:  # saved models print entity and class names, not LABEL_3
            model.config.id2label = dict(enumerate(task.label_names))
            model.config.label2id = {name: i for i, name in enumerate(task.label_names)}
        return model.to(self._device()), tokenizer

    def data(self, spec: RunSpec, task, tokenizer, recipe: Recipe) -> TaskData:
        """Encoded train/dev/eval splits (cached per task, data, backbone and length limits)."""
        key = (spec.task, spec.data, spec.backbone, recipe.max_length, recipe.max_train_examples, recipe.max_eval_examples)
        if key not in self._data:
            train = task.encode("train", tokenizer, recipe.max_length, recipe.max_train_examples)
            dev = task.encode("dev", tokenizer, recipe.max_length, recipe.max_eval_examples)
            evaluation = dev if task.eval_split == "dev" else task.encode(task.eval_split, tokenizer, recipe.max_length,
                                                                         recipe.max_eval_examples)
            self._data[key] = TaskData(task, tokenizer, train, dev, evaluation, task.collate(tokenizer),
                                       task.chance_scores(evaluation))
        return self._data[key]

    def teacher(self, spec: RunSpec, task, recipe: Recipe):
        """The fine-tuned teacher (trained once per task, backbone, teacher recipe and seed) with its scores."""
        from grain_bench.backbones import check_max_length
        from grain_bench.distill import finetune, load_cached_teacher, save_teacher, set_seed, teacher_key
        from grain_bench.files import STORAGE_ERRORS, storage_error_text
        from grain_bench.quality import assess

        key = teacher_key(task, spec.data, spec.backbone, recipe, spec.seed)
        if key in self._teachers:
            return self._teachers[key]
        set_seed(spec.seed)
        model, tokenizer = self.load_model(spec, task)
        check_max_length(spec.backbone, model.config, recipe.max_length)  # preflight checks it too; the API may not
        data = self.data(spec, task, tokenizer, recipe)
        meta = load_cached_teacher(self.teacher_cache, key, model)
        if meta is None:
            seconds = finetune(model, task, data, recipe, spec.seed, self.progress)  # raises if it diverged
            predictions = task.predict(model, data.eval, tokenizer, recipe.eval_batch_size, self.progress)
            scores = task.score(predictions, data.eval)
            meta = {"key": key, "task": task.name, "backbone": spec.backbone, "seed": spec.seed, "scores": scores,
                    "train_seconds": seconds, "recipe": recipe.teacher_dict(), "warnings": [],
                    "quality": assess(task, predictions, data.eval)}
            problem = _not_learned(task, scores, data.chance)
            if problem:  # kept for this process's runs, never cached: the next sweep trains it again
                meta["warnings"].append(f"{problem}; the teacher was not cached")
                tqdm.write(f"grain-bench: warning: {task.name} seed {spec.seed}: {problem}; not caching it "
                           f"(give the teacher more steps or another teacher_lr)", file=sys.stderr)
            else:
                try:
                    save_teacher(self.teacher_cache, key, model, meta)
                except STORAGE_ERRORS as exc:  # a full or read-only disk costs the cache, not the run
                    meta["warnings"].append(f"the teacher could not be cached ({storage_error_text(exc)})")
        if "quality" not in meta:  # a teacher cached before quality was recorded: one pass over the scored split
            predictions = task.predict(model, data.eval, tokenizer, recipe.eval_batch_size, self.progress)
            meta["quality"] = assess(task, predictions, data.eval)
        model.eval()
        self._teachers[key] = (model, meta)
        return model, meta

    def run(self, spec: RunSpec) -> RunRecord:
        """Run one spec; any exception becomes an ``error`` record (with the message) instead of stopping a sweep."""
        start = time.time()
        try:
            record = self._run(spec)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # recorded, not fatal: the sweep goes on
            message = str(exc) if isinstance(exc, GrainBenchError) else f"{type(exc).__name__}: {exc}"
            record = RunRecord(run_id=spec.run_id, spec=spec.to_dict(), status="error", error=message,
                               wall_time_s=time.time() - start, versions=package_versions(),
                               created=_now(), method_info={"traceback": traceback.format_exc(limit=8)})
        self.pm.hook.run_finished(record=record)
        return record

    def _run(self, spec: RunSpec) -> RunRecord:
        from grain_bench.distill import distill, set_seed
        from grain_bench.plugins import plugin_versions
        from grain_bench.quality import assess

        start = time.time()
        task, provenance = self.task_for(spec)
        recipe = Recipe.parse(spec.recipe)
        teacher, teacher_meta = self.teacher(spec, task, recipe)
        method_cls = self.regs.methods.get(spec.method)
        base = method_cls.from_options(spec.method_options, seed=spec.seed)
        candidates = [dict(spec.method_options, **variant) for variant in base.variants()] or [spec.method_options]

        best = None
        tried = []
        for options in candidates:
            method = method_cls.from_options(options, seed=spec.seed)
            set_seed(spec.seed)
            student, tokenizer = self.load_model(spec, task)
            data = self.data(spec, task, tokenizer, recipe)
            result = distill(method, task, teacher, student, data, recipe, spec.target_density, spec.seed, self.progress,
                             teacher_outputs=self.teacher_outputs(spec, task, recipe))
            extra = method.finalize(student) or {}
            entry = {"options": options, "method": method, "result": result, "extra": extra}
            if len(candidates) > 1:
                entry["dev"] = task.evaluate(student, data.dev, tokenizer, recipe.eval_batch_size, self.progress)
                tried.append({"options": options, "dev_scores": entry["dev"]})
                better = best is None or _better(task, entry["dev"], best["dev"])
                if better:
                    best = entry
            else:
                best = entry
        method, result, extra = best["method"], best["result"], best["extra"]
        data = self.data(spec, task, tokenizer, recipe)
        info = dict(method.info)
        # Compact, check against the masked model, time and save first: the scores are then those of the compact
        # model that is saved (it equals the masked one within 1e-4 on the logits, checked before any timing).
        latency, artifact, eval_model = self._measure_and_save(spec, task, result, result.masks, data, tokenizer, info)
        predictions = task.predict(eval_model, data.eval, tokenizer, recipe.eval_batch_size, self.progress)
        scores = task.score(predictions, data.eval)
        quality = assess(task, predictions, data.eval)
        prediction_file = self._save_predictions(spec, task, data.eval, predictions, info)
        if tried:
            info["selected_options"] = best["options"]
            info["candidates"] = tried

        space, masks = result.space, result.masks
        shape = masks.model_shape(space, extra)
        dense_shape = type(masks).full(space).model_shape(space)
        seq = recipe.max_length
        params = {
            "encoder": shape.encoder_params(), "encoder_linear": shape.encoder_linear_params(),
            "embeddings": shape.embedding_params(), "dense_encoder": dense_shape.encoder_params(),
        }
        head_params = sum(p.numel() for n, p in result.model.named_parameters()
                          if not n.startswith(result.model.base_model_prefix + "."))
        pooler = result.model.base_model.pooler
        params["head"] = head_params + (sum(p.numel() for p in pooler.parameters()) if pooler is not None else 0)
        params["total"] = params["encoder"] + params["embeddings"] + params["head"]
        density = {"target": spec.target_density, "achieved": masks.density(space),
                   "encoder_params": params["encoder"] / params["dense_encoder"]}
        flops = {"seq_len": seq, "encoder": shape.encoder_flops(seq), "total": shape.total_flops(seq),
                 "dense_encoder": dense_shape.encoder_flops(seq), "dense_total": dense_shape.total_flops(seq)}
        flops["predicted_speedup"] = flops["dense_total"] / flops["total"]

        warnings = [*teacher_meta.get("warnings", []), *info.pop("warnings", [])]
        versions = package_versions()
        versions.update({f"plugin:{k}": v for k, v in plugin_versions(self.pm).items() if not k.startswith("grain_bench.")})
        record = RunRecord(
            run_id=spec.run_id, spec=spec.to_dict(), status="ok", scores=scores, primary_metric=task.primary_metric,
            teacher_scores=teacher_meta["scores"], chance_scores=data.chance, data=provenance, quality=quality,
            teacher_quality=teacher_meta.get("quality", {}),
            warnings=warnings,
            density=density, params=params, flops=flops, latency=latency,
            shape={**shape.summary(), "heads_kept": masks.heads_kept(), "units": masks.counts(),
                   "head_widths": [[list(head) for head in layer.heads] for layer in shape.layers],
                   "dense": {"num_heads": space.num_heads, "head_dim": space.head_dim, "ffn_dim": space.ffn_dim}},
            method_info={**info, "train_seconds": result.seconds, "steps": result.steps,
                         "final_losses": result.history[-1] if result.history else {}},
            wall_time_s=time.time() - start, versions=versions, environment=environment(self._device()),
            artifact=artifact, predictions=prediction_file, created=_now())
        return self._with_model_card(record, task)

    def _save_predictions(self, spec: RunSpec, task, encoded, predictions, info: dict) -> str | None:
        """Store the run's per-example predictions (``grain_bench.predictions``); a storage failure is a warning."""
        if not self.save_predictions:
            return None
        from grain_bench.files import STORAGE_ERRORS, storage_error_text
        from grain_bench.predictions import save_predictions

        try:
            return save_predictions(self.results_dir, spec.run_id, task, encoded, predictions)
        except STORAGE_ERRORS as exc:
            info.setdefault("warnings", []).append(f"the predictions could not be saved ({storage_error_text(exc)})")
            return None

    def _with_model_card(self, record: RunRecord, task) -> RunRecord:
        """Write the saved model's README.md from the finished record; a storage failure becomes a warning."""
        if record.artifact is None:
            return record
        from grain_bench.files import STORAGE_ERRORS, storage_error_text
        from grain_bench.model_card import base_model, write_model_card

        backbone = record.spec["backbone"]
        try:
            base = base_model(backbone, backbone in self.regs.backbones)
            write_model_card(record.artifact, record, task.head, base)
        except STORAGE_ERRORS as exc:
            return dataclasses.replace(record, warnings=[*record.warnings, f"the model card could not be written "
                                                                           f"({storage_error_text(exc)})"])
        return record

    def _measure_and_save(self, spec, task, result, masks, data, tokenizer, info):
        """Compact the student, check it against the masked model, time it, save it; returns the model to score."""
        try:
            from grain_bench import measure
        except ImportError:
            return [], None, result.model
        return measure.measure_and_save(self, spec, task, result, masks, data, tokenizer, info)


def _not_learned(task, scores: dict[str, float], chance: dict[str, float]) -> str | None:
    """Why a fine-tuned teacher's score says it learned nothing (not better than a trivial predictor), or None."""
    metric = task.primary_metric
    if metric not in chance or metric not in scores:
        return None
    score, floor = scores[metric], chance[metric]
    learned = score > floor if task.higher_is_better(metric) else score < floor
    if learned:
        return None
    return f"the teacher scores {metric} {score:.4f}, no better than a trivial predictor ({floor:.4f})"


def _better(task, candidate: dict[str, float], incumbent: dict[str, float]) -> bool:
    metric = task.primary_metric
    if task.higher_is_better(metric):
        return candidate[metric] > incumbent[metric]
    return candidate[metric] < incumbent[metric]


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def run_sweep(specs: list[RunSpec], harness: Harness, store, retry_failed: bool = False, progress: bool = True,
              executor: str = "local", executor_options: dict | None = None) -> list[RunRecord]:
    """Run every spec not already ``ok`` in ``store`` (errors only with ``retry_failed``); returns the new records."""
    from grain_bench.executors import terminate_gracefully

    latest = store.latest()
    for problem in store.problems:  # reported, never fatal: the run of a cut-off line simply runs again
        print(f"grain-bench: warning: {store.path} {problem} (skipped)", file=sys.stderr)
    todo = [s for s in specs if s.run_id not in latest or (not latest[s.run_id].ok and retry_failed)]
    factory = harness.regs.executors.get(executor)
    try:
        runner = factory(**(executor_options or {}))
    except TypeError as exc:
        raise UsageError(f"executor {executor!r}: {exc}") from None
    with terminate_gracefully():  # SIGTERM unwinds like Ctrl-C: stored runs stay, the current one reruns next time
        return runner.run(todo, harness, store, progress=progress)
