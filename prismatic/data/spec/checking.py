"""Checking a dataset spec's names and arguments before anything runs: the exceptions, "did you mean"
suggestions, and `check_call`, which validates an op call against its factory's signature and types."""

from __future__ import annotations

import difflib
import inspect
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Union

from prismatic.data.errors import DataError
from prismatic.util.registry import Registry


class SpecError(DataError):
    """A dataset spec, mixture or YAML file is invalid; `problems` lists every problem found."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        self.problems = list(problems) or [message]
        super().__init__(message)


class UnknownNameError(SpecError, KeyError):
    """An unknown dataset or mixture name (a KeyError too, for `except KeyError` callers)."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return self.args[0]


class MissingKeyError(SpecError, KeyError):
    """A standardize op named a trajectory entry the dataset does not have."""

    def __str__(self) -> str:
        return self.args[0]


def suggest(name: str, choices: Sequence[str], n: int = 5) -> str:
    close = difflib.get_close_matches(name, choices, n=n, cutoff=0.5)
    return f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""



def _type_ok(value: Any, annotation: Any) -> bool:
    if annotation is Any or annotation is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if origin in (list, Sequence, tuple):
        (item,) = typing.get_args(annotation)[:1] or (Any,)
        return isinstance(value, (list, tuple)) and all(_type_ok(v, item) for v in value)
    if origin in (dict, Mapping):
        args = typing.get_args(annotation) or (Any, Any)
        return isinstance(value, Mapping) and all(_type_ok(v, args[1]) for v in value.values())
    return isinstance(value, annotation) if isinstance(annotation, type) else True


def _type_name(annotation: Any) -> str:
    return str(annotation).replace("typing.", "") if not isinstance(annotation, type) else annotation.__name__


def check_call(registry: Registry, name: str, args: Mapping[str, Any]) -> list[str]:
    """Every problem with calling `registry[name](**args)`: unknown op, unknown / missing / mistyped
    arguments, or a ValueError from the factory itself."""
    if name not in registry:
        return [
            f"unknown {registry.what} {name!r}; {suggest(name, registry.names())}choose one of: {', '.join(registry.names())}"
        ]
    factory = registry.get(name)
    params = inspect.signature(factory).parameters
    hints = typing.get_type_hints(factory)
    usage = ", ".join(
        f"{p}: {_type_name(hints.get(p, Any))}"
        + ("" if q.default is inspect.Parameter.empty else f" = {q.default!r}")
        for p, q in params.items()
    )
    problems = []
    for arg in sorted(set(args) - set(params)):
        problems.append(
            f"{name}: unknown argument {arg!r}; {suggest(arg, list(params))}arguments are ({usage})"
        )
    for p, q in params.items():
        if q.default is inspect.Parameter.empty and p not in args:
            problems.append(f"{name}: missing required argument {p!r}; arguments are ({usage})")
        elif p in args and not _type_ok(args[p], hints.get(p, Any)):
            problems.append(
                f"{name}: argument {p!r} must be {_type_name(hints.get(p, Any))}, got {args[p]!r}"
            )
    if not problems:
        try:
            factory(**args)
        except (ValueError, TypeError) as e:
            problems.append(f"{name}: {e}")
    return problems

