"""Name -> plugin object maps for methods, tasks, backbones and executors, filled through the plugin hooks."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from grain_bench.errors import (
    DuplicateNameError,
    UnknownBackboneError,
    UnknownExecutorError,
    UnknownExporterError,
    UnknownMethodError,
    UnknownTaskError,
    UsageError,
    _UnknownNameError,
)


@dataclass(frozen=True)
class Entry:
    """One registered object with the plugin that registered it."""

    name: str
    obj: Any
    plugin: str
    description: str = ""
    aliases: tuple[str, ...] = ()
    suites: tuple[str, ...] = ()


@dataclass
class Registry:
    """A map from names (and aliases) to entries; unknown names raise with a 'did you mean'."""

    kind: str
    error: type[_UnknownNameError]
    entries: dict[str, Entry] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)

    def add(self, entry: Entry) -> None:
        """Add ``entry``; a name or alias already taken raises ``DuplicateNameError`` naming both plugins."""
        for key in (entry.name, *entry.aliases):
            owner = self._owner(key)
            if owner is not None:
                raise DuplicateNameError(
                    f"{self.kind} name {key!r} registered twice: by plugin {owner.plugin!r} and by plugin "
                    f"{entry.plugin!r}"
                )
        self.entries[entry.name] = entry
        for alias in entry.aliases:
            self.aliases[alias] = entry.name

    def _owner(self, key: str) -> Entry | None:
        if key in self.entries:
            return self.entries[key]
        if key in self.aliases:
            return self.entries[self.aliases[key]]
        return None

    def entry(self, name: str) -> Entry:
        """The entry for ``name`` or one of its aliases."""
        found = self._owner(name)
        if found is None:
            raise self.error(name, [*self.entries, *self.aliases])
        return found

    def get(self, name: str) -> Any:
        """The registered object for ``name``."""
        return self.entry(name).obj

    def names(self) -> list[str]:
        """Canonical names in registration order."""
        return list(self.entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._owner(name) is not None


@dataclass
class Registries:
    """Every registry of one plugin manager."""

    methods: Registry
    tasks: Registry
    backbones: Registry
    executors: Registry
    exporters: Registry

    def suites(self) -> dict[str, list[str]]:
        """Suite name -> task names, in registration order."""
        out: dict[str, list[str]] = {}
        for entry in self.tasks.entries.values():
            for suite in entry.suites:
                out.setdefault(suite, []).append(entry.name)
        return out

    def expand_tasks(self, names: Iterable[str]) -> list[str]:
        """Expand suite names (e.g. ``glue``) and aliases into canonical task names, without duplicates."""
        suites = self.suites()
        out: list[str] = []
        for name in names:
            if name in suites and name not in self.tasks:
                expanded = suites[name]
            else:
                try:
                    expanded = [self.tasks.entry(name).name]
                except UnknownTaskError as exc:
                    raise UnknownTaskError(name, [*exc.choices, *suites]) from None
            out.extend(t for t in expanded if t not in out)
        return out

    def resolve_methods(self, names: Iterable[str]) -> list[str]:
        """Canonical method names for ``names`` (aliases resolved), without duplicates."""
        out: list[str] = []
        for name in names:
            canonical = self.methods.entry(name).name
            if canonical not in out:
                out.append(canonical)
        return out


def _check_class(kind: str, obj: Any, required: tuple[str, ...]) -> None:
    missing = [attr for attr in required if not getattr(obj, attr, None)]
    if missing:
        raise UsageError(f"{kind} {obj!r} cannot be registered: it lacks {', '.join(missing)}")


def build_registries(pm) -> Registries:
    """Call every registration hook of ``pm`` (one implementation at a time, so duplicates name both plugins)."""
    regs = Registries(
        methods=Registry("method", UnknownMethodError),
        tasks=Registry("task", UnknownTaskError),
        backbones=Registry("backbone", UnknownBackboneError),
        executors=Registry("executor", UnknownExecutorError),
        exporters=Registry("format", UnknownExporterError),
    )

    def each(hook_name: str, make_register: Callable[[str], Callable[..., None]]) -> None:
        hook = getattr(pm.hook, hook_name)
        # pluggy returns implementations last-registered-first; built-ins register first, so reverse.
        for impl in hook.get_hookimpls():
            impl.function(register=make_register(impl.plugin_name))

    def method_register(plugin: str):
        def register(cls, aliases=()):
            _check_class("method", cls, ("name",))
            doc = (cls.__doc__ or "").strip().splitlines()
            regs.methods.add(Entry(cls.name, cls, plugin, getattr(cls, "description", "") or (doc[0] if doc else ""),
                                   tuple(aliases)))
        return register

    def task_register(plugin: str):
        def register(cls, aliases=(), suites=()):
            _check_class("task", cls, ("name",))
            doc = (cls.__doc__ or "").strip().splitlines()
            regs.tasks.add(Entry(cls.name, cls, plugin, getattr(cls, "description", "") or (doc[0] if doc else ""),
                                 tuple(aliases), tuple(suites)))
        return register

    def named_register(registry: Registry):
        def make(plugin: str):
            def register(name, obj, description="", aliases=()):
                registry.add(Entry(name, obj, plugin, description, tuple(aliases)))
            return register
        return make

    each("register_methods", method_register)
    each("register_tasks", task_register)
    each("register_backbones", named_register(regs.backbones))
    each("register_executors", named_register(regs.executors))
    each("register_exporters", named_register(regs.exporters))
    clash = set(regs.suites()) & set(regs.tasks.entries)
    if clash:
        raise DuplicateNameError(f"suite name(s) {sorted(clash)} are also task names")
    return regs
