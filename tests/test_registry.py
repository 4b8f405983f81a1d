"""Plugin loading and the registries: built-ins through hooks, errors with 'did you mean', duplicates, suites."""

from __future__ import annotations

import pluggy
import pytest
from helpers import one_line_error

from grain_bench import hookimpl
from grain_bench.cli import main
from grain_bench.errors import DuplicateNameError, GrainBenchError, UnknownMethodError, UnknownTaskError
from grain_bench.method import Method
from grain_bench.plugins import DEFAULT_PLUGINS, make_plugin_manager
from grain_bench.registry import build_registries
from grain_bench.task import Task


def test_builtins_register_through_the_hooks(pm, regs):
    names = {name for name, _ in pm.list_name_plugin()}
    assert {"grain_bench.methods.grain", "grain_bench.methods.heads", "grain_bench.methods.baselines"} <= names
    assert {"dense", "random", "magnitude", "grain", "heads", "ffn-only"} <= set(regs.methods.names())
    assert "tweets" in regs.tasks
    assert regs.methods.entry("grain").plugin == "grain_bench.methods.grain"
    assert {"local"} <= set(regs.executors.names())
    assert {"minilm-l6", "test-bert-tiny"} <= set(regs.backbones.names())


def test_unknown_method_suggests_and_lists_choices(regs):
    with pytest.raises(UnknownMethodError) as info:
        regs.methods.get("grian")
    message = str(info.value)
    assert "Did you mean 'grain'" in message and "heads" in message
    assert isinstance(info.value, KeyError) and isinstance(info.value, GrainBenchError)


def test_unknown_task_lists_suites(regs):
    class Fake:
        name = "fake"

    with pytest.raises(UnknownTaskError) as info:
        regs.expand_tasks(["tweetz"])
    assert "Did you mean 'tweets'" in str(info.value)


def test_suite_expands_to_its_tasks():
    class One(Task):
        name = "one"

    class Two(Task):
        name = "two"

    class SuitePlugin:
        @hookimpl
        def register_tasks(self, register):
            register(One, suites=("mysuite",))
            register(Two, suites=("mysuite",))

    regs = build_registries(make_plugin_manager(load_entry_points=False, extra_plugins=[SuitePlugin()]))
    assert regs.expand_tasks(["mysuite", "tweets", "one"]) == ["one", "two", "tweets"]
    assert regs.suites()["mysuite"] == ["one", "two"]


def test_duplicate_name_names_both_plugins():
    class Copy(Method):
        name = "grain"

    class Clash:
        @hookimpl
        def register_methods(self, register):
            register(Copy)

    pm = make_plugin_manager(load_entry_points=False)
    pm.register(Clash(), name="clashing-plugin")
    with pytest.raises(DuplicateNameError) as info:
        build_registries(pm)
    assert "grain_bench.methods.grain" in str(info.value) and "clashing-plugin" in str(info.value)


def test_misspelt_hook_fails_at_start():
    class Misspelt:
        @hookimpl
        def register_method(self, register):  # should be register_methods
            pass

    with pytest.raises(pluggy.PluginValidationError):
        make_plugin_manager(load_entry_points=False, extra_plugins=[Misspelt()])


def test_built_in_plugins_are_grain_bench_modules():
    """(Every hook is documented and exercised: tests/test_hooks.py walks the hookspecs.)"""
    assert all(module.startswith("grain_bench.") for module in DEFAULT_PLUGINS)


@pytest.mark.usefixtures("builtin_plugins_only")
def test_unknown_plugin_in_load_plugins_is_an_error(monkeypatch, capsys):
    monkeypatch.setenv("GRAIN_BENCH_LOAD_PLUGINS", "nosuch")
    line = one_line_error(main(["methods"]), capsys.readouterr().err)
    assert "GRAIN_BENCH_LOAD_PLUGINS names 'nosuch', which no installed package provides" in line


@pytest.mark.parametrize("hook,register,expected", [
    ("register_methods", lambda register: register(dict), "is not a subclass of grain_bench.method.Method"),
    ("register_tasks", lambda register: register(Method), "is not a subclass of grain_bench.task.Task"),
    ("register_tasks", lambda register: register(type("Odd", (Task,), {"name": "odd", "head": "ranking"})),
     "has head 'ranking'; expected one of sequence, regression, token, span"),
    ("register_methods", lambda register: register(type("Nameless", (Method,), {})), "has no name"),
    ("register_exporters", lambda register: register("fmt", "not a function"), "is not callable"),
    ("register_backbones", lambda register: register("tiny2", None), "is not callable"),
    ("register_runtimes", lambda register: register(print), "is not a grain_bench.runtimes.Runtime instance"),
])
def test_registration_checks_what_it_registers_and_names_the_plugin(hook, register, expected):
    """A registry holds one kind of object: a method must be a ``Method`` subclass, a task a ``Task`` subclass, a
    format or a backbone loader callable; anything else fails when the registries are built, naming the plugin."""
    def implementation(self, register=None):
        register_wrongly(register)

    register_wrongly = register
    implementation.__name__ = hook
    plugin = type("Wrong", (), {hook: hookimpl(implementation)})()
    pm = make_plugin_manager(load_entry_points=False)
    pm.register(plugin, name="wrong-plugin")
    with pytest.raises(GrainBenchError, match="plugin 'wrong-plugin' cannot register") as info:
        build_registries(pm)
    assert expected in str(info.value)
