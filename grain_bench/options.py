"""Typed, frozen option classes that parse ``key=value`` strings and reject unknown keys."""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Literal, get_args, get_origin

from grain_bench.errors import UsageError


def _coerce(owner: str, key: str, value: Any, annotation: Any) -> Any:
    """``value`` as ``annotation`` describes it (strings converted: ``-o grain.alpha=0.1``); ``UsageError`` naming the
    option otherwise. Literals, unions with None, bool, int, float, str and tuples of them; anything else as it is."""
    origin = get_origin(annotation)
    if origin is Literal:
        return _choice(owner, key, value, get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return _union(owner, key, value, get_args(annotation))
    if annotation is bool:
        return _boolean(owner, key, value)
    if annotation in (int, float):
        return _number(owner, key, value, annotation)
    if annotation is str:
        return _string(owner, key, value)
    if origin is tuple:
        return _items(owner, key, value, get_args(annotation))
    return value


def _choice(owner: str, key: str, value: Any, choices: tuple) -> Any:
    for choice in choices:
        if value == choice or (isinstance(value, str) and str(choice) == value):
            return choice
    raise UsageError(f"{owner}: option {key}={value!r} is not one of {', '.join(map(str, choices))}")


def _union(owner: str, key: str, value: Any, args: tuple) -> Any:
    if (value is None or isinstance(value, str) and value.lower() in ("none", "null")) and type(None) in args:
        return None
    errors = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _coerce(owner, key, value, arg)
        except UsageError as exc:
            errors.append(str(exc))
    raise UsageError(errors[-1] if errors else f"{owner}: option {key}={value!r} has the wrong type")


def _boolean(owner: str, key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
        return False
    raise UsageError(f"{owner}: option {key}={value!r} must be true or false")


def _string(owner: str, key: str, value: Any) -> str:
    """A text value: a string, a path (``pathlib.Path``) or a number as written (``-o heads.head_share=0.5`` from
    Python); None, a flag or a container is a mistake, not a name such as "None"."""
    if isinstance(value, str):
        return value
    if isinstance(value, os.PathLike):
        return str(os.fspath(value))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise UsageError(f"{owner}: option {key}={value!r} must be a string, got {type(value).__name__}")


def _number(owner: str, key: str, value: Any, annotation: type) -> Any:
    if isinstance(value, bool):
        raise UsageError(f"{owner}: option {key}={value!r} must be a number")
    try:
        number = annotation(value)
    except (TypeError, ValueError, OverflowError) as exc:  # OverflowError: int(inf) (as -r max_steps=inf), float(1e400)
        kind = ("an integer" if annotation is int else
                "a finite number" if isinstance(exc, OverflowError) else "a number")
        raise UsageError(f"{owner}: option {key}={value!r} must be {kind}") from None
    if annotation is int and isinstance(value, float) and value != int(value):
        raise UsageError(f"{owner}: option {key}={value!r} must be an integer")
    return number


def _items(owner: str, key: str, value: Any, args: tuple) -> tuple:
    if isinstance(value, str):
        items = value.split(",")
    elif value is None or isinstance(value, Mapping):
        raise UsageError(f"{owner}: option {key}={value!r} must be a list (or one value, or a comma-separated string)")
    elif isinstance(value, Iterable) and not isinstance(value, (bytes, os.PathLike)):
        items = list(value)  # a list, a tuple, a range, a numpy array
    else:  # one value where a list is expected: grain_bench.run(densities=0.5)
        items = [value]
    item_type = args[0] if args else str
    return tuple(_coerce(owner, key, item, item_type) for item in items if item != "")


@dataclasses.dataclass(frozen=True)
class Range:
    """The valid values of a numeric option: optional bounds (open or closed); numbers must always be finite."""

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    hint: str = ""  # what to do instead, e.g. "or none to train for `epochs`"

    def __str__(self) -> str:
        low = f">= {self.ge:g}" if self.ge is not None else f"> {self.gt:g}" if self.gt is not None else ""
        high = f"<= {self.le:g}" if self.le is not None else f"< {self.lt:g}" if self.lt is not None else ""
        if low and high:
            left = "[" if self.ge is not None else "("
            right = "]" if self.le is not None else ")"
            return f"in {left}{(self.ge if self.ge is not None else self.gt):g}, " \
                   f"{(self.le if self.le is not None else self.lt):g}{right}"
        return low or high or "finite"

    def contains(self, value: float) -> bool:
        """True when ``value`` is finite and within the bounds."""
        return (_finite(value)
                and (self.gt is None or value > self.gt) and (self.ge is None or value >= self.ge)
                and (self.lt is None or value < self.lt) and (self.le is None or value <= self.le))


FINITE = Range()


_NOTHING = object()


def option(default: Any, *, gt: float | None = None, ge: float | None = None, lt: float | None = None,
           le: float | None = None, hint: str = "", absent: Any = _NOTHING) -> Any:
    """A dataclass field with a declared valid range, checked by ``Options.parse`` before anything runs.

    ``absent``: for an option added with a default that changes what a run computes, the value that a stored option
    set without it means (what runs computed before the option existed). The stored form then keeps the option
    unless it equals ``absent``, so a run with the new default gets a new id and every stored run keeps its id and
    its meaning (``Method.canonical_options``, ``Method.from_spec``)."""
    metadata: dict[str, Any] = {"range": Range(gt, ge, lt, le, hint)}
    if absent is not _NOTHING:
        metadata["absent"] = absent
    return dataclasses.field(default=default, metadata=metadata)


def _finite(value: float) -> bool:
    """True for a finite number (an int always is, and may be too large for ``math.isfinite``'s float)."""
    return isinstance(value, int) or math.isfinite(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class Options:
    """Base of every options class: subclasses are frozen dataclasses with typed, defaulted fields."""

    owner: ClassVar[str] = "options"

    @classmethod
    def parse(cls, values: dict[str, Any] | None = None):
        """Build from a mapping of key -> value (strings are converted); unknown keys raise ``UsageError``."""
        values = dict(values or {})
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = [k for k in values if k not in fields]
        if unknown:
            key = unknown[0]
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            valid = ", ".join(fields) or "(none)"
            raise UsageError(f"{cls.owner}: unknown option {key!r}.{hint} Valid options: {valid}")
        kwargs = {k: _coerce(cls.owner, k, v, hints[k]) for k, v in values.items()}
        obj = cls(**kwargs)
        obj.check_ranges()
        obj.validate()
        return obj

    def coerce_fields(self) -> None:
        """Convert every field in place as its type says (what ``parse`` does to its values), for an instance built
        directly: ``SweepRequest(methods="dense")`` holds ``("dense",)``, not a string to split into letters."""
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _coerce(self.owner, f.name, getattr(self, f.name), hints[f.name]))

    def check_ranges(self) -> None:
        """Every number finite and every field with a declared ``Range`` (see ``option``) within it."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            values = value if isinstance(value, tuple) else (value,)
            bounds = f.metadata.get("range", FINITE)
            for item in values:
                if _is_number(item) and not bounds.contains(item):
                    finite = "a finite number" + ("" if bounds is FINITE else " ")
                    wanted = (finite if not _finite(item) else "") + ("" if bounds is FINITE else str(bounds))
                    hint = f" ({bounds.hint})" if bounds.hint else ""
                    raise UsageError(f"{self.owner}: option {f.name}={item!r} must be {wanted}{hint}")

    def validate(self) -> None:
        """Check relations between fields; raise ``UsageError`` on a bad value. Single-field ranges are declared
        with ``option(default, ge=..., ...)`` and checked before this."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def describe(cls) -> list[tuple[str, str, Any]]:
        """(name, type, default) for every option, for ``grain-bench methods``."""
        hints = typing.get_type_hints(cls)
        out = []
        for f in dataclasses.fields(cls):
            annotation = hints[f.name]
            if get_origin(annotation) is Literal:
                type_name = "|".join(map(str, get_args(annotation)))
            else:
                type_name = getattr(annotation, "__name__", str(annotation).replace("typing.", ""))
            out.append((f.name, type_name, f.default))
        return out

    @classmethod
    def absent_values(cls) -> dict[str, Any]:
        """What a stored option set without each ``absent``-declared option means (see ``option``)."""
        return {f.name: f.metadata["absent"] for f in dataclasses.fields(cls) if "absent" in f.metadata}

    @classmethod
    def ranges(cls) -> dict[str, Range]:
        """Declared valid ranges by field name (fields without one only need to be finite when numeric)."""
        return {f.name: f.metadata["range"] for f in dataclasses.fields(cls) if "range" in f.metadata}


def parse_key_values(items: list[str] | None, what: str, example: str) -> dict[str, str]:
    """Parse ``KEY=VALUE`` strings (``-r``, ``-E``) into a dict; a malformed item raises ``UsageError``."""
    out: dict[str, str] = {}
    for item in items or []:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise UsageError(f"malformed {what} {item!r}: expected KEY=VALUE, e.g. {example}")
        key, value = item.split("=", 1)
        out[key.strip()] = value
    return out


def parse_assignments(items: list[str] | None) -> dict[str, dict[str, str]]:
    """Parse ``-o method.key=value`` strings into {method: {key: value}}."""
    out: dict[str, dict[str, str]] = {}
    for item in items or []:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise UsageError(f"malformed option {item!r}: expected METHOD.KEY=VALUE, e.g. grain.alpha=0.3")
        target, value = item.split("=", 1)
        method, key = target.split(".", 1)
        if not method or not key:
            raise UsageError(f"malformed option {item!r}: expected METHOD.KEY=VALUE, e.g. grain.alpha=0.3")
        out.setdefault(method, {})[key] = value
    return out
