"""Sans-IO control connection, in the manner of h11.

Feed received bytes to :meth:`Connection.receive_data`, then call :meth:`next_event` until
it returns :data:`NEED_DATA`; turn events into bytes with :meth:`send`.  No sockets, no
clock.  ``receive_data(b"")`` means the peer closed.

Theory of operation
-------------------
* Which message kinds each role may *receive* is one table, :data:`ACCEPTS`.  Anything else
  is a :class:`RemoteProtocolError`, and after any remote error the connection is dead:
  the driver closes that connection only.
* The client tracks its outstanding request ids; a reply to an id it never sent is a
  protocol error, as is a server that sends parts of two replies interleaved (parts of one
  reply are always contiguous, which keeps reassembly state to one buffer).
* Replies too large for one frame go out as parts, each carrying a slice of the result's
  msgpack encoding; the total is bounded by ``max_reply`` on the receiving side.
"""

from __future__ import annotations

import enum
import itertools
from typing import Any

from jettui.errors import LocalProtocolError, RemoteProtocolError
from jettui.wire.events import ConnectionClosed, ErrorReply, Event, Notification, Reply, Request
from jettui.wire.framing import DEFAULT_MAX_FRAME, FrameBuffer, encode_frame, pack, unpack


class Role(enum.Enum):
    CLIENT = "client"
    SERVER = "server"


CLIENT = Role.CLIENT
SERVER = Role.SERVER


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()

#: Largest reassembled reply a client accepts by default.
DEFAULT_MAX_REPLY = 1024 * 1024 * 1024
#: Room left in a frame for the map around a part's payload.
_PART_OVERHEAD = 64

#: Message kinds each role may receive.
ACCEPTS: dict[Role, frozenset[str]] = {
    Role.SERVER: frozenset({"request"}),
    Role.CLIENT: frozenset({"reply", "error", "notification", "part"}),
}


def _kind(msg: dict[str, Any]) -> str:
    if "method" in msg:
        return "request" if "id" in msg else "notification"
    if "result" in msg:
        return "reply"
    if "error" in msg:
        return "error"
    if "part" in msg:
        return "part"
    return "unknown"


