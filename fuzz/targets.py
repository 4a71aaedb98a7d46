"""One-input harnesses shared by the atheris fuzzers (``fuzz/fuzz_*.py``) and their
hypothesis variants (``tests/unit/test_fuzz_*.py``).

Each ``*_one_input`` function takes the raw bytes (or the structured input) of one test case
and raises nothing but :class:`Finding` (an AssertionError) when the code under test breaks
its contract; the contract of every decoder is "returns a value or raises its own error
class, and nothing else".  Everything else (an IndexError, a KeyError, a RecursionError, a
MemoryError...) escapes and is a crash for atheris and a failure for hypothesis.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

from jettui import wire
from jettui.errors import JettuiError, RemoteProtocolError
from jettui.transfer import packet
from jettui.transfer.control import ControlError, ControlStream
from jettui.transfer.manifest import Checkpoint, FileEntry
from jettui.transfer.ranges import RangeSet
from jettui.wire.framing import unpack

#: Small limits so short inputs reach the limit checks as well.
FUZZ_MAX_FRAME = 4096
FUZZ_MAX_REPLY = 16384


class Finding(AssertionError):
    """The code under test broke its contract on this input."""


# -- frames --------------------------------------------------------------------------------


def _chunks(data: bytes, sizes: Sequence[int]) -> Iterator[bytes]:
    pos = 0
    for size in itertools.cycle(sizes or [len(data) or 1]):
        if pos >= len(data):
            return
        yield data[pos : pos + max(1, size)]
        pos += max(1, size)


def frames_one_input(data: bytes, server_role: bool, chunk_sizes: Sequence[int] = ()) -> list[wire.Event]:
    """Feed ``data`` in chunks to a Connection, then EOF.  Allowed: events and
    RemoteProtocolError; after an error the connection must stay dead."""
    role = wire.SERVER if server_role else wire.CLIENT
    conn = wire.Connection(role, max_frame=FUZZ_MAX_FRAME, max_reply=FUZZ_MAX_REPLY)
    if not server_role:
        for _ in range(3):  # ids 1..3 are outstanding, so replies and parts go deep
            conn.start_request("server.echo", {})
    events: list[wire.Event] = []
    try:
        for chunk in [*_chunks(data, chunk_sizes), b""]:
            conn.receive_data(chunk)
            while True:
                event = conn.next_event()
                if event is wire.NEED_DATA:
                    break
                if not isinstance(event, wire.Request | wire.Reply | wire.ErrorReply | wire.Notification):
                    if isinstance(event, wire.ConnectionClosed):
                        return events
                    raise Finding(f"next_event returned {event!r}")
                if server_role != isinstance(event, wire.Request):
                    raise Finding(f"{role.value} received {type(event).__name__}")
                events.append(event)
    except RemoteProtocolError:
        if not conn.closed:
            raise Finding("a connection that raised RemoteProtocolError is not closed") from None
        try:
            conn.next_event()
        except RemoteProtocolError:
            return events
        raise Finding("a dead connection produced another event") from None
    raise Finding("EOF was fed but no ConnectionClosed came")


# -- UDP packets ---------------------------------------------------------------------------

_PAYLOAD_DECODERS = (
    packet.decode_hello,
    packet.decode_hello_reply,
    packet.decode_data,
    packet.decode_ack,
    packet.decode_control,
    packet.decode_control_ack,
    packet.decode_ping,
    packet.decode_pong,
)


def packet_one_input(data: bytes) -> int:
    """Every packet decoder on ``data``: a value or PacketError.  Returns how many decoded."""
    ok = 0
    for tag in (0, packet.TAG_SIZE):
        try:
            ptype, _sid, _pn, value = packet.decode_packet(data, tag)
        except packet.PacketError:
            continue
        ok += 1
        if ptype not in {int(t) for t in packet.PacketType}:
            raise Finding(f"decode_packet accepted type {ptype}")
        _check_packet_value(value, len(data))
    for decode in _PAYLOAD_DECODERS:
        try:
            value = decode(data)
        except packet.PacketError:
            continue
        ok += 1
        _check_packet_value(value, len(data))
    for limit in (None, 1 << 20):
        try:
            rs = RangeSet.from_bytes(data, limit)
        except ValueError:
            continue
        ok += 1
        if limit is not None and any(end > limit for _, end in rs):
            raise Finding("RangeSet.from_bytes let a range past its limit through")
    return ok


def _check_packet_value(value: object, size: int) -> None:
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], list):  # DATA
        send_time, blocks = value
        if not math.isfinite(send_time):
            raise Finding("DATA with a non-finite send time accepted")
        if sum(len(b) for _, _, b in blocks) > size:
            raise Finding("DATA blocks longer than the datagram")
        if any(len(b) == 0 for _, _, b in blocks):
            raise Finding("an empty DATA block accepted")
    elif isinstance(value, packet.Hello) and not 1 <= value.block_size <= packet.MAX_BLOCK_SIZE:
        raise Finding("HELLO with an out-of-range block size accepted")


# -- manifests and the control stream ----------------------------------------------------------


def manifest_one_input(data: bytes, offsets: Sequence[int] = (0,)) -> int:
    """The receiver's decoding of a control stream: ControlStream.receive (chunks at the given
    offsets), then FileEntry.from_wire on every entry of every ``files`` message.  Allowed:
    ControlError and ValueError.  Returns how many entries decoded."""
    stream = ControlStream(buffer_limit=FUZZ_MAX_REPLY, max_probe_interval=1.0)
    decoded = 0
    messages: list[dict[str, Any]] = []
    try:
        pos = 0
        for offset in [*offsets, 0]:
            chunk = data[pos : pos + 512] if pos < len(data) else data[:64]
            messages += stream.receive(max(0, offset), chunk)
            pos += len(chunk)
        messages += stream.receive(0, data)
    except ControlError:
        pass
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise Finding(f"ControlStream returned {message!r}")
        entries = message.get("entries")
        for item in entries if isinstance(entries, list) else [entries]:
            try:
                entry = FileEntry.from_wire(item)
            except ValueError:
                continue
            decoded += 1
            if not entry.path or entry.size < 0:
                raise Finding(f"FileEntry.from_wire accepted {item!r}")
    # Every msgpack object the frame decoder would accept, as a lone entry.
    try:
        obj = unpack(data, FUZZ_MAX_REPLY)
    except RemoteProtocolError:
        return decoded
    try:
        FileEntry.from_wire(obj)
        decoded += 1
    except ValueError:
        pass
    return decoded


def checkpoint_one_input(obj: Any) -> None:
    """Checkpoint.from_wire on a decoded object: a Checkpoint or ValueError."""
    try:
        Checkpoint.from_wire(obj)
    except ValueError:
        pass


# -- the request dispatcher ----------------------------------------------------------------------


class DispatchHarness:
    """A Server (not listening) with sessions of each kind, and a loop to run calls on.

    Roles: 0 unauthenticated, 1 sandboxed user, 2 sandboxed superuser (to reach the admin
    handlers).  The sandbox is a temporary directory; nothing outside it may change.
    """

    #: Work that would take long or write a lot is cut down, not skipped.
    MAX_SLEEP_MS = 5
    MAX_FILE = 4096
    WORK_TIMEOUT = 2.0

    def __init__(self) -> None:
        from jettui.server import Server
        from jettui.server.config import ServerConfig
        from jettui.server.session import Principal, Session

        self.base = tempfile.mkdtemp(prefix="jettui-fuzz-")
        self.root = os.path.join(self.base, "box")
        os.mkdir(self.root)
        os.mkdir(os.path.join(self.base, "outside"))
        with open(os.path.join(self.base, "outside", "canary"), "wb") as f:
            f.write(b"canary")
        os.symlink(os.path.join(self.base, "outside"), os.path.join(self.root, "out"))
        self.loop = asyncio.new_event_loop()
        config = ServerConfig(api_port=0, recv_port=0, recv_host="127.0.0.1", scrypt_log_n=10)
        self.server = self.loop.run_until_complete(self._make(Server, config))
        self.server.users.add("fuzz", "fuzz-pw", log_n=10)
        self.server.throttle.cap = 0.0
        roots = {"": self.root}
        self.sessions = [
            Session(peer="127.0.0.1"),
            Session(peer="127.0.0.1", principal=Principal("fuzz", 1, sandbox_roots=roots)),
            Session(
                peer="127.0.0.1",
                principal=Principal("fuzz", 1, superuser_eligible=True, superuser=True, sandbox_roots=dict(roots)),
            ),
        ]
        from jettui.server.dispatch import METHODS

        self.methods = sorted(METHODS)
        self.calls = 0

    @staticmethod
    async def _make(cls: Any, config: Any) -> Any:
        return cls(config)

    def _reset_sessions(self) -> None:
        """Undo what a call did to the sessions: role 0 logs out again, and the others keep
        their sandbox whatever mapping a superuser call stored."""
        from jettui.server.session import Principal

        self.sessions[0].close_fs()
        self.sessions[0].principal = None
        for session, superuser in ((self.sessions[1], False), (self.sessions[2], True)):
            p = session.principal
            if p is None or p.sandbox_roots != {"": self.root} or p.superuser != superuser:
                session.close_fs()
                session.principal = Principal(
                    "fuzz", 1, superuser_eligible=superuser, superuser=superuser, sandbox_roots={"": self.root}
                )

    def outside_intact(self) -> bool:
        names = sorted(os.listdir(os.path.join(self.base, "outside")))
        with open(os.path.join(self.base, "outside", "canary"), "rb") as f:
            return names == ["canary"] and f.read() == b"canary" and sorted(os.listdir(self.base)) == ["box", "outside"]

    def tame(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        params = dict(params)
        if method == "server.sleep" and isinstance(params.get("milliseconds"), int | float):
            params["milliseconds"] = min(params["milliseconds"], self.MAX_SLEEP_MS)
        if method == "server.mkFileAsync" and isinstance(params.get("size"), int) and params["size"] > self.MAX_FILE:
            params["size"] = self.MAX_FILE
        if method == "server.recvDiscoverPacketAsync":
            params["timeoutSeconds"] = 0.01
        return params

    def one(self, role: int, method_index: int, params: object) -> str:
        """Dispatch one request; returns "ok" or "refused".  Raises Finding for anything
        but a JettuiError, and for a request whose work fails with an internal error."""
        from jettui.server.dispatch import dispatch

        method = self.methods[method_index % len(self.methods)]
        if method == "server.terminate":
            method = "server.echo"
        if method == "server.authAsync":
            role = 0  # the logged-in sessions stay who they are (and sandboxed)
        session = self.sessions[role % len(self.sessions)]
        if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
            params = {"path": params}  # what the wire would refuse; the handler sees a map
        params = self.tame(method, params)
        self.calls += 1

        async def run() -> str:
            try:
                result = await dispatch(self.server, session, method, params)
            except JettuiError:
                return "refused"
            except Exception as exc:
                raise Finding(f"{method}({params!r}) as role {role} raised {exc!r}") from exc
            if isinstance(result, dict) and "requestId" in result and method.endswith("Async"):
                req = self.server.requests.get(result["requestId"], None)
                try:
                    async with asyncio.timeout(self.WORK_TIMEOUT):
                        await req.done.wait()
                except TimeoutError:
                    return "ok"
                if req.error_message.startswith("internal error"):
                    raise Finding(f"{method}({params!r}) as role {role}: {req.error_message}")
            return "ok"

        outcome = self.loop.run_until_complete(run())
        self._reset_sessions()
        if not self.outside_intact():
            raise Finding(f"{method}({params!r}) as role {role} changed something outside the sandbox")
        return outcome
