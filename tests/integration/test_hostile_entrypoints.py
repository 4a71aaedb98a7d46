"""Every entry point of the API, with hostile arguments, first unauthenticated and then as a
sandboxed user: a CommandError (or a success that stays inside the sandbox), never an
internal error, nothing outside the sandbox changed, and the server still serving.

The method table (``jettui.server.dispatch.METHODS``) is iterated, so methods added later
(the transfer ones) are covered without editing this file: every parameter gets the generic
hostile values, and parameters that name paths (``path``, ``newPath``, ``pathList``,
``destinationPath``, ``mappings``...) get the hostile path table of
``tests/unit/test_fsview_hostile.py`` as well.  The world is that test's too: a sandbox
root full of symbolic links that lead out, and canary files beside it.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import os
import shutil
import tempfile
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jettui.api import AsyncAPIInterface
from jettui.errors import CommandError, JettuiError, LocalProtocolError
from jettui.server.auth import LoginThrottle
from jettui.server.dispatch import METHODS, MethodSpec
from tests.helpers import ServerThread, running_server
from tests.integration.test_permissions import sample
from tests.unit.test_fsview_hostile import CONTAINED, ESCAPE, INVALID, LEAF_LINK, NON_STR, World, _expand, _make_world

#: Never called: they end the server or change who the session is.
SKIPPED = {"server.terminate"}
#: Parameters that keep a call short whatever else is given.
SHORT = {"server.recvDiscoverPacketAsync": {"timeoutSeconds": 0.01}, "server.sleep": {"milliseconds": 1}}
#: Calls sent at once on the connection (under max_requests_per_connection).
BATCH = 48
#: Known internal errors not fixed yet (method name -> what happens): excluded from the table.
KNOWN: dict[str, str] = {}


def _nested_list(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


def _nested_map(depth: int) -> Any:
    value: Any = {"path": "../../outside"}
    for _ in range(depth):
        value = {"path": value, "k": 1}
    return value


GENERIC: list[Any] = [
    None,
    True,
    0,
    -1,
    2**63 - 1,
    -(2**63),
    2**64 - 1,
    1e308,
    -0.0,
    math.nan,
    math.inf,
    -math.inf,
    "",
    "x" * 50_000,
    b"\x00\xff" * 100,
    [],
    ["../outside"] * 1000,
    _nested_list(48),
    _nested_map(40),
    {"$ne": None, "__class__": "os.system"},
    "%s%s%n%x%u%d%f%%",
    "\x1b]0;pwned\x07\x1b[2J\x1b[31m",
    "{{7*7}}${jndi:ldap://127.0.0.1/a}$(id)`id`",
    "' OR 1=1; DROP TABLE users; --",
    "\ud800\udfff",
    "a\x00b",
    "\u202e\u2066evil",
]
#: Token strings: ids and secrets of the wrong shape, of other users, SQL, paths.
TOKENS: list[Any] = [
    ".",
    "..",
    "a.b",
    "../../etc/passwd",
    "x" * 257,
    "aaaaaaaaaaaaaaaa." + "A" * 43,
    "%." + "%" * 43,
    "' OR '1'='1.x",
    "*",
    {"tokenId": "../x"},
    {"token": {"tokenId": "x"}},
    {"tokenId": None, "token": 7},
]
#: User, group and sandbox names that feed placeholders and paths.
NAMES: list[Any] = ["..", ".", "a/b", "a\\b", "a:b", "%u", "%", "a\x00b", "\x1b[31mred", "x" * 60_000, "root", ""]
SANDBOX_ROOTS: list[Any] = [
    {"": "relative/dir"},
    {"..": "/"},
    {"a/b": "/tmp"},
    {"a:b": "/tmp"},
    {"": {"type": "S3", "path": "/"}},
    {"": "/tmp/%x"},
    {"": "/\x00"},
    {"": ["/"]},
    True,
    {},
]


def _path_params(spec: MethodSpec) -> set[str]:
    names = list(inspect.signature(spec.handler).parameters)[1:]
    return {n for n in names if "path" in n.lower() or n in ("mappings", "source", "destination")}


def hostile_paths(world: World) -> list[tuple[str, Any, bool]]:
    """``(category, path, must_refuse)`` for a path parameter of a method that follows it."""
    table: list[tuple[str, Any, bool]] = []
    table += [("invalid", p, True) for p in INVALID]
    table += [("escape", p, True) for p in ESCAPE]
    table += [("leaf", p, False) for p in LEAF_LINK]
    table += [("contained", _expand(p, world), False) for p in CONTAINED]
    table += [("non-str", p, True) for p in NON_STR if p is not None]
    return table


def cases(spec: MethodSpec, world: World, base: dict[str, Any]) -> Iterator[tuple[dict[str, Any], bool]]:
    """Hostile parameter maps for one method, each with whether it must be refused."""
    hints = typing.get_type_hints(spec.handler)
    names = list(inspect.signature(spec.handler).parameters)[1:]
    paths = _path_params(spec)
    short = SHORT.get(spec.name, {})
    for name in names:
        # A parameter that keeps the call short gets no value that would make it long.
        generic = [v for v in GENERIC if name not in short or v is not None]
        values: list[tuple[Any, bool]] = [(v, False) for v in generic]
        if name in paths:
            origin = typing.get_origin(hints[name])
            for _category, p, refuse in hostile_paths(world):
                if name == "pathList" or origin is list:
                    values.append(([p], refuse))
                elif name == "mappings" or origin is dict:
                    # A source that escapes must be refused; destinations are checked by the
                    # receiving server, so only harm (the snapshot) is judged for them.
                    if isinstance(p, str):
                        values.append(({p: "dst"}, refuse))
                    values.append(({"/file.txt": p}, False))
                else:
                    values.append((p, refuse))
        if name == "token":
            values += [(t, True) for t in TOKENS]
        if name in ("userName", "name"):
            values += [(n, False) for n in NAMES]
        if name == "sandboxRoots":
            values += [(r, True) for r in SANDBOX_ROOTS]
        for value, refuse in values:
            yield {**base, name: value}, refuse
    # Unknown and misspelt parameters.
    yield {**base, "__proto__": {"admin": True}}, True
    yield {**base, "Path": "../outside"}, True


def base_params(spec: MethodSpec, world: World) -> dict[str, Any]:
    hints = typing.get_type_hints(spec.handler)
    params = list(inspect.signature(spec.handler).parameters.values())[1:]
    required = {p.name: sample(hints[p.name], "/sub/inner.txt") for p in params if p.default is inspect.Parameter.empty}
    return {**required, **SHORT.get(spec.name, {})}


class Outcome:
    def __init__(self) -> None:
        self.tried = 0
        self.refused = 0
        self.accepted = 0
        self.unsendable = 0
        self.problems: list[str] = []


async def _one(api: AsyncAPIInterface, name: str, params: dict[str, Any], refuse: bool, out: Outcome) -> None:
    out.tried += 1
    try:
        result = await api.client.call(name, params, timeout=30)
    except LocalProtocolError:
        out.unsendable += 1  # not valid UTF-8 or msgpack: the client refuses to send it
        return
    except CommandError as exc:
        out.refused += 1
        if "internal error" in exc.message and name not in KNOWN:
            out.problems.append(f"{name}({_short(params)}): {exc.message}")
        return
    try:
        if isinstance(result, dict) and "requestId" in result and name.endswith("Async"):
            await api.client.call("server.getRequestResult", {"requestId": result["requestId"]}, timeout=30)
        if isinstance(result, dict) and "manifestId" in result:  # built in the background
            manifest = await api.client.call(
                "send.waitForManifest", {"manifestId": result["manifestId"], "timeoutSeconds": 30}, timeout=40
            )
            if manifest.get("errorMessage"):
                raise CommandError(manifest["errorMessage"])
    except CommandError as exc:
        out.refused += 1
        if "internal error" in exc.message:
            out.problems.append(f"{name}({_short(params)}): {exc.message}")
        return
    except JettuiError as exc:
        out.problems.append(f"{name}({_short(params)}): {type(exc).__name__}: {exc}")
        return
    out.accepted += 1
    if refuse:
        out.problems.append(f"{name}({_short(params)}) was accepted")


def _short(params: dict[str, Any]) -> str:
    text = repr(params)
    return text if len(text) < 200 else text[:197] + "..."


async def run_table(server: ServerThread, world: World, login: tuple[str, str] | None) -> Outcome:
    out = Outcome()
    before = world.snapshot()
    api = AsyncAPIInterface("127.0.0.1", server.port, fingerprint=server.server.fingerprint)  # type: ignore[union-attr]
    await api.connect()
    try:
        if login is not None:
            await api.server.auth(*login)
        for name, spec in sorted(METHODS.items()):
            if name in SKIPPED:
                continue
            all_cases = list(cases(spec, world, base_params(spec, world)))
            gated = login is None and spec.auth
            for start in range(0, len(all_cases), BATCH):
                batch = all_cases[start : start + BATCH]
                await asyncio.gather(*(_one(api, name, p, refuse or gated, out) for p, refuse in batch))
                assert world.snapshot() == before, f"{name} changed something outside the sandbox"
                if login is not None:
                    world.build_roots()
            assert api.connected, f"the connection died during {name}"
        info = await api.server.getServerInfo()
        assert info["user"]["authed"] is (login is not None)
        if login is not None:
            assert info["user"]["sandboxed"] is True
    finally:
        await api.disconnect()
    for probe in (Path("/") / "jettui-escape", world.base / "jettui-escape"):
        assert not probe.exists()
    return out


@pytest.fixture
def world() -> Iterator[World]:
    parent = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    base = Path(tempfile.mkdtemp(prefix="jettui-entry-", dir=parent))
    try:
        yield _make_world(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


async def test_every_entry_point_with_hostile_arguments(world: World, tmp_path: Path) -> None:
    with running_server(persistent_state_dir=tmp_path / "state", superusers=["alice"]) as st:
        assert st.server is not None
        # Hundreds of failed logins from 127.0.0.1 are part of the table: the throttle is
        # tested on its own (test_hostile_auth.py) and would only slow this one down.
        st.server.throttle = LoginThrottle(base=0.0, cap=0.0)
        st.add_user("alice", "alice-pw")
        st.add_user("sandy", "sandy-pw")
        st.server.sandboxes.set("sandy", {"": str(world.root), "other": str(world.other)})

        anonymous = await run_table(st, world, None)
        sandboxed = await run_table(st, world, ("sandy", "sandy-pw"))

        # A second, well-behaved client is served as before.
        api = AsyncAPIInterface("127.0.0.1", st.port, fingerprint=st.server.fingerprint)
        async with api:
            await api.server.auth("alice", "alice-pw")
            listing = await api.server.getRequestResult(await api.server.lsAsync(str(world.outside)))
            assert {e["name"] for e in listing["files"]} >= {"secret.txt", "sub"}
    problems = anonymous.problems + sandboxed.problems
    assert not problems, "\n".join(problems[:40])
    assert anonymous.accepted <= anonymous.tried // 5  # almost everything needs a login
    entry_points = len(METHODS) - len(SKIPPED)
    total = anonymous.tried + sandboxed.tried
    print(
        f"\n{entry_points} entry points x hostile inputs: {total} calls "
        f"(anonymous {anonymous.tried}: {anonymous.refused} refused; "
        f"sandboxed {sandboxed.tried}: {sandboxed.refused} refused, {sandboxed.accepted} confined successes)"
    )
    assert total >= entry_points * 2 * len(GENERIC)


def test_create_destination_refuses_hosts_the_idna_codec_refuses(server: ServerThread) -> None:
    with server.api() as api:
        api.server.auth("bob", "bob-pw")
        for address in ("x" * 100, "\u202e\u2066evil"):
            with pytest.raises(CommandError) as info:
                api.client.request("send.createDestination", {"destinationAddress": address})
            assert "internal error" not in info.value.message
