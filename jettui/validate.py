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
    if tp is Any or tp is object:
        return True
    if tp is type(None) or tp is None:
        return value is None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(check_value(value, arg) for arg in typing.get_args(tp))
    if origin is typing.Literal:
        return value in typing.get_args(tp)
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            return False
        args = typing.get_args(tp)
        return not args or all(check_value(v, args[0]) for v in value)
    if origin is dict:
        if not isinstance(value, dict):
            return False
        args = typing.get_args(tp)
        return not args or all(check_value(k, args[0]) and check_value(v, args[1]) for k, v in value.items())
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        # Signed 64 bits: what SQLite, the C calls behind os.* and the seed's types hold.
        return isinstance(value, int) and not isinstance(value, bool) and INT_MIN <= value <= INT_MAX
    if tp is float:
        if isinstance(value, float):
            return math.isfinite(value)  # NaN and infinities break every comparison and conversion
        return isinstance(value, int) and not isinstance(value, bool) and INT_MIN <= value <= INT_MAX
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


@functools.cache
def _hints(func: Callable[..., Any]) -> tuple[inspect.Signature, dict[str, Any]]:
    return inspect.signature(func), typing.get_type_hints(func)


def bind_arguments(func: Callable[..., Any], method: str, params: dict[str, Any], skip: int = 0) -> dict[str, Any]:
    """Check ``params`` against ``func``'s signature; return the full keyword arguments.

    ``skip`` leading parameters (self, a call context) are not part of the API.
    """
    signature, hints = _hints(func)
    api_params = list(signature.parameters.values())[skip:]
    names = {p.name for p in api_params}
    unknown = sorted(set(params) - names)
    if unknown:
        accepted = ", ".join(p.name for p in api_params) or "no parameters"
        raise CommandError(f"{method}: unknown parameter {unknown[0]!r} (accepted: {accepted})")
    bound: dict[str, Any] = {}
    for p in api_params:
        if p.name in params:
            value = params[p.name]
        elif p.default is inspect.Parameter.empty:
            raise CommandError(f"{method}: missing required parameter {p.name!r}")
        else:
            value = p.default
        tp = hints.get(p.name, Any)
        if p.name in params and not check_value(value, tp):
            raise CommandError(f"{method}: parameter {p.name!r} must be {_type_name(tp)}, not {type(value).__name__}")
        bound[p.name] = value
    return bound


def positional_to_keywords(
    func: Callable[..., Any], method: str, args: tuple[Any, ...], kwargs: dict[str, Any], skip: int = 1
) -> dict[str, Any]:
    """Turn a client call's positional arguments into the keyword map sent on the wire."""
    signature, _ = _hints(func)
    api_params = list(signature.parameters.values())[skip:]
    if len(args) > len(api_params):
        raise CommandError(f"{method}: takes {len(api_params)} arguments but {len(args)} were given")
    params = dict(kwargs)
    for p, value in zip(api_params, args, strict=False):
        if p.name in params:
            raise CommandError(f"{method}: got multiple values for {p.name!r}")
        params[p.name] = value
    bind_arguments(func, method, params, skip=skip)
    return params
