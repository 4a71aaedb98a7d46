"""A hostile server: a fake TLS server speaking our framing sends chosen bad replies and
notifications to the jettui.api client.

Whatever it sends, the client raises a clear JettuiError (or returns the data, which the
commander escapes when it draws it), the process survives, and nothing is written locally
except the known_servers pin.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest

from jettui import wire
from jettui.api import AsyncAPIInterface, AsyncClient, TrustStore
from jettui.api.blocking import BlockingClient
from jettui.constants import LS_TYPE_DIRECTORY, LS_TYPE_REGULAR
from jettui.errors import ConnectionLost, JettuiError, RemoteProtocolError, TimeoutError_
from jettui.server.keys import ServerKeys, load_or_create_keys
from jettui.wire.framing import encode_frame, pack

Behaviour = Callable[[wire.Request, asyncio.StreamWriter], Awaitable[None]]


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def reply_body(request_id: int, result_bytes: bytes) -> bytes:
    """A reply map whose result is the given raw msgpack (which may be malformed)."""
    return b"\x82" + pack("id") + pack(request_id) + pack("result") + result_bytes


class FakeServer:
    """Accepts TLS connections and answers every request with ``behaviour``."""

    def __init__(self, keys: ServerKeys, behaviour: Behaviour) -> None:
        self.keys = keys
        self.behaviour = behaviour
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> FakeServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.keys.ssl_context())
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        conn = wire.Connection(wire.SERVER)
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                conn.receive_data(data)
                while isinstance(event := conn.next_event(), wire.Request):
                    await self.behaviour(event, writer)
                    await writer.drain()


def send(*chunks: bytes | Callable[[int], bytes]) -> Behaviour:
    async def behave(request: wire.Request, writer: asyncio.StreamWriter) -> None:
        for chunk in chunks:
            writer.write(chunk(request.id) if callable(chunk) else chunk)

    return behave


def send_then_close(data: bytes) -> Behaviour:
    async def behave(request: wire.Request, writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        await writer.drain()
        writer.close()

    return behave


@pytest.fixture(scope="module")
def keys() -> ServerKeys:
    return load_or_create_keys(None)


class ThreadedBlockingClient:
    """The synchronous API's BlockingClient, driven from a worker thread so that the fake
    server can keep running on the test's event loop."""

    def __init__(self, client: BlockingClient) -> None:
        self._client = client

    @property
    def connected(self) -> bool:
        return self._client.connected

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        return await asyncio.to_thread(self._client.request, method, params)


@pytest.fixture(params=["async", "blocking"])
def flavour(request: pytest.FixtureRequest) -> str:
    """Both client drivers face every hostile server."""
    return str(request.param)


@contextlib.asynccontextmanager
async def client_of(
    keys: ServerKeys, behaviour: Behaviour, flavour: str = "async", **kwargs: Any
) -> AsyncIterator[Any]:
    async with FakeServer(keys, behaviour) as fake:
        args = ("127.0.0.1", fake.port)
        timeout = kwargs.pop("timeout", 5)
        if flavour == "blocking":
            blocking = BlockingClient(*args, timeout=timeout, fingerprint=keys.fingerprint, **kwargs)
            await asyncio.to_thread(blocking.connect)
            try:
                yield ThreadedBlockingClient(blocking)
            finally:
                await asyncio.to_thread(blocking.close)
            return
        client = AsyncClient(*args, timeout=timeout, fingerprint=keys.fingerprint, **kwargs)
        await client.connect()
        try:
            yield client
        finally:
            await client.close()


def _nested_ext() -> bytes:
    return pack({"files": [{"name": msgpack.ExtType(1, b"x")}]})


