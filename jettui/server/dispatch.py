"""The method table: every API method, what it needs, and the coroutine that serves it.

Handlers register with :func:`method`.  The table is the single place that says which
methods need authentication, which run as asynchronous requests (the ``...Async`` ones),
which need superuser, and which permission flags a token session must carry.  Tests
iterate it.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jettui.constants import PERMISSION_NONE, Permissions
from jettui.errors import CommandError
from jettui.validate import bind_arguments

if TYPE_CHECKING:
    from jettui.server.core import Server
    from jettui.server.session import Session


@dataclass(frozen=True, slots=True)
class Call:
    """What a handler gets besides its API parameters."""

    server: Server
    session: Session
    method: str


Handler = Callable[..., Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class MethodSpec:
    name: str
    handler: Handler
    auth: bool
    """Needs an authenticated session."""
    async_request: bool
    """Answers with a Request Structure and runs in the request table.  Its handler checks
    the arguments at once (so bad input fails the call itself) and returns the work: a
    zero-argument coroutine function that the request table runs."""
    superuser: bool
    """Needs superuser() on the session."""
    permission: Permissions
    """Flags a token session must carry."""


METHODS: dict[str, MethodSpec] = {}


def method(
    name: str,
    *,
    auth: bool = True,
    superuser: bool = False,
    permission: Permissions = PERMISSION_NONE,
    async_request: bool | None = None,
) -> Callable[[Handler], Handler]:
    """Register a handler ``async def h(call: Call, **params)`` under the wire name ``name``."""

    def register(func: Handler) -> Handler:
        if name in METHODS:
            raise RuntimeError(f"method {name} registered twice")
        if not inspect.iscoroutinefunction(func):
            raise TypeError(f"{name}: handlers are coroutines")
        is_async = name.endswith("Async") if async_request is None else async_request
        METHODS[name] = MethodSpec(name, func, auth, is_async, superuser, permission)
        return func

    return register


async def dispatch(server: Server, session: Session, name: str, params: dict[str, Any]) -> Any:
    """Check and run one call; raises CommandError for anything the caller did wrong."""
    spec = METHODS.get(name)
    if spec is None:
        raise CommandError(f"unknown method {name!r}")
    if spec.auth:
        session.require_auth()
        if spec.permission:
            session.require_permission(name, spec.permission)
        if spec.superuser:
            session.require_superuser(name)
    kwargs = bind_arguments(spec.handler, name, params, skip=1)
    call = Call(server, session, name)
    if not spec.async_request:
        return await spec.handler(call, **kwargs)
    work = await spec.handler(call, **kwargs)
    extra: dict[str, Any] = {}
    if isinstance(work, tuple):  # (work, extra keys of the Request Structure)
        work, extra = work
    req = server.requests.start(name, session.owner_keys, work, extra)
    return req.structure()
