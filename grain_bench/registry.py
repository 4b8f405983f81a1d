"""Name -> plugin object maps for methods, tasks, backbones, executors and table formats, filled through the hooks.

Each ``Registry[T]`` knows what it holds: registration checks the object (a ``Method`` or ``Task`` subclass with a
name, a callable loader or factory, an exporter), so a wrong registration fails at start-up naming the plugin, and
``get`` returns a ``T``. One ``Registries`` object comes from one plugin manager (``build_registries``); the CLI and
the Python API take the process-wide one (``grain_bench.plugins.get_registries``) and pass it down explicitly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from grain_bench.errors import (
    DuplicateNameError,
    UnknownBackboneError,
    UnknownExecutorError,
    UnknownExporterError,
    UnknownMethodError,
    UnknownRuntimeError,
    UnknownTaskError,
    UsageError,
    _UnknownNameError,
)
from grain_bench.method import Method
from grain_bench.task import Task

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered object with the plugin that registered it."""

    name: str
    obj: T
    plugin: str
    description: str = ""
    aliases: tuple[str, ...] = ()
    suites: tuple[str, ...] = ()


def subclass_of(base: type) -> Callable[[Any], str | None]:
    """A registration check: the object must be a subclass of ``base`` with a non-empty ``name``."""
    def check(obj: Any) -> str | None:
        if not (isinstance(obj, type) and issubclass(obj, base)):
            return f"is not a subclass of {base.__module__}.{base.__qualname__}"
        return None if getattr(obj, "name", None) else "has no name"
    return check


def task_class(obj: Any) -> str | None:
    """A registration check for tasks: a named ``Task`` subclass whose ``head`` is a known head kind."""
    from grain_bench.heads import HEADS

    problem = subclass_of(Task)(obj)
    if problem is None and obj.head not in HEADS:
        return f"has head {obj.head!r}; expected one of {', '.join(HEADS)} (grain_bench.heads)"
    return problem


def runtime_object(obj: Any) -> str | None:
    """A registration check for runtimes: a ``grain_bench.runtimes.Runtime`` (named, with ``devices`` and a callable
    ``prepare``), checked by what it has: the runtimes module itself registers through the registry."""
    if isinstance(obj, type) or not callable(getattr(obj, "prepare", None)) or not isinstance(
            getattr(obj, "devices", None), tuple):
        return "is not a grain_bench.runtimes.Runtime instance (prepare(model, inputs, threads), devices)"
    return None if getattr(obj, "name", None) else "has no name"


def is_callable(what: str) -> Callable[[Any], str | None]:
    """A registration check: the object must be callable (``what`` says what it is called for)."""
    def check(obj: Any) -> str | None:
        return None if callable(obj) else f"is not callable ({what})"
    return check


@dataclass
class Registry(Generic[T]):
    """A map from names (and aliases) to entries of one kind; unknown names raise with a 'did you mean'."""

    kind: str
    error: type[_UnknownNameError]
    check: Callable[[Any], str | None]  # why an object cannot be registered here, or None
    entries: dict[str, Entry[T]] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)

    def add(self, entry: Entry[T]) -> None:
        """Add ``entry`` after checking its object; a taken name or alias raises ``DuplicateNameError`` naming both
        plugins, an object of the wrong kind ``UsageError`` naming the plugin."""
        problem = self.check(entry.obj) or (None if entry.name else "has no name")
        if problem:
            raise UsageError(f"plugin {entry.plugin!r} cannot register {self.kind} {entry.name or entry.obj!r}: "
                             f"{entry.obj!r} {problem}")
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

    def _owner(self, key: str) -> Entry[T] | None:
        if key in self.entries:
            return self.entries[key]
        if key in self.aliases:
            return self.entries[self.aliases[key]]
        return None

    def entry(self, name: str) -> Entry[T]:
        """The entry for ``name`` or one of its aliases."""
        found = self._owner(name)
        if found is None:
            raise self.error(name, [*self.entries, *self.aliases])
        return found

    def get(self, name: str) -> T:
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

    methods: Registry[type[Method]]
    tasks: Registry[type[Task]]
    backbones: Registry[Callable[..., Any]]
    executors: Registry[Callable[..., Any]]
    exporters: Registry[Callable[..., str]]
    runtimes: Registry[Any]  # grain_bench.runtimes.Runtime instances
    #: the plugin manager they were built from: its other hooks (``load_backbone``, ``run_finished``) go with them
    pm: Any = None

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


