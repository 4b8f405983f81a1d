"""Every hook of ``grain_bench/hookspecs.py`` is documented with its exact signature in docs/hooks.md and exercised
here by a plugin object registered like a third-party one (one ``test_hook_<name>`` per hook; the meta-test walks the
hookspecs, so a new hook without a test or a doc fails)."""

from __future__ import annotations

import inspect
import os
import sys
import types

import pytest

from grain_bench import hookimpl, hookspecs
from grain_bench.plugins import make_plugin_manager
from grain_bench.registry import build_registries

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "hooks.md")


def hook_names() -> list[str]:
    return sorted(name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
                  if hasattr(fn, "grain_bench_spec"))


def test_every_hook_is_documented_and_tested():
    with open(DOC, encoding="utf-8") as handle:
        doc = handle.read()
    names = hook_names()
    assert len(names) >= 8
    for name in names:
        spec = getattr(hookspecs, name)
        assert spec.__doc__ and spec.__doc__.strip(), f"hook {name} has no docstring"
        assert f"def {name}{inspect.signature(spec)}" in doc, f"docs/hooks.md lacks the signature of {name}"
        assert callable(globals().get(f"test_hook_{name}")), f"no test exercises hook {name}"


def regs_with(plugin):
    pm = make_plugin_manager(load_entry_points=False, extra_plugins=[plugin])
    return pm, build_registries(pm)


def test_hook_register_methods():
    from grain_bench.method import Method

    class Keep(Method):
        name = "keep-all"

    class Plugin:
        @hookimpl
        def register_methods(self, register):
            register(Keep, aliases=("keep",))

    _, regs = regs_with(Plugin())
    assert regs.methods.get("keep") is Keep and regs.methods.entry("keep-all").plugin != "grain_bench.methods.grain"


def test_hook_register_tasks():
    from grain_bench.tasks.glue import SST2

    class Copy(SST2):
        name = "sst2-copy"

    class Plugin:
        @hookimpl
        def register_tasks(self, register):
            register(Copy, suites=("mine",))

    _, regs = regs_with(Plugin())
    assert regs.expand_tasks(["mine"]) == ["sst2-copy"]


def test_hook_register_backbones(tmp_path):
    from grain_bench.backbones import inspect_backbone, load_backbone, load_tiny

    class Plugin:
        @hookimpl
        def register_backbones(self, register):
            register("hook-tiny", load_tiny, "the tiny test model under another name")

    pm, regs = regs_with(Plugin())
    assert inspect_backbone("hook-tiny", pm=pm, regs=regs).source == "named"
    model, _ = load_backbone("hook-tiny", "sequence", 3, pm=pm, regs=regs)
    assert model.config.num_labels == 3


def test_hook_load_backbone():
    from grain_bench.backbones import inspect_backbone, load_backbone, load_tiny

    asked = []

    class Plugin:
        @hookimpl
        def load_backbone(self, model_id, head, num_labels):
            asked.append(model_id)
            return load_tiny(head, num_labels) if model_id == "store://tiny" else None

    pm, regs = regs_with(Plugin())
    assert inspect_backbone("store://tiny", pm=pm, regs=regs).source == "plugin"
    model, tokenizer = load_backbone("store://tiny", "token", 5, pm=pm, regs=regs)
    assert model.config.num_labels == 5 and asked == ["store://tiny", "store://tiny"]


def test_hook_register_executors(results_dir, test_recipe, data_dir):
    from grain_bench.executors import LocalExecutor
    from grain_bench.grid import build_specs
    from grain_bench.harness import Harness
    from grain_bench.leaderboard.store import RecordStore
    from grain_bench.sweep import Executor, run_sweep

    seen = []

    class Recording(LocalExecutor):
        def run(self, specs, harness, store, progress=True):
            seen.extend(spec.run_id for spec in specs)
            return super().run(specs, harness, store, progress)

    class Plugin:
        @hookimpl
        def register_executors(self, register):
            register("recording", Recording, "local, remembering what it ran")

    pm, regs = regs_with(Plugin())
    assert isinstance(regs.executors.get("recording")(), Executor)
    specs = build_specs(regs, ["dense"], ["sst2"], [1.0], [1], "test-bert-tiny", test_recipe, data_dir=data_dir)
    harness = Harness(results_dir, regs=regs, pm=pm, progress=False, save_models=False, measure_latency=False)
    records = run_sweep(specs, harness, RecordStore(results_dir), progress=False, executor="recording")
    assert seen == [specs[0].run_id] and records[0].ok and RecordStore(results_dir).done() == set(seen)


