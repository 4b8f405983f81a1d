"""The run harness: runs one spec (teacher, distillation, compaction and measurement, scoring) and turns it into a
``RunRecord``; a failed run becomes an ``error`` record and the sweep goes on. It takes the sweep's
``SweepRequest`` (where results go, the device, what to save and time), frozen and JSON-able, so an executor can ship
it to a worker. The grid is ``grain_bench.grid``, the sweep ``grain_bench.sweep``, the teacher cache
``grain_bench.teachers``."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from grain_bench.environment import default_device, environment, package_versions
from grain_bench.errors import GrainBenchError
from grain_bench.files import RunWarnings
from grain_bench.records import (
    DenseShape,
    Provenance,
    RecordShape,
    RunRecord,
    Speed,
    quality_of,
)
from grain_bench.request import DEFAULT_RESULTS, SweepRequest
from grain_bench.teachers import FOLDER as TEACHERS_FOLDER
from grain_bench.teachers import TeacherCache, teacher_folder
from grain_bench.types import Recipe, RunSpec


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
    chance: dict[str, float | None] = field(default_factory=dict)


@dataclass
class Distilled:
    """The student chosen among a method's option variants, and what training it left."""

    method: Any
    result: Any  # distill.DistillResult
    tokenizer: Any
    options: dict[str, Any]
    extra: dict[str, Any]  # ModelShape fields from the method's finalize (e.g. embedding_rank)
    candidates: list[dict[str, Any]]  # the variants tried on the dev split ([] when there was one)


@dataclass
class Scored:
    """The compact model's scores on the reported split, its collapse verdict and stored predictions."""

    scores: dict[str, float | None]
    quality: dict[str, Any]
    predictions: str | None
    standard_errors: dict[str, float | None]