#: name -> (what the server sends in reply to any request, the error the call must raise)
BAD_REPLIES: dict[str, tuple[Behaviour, type[JettuiError], str]] = {
    "reply-to-unknown-id": (
        send(lambda i: encode_frame({"id": i + 1000, "result": 1})),
        RemoteProtocolError,
        "unknown",
    ),
    "id-is-bool": (send(encode_frame({"id": True, "result": 1})), RemoteProtocolError, "request id"),
    "frame-claims-4GiB": (send(b"\xff\xff\xff\xff" + b"A" * 64), RemoteProtocolError, "exceeds"),
    "frame-claims-16MiB+1": (send(struct.pack(">I", 16 * 1024 * 1024 + 1)), RemoteProtocolError, "exceeds"),
    "array-claims-4G-items": (send(lambda i: frame(reply_body(i, b"\xdd\xff\xff\xff\xff"))), RemoteProtocolError, ""),
    "string-claims-4GiB": (
        send(lambda i: frame(reply_body(i, b"\xdb\xff\xff\xff\xff" + b"x" * 10))),
        RemoteProtocolError,
        "",
    ),
    "map-claims-4G-pairs": (send(lambda i: frame(reply_body(i, b"\xdf\xff\xff\xff\xff"))), RemoteProtocolError, ""),
    "nested-100k-deep": (send(lambda i: frame(reply_body(i, b"\x91" * 100_000 + b"\xc0"))), RemoteProtocolError, ""),
    "million-empty-arrays": (
        send(lambda i: frame(reply_body(i, b"\xdd" + (1 << 20).to_bytes(4, "big") + b"\x90" * (1 << 20)))),
        RemoteProtocolError,
        "expansion",
    ),
    "ext-type": (
        send(lambda i: frame(reply_body(i, pack(msgpack.ExtType(42, b"payload"))))),
        RemoteProtocolError,
        "ext",
    ),
    "timestamp-ext": (send(lambda i: frame(reply_body(i, b"\xd6\xff\x00\x00\x00\x01"))), RemoteProtocolError, "ext"),
    "ext-inside-listing": (send(lambda i: frame(reply_body(i, _nested_ext()))), RemoteProtocolError, "ext"),
    "invalid-utf8": (send(lambda i: frame(reply_body(i, b"\xa2\xff\xfe"))), RemoteProtocolError, "malformed"),
    "frame-is-a-list": (send(lambda i: encode_frame([i, "result"])), RemoteProtocolError, "map"),
    "frame-is-a-string": (send(encode_frame("hello")), RemoteProtocolError, "map"),
    "frame-is-nil": (send(frame(b"\xc0")), RemoteProtocolError, "map"),
    "empty-map": (send(encode_frame({})), RemoteProtocolError, "unknown"),
    "trailing-garbage": (send(lambda i: frame(pack({"id": i, "result": 1}) + b"\xc1")), RemoteProtocolError, ""),
    "request-sent-to-client": (
        send(encode_frame({"id": 1, "method": "server.terminate", "params": {}})),
        RemoteProtocolError,
        "request",
    ),
    "error-is-a-string": (send(lambda i: encode_frame({"id": i, "error": "boom"})), RemoteProtocolError, "map"),
    "notification-params-list": (
        send(encode_frame({"method": "events.event", "params": [1, 2]})),
        RemoteProtocolError,
        "params",
    ),
    "notification-bad-method": (
        send(encode_frame({"method": "../../x\x1b[2J", "params": {}})),
        RemoteProtocolError,
        "method",
    ),
    "part-not-binary": (
        send(lambda i: encode_frame({"id": i, "part": "text", "more": True})),
        RemoteProtocolError,
        "part",
    ),
    "parts-interleaved-with-reply": (
        send(
            lambda i: encode_frame({"id": i, "part": b"\x91", "more": True}),
            lambda i: encode_frame({"id": i, "result": 1}),
        ),
        RemoteProtocolError,
        "interleaved",
    ),
    "part-ends-in-garbage": (
        send(lambda i: encode_frame({"id": i, "part": b"\x92\x01", "more": False})),
        RemoteProtocolError,
        "malformed",
    ),
    "close-mid-frame": (send_then_close(struct.pack(">I", 100) + b"\x82"), RemoteProtocolError, "middle of a frame"),
    "close-without-reply": (send_then_close(b""), ConnectionLost, "closed"),
    "silence": (send(), TimeoutError_, "no answer"),
}


@pytest.mark.parametrize("name", sorted(BAD_REPLIES))
async def test_bad_reply_raises_a_clear_error(keys: ServerKeys, name: str, flavour: str) -> None:
    behaviour, error, words = BAD_REPLIES[name]
    timeout = 0.5 if name == "silence" else 5
    async with client_of(keys, behaviour, flavour, timeout=timeout) as client:
        with pytest.raises(JettuiError) as info:
            await client.call("server.lsAsync", {"path": "/"})
        assert isinstance(info.value, error), f"{name}: {info.value!r}"
        assert words.lower() in str(info.value).lower(), f"{name}: {info.value}"
        if error is RemoteProtocolError:
            # The connection is dead now and says why on every later call.
            with pytest.raises(JettuiError):
                await client.call("server.echo", {})
            assert not client.connected


async def test_endless_parts_are_bounded_in_size_and_time(keys: ServerKeys, flavour: str) -> None:
    async def endless(request: wire.Request, writer: asyncio.StreamWriter) -> None:
        chunk = encode_frame({"id": request.id, "part": b"\x00" * 4096, "more": True})
        with contextlib.suppress(ConnectionError):
            for _ in range(10_000):
                writer.write(chunk)
                await writer.drain()
                await asyncio.sleep(0.001)

    # Size: past max_reply the reassembly stops with an error naming the limit.
    async with client_of(keys, endless, flavour, max_reply=256 * 1024) as client:
        with pytest.raises(RemoteProtocolError, match="262144-byte limit"):
            await client.call("server.lsAsync", {"path": "/"})
    # Time: a call with a timeout gives up with a clear error while parts keep coming.
    async with client_of(keys, endless, flavour, timeout=0.5) as client:
        with pytest.raises(TimeoutError_, match="no answer"):
            await client.call("server.lsAsync", {"path": "/"})