class Connection:
    """One end of a control connection."""

    def __init__(
        self,
        role: Role,
        max_frame: int = DEFAULT_MAX_FRAME,
        max_reply: int = DEFAULT_MAX_REPLY,
    ) -> None:
        self.role = role
        self.max_frame = max_frame
        self.max_reply = max_reply
        self._frames = FrameBuffer(max_frame)
        self._closed = False
        self._error: RemoteProtocolError | None = None
        self._ids = itertools.count(1)
        self._pending: set[int] = set()
        self._part_id: int | None = None
        self._part_buf = bytearray()

    # -- state ---------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed or self._error is not None

    @property
    def pending_requests(self) -> frozenset[int]:
        return frozenset(self._pending)

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete frame (a frame in progress)."""
        return self._frames.buffered

    @property
    def receive_limit(self) -> int:
        """Largest frame accepted from the peer (``max_frame`` unless lowered)."""
        return self._frames.max_frame

    def set_receive_limit(self, limit: int) -> None:
        """Change the largest frame accepted from the peer from now on; frames we send keep
        ``max_frame``.  A server keeps it low until the session has logged in.  A frame
        whose header is already buffered is checked against the new limit too."""
        self._frames.max_frame = min(limit, self.max_frame)
        if self._error is None:
            try:
                self._frames.feed(b"")
            except RemoteProtocolError as exc:
                self._error = exc
                raise

    # -- receiving -----------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        if not data:
            self._closed = True
            return
        try:
            self._frames.feed(data)
        except RemoteProtocolError as exc:
            self._error = exc
            raise

    def next_event(self) -> Event | _NeedData:
        """Return the next complete event, NEED_DATA, or ConnectionClosed at EOF."""
        if self._error is not None:
            raise self._error
        while True:
            try:
                body = self._frames.next_frame()
                if body is None:
                    if self._closed:
                        if self._frames.buffered or self._part_id is not None:
                            raise RemoteProtocolError("connection closed in the middle of a frame")
                        return ConnectionClosed()
                    return NEED_DATA
                event = self._decode(body)
            except RemoteProtocolError as exc:
                self._error = exc
                raise
            if event is not None:
                return event

    def _decode(self, body: bytes) -> Event | None:
        msg = unpack(body, self.max_frame)
        if not isinstance(msg, dict):
            raise RemoteProtocolError("a frame must hold a map")
        kind = _kind(msg)
        if kind not in ACCEPTS[self.role]:
            raise RemoteProtocolError(f"a {self.role.value} does not accept a {kind} message")
        if self._part_id is not None and kind != "part":
            raise RemoteProtocolError("message interleaved with an unfinished multi-part reply")
        try:
            if kind == "request":
                return Request(msg["id"], msg["method"], msg.get("params") or {})
            if kind == "notification":
                return Notification(msg["method"], msg.get("params") or {})
            request_id = msg.get("id")
            # type() first: an unhashable id (a list, a map) must not reach the set lookup,
            # and True / 1.0 must not pass for the pending id 1.
            if type(request_id) is not int or request_id not in self._pending:
                raise RemoteProtocolError(f"reply to unknown request id {request_id!r}")
            if kind == "part":
                return self._receive_part(request_id, msg)
            self._pending.discard(request_id)
            if kind == "reply":
                return Reply(request_id, msg["result"])
            error = msg["error"]
            if not isinstance(error, dict):
                raise RemoteProtocolError("error must be a map")
            return ErrorReply(request_id, str(error.get("code", "command")), str(error.get("message", "")))
        except LocalProtocolError as exc:
            raise RemoteProtocolError(str(exc)) from exc
        except KeyError as exc:
            raise RemoteProtocolError(f"{kind} message lacks {exc}") from exc

    def _receive_part(self, request_id: int, msg: dict[str, Any]) -> Reply | None:
        chunk, more = msg.get("part"), msg.get("more")
        if not isinstance(chunk, bytes) or not isinstance(more, bool):
            raise RemoteProtocolError("a reply part needs bin 'part' and bool 'more'")
        if self._part_id is None:
            self._part_id = request_id
        elif self._part_id != request_id:
            raise RemoteProtocolError("parts of two replies interleaved")
        if len(self._part_buf) + len(chunk) > self.max_reply:
            raise RemoteProtocolError(f"reply exceeds the {self.max_reply}-byte limit")
        self._part_buf += chunk
        if more:
            return None
        data, self._part_buf, self._part_id = bytes(self._part_buf), bytearray(), None
        self._pending.discard(request_id)
        return Reply(request_id, unpack(data, self.max_reply))

    # -- sending ---------------------------------------------------------------------
    def start_request(self, method: str, params: dict[str, Any]) -> tuple[int, bytes]:
        """Client side: allocate an id and encode a request."""
        request = Request(next(self._ids), method, params)
        return request.id, self.send(request)

    def send(self, event: Event) -> bytes:
        if self.closed:
            raise LocalProtocolError("connection is closed")
        if isinstance(event, Request):
            if self.role is not Role.CLIENT:
                raise LocalProtocolError("only a client sends requests")
            try:
                data = encode_frame({"id": event.id, "method": event.method, "params": event.params}, self.max_frame)
            except (ValueError, TypeError, OverflowError) as exc:  # UnicodeEncodeError is a ValueError
                raise LocalProtocolError(f"cannot send {event.method}: {exc}") from exc
            self._pending.add(event.id)
            return data
        if self.role is not Role.SERVER:
            raise LocalProtocolError(f"a client cannot send {type(event).__name__}")
        if isinstance(event, Reply):
            return self._encode_reply(event)
        if isinstance(event, ErrorReply):
            msg = {"id": event.id, "error": {"code": event.code, "message": event.message}}
            return encode_frame(msg, self.max_frame)
        if isinstance(event, Notification):
            return encode_frame({"method": event.method, "params": event.params}, self.max_frame)
        raise LocalProtocolError(f"cannot send {event!r}")

    def _encode_reply(self, reply: Reply) -> bytes:
        body = pack({"id": reply.id, "result": reply.result})
        if len(body) <= self.max_frame:
            return len(body).to_bytes(4, "big") + body
        data = pack(reply.result)
        step = self.max_frame - _PART_OVERHEAD
        frames = []
        for start in range(0, len(data), step):
            chunk = data[start : start + step]
            more = start + step < len(data)
            frames.append(encode_frame({"id": reply.id, "part": chunk, "more": more}, self.max_frame))
        return b"".join(frames)
