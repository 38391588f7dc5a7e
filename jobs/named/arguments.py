"""Checking a named task's JSON arguments against its function's annotations, before anything is enqueued.

Arguments travel as JSON, so a task can only ever receive str, int, float, bool, None, lists and objects
with string keys. This checks those against the annotations a task is likely to use: the JSON types,
`list[X]`, `tuple[X, ...]`, `Sequence[X]`, `dict[str, X]`, `Mapping[str, X]`, `Optional`/`Union` (also
`X | Y`), `Literal[...]` and `Any`. An unannotated parameter takes anything; so does an annotation outside
that set (a class JSON cannot produce), since refusing it would make the task impossible to call.
A JSON number without a fraction (3) fits `float`, as `json.loads` reads it as an int.
"""

from __future__ import annotations

import collections.abc
import inspect
import json
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from jobs.errors import TaskArgumentsError

# A run's or a schedule's arguments as compact UTF-8 JSON: they are stored with every job and every fire.
MAX_ARGUMENTS_BYTES = 64 * 1024
_ARRAYS = (list, tuple, collections.abc.Sequence, collections.abc.Collection, collections.abc.Iterable)
_OBJECTS = (dict, collections.abc.Mapping, collections.abc.MutableMapping)
_NAMES = {str: "str", int: "int", float: "float", bool: "bool", type(None): "null"}


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    return {str: "str", int: "int", float: "float", type(None): "null", list: "array", dict: "object"}.get(
        type(value), type(value).__name__)


def _show(value: Any) -> str:
    text = repr(value)
    return f"{text[:60]}..." if len(text) > 60 else text


def as_json(args: Sequence[Any], kwargs: Mapping[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """The arguments as a worker will see them (a JSON round trip); TypeError or ValueError if not JSON,
    TaskArgumentsError over MAX_ARGUMENTS_BYTES."""
    text = json.dumps([list(args), dict(kwargs)], allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    size = len(text.encode())
    if size > MAX_ARGUMENTS_BYTES:
        raise TaskArgumentsError(
            f"arguments are {size:,} bytes of JSON: at most {MAX_ARGUMENTS_BYTES:,} (64 KiB); pass a reference "
            "to larger data (a key, a path, a URL) instead"
        )
    plain_args, plain_kwargs = json.loads(text)
    return plain_args, plain_kwargs


def hints(func: Callable[..., Any]) -> dict[str, Any]:
    """The resolved annotations of `func`'s parameters; one that cannot be resolved counts as unannotated."""
    try:
        return typing.get_type_hints(func)
    except Exception:
        pass
    # One bad forward reference must not hide the others: resolve them one by one.
    resolved: dict[str, Any] = {}
    namespace = getattr(func, "__globals__", {})
    for name, annotation in getattr(func, "__annotations__", {}).items():
        try:
            resolved[name] = eval(annotation, namespace) if isinstance(annotation, str) else annotation
        except Exception:
            continue
    return resolved


def mismatch(value: Any, annotation: Any) -> str | None:
    """Why `value` (decoded JSON) does not fit `annotation`, or None if it does."""
    if annotation is Any or annotation is object or annotation is inspect.Parameter.empty:
        return None
    if annotation is None or annotation is type(None):
        return None if value is None else f"expected null, got {_show(value)} ({_json_type(value)})"
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return mismatch(value, typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        return _union(value, typing.get_args(annotation))
    if origin is typing.Literal:
        choices = typing.get_args(annotation)
        if any(value == c and type(value) is type(c) for c in choices):
            return None
        return f"expected one of {', '.join(repr(c) for c in choices)}, got {_show(value)}"
    if _one_of(annotation, tuple(_NAMES)):
        return _scalar(value, annotation)
    if _one_of(annotation, _ARRAYS) or _one_of(origin, _ARRAYS):
        return _array(value, annotation, origin)
    if _one_of(annotation, _OBJECTS) or _one_of(origin, _OBJECTS):
        return _object(value, annotation)
    return None  # not a JSON type: nothing JSON could send fits it better, so nothing is refused


def _one_of(annotation: Any, kinds: tuple[Any, ...]) -> bool:
    return any(annotation is kind for kind in kinds)  # identity: some annotations are not hashable


def _scalar(value: Any, annotation: type) -> str | None:
    if annotation is float:
        fits = isinstance(value, int | float) and not isinstance(value, bool)
    elif annotation is int:
        fits = isinstance(value, int) and not isinstance(value, bool)
    else:
        fits = isinstance(value, annotation)
    return None if fits else f"expected {_NAMES[annotation]}, got {_show(value)} ({_json_type(value)})"


def _union(value: Any, options: Sequence[Any]) -> str | None:
    problems = [mismatch(value, option) for option in options]
    if any(p is None for p in problems):
        return None
    others = [p for option, p in zip(options, problems, strict=True) if option is not type(None)]
    if len(others) == 1:
        return others[0]  # Optional[X]: what is wrong with it as an X says more
    names = " or ".join(describe(option) for option in options)
    return f"expected {names}, got {_show(value)} ({_json_type(value)})"


def _array(value: Any, annotation: Any, origin: Any) -> str | None:
    if not isinstance(value, list):
        return f"expected an array, got {_show(value)} ({_json_type(value)})"
    args = typing.get_args(annotation)
    if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        if len(value) != len(args):
            return f"expected an array of {len(args)} items, got {len(value)}"
        item_types = list(args)
    else:
        item_types = [args[0] if args else Any] * len(value)
    for index, (item, item_type) in enumerate(zip(value, item_types, strict=True)):
        problem = mismatch(item, item_type)
        if problem:
            return _at(f"[{index}]", problem)
    return None


def _object(value: Any, annotation: Any) -> str | None:
    if not isinstance(value, dict):
        return f"expected an object, got {_show(value)} ({_json_type(value)})"
    args = typing.get_args(annotation)
    key_type, value_type = (args[0], args[1]) if len(args) == 2 else (Any, Any)
    for key, item in value.items():
        problem = mismatch(key, key_type)
        if problem:
            return f"key {key!r}: {problem}"
        problem = mismatch(item, value_type)
        if problem:
            return _at(f"[{key!r}]", problem)
    return None


def _at(label: str, problem: str) -> str:
    """`statuses[0]: expected ...`: a nested problem's path joined onto its parent's."""
    return f"{label}{problem}" if problem.startswith("[") else f"{label}: {problem}"


def describe(annotation: Any) -> str:
    """A short name of an annotation for messages: `int`, `list[str]`, `null`."""
    if annotation is None or annotation is type(None):
        return "null"
    if _one_of(annotation, tuple(_NAMES)):
        return _NAMES[annotation]
    return str(annotation).replace("typing.", "")


def check_call(func: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]) -> str | None:
    """Why these arguments do not fit `func` (its signature, then its annotations), or None if they do.

    Raises nothing itself; the caller words the error (see jobs.named.runs.check_arguments).
    """
    signature = inspect.signature(func)
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as exc:
        return str(exc)
    annotations = hints(func)
    for name, value in bound.arguments.items():
        parameter = signature.parameters[name]
        annotation = annotations.get(name, inspect.Parameter.empty)
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            items: list[tuple[str, Any]] = [(f"{name}[{i}]", v) for i, v in enumerate(value)]
        elif parameter.kind is inspect.Parameter.VAR_KEYWORD:
            items = [(str(k), v) for k, v in value.items()]
        else:
            items = [(name, value)]
        for label, item in items:
            problem = mismatch(item, annotation)
            if problem:
                return _at(label, problem)
    return None
