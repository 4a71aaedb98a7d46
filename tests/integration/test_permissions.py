"""The permission matrix, generated from the method table: every method x every role.

A call either passes the gate (it may still fail on its dummy arguments, but never with an
authentication, permission or superuser error) or is refused with a CommandError that
names what is missing.
"""

from __future__ import annotations

import inspect
import re
import typing
from pathlib import Path
from typing import Any

import pytest

from jettui.api import APIInterface, CommandError
from jettui.constants import PERMISSIONS_ALL, Permissions
from jettui.server.dispatch import METHODS, MethodSpec
from tests.helpers import ServerThread

GATE = re.compile(r"authentication required|needs the .* permission|requires superuser")
#: Methods whose success changes the session or the server in ways the matrix must not do.
NOT_EXECUTED = {"server.terminate", "server.authAsync", "server.superuser"}
#: Optional arguments that keep a passing call short.
EXTRA = {"server.recvDiscoverPacketAsync": {"timeoutSeconds": 0.05}}


def sample(tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is not None and type(None) in typing.get_args(tp) or origin in (typing.Union,):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    if typing.get_origin(tp) is not None and typing.get_origin(tp) not in (list, dict):
        tp = typing.get_args(tp)[0]
    base = typing.get_origin(tp) or tp
    return {str: path, int: 1, float: 1.0, bool: False, list: [], dict: {}}.get(base, path)


def sample_params(spec: MethodSpec, path: str) -> dict[str, Any]:
    hints = typing.get_type_hints(spec.handler)
    params = list(inspect.signature(spec.handler).parameters.values())[1:]
    required = {p.name: sample(hints[p.name], path) for p in params if p.default is inspect.Parameter.empty}
    return {**required, **EXTRA.get(spec.name, {})}


def expected_refusal(spec: MethodSpec, role: str, perms: Permissions, superuser: bool) -> str | None:
    if role == "anonymous" or role == "expired-token":
        return "authentication required" if spec.auth else None
    if not spec.auth:
        return None
    missing = spec.permission & ~perms
    if missing:
        return "permission"
    if spec.superuser and not superuser:
        return "requires superuser"
    return None


ROLES = [
    "anonymous",
    "user",
    "sandboxed-user",
    "expired-token",
    "wrangler",
    "superuser",
    *[f"token-{p.name}" for p in Permissions],
]


def login(server: ServerThread, role: str, tmp: Path) -> tuple[APIInterface, Permissions, bool]:
    api = server.api().connect()
    if role == "anonymous":
        return api, Permissions(0), False
    if role == "expired-token":
        with pytest.raises(CommandError, match="expired"):
            api.server.authToken(server.expired_token)  # type: ignore[attr-defined]
        return api, Permissions(0), False
    if role.startswith("token-"):
        api.server.authToken(server.tokens[role])  # type: ignore[attr-defined]
        return api, Permissions[role[len("token-") :]], False
    user = {"user": "bob", "sandboxed-user": "sandy", "wrangler": "wendy", "superuser": "alice"}[role]
    api.server.auth(user, f"{user}-pw")
    if role == "superuser":
        api.server.superuser()
    if role == "wrangler":
        api.server.wrangler()
    return api, PERMISSIONS_ALL, role == "superuser"


@pytest.fixture
def matrix_server(server: ServerThread, tmp_path: Path) -> ServerThread:
    import time

    server.add_user("sandy", "sandy-pw")
    server.add_user("wendy", "wendy-pw")
    (tmp_path / "box").mkdir()
    with server.api() as alice:
        alice.server.auth("alice", "alice-pw")
        alice.server.superuser()
        alice.server.setSandboxMapping("sandy", {"": str(tmp_path / "box")})
        alice.server.getRequestResult(alice.server.addWranglerAsync("wendy"))
    with server.api() as bob:
        bob.server.auth("bob", "bob-pw")
        server.tokens = {  # type: ignore[attr-defined]
            f"token-{p.name}": bob.server.createAPIToken(permissions=int(p))["token"] for p in Permissions
        }
        server.expired_token = bob.server.createAPIToken(timeLimitSeconds=0.05)["token"]  # type: ignore[attr-defined]
    time.sleep(0.1)
    return server


@pytest.mark.parametrize("role", ROLES)
def test_permission_matrix(matrix_server: ServerThread, role: str, tmp_path: Path) -> None:
    target = str(tmp_path / "matrix" / "x")
    api, perms, superuser = login(matrix_server, role, tmp_path)
    tried = 0
    try:
        for name, spec in sorted(METHODS.items()):
            refusal = expected_refusal(spec, role, perms, superuser)
            if refusal is None and name in NOT_EXECUTED:
                continue
            tried += 1
            try:
                result = api.client.request(name, sample_params(spec, target))
                if spec.async_request and isinstance(result, dict) and "requestId" in result:
                    try:
                        api.server.getRequestResult(result)
                    except CommandError as exc:
                        assert not GATE.search(exc.message), (name, role, exc.message)
                assert refusal is None, f"{name} as {role} should be refused ({refusal})"
            except CommandError as exc:
                if refusal is None:
                    assert not GATE.search(exc.message), f"{name} as {role}: unexpected refusal {exc.message}"
                else:
                    assert refusal in exc.message, f"{name} as {role}: {exc.message!r} lacks {refusal!r}"
        assert api.server.getServerInfo()["apiVersion"] > 0  # the connection is still fine
    finally:
        api.disconnect()
    assert tried >= len(METHODS) - len(NOT_EXECUTED)
