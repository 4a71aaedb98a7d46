"""Argument checking from type hints, shared by the client interfaces and the server dispatch.

One checker for one job: the client validates before a call leaves the process, the server
validates again because it trusts no client.  Both read the same kind of signature, so the
error a script sees is the same whichever side catches the mistake.
"""

from __future__ import annotations

import functools
import inspect
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jettui.errors import CommandError

INT_MIN = -(2**63)
INT_MAX = 2**63 - 1


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "None"
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def check_value(value: Any, tp: Any) -> bool:
    """True when ``value`` fits the annotation ``tp`` (a small, strict subset of typing)."""
    return _checker(tp)(value)


def _is_int(value: Any) -> bool:
    # Signed 64 bits: what SQLite, the C calls behind os.* and the seed's types hold.
    return isinstance(value, int) and not isinstance(value, bool) and INT_MIN <= value <= INT_MAX


def _is_float(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)  # NaN and infinities break every comparison and conversion
    return _is_int(value)


@functools.cache
def _checker(tp: Any) -> Callable[[Any], bool]:
    """Compile an annotation into a predicate once; calls then cost one or two tests."""
    if tp is Any or tp is object:
        return lambda value: True
    if tp is type(None) or tp is None:
        return lambda value: value is None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        options = tuple(_checker(arg) for arg in args)
        return lambda value: any(check(value) for check in options)
    if origin is typing.Literal:
        return lambda value: value in args
    if origin in (list, tuple):
        item = _checker(args[0]) if args else None
        return lambda value: isinstance(value, list | tuple) and (item is None or all(item(v) for v in value))
    if origin is dict:
        if not args:
            return lambda value: isinstance(value, dict)
        key, val = _checker(args[0]), _checker(args[1])
        return lambda value: isinstance(value, dict) and all(key(k) and val(v) for k, v in value.items())
    if tp is bool:
        return lambda value: isinstance(value, bool)
    if tp is int:
        return _is_int
    if tp is float:
        return _is_float
    if isinstance(tp, type):
        return lambda value: isinstance(value, tp)
    return lambda value: True


@dataclass(frozen=True, slots=True)
class _Param:
    name: str
    required: bool
    default: Any
    check: Callable[[Any], bool]
    type_name: str


@functools.cache
def _params(func: Callable[..., Any], skip: int) -> tuple[tuple[_Param, ...], frozenset[str], str]:
    """The API parameters of ``func`` (after ``skip`` leading ones), their names, and the
    list a person reads when a name is wrong."""
    signature = inspect.signature(func)
    hints = typing.get_type_hints(func)
    params = tuple(
        _Param(
            p.name,
            p.default is inspect.Parameter.empty,
            p.default,
            _checker(hints.get(p.name, Any)),
            _type_name(hints.get(p.name, Any)),
        )
        for p in list(signature.parameters.values())[skip:]
    )
    return params, frozenset(p.name for p in params), ", ".join(p.name for p in params) or "no parameters"


def bind_arguments(func: Callable[..., Any], method: str, params: dict[str, Any], skip: int = 0) -> dict[str, Any]:
    """Check ``params`` against ``func``'s signature; return the full keyword arguments.

    ``skip`` leading parameters (self, a call context) are not part of the API.
    """
    api_params, names, accepted = _params(func, skip)
    if not names.issuperset(params):
        unknown = sorted(set(params) - names)
        raise CommandError(f"{method}: unknown parameter {unknown[0]!r} (accepted: {accepted})")
    bound: dict[str, Any] = {}
    for p in api_params:
        if p.name in params:
            value = params[p.name]
            if not p.check(value):
                raise CommandError(f"{method}: parameter {p.name!r} must be {p.type_name}, not {type(value).__name__}")
        elif p.required:
            raise CommandError(f"{method}: missing required parameter {p.name!r}")
        else:
            value = p.default
        bound[p.name] = value
    return bound


def positional_to_keywords(
    func: Callable[..., Any], method: str, args: tuple[Any, ...], kwargs: dict[str, Any], skip: int = 1
) -> dict[str, Any]:
    """Turn a client call's positional arguments into the keyword map sent on the wire."""
    api_params = _params(func, skip)[0]
    if len(args) > len(api_params):
        raise CommandError(f"{method}: takes {len(api_params)} arguments but {len(args)} were given")
    params = dict(kwargs)
    for p, value in zip(api_params, args, strict=False):
        if p.name in params:
            raise CommandError(f"{method}: got multiple values for {p.name!r}")
        params[p.name] = value
    bind_arguments(func, method, params, skip=skip)
    return params