def test_hook_register_runtimes(tiny_model):
    """A plugin's runtime is chosen by name like a built-in one (``measure --mode``, ``load_pruned(runtime=...)``),
    on the devices it names, and its prepared model is checked against the eager one."""
    import torch

    from grain_bench.errors import GrainBenchError
    from grain_bench.measure import LatencySettings, time_models
    from grain_bench.runtimes import Runtime, get_runtime, prepare, runtime_names

    class Halved:
        def __init__(self, model, scale):
            self.model, self.config, self.scale = model, model.config, scale

        def __call__(self, **inputs):
            out = self.model(**inputs)
            out.logits = out.logits * self.scale
            return out

    class Traced(Runtime):
        name, devices, description = "traced", ("cpu",), "a model wrapped by a plugin"
        scale = 1.0

        def build(self, model, inputs, threads):
            return Halved(model, self.scale)

    class Plugin:
        @hookimpl
        def register_runtimes(self, register):
            register(Traced(), aliases=("trace",))

    _, regs = regs_with(Plugin())
    model, _ = tiny_model
    inputs = {"input_ids": torch.tensor([[2, 10, 11, 3]])}
    assert runtime_names("cpu", regs)[-1] == "traced" and "traced" not in runtime_names("cuda", regs)
    assert get_runtime("trace", "cpu", regs).description == "a model wrapped by a plugin"
    assert isinstance(prepare(model, "traced", inputs, regs=regs), Halved)
    timed = time_models({"tiny": model}, LatencySettings(mode="traced", batch=1, seq_len=4, threads=1, warmup=0,
                                                         runs=2), regs=regs)
    assert timed["tiny"].mode == "traced" and timed["tiny"].runs == 2
    Traced.scale = 2.0  # a runtime that changes the outputs is refused
    with pytest.raises(GrainBenchError, match="runtime 'traced' does not reproduce the model"):
        prepare(model, "traced", inputs, regs=regs)


def test_hook_register_exporters(tmp_path):
    from test_leaderboard import make_record, write_store

    from grain_bench.leaderboard.render import render

    class Plugin:
        @hookimpl
        def register_exporters(self, register):
            register("count", lambda summary, caption="", notes=None, extra=None: f"{len(summary)} rows\n")

    from grain_bench import plugins

    pm, regs = regs_with(Plugin())
    plugins._DEFAULT.update(pm=pm, regs=regs)  # the process-wide registries, as an installed plugin would load
    try:
        results = write_store(tmp_path / "results", [make_record(), make_record(method="dense", density=1.0)])
        from grain_bench.leaderboard.tables import build_report

        table = build_report(results, versus=None).comparison.table
        assert render(table, "count") == f"{len(table)} rows\n"
    finally:
        plugins.reset()


def test_hook_register_commands(monkeypatch, capsys):
    from grain_bench import plugins
    from grain_bench.cli import main

    module = types.ModuleType("grain_bench_hook_test_commands")

    def register_commands(cli):
        parser = cli.add_parser("hello", help="say hello")
        parser.add_argument("--name", default="world")
        parser.set_defaults(handler=lambda args: print(f"hello {args.name}") or 0)

    module.register_commands = hookimpl(register_commands)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(plugins, "DEFAULT_PLUGINS", (*plugins.DEFAULT_PLUGINS, module.__name__))
    monkeypatch.setenv("GRAIN_BENCH_LOAD_PLUGINS", "")
    plugins.reset()
    try:
        assert main(["hello", "--name", "grain"]) == 0
        assert capsys.readouterr().out == "hello grain\n"
    finally:
        plugins.reset()


def test_hook_run_finished(results_dir, test_recipe, data_dir):
    from grain_bench.grid import build_specs
    from grain_bench.harness import Harness

    finished = []

    class Plugin:
        @hookimpl
        def run_finished(self, record):
            finished.append((record.run_id, record.status))

    pm, regs = regs_with(Plugin())
    (spec,) = build_specs(regs, ["dense"], ["sst2"], [1.0], [1], "test-bert-tiny", test_recipe, data_dir=data_dir)
    harness = Harness(results_dir, regs=regs, pm=pm, progress=False, save_models=False, measure_latency=False)
    record = harness.run(spec)
    broken = spec.__class__(**{**spec.to_dict(), "method": "no-such-method"})
    failed = harness.run(broken)
    assert finished == [(record.run_id, "ok"), (failed.run_id, "error")]


@pytest.mark.parametrize("name", ["register_method", "load_backbones"])
def test_a_misspelt_hook_fails_at_start(name):
    import pluggy

    plugin = types.SimpleNamespace(**{name: hookimpl(lambda register=None: None)})
    with pytest.raises(pluggy.PluginValidationError):
        make_plugin_manager(load_entry_points=False, extra_plugins=[plugin])