def empty_registries() -> Registries:
    """Registries with nothing registered yet, each with its check."""
    return Registries(
        methods=Registry("method", UnknownMethodError, subclass_of(Method)),
        tasks=Registry("task", UnknownTaskError, task_class),
        backbones=Registry("backbone", UnknownBackboneError, is_callable("loader(head, num_labels)")),
        executors=Registry("executor", UnknownExecutorError, is_callable("factory(**options)")),
        exporters=Registry("format", UnknownExporterError,
                           is_callable("exporter(summary, caption, notes, extra) -> str")),
        runtimes=Registry("runtime", UnknownRuntimeError, runtime_object),
    )


def _described(obj: Any) -> str:
    doc = (getattr(obj, "__doc__", None) or "").strip().splitlines()
    return getattr(obj, "description", "") or (doc[0] if doc else "")


class _Registrars:
    """The ``register`` functions one plugin's registration hooks are called with (they name the plugin in every
    entry, so a duplicate or a wrong object says whose it is)."""

    def __init__(self, regs: Registries, plugin: str):
        self.regs, self.plugin = regs, plugin

    def method(self, cls, aliases=()) -> None:
        """``register_methods``: a ``Method`` subclass."""
        self.regs.methods.add(Entry(getattr(cls, "name", ""), cls, self.plugin, _described(cls), tuple(aliases)))

    def task(self, cls, aliases=(), suites=()) -> None:
        """``register_tasks``: a ``Task`` subclass, in the suites it names."""
        self.regs.tasks.add(Entry(getattr(cls, "name", ""), cls, self.plugin, _described(cls), tuple(aliases),
                                  tuple(suites)))

    def runtime(self, runtime, aliases=()) -> None:
        """``register_runtimes``: a ``grain_bench.runtimes.Runtime`` instance."""
        self.regs.runtimes.add(Entry(getattr(runtime, "name", ""), runtime, self.plugin, _described(runtime),
                                     tuple(aliases)))

    def named(self, kind: str) -> Callable[..., None]:
        """The ``register(name, obj, description="", aliases=())`` of the registry ``kind`` (backbones, ...)."""
        registry = getattr(self.regs, kind)

        def register(name, obj, description="", aliases=()):
            registry.add(Entry(name, obj, self.plugin, description, tuple(aliases)))
        return register


#: each registration hook and the ``register`` it is called with
_HOOKS: tuple[tuple[str, Callable[[_Registrars], Callable[..., None]]], ...] = (
    ("register_methods", lambda r: r.method), ("register_tasks", lambda r: r.task),
    ("register_backbones", lambda r: r.named("backbones")), ("register_executors", lambda r: r.named("executors")),
    ("register_exporters", lambda r: r.named("exporters")), ("register_runtimes", lambda r: r.runtime),
)


def build_registries(pm) -> Registries:
    """Call every registration hook of ``pm`` (one implementation at a time, so duplicates name both plugins)."""
    regs = empty_registries()
    regs.pm = pm
    for hook_name, register in _HOOKS:
        # pluggy returns implementations last-registered-first; built-ins register first, so reverse.
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            impl.function(register=register(_Registrars(regs, impl.plugin_name)))
    clash = set(regs.suites()) & set(regs.tasks.entries)
    if clash:
        raise DuplicateNameError(f"suite name(s) {sorted(clash)} are also task names")
    return regs