HOSTILE_NAMES: list[Any] = [
    "..",
    ".",
    "",
    "/",
    "/etc/passwd",
    "../../../.ssh/authorized_keys",
    "a/b/../../c",
    "\x1b[2J\x1b[H\x1b]0;owned\x07",
    "\x1b]52;c;cm0gLXJmIH4K\x07",  # OSC 52: write the clipboard
    "\x1bP+q544e\x1b\\",  # DCS: terminal query
    "bell\x07\x08\x08\x08erase",
    "c1\x9b31m\x9d0;t\x9c",
    "\u202eexe.txt",
    "zero\u200bwidth\u2028line\u2029para",
    "new\nline\rcr\ttab",
    "\x7fdel",
    "x" * 5000,
    12345,
    None,
    ["a", "b"],
    {"nested": {"name": ".."}},
]


def hostile_listing(path: object) -> dict[str, Any]:
    files: list[Any] = []
    for i, name in enumerate(HOSTILE_NAMES):
        files.append(
            {
                "name": name,
                "type": LS_TYPE_DIRECTORY if i % 3 == 0 else LS_TYPE_REGULAR,
                "size": [-1, 2**63 - 1, "huge", None][i % 4],
                "mtime": [2**62, -(2**40), "yesterday", 0][i % 4],
                "mtimeus": 0,
                "access": 7,
                "hash": "",
            }
        )
    files.append({"type": 999, "size": 1})  # no name at all
    files.append("not a map")
    # The path is not the one asked for: a listing of files never asked for.
    return {"path": "/root/.ssh", "files": files, "asked": path}


async def ls_server(request: wire.Request, writer: asyncio.StreamWriter) -> None:
    conn = wire.Connection(wire.SERVER)
    if request.method == "server.lsAsync":
        result: Any = {"requestId": 7, "status": "pending", "processing": True, "errorMessage": ""}
    elif request.method == "server.getRequestResult":
        result = hostile_listing(request.params)
    else:
        result = None
    # A hostile notification first: the handler gets it as data; it is never executed.
    writer.write(conn.send(wire.Notification("events.event", {"name": "\x1b[2J", "path": "/../../etc"})))
    writer.write(conn.send(wire.Reply(request.id, result)))


def _tree(*dirs: Path) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for top in dirs:
        for base, _subdirs, names in os.walk(top):
            for name in names:
                path = Path(base, name)
                found[str(path)] = path.read_bytes()
    return found


async def test_hostile_listing_is_data_and_is_escaped_on_screen(
    keys: ServerKeys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _isolated_config: Path
) -> None:
    work, home = tmp_path / "cwd", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(home))
    before = _tree(work, home, _isolated_config)
    notes: list[tuple[str, dict[str, Any]]] = []

    async with FakeServer(keys, ls_server) as fake:
        api = AsyncAPIInterface("127.0.0.1", fake.port, timeout=5, trust=TrustStore())
        api.add_notification_handler(lambda method, params: notes.append((method, params)))
        async with api:
            listing = await api.server.getRequestResult(await api.server.lsAsync("/home/me"))

    # The client hands the listing over as data (it writes and opens nothing)...
    assert listing["path"] == "/root/.ssh"
    assert [f.get("name") if isinstance(f, dict) else f for f in listing["files"]][
        : len(HOSTILE_NAMES)
    ] == HOSTILE_NAMES
    assert notes and notes[0] == ("events.event", {"name": "\x1b[2J", "path": "/../../etc"})
    # ...and writes nothing but the certificate pin in known_servers.
    after = _tree(work, home, _isolated_config)
    created = {Path(p).name for p in set(after) - set(before)}
    assert created == {"known_servers"}, created
    assert all(after[p] == before[p] for p in before)

    # The commander draws it with every control character escaped.
    await _render_and_check([f for f in listing["files"] if isinstance(f, dict)], listing["path"])


async def _render_and_check(entries: list[dict[str, Any]], path: str) -> None:
    from jettui.tui.widgets.file_list import FileList
    from tests.tui.snapshot_apps.file_list_app import FileListApp

    app = FileListApp(entries, left_path=f"evil:{path}\x1b[2J")
    async with app.run_test(size=(100, 40)) as pilot:
        file_list = app.query_one("#left", FileList)
        file_list.filter = ""
        file_list.show_hidden = True  # ".", ".." and the rest: every hostile name is drawn
        await pilot.pause()
        assert len(file_list.rows) >= len(entries)
        seen = []
        for y in range(len(file_list.rows)):
            for segment in file_list.render_line(y):
                text = segment.text
                bad = [ch for ch in text if not ch.isprintable() and ch != " "]
                assert not bad, f"raw control characters {bad!r} reached the screen in {text!r}"
                seen.append(text)
        screen = "".join(seen)
        assert "\\x1b" in screen and "\\u202e" in screen and "\\x07" in screen
