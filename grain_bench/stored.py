"""JSON for stored dataclasses, derived from their fields' types: ``to_jsonable`` writes one, ``from_jsonable`` reads
one back and checks every value against its field's type on the way, naming the path of the first wrong one
(``latency[1].median_ms is a string "fast", expected a number``). Adding a field to a stored dataclass is the whole
change: there is no second table of types to keep in step.

Supported field types: ``str``, ``int``, ``float`` (an int is a float; a bool is neither), ``bool``, ``None`` unions,
``list[X]`` and ``tuple[X, ...]``, ``dict[str, X]``, ``Any`` (any JSON value) and nested dataclasses. Unknown keys of
an object are ignored (a newer writer's additions); a missing key takes the field's default, and a field without one
is required.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import types
import typing
from typing import Any, TypeVar, get_args, get_origin

T = TypeVar("T")
_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", type(None): "null",
          dict: "an object", list: "a list"}


def to_jsonable(value: Any) -> Any:
    """``value`` as plain JSON types: dataclasses as objects of their fields, tuples as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(item) for item in value]
    return value


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _wrong(path: str, value: Any, expected: str) -> ValueError:
    return ValueError(f"field {path} is {type(value).__name__} {_short(value)}, expected {expected}")


def _expected(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_expected(arg) for arg in get_args(annotation))
    if origin in (list, tuple):
        return "a list"
    if origin is dict or (isinstance(annotation, type) and dataclasses.is_dataclass(annotation)):
        return "an object"
    return _NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))


def from_jsonable(annotation: Any, value: Any, path: str = "value") -> Any:
    """``value`` (parsed JSON) as ``annotation`` describes it; ``ValueError`` naming ``path`` when it does not fit."""
    origin = get_origin(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        return _union(annotation, value, path)
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        return _dataclass(annotation, value, path)
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise _wrong(path, value, "a list")
        item = get_args(annotation)[0] if get_args(annotation) else Any
        items = [from_jsonable(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise _wrong(path, value, "an object")
        item = get_args(annotation)[1] if get_args(annotation) else Any
        return {key: from_jsonable(item, v, f"{path}.{key}") for key, v in value.items()}
    return _scalar(annotation, value, path)


def _union(annotation: Any, value: Any, path: str) -> Any:
    args = get_args(annotation)
    if value is None:
        if type(None) in args:
            return None
        raise _wrong(path, value, _expected(annotation))
    for arg in args:
        if arg is type(None):
            continue
        try:
            return from_jsonable(arg, value, path)
        except ValueError:
            continue
    raise _wrong(path, value, _expected(annotation))


def _scalar(annotation: Any, value: Any, path: str) -> Any:
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation in (str, bool):
        if type(value) is annotation:
            return value
    elif annotation is type(None):
        if value is None:
            return None
    else:
        raise TypeError(f"{path}: stored type {annotation!r} is not supported by grain_bench.stored")
    raise _wrong(path, value, _expected(annotation))


def _dataclass(cls: Any, value: Any, path: str) -> Any:
    if not isinstance(value, dict):
        raise _wrong(path, value, "an object")
    hints = _hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in value:
            kwargs[f.name] = from_jsonable(hints[f.name], value[f.name], f"{path}.{f.name}" if path else f.name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ValueError(f"{'field ' + path + ' ' if path else 'record '}lacks {f.name}")
    return cls(**kwargs)


def read(cls: type[T], data: Any) -> T:
    """A stored dataclass from its JSON object (``from_jsonable`` at the top level, paths without a prefix)."""
    return _dataclass(cls, data, "")


def finite_or_none(value: Any, path: str, found: list[str]) -> Any:
    """``value`` with every non-finite float replaced by None, inside dataclasses, dicts, lists and tuples too; the
    path of each one replaced is appended to ``found`` (``scores.pearson``, ``latency[1].speedup``)."""
    if isinstance(value, float) and not math.isfinite(value):
        found.append(path)
        return None
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {}
        for f in dataclasses.fields(value):
            old = getattr(value, f.name)
            new = finite_or_none(old, f"{path}.{f.name}", found)
            if new is not old:
                changes[f.name] = new
        return dataclasses.replace(value, **changes) if changes else value
    if isinstance(value, dict):
        out = {k: finite_or_none(v, f"{path}.{k}", found) for k, v in value.items()}
        return value if all(out[k] is value[k] for k in value) else out
    if isinstance(value, (list, tuple)):
        items = [finite_or_none(v, f"{path}[{i}]", found) for i, v in enumerate(value)]
        if all(a is b for a, b in zip(items, value)):
            return value
        return type(value)(items)
    return value
