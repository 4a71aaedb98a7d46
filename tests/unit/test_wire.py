"""The sans-IO control protocol, without sockets: a client and a server joined by a byte pipe."""

from __future__ import annotations

import struct

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jettui import wire
from jettui.errors import LocalProtocolError, RemoteProtocolError
from jettui.wire.framing import FrameBuffer, encode_frame


class ConnectionPair:
    def __init__(self, max_frame: int = wire.DEFAULT_MAX_FRAME) -> None:
        self.client = wire.Connection(wire.CLIENT, max_frame=max_frame)
        self.server = wire.Connection(wire.SERVER, max_frame=max_frame)

    @staticmethod
    def deliver(data: bytes, to: wire.Connection, chunk: int | None = None) -> list[wire.Event]:
        events: list[wire.Event] = []
        pieces = [data] if chunk is None else [data[i : i + chunk] for i in range(0, len(data), chunk)]
        for piece in pieces:
            to.receive_data(piece)
            while (event := to.next_event()) is not wire.NEED_DATA:
                events.append(event)  # type: ignore[arg-type]
        return events

    def request(self, method: str, params: dict) -> wire.Request:
        _, data = self.client.start_request(method, params)
        (event,) = self.deliver(data, self.server)
        assert isinstance(event, wire.Request)
        return event

    def respond(self, event: wire.Event, chunk: int | None = None) -> list[wire.Event]:
        return self.deliver(self.server.send(event), self.client, chunk)


def test_request_reply_roundtrip() -> None:
    pair = ConnectionPair()
    req = pair.request("server.echo", {"text": "hi"})
    assert req.method == "server.echo" and req.params == {"text": "hi"}
    assert pair.respond(wire.Reply(req.id, "hi")) == [wire.Reply(req.id, "hi")]
    assert pair.client.pending_requests == frozenset()


def test_error_reply_and_notification() -> None:
    pair = ConnectionPair()
    req = pair.request("server.lsAsync", {"path": "/x"})
    assert pair.respond(wire.ErrorReply(req.id, "command", "no such file")) == [
        wire.ErrorReply(req.id, "command", "no such file")
    ]
    note = wire.Notification("events.event", {"_event": "serverStarted"})
    assert pair.respond(note) == [note]


def test_replies_out_of_order() -> None:
    pair = ConnectionPair()
    first, second = pair.request("server.sleep", {"milliseconds": 10}), pair.request("server.echo", {})
    assert pair.respond(wire.Reply(second.id, None)) == [wire.Reply(second.id, None)]
    assert pair.respond(wire.Reply(first.id, None)) == [wire.Reply(first.id, None)]


def test_large_result_is_split_and_reassembled_never_cut() -> None:
    pair = ConnectionPair(max_frame=4096)
    req = pair.request("server.lsAsync", {"path": "/"})
    files = [{"name": f"file-{i:06d}", "size": i} for i in range(5000)]
    data = pair.server.send(wire.Reply(req.id, {"files": files}))
    assert len(data) > 20 * 4096  # many frames
    events = pair.deliver(data, pair.client, chunk=1000)
    assert events == [wire.Reply(req.id, {"files": files})]


def test_oversized_claim_refused_before_allocation() -> None:
    buf = FrameBuffer(max_frame=1024)
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        buf.feed(struct.pack(">I", 4 * 1024**3 - 1))
    assert buf.buffered == 4  # nothing of the claimed body was reserved


def test_four_gib_claim_on_connection_closes_it() -> None:
    conn = wire.Connection(wire.SERVER)
    with pytest.raises(RemoteProtocolError):
        conn.receive_data(b"\xff\xff\xff\xff")
    assert conn.closed
    with pytest.raises(RemoteProtocolError):
        conn.next_event()


def test_truncated_frame_then_eof() -> None:
    conn = wire.Connection(wire.SERVER)
    frame = encode_frame({"id": 1, "method": "server.echo", "params": {}})
    conn.receive_data(frame[:-3])
    assert conn.next_event() is wire.NEED_DATA
    conn.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="middle of a frame"):
        conn.next_event()


def test_clean_eof() -> None:
    conn = wire.Connection(wire.SERVER)
    conn.receive_data(b"")
    assert isinstance(conn.next_event(), wire.ConnectionClosed)


@pytest.mark.parametrize(
    "message, match",
    [
        ([1, 2, 3], "must hold a map"),
        ({"id": 1, "method": "no-dot", "params": {}}, "invalid method"),
        ({"id": -1, "method": "server.echo", "params": {}}, "request id"),
        ({"id": 1, "method": "server.echo", "params": [1]}, "params must be a map"),
        ({"id": 1, "result": 5}, "does not accept a reply"),
        ({"hello": 1}, "does not accept a unknown"),
    ],
)
def test_server_refuses_malformed_messages(message: object, match: str) -> None:
    conn = wire.Connection(wire.SERVER)
    conn.receive_data(encode_frame(message))
    with pytest.raises(RemoteProtocolError, match=match):
        conn.next_event()