class Harness:
    """Runs specs one at a time, caching task data and teachers in memory (and teachers on disk).

    ``Harness(request)`` (a ``SweepRequest``) or, for short, ``Harness(results, progress=False, ...)`` with its
    fields as keywords. ``regs``: the registries every name is looked up in (default: the process-wide ones, as the
    CLI and the Python API use); ``pm``: the plugin manager whose hooks are called (default: the one ``regs`` came
    from)."""

    def __init__(self, config: SweepRequest | str = DEFAULT_RESULTS, regs=None, pm=None, **settings):
        from grain_bench.plugins import get_plugin_manager, get_registries

        if isinstance(config, str):
            self.config = SweepRequest.parse({"results": config, **settings})
        else:
            self.config = config.replace(**settings) if settings else config
        self.regs = regs or get_registries()
        self.pm = pm or self.regs.pm or get_plugin_manager()
        if not self.config.progress:
            import datasets

            datasets.disable_progress_bars()
        self._data: dict[tuple, TaskData] = {}
        # the user's teachers, then those a results folder from before the per-user cache kept (read, never written)
        self.teachers = TeacherCache(teacher_folder(self.config.teacher_cache),
                                     (os.path.join(self.results_dir, TEACHERS_FOLDER),))
        self._teacher_outputs: tuple[tuple, Any] | None = None  # (key, TeacherOutputs) of the latest stream

    @property
    def results_dir(self) -> str:
        """Where records, teachers, models and predictions go."""
        return self.config.results

    @property
    def progress(self) -> bool:
        """Whether to show progress bars."""
        return self.config.progress

    @property
    def teacher_cache(self) -> str:
        """Folder of cached fine-tuned teachers (``self.teachers``)."""
        return self.teachers.folder

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
        return task, Provenance(**identity.to_dict(), data_dir=spec.data_dir)

    def teacher_outputs(self, spec: RunSpec, task, recipe: Recipe):
        """The shared cache of teacher outputs for this teacher, seed and batch stream (one stream kept at a time)."""
        from grain_bench.distill import TeacherOutputs
        from grain_bench.teachers import teacher_key

        key = (teacher_key(task, spec.data, spec.backbone, recipe, spec.seed), spec.seed, recipe.batch_size,
               recipe.max_steps, recipe.epochs, recipe.max_length, recipe.max_train_examples, recipe.hidden_loss,
               recipe.hidden_layer_step)
        if self._teacher_outputs is None or self._teacher_outputs[0] != key:
            self._teacher_outputs = (key, TeacherOutputs())
        return self._teacher_outputs[1]

    @property
    def device(self):
        """The torch device runs train and are timed on."""
        import torch

        return torch.device(default_device(self.config.device))

    def _note_rates(self, backbone: str, task: str, recipe: Recipe, observations: dict[str, float]) -> None:
        """File what a run measured in this machine's rates (``grain_bench.estimate``); a cache, so a failure to
        write it is said and costs nothing else."""
        from grain_bench.estimate import RateBook, machine_key, work_key

        try:
            RateBook().add(machine_key(self.device), work_key(backbone, task, recipe.max_length), observations)
        except Exception as exc:  # noqa: BLE001 - whatever the cache does, the run's record stands
            tqdm.write(f"grain-bench: warning: could not file this run's rates for --dry-run estimates: {exc}",
                       file=sys.stderr)

    def cost_model(self, spec: RunSpec):
        """The cost model a target-speedup spec prunes to (kept in the results directory when the grid was planned);
        None, the parameter cost, for a density target."""
        from grain_bench.costs import load_from_results

        if spec.target_speedup and not spec.cost_model:
            raise GrainBenchError(f"the spec asks for a {spec.target_speedup:g}x speedup but names no cost model: plan "
                                  f"it with grain_bench.prepare_sweep (or grid.with_cost_models)")
        return load_from_results(self.results_dir, spec.cost_model) if spec.cost_model else None

    def load_model(self, spec: RunSpec, task):
        """A fresh backbone with the task's head (and its label names), and its tokenizer."""
        from grain_bench.backbones import load_backbone

        model, tokenizer = load_backbone(spec.backbone, task.head, task.num_labels, pm=self.pm, regs=self.regs)
        if task.label_names:  # saved models print entity and class names, not LABEL_3
            model.config.id2label = dict(enumerate(task.label_names))
            model.config.label2id = {name: i for i, name in enumerate(task.label_names)}
        return model.to(self.device), tokenizer

    def data(self, spec: RunSpec, task, tokenizer, recipe: Recipe) -> TaskData:
        """Encoded train/dev/eval splits (cached per task, data, backbone and length limits)."""
        key = (spec.task, spec.data, spec.backbone, recipe.max_length, recipe.max_train_examples,
               recipe.max_eval_examples)
        if key not in self._data:
            train = task.encode("train", tokenizer, recipe.max_length, recipe.max_train_examples)
            dev = task.encode("dev", tokenizer, recipe.max_length, recipe.max_eval_examples)
            evaluation = dev if task.eval_split == "dev" else task.encode(task.eval_split, tokenizer, recipe.max_length,
                                                                         recipe.max_eval_examples)
            self._data[key] = TaskData(task, tokenizer, train, dev, evaluation, task.collate(tokenizer),
                                       task.chance_scores(evaluation))
        return self._data[key]

    def teacher(self, spec: RunSpec, task, recipe: Recipe):
        """The fine-tuned teacher (trained once per task data, backbone, teacher recipe and seed: ``TeacherCache``)
        and its metadata (scores, quality, warnings)."""
        from grain_bench.backbones import check_max_length
        from grain_bench.distill import set_seed
        from grain_bench.quality import assess
        from grain_bench.teachers import teacher_key

        key = teacher_key(task, spec.data, spec.backbone, recipe, spec.seed)
        held = self.teachers.held(key)
        if held is not None:
            return held
        set_seed(spec.seed)
        model, tokenizer = self.load_model(spec, task)
        check_max_length(spec.backbone, model.config, recipe.max_length)  # preflight checks it too; the API may not
        data = self.data(spec, task, tokenizer, recipe)
        with self.teachers.lock(key):  # another process training this teacher: wait for it, then load it
            meta = self.teachers.load(key, model)
            if meta is None:
                meta = self._train_teacher(key, spec, task, model, data, recipe)
        if "quality" not in meta:  # a teacher cached before quality was recorded: one pass over the scored split
            predictions = task.predict(model, data.eval, tokenizer, recipe.eval_batch_size, self.progress)
            meta["quality"] = assess(task, predictions, data.eval)
        model.eval()
        self.teachers.hold(key, model, meta)
        return model, meta

    def _train_teacher(self, key: str, spec: RunSpec, task, model, data: TaskData, recipe: Recipe) -> dict:
        """Fine-tune, score and cache a teacher (one that did not learn is used, never cached); returns its meta."""
        from grain_bench.distill import finetune, steps_for
        from grain_bench.quality import assess
        from grain_bench.teachers import not_learned

        started = time.perf_counter()
        seconds = finetune(model, task, data, recipe, spec.seed, self.progress)  # raises if it diverged
        predictions = task.predict(model, data.eval, data.tokenizer, recipe.eval_batch_size, self.progress)
        scores = task.score(predictions, data.eval)
        meta = {"key": key, "task": task.name, "backbone": spec.backbone, "seed": spec.seed, "scores": scores,
                "train_seconds": seconds, "recipe": recipe.teacher_dict(), "warnings": [],
                "quality": assess(task, predictions, data.eval)}
        problem = not_learned(task, scores, data.chance)
        if problem:
            tqdm.write(f"grain-bench: warning: {task.name} seed {spec.seed}: {problem}; not caching it (give the "
                       f"teacher more steps or another teacher_lr)", file=sys.stderr)
        self.teachers.save(key, model, meta, problem)
        steps = steps_for(recipe.teacher_max_steps, recipe.teacher_epochs, len(data.train.features),
                          recipe.teacher_batch_size)  # the rate covers its scoring and saving too: what a run waits
        self._note_rates(spec.backbone, spec.task, recipe,
                         {"teacher": (time.perf_counter() - started) / (steps * recipe.teacher_batch_size)})
        return meta

    def run(self, spec: RunSpec) -> RunRecord:
        """Run one spec; any exception becomes an ``error`` record (with the message) instead of stopping a sweep."""
        start = time.time()
        try:
            record = self._run(spec)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # recorded, not fatal: the sweep goes on
            record = error_record(spec, exc, start)
        if record.ok:
            from grain_bench.estimate import run_observations

            self._note_rates(spec.backbone, spec.task, Recipe.parse(spec.recipe), run_observations(record))
        self.pm.hook.run_finished(record=record)
        return record

    def _run(self, spec: RunSpec) -> RunRecord:
        """The steps of a run: teacher -> distil (selecting among variants) -> compact, check, measure and save ->
        score -> record (-> model card)."""
        from grain_bench.measure import measure_run

        start = time.time()
        task, provenance = self.task_for(spec)
        recipe = Recipe.parse(spec.recipe)
        teacher, teacher_meta = self.teacher(spec, task, recipe)
        distilled = self._distil(spec, task, recipe, teacher)
        data = self.data(spec, task, distilled.tokenizer, recipe)
        warnings = RunWarnings(list(teacher_meta.get("warnings", [])))
        # Compact, check against the masked model, time and save first: the scores are then those of the compact
        # model that is saved (it equals the masked one within 1e-4 on the logits, checked before any timing).
        measuring = time.perf_counter()
        measured = measure_run(self.config, spec, task, distilled.result, data, distilled.tokenizer, recipe,
                               distilled.extra, warnings)
        scoring = time.perf_counter()
        scored = self.score_model(spec, task, measured.model, data, recipe, warnings)
        distilled.result.phases.update(compaction_and_timing=scoring - measuring,
                                       scoring=time.perf_counter() - scoring)
        distilled.result.examples["scoring"] = len(data.eval.features)
        mask_file = self._save_masks(spec, distilled.result, warnings)
        record = self._record(spec, task, provenance, teacher_meta, distilled, measured, scored, mask_file, data,
                              warnings, time.time() - start)
        return self._with_model_card(record, task)

    def _distil(self, spec: RunSpec, task, recipe: Recipe, teacher) -> Distilled:
        """Distil a student with each of the method's option variants (usually one); the best on the dev split."""
        from grain_bench.distill import distill, set_seed

        method_cls = self.regs.methods.get(spec.method)
        cost_model = self.cost_model(spec)
        if method_cls.calibrates:
            return self._calibrated(spec, task, recipe, teacher, method_cls, cost_model)
        base = method_cls.from_spec(spec.method_options, seed=spec.seed)
        candidates = [dict(spec.method_options, **variant) for variant in base.variants()] or [spec.method_options]
        best: Distilled | None = None
        best_dev: dict[str, float] = {}
        tried: list[dict[str, Any]] = []
        for options in candidates:
            method = method_cls.from_spec(options, seed=spec.seed)
            set_seed(spec.seed)
            student, tokenizer = self.load_model(spec, task)
            data = self.data(spec, task, tokenizer, recipe)
            result = distill(method, task, teacher, student, data, recipe, spec.target_density, spec.seed,
                             self.progress, teacher_outputs=self.teacher_outputs(spec, task, recipe),
                             cost_model=cost_model)
            entry = Distilled(method, result, tokenizer, options, method.finalize(student) or {}, tried)
            if len(candidates) == 1:
                return entry
            dev = task.evaluate(student, data.dev, tokenizer, recipe.eval_batch_size, self.progress)
            tried.append({"options": options, "dev_scores": dev})
            if best is None or _better(task, dev, best_dev):
                best, best_dev = entry, dev
        assert best is not None  # candidates is never empty
        return best

    def _calibrated(self, spec: RunSpec, task, recipe: Recipe, teacher, method_cls, cost_model) -> Distilled:
        """A calibration-only method's student: the teacher pruned from a calibration sample
        (``grain_bench.calibrate``), distilled afterwards when the method asks for retraining steps."""
        from grain_bench.calibrate import calibrate
        from grain_bench.distill import set_seed

        method = method_cls.from_spec(spec.method_options, seed=spec.seed)
        set_seed(spec.seed)
        _, tokenizer = self.load_model(spec, task)
        data = self.data(spec, task, tokenizer, recipe)
        result = calibrate(method, task, teacher, data, recipe, spec.target_density, spec.seed, self.progress,
                           cost_model=cost_model)
        return Distilled(method, result, tokenizer, spec.method_options, method.finalize(result.model) or {}, [])

    def score_model(self, spec: RunSpec, task, model, data: TaskData, recipe: Recipe, warnings: RunWarnings) -> Scored:
        """Predict the reported split with the compact model: scores, collapse verdict, stored predictions."""
        from grain_bench.quality import assess

        predictions = task.predict(model, data.eval, data.tokenizer, recipe.eval_batch_size, self.progress)
        scores = task.score(predictions, data.eval)
        return Scored(scores, assess(task, predictions, data.eval),
                      self._save_predictions(spec, task, data.eval, predictions, warnings),
                      task.standard_errors(predictions, data.eval, scores))

    def _record(self, spec: RunSpec, task, provenance: Provenance, teacher_meta: dict, distilled: Distilled, measured,
                scored: Scored, mask_file: str | None, data: TaskData, warnings: RunWarnings,
                seconds: float) -> RunRecord:
        """The ``ok`` record of a finished run."""
        from grain_bench.plugins import plugin_versions

        method, result = distilled.method, distilled.result
        info = {key: value for key, value in method.info.items() if key != "warnings"}
        warnings.extend(method.info.get("warnings", []))
        if distilled.candidates:
            info.update(selected_options=distilled.options, candidates=distilled.candidates)
        space, masks, shape = result.space, result.masks, measured.shape
        versions = package_versions()
        versions.update({f"plugin:{k}": v for k, v in plugin_versions(self.pm).items()
                         if not k.startswith("grain_bench.")})
        summary = shape.summary()
        return RunRecord(
            run_id=spec.run_id, spec=spec, status="ok", scores=scored.scores, standard_errors=scored.standard_errors,
            primary_metric=task.primary_metric, teacher_scores=teacher_meta["scores"], chance_scores=data.chance,
            higher_is_better={metric: task.higher_is_better(metric) for metric in scored.scores},
            data=provenance, quality=quality_of(scored.quality),
            teacher_quality=quality_of(teacher_meta.get("quality")),
            warnings=tuple(warnings.items), density=measured.density, params=measured.params, flops=measured.flops,
            latency=measured.latency,
            shape=RecordShape(heads=tuple(summary["heads"]), qk=tuple(summary["qk"]), vo=tuple(summary["vo"]),
                              ffn=tuple(summary["ffn"]), heads_kept=masks.heads_kept(), units=masks.counts(),
                              head_widths=tuple(tuple(tuple(head) for head in layer.heads) for layer in shape.layers),
                              dense=DenseShape(space.num_heads, space.head_dim, space.ffn_dim)),
            method_info={**info, "compact": measured.compact, "train_seconds": result.seconds, "steps": result.steps,
                         "final_losses": result.history[-1] if result.history else {},
                         "phase_seconds": dict(result.phases), "examples_seen": dict(result.examples),
                         "teacher_seconds": teacher_meta.get("train_seconds"),
                         **({"training_precision": result.precision} if result.precision else {})},
            wall_time_s=seconds, versions=versions, environment=environment(self.device),
            artifact=measured.artifact, predictions=scored.predictions, masks=mask_file, created=utc_now(),
            speed=self._speed(spec, result, measured))

    def _speed(self, spec: RunSpec, result, measured) -> Speed | None:
        """The speed part of a target-speedup run's record: the target, predicted and measured speedups."""
        if not spec.target_speedup:
            return None
        from grain_bench.costs import stored_path

        model = self.cost_model(spec)
        compact = next((entry for entry in measured.latency if entry.label == "compact"), None)
        return Speed(target=spec.target_speedup, predicted=model.speedup(result.masks, result.space) if model else None,
                     measured=compact.speedup if compact else None, cost_model=spec.cost_model,
                     cost_model_file=stored_path(spec.cost_model) if spec.cost_model else None)

    def _save_masks(self, spec: RunSpec, result, warnings: RunWarnings) -> str | None:
        """Store the run's final masks (a few kilobytes; what latency re-timing rebuilds); failure is a warning."""
        from grain_bench.predictions import save_masks

        return warnings.store("the masks could not be saved",
                              lambda: save_masks(self.results_dir, spec.run_id, result.masks, result.space))

    def _save_predictions(self, spec: RunSpec, task, encoded, predictions, warnings: RunWarnings) -> str | None:
        """Store the run's per-example predictions (``grain_bench.predictions``); a storage failure is a warning."""
        if not self.config.save_predictions:
            return None
        from grain_bench.predictions import save_predictions

        return warnings.store("the predictions could not be saved",
                              lambda: save_predictions(self.results_dir, spec.run_id, task, encoded, predictions))

    def _with_model_card(self, record: RunRecord, task) -> RunRecord:
        """Write the saved model's README.md from the finished record; a storage failure becomes a warning."""
        if record.artifact is None:
            return record
        from grain_bench.model_card import CardDataset, base_model, write_model_card

        backbone = record.spec.backbone
        base = base_model(backbone, backbone in self.regs.backbones)
        artifact, late = os.path.join(self.results_dir, record.artifact), RunWarnings()
        dataset = CardDataset.of(task, record.spec.data)
        late.store("the model card could not be written",
                   lambda: write_model_card(artifact, record, task.head, base, dataset))
        return dataclasses.replace(record, warnings=(*record.warnings, *late.items)) if late.items else record


def _better(task, candidate: dict[str, float], incumbent: dict[str, float]) -> bool:
    metric = task.primary_metric
    if task.higher_is_better(metric):
        return candidate[metric] > incumbent[metric]
    return candidate[metric] < incumbent[metric]


def error_record(spec: RunSpec, exc: Exception, start: float) -> RunRecord:
    """The ``error`` record of ``spec`` whose work began at ``start`` (``time.time()``) and raised ``exc``: its message
    (a ``GrainBenchError`` says it all; others are prefixed with their type) and the traceback."""
    message = str(exc) if isinstance(exc, GrainBenchError) else f"{type(exc).__name__}: {exc}"
    return RunRecord(run_id=spec.run_id, spec=spec, status="error", error=message, wall_time_s=time.time() - start,
                     versions=package_versions(), created=utc_now(),
                     method_info={"traceback": traceback.format_exc(limit=8)})


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


