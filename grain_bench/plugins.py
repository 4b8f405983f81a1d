"""Load grain-bench plugins: the built-ins (through the same hooks as third-party code) and entry points."""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from typing import Any

import pluggy

from grain_bench import hookspecs
from grain_bench.errors import GrainBenchError

ENTRY_POINT_GROUP = "grain_bench"
ENV_LOAD_PLUGINS = "GRAIN_BENCH_LOAD_PLUGINS"

DEFAULT_PLUGINS = (
    "grain_bench.methods.baselines",
    "grain_bench.methods.grain",
    "grain_bench.methods.heads",
    "grain_bench.methods.movement",
    "grain_bench.methods.cofi",
    "grain_bench.methods.kwon",
    "grain_bench.tasks.tweets",
    "grain_bench.tasks.glue",
    "grain_bench.tasks.squad",
    "grain_bench.tasks.conll",
    "grain_bench.backbones",
    "grain_bench.executors",
    "grain_bench.runtimes",
    "grain_bench.leaderboard.render",
)


def _allowed_entry_points() -> set[str] | None:
    """Names from ``GRAIN_BENCH_LOAD_PLUGINS`` (None = load all; empty string = load none)."""
    value = os.environ.get(ENV_LOAD_PLUGINS)
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


def make_plugin_manager(load_entry_points: bool = True, extra_plugins=()) -> pluggy.PluginManager:
    """A fresh plugin manager with built-ins, allowed entry-point plugins and ``extra_plugins`` registered."""
    pm = pluggy.PluginManager("grain_bench")
    pm.add_hookspecs(hookspecs)
    for module_name in DEFAULT_PLUGINS:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:  # a broken install, never skipped: every comparison would silently miss it
            raise GrainBenchError(f"built-in plugin {module_name} failed to import ({exc}); reinstall grain-bench "
                                  f"(pip install -e . in a checkout)") from exc
        pm.register(module, name=module_name)
    if load_entry_points:
        allowed = _allowed_entry_points()
        available = {ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
        unknown = sorted((allowed or set()) - available)
        if unknown:
            raise GrainBenchError(f"{ENV_LOAD_PLUGINS} names {', '.join(map(repr, unknown))}, which no installed "
                                  f"package provides; installed plugins: {', '.join(sorted(available)) or '(none)'} "
                                  f"(leave {ENV_LOAD_PLUGINS} unset to load them all, or empty to load none)")
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if allowed is not None and ep.name not in allowed:
                continue
            if pm.get_plugin(ep.name) is not None:
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken third-party plugin must say which one broke
                raise GrainBenchError(f"plugin {ep.name!r} ({ep.value}) failed to load: {exc}") from exc
            pm.register(plugin, name=ep.name)
    for plugin in extra_plugins:
        pm.register(plugin)
    pm.check_pending()
    return pm


def plugin_versions(pm: pluggy.PluginManager) -> dict[str, str]:
    """Plugin name -> version of the distribution that ships it (grain-bench's for built-ins)."""
    dists = {}
    for dist, plugin_name in _entry_point_dists():
        dists[plugin_name] = dist
    out = {}
    for name, _plugin in pm.list_name_plugin():
        if name.startswith("grain_bench."):
            out[name] = _version("grain-bench")
        else:
            out[name] = dists.get(name, "unknown")
    return out


def _entry_point_dists():
    for dist in importlib.metadata.distributions():
        for ep in dist.entry_points:
            if ep.group == ENTRY_POINT_GROUP:
                yield f"{dist.metadata['Name']} {dist.version}", ep.name


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


_DEFAULT: dict[str, Any] = {}


def get_registries(pm: pluggy.PluginManager | None = None):
    """Registries of ``pm``, or of the process-wide default plugin manager (built on first use)."""
    from grain_bench.registry import build_registries

    if pm is not None:
        return build_registries(pm)
    if "regs" not in _DEFAULT:
        _DEFAULT["pm"] = make_plugin_manager()
        _DEFAULT["regs"] = build_registries(_DEFAULT["pm"])
    return _DEFAULT["regs"]


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide default plugin manager."""
    get_registries()
    return _DEFAULT["pm"]


def reset() -> None:
    """Forget the process-wide plugin manager (tests use this after changing the environment)."""
    _DEFAULT.clear()