def test_ext_types_refused() -> None:
    body = msgpack.packb({"id": 1, "method": "server.echo", "params": {"x": msgpack.ExtType(5, b"evil")}})
    conn = wire.Connection(wire.SERVER)
    conn.receive_data(struct.pack(">I", len(body)) + body)
    with pytest.raises(RemoteProtocolError, match="ext"):
        conn.next_event()


def test_client_refuses_reply_to_unknown_id_and_requests() -> None:
    client = wire.Connection(wire.CLIENT)
    client.receive_data(encode_frame({"id": 99, "result": 1}))
    with pytest.raises(RemoteProtocolError, match="unknown request id"):
        client.next_event()
    other = wire.Connection(wire.CLIENT)
    other.receive_data(encode_frame({"id": 1, "method": "server.echo", "params": {}}))
    with pytest.raises(RemoteProtocolError, match="does not accept a request"):
        other.next_event()


def test_interleaved_parts_refused() -> None:
    client = wire.Connection(wire.CLIENT)
    id1, _ = client.start_request("server.lsAsync", {"path": "/"})
    id2, _ = client.start_request("server.lsAsync", {"path": "/"})
    client.receive_data(encode_frame({"id": id1, "part": b"\x91", "more": True}))
    client.receive_data(encode_frame({"id": id2, "part": b"\x01", "more": False}))
    with pytest.raises(RemoteProtocolError, match="interleaved"):
        client.next_event()


def test_reassembled_reply_limit() -> None:
    client = wire.Connection(wire.CLIENT, max_reply=10)
    rid, _ = client.start_request("server.lsAsync", {"path": "/"})
    client.receive_data(encode_frame({"id": rid, "part": b"x" * 11, "more": True}))
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        client.next_event()


def test_local_errors() -> None:
    client = wire.Connection(wire.CLIENT)
    with pytest.raises(LocalProtocolError):
        client.send(wire.Reply(1, None))
    with pytest.raises(LocalProtocolError):
        wire.Request(1, "bad method", {})
    server = wire.Connection(wire.SERVER)
    with pytest.raises(LocalProtocolError):
        server.send(wire.Request(1, "server.echo", {}))


# -- hypothesis: any byte stream either decodes or raises RemoteProtocolError, never anything else ----
def _drain(conn: wire.Connection, data: bytes, chunk: int) -> None:
    for i in range(0, len(data), max(chunk, 1)):
        conn.receive_data(data[i : i + max(chunk, 1)])
        while conn.next_event() is not wire.NEED_DATA:
            pass


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=2048), chunk=st.integers(1, 64))
def test_random_bytes_only_raise_protocol_errors(data: bytes, chunk: int) -> None:
    for role in (wire.SERVER, wire.CLIENT):
        conn = wire.Connection(role, max_frame=1024)
        try:
            _drain(conn, data, chunk)
        except RemoteProtocolError:
            assert conn.closed


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20) | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(params=st.dictionaries(st.text(max_size=10), json_values, max_size=6), chunk=st.integers(1, 50))
def test_valid_requests_survive_any_chunking(params: dict, chunk: int) -> None:
    pair = ConnectionPair()
    _, data = pair.client.start_request("server.echo", params)
    events = pair.deliver(data, pair.server, chunk)
    assert len(events) == 1 and events[0].params == params  # type: ignore[union-attr]


@settings(max_examples=200, deadline=None)
@given(params=st.dictionaries(st.text(max_size=10), json_values, max_size=6), cut=st.integers(0, 200))
def test_truncated_valid_frames_never_yield_events(params: dict, cut: int) -> None:
    frame = encode_frame({"id": 1, "method": "server.echo", "params": params})
    cut = max(1, min(cut, len(frame) - 1))  # cut=0 would be EOF
    conn = wire.Connection(wire.SERVER)
    conn.receive_data(frame[:cut])
    assert conn.next_event() is wire.NEED_DATA


@settings(max_examples=100, deadline=None)
@given(size=st.integers(1025, 2**32 - 1), rest=st.binary(max_size=64))
def test_any_oversized_claim_is_refused(size: int, rest: bytes) -> None:
    conn = wire.Connection(wire.SERVER, max_frame=1024)
    with pytest.raises(RemoteProtocolError):
        conn.receive_data(struct.pack(">I", size) + rest)
