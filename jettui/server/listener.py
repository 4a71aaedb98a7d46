"""The asyncio side of the control protocol: one task per TLS connection.

Each connection drives a sans-IO :class:`jettui.wire.Connection`.  Requests run as tasks
of their own, so a slow request delays neither other connections nor later requests on
the same one; replies go out in completion order and the client matches them by id.
A protocol error, a silent client or a slow one closes that connection only.

Time limits, each named in the log line that closes the connection:

* ``login_grace``: from the moment the connection is accepted, the session has that many
  seconds to log in, however busy it keeps the line (a client that trickles one byte at a
  time, or chats with getServerInfo, is still closed).
* ``idle_timeout``: a logged-in connection that sends nothing for that long is closed
  (unless a request of its own is still running).
* ``frame_timeout``: once a frame has started it must be complete within that time, so a
  slow sender cannot hold a connection and its buffer forever.

Before login the largest frame accepted is ``max_unauthenticated_frame``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from jettui import wire
from jettui.errors import CommandError, JettuiError, RemoteProtocolError
from jettui.server.dispatch import dispatch
from jettui.server.session import Session

if TYPE_CHECKING:
    from jettui.server.core import Server

log = logging.getLogger("jettui.server")


class ClientConnection(asyncio.Protocol):
    """One API connection, as an asyncio protocol: bytes arrive in :meth:`data_received`
    (no reader task to wake per request), requests run as tasks, replies are written as
    they complete.  The time limits are kept by one timer that is re-armed lazily: a read
    only records the time, and the timer, when it fires, works out whether a limit has
    really been reached."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.session = Session(peer="?", peer_port=0)
        self.session.notify = self.notify
        self.conn = wire.Connection(wire.SERVER)
        self.conn.set_receive_limit(server.config.max_unauthenticated_frame)
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self.closed: asyncio.Future[None] = self.loop.create_future()
        self._write_paused = False
        self._drained: asyncio.Future[None] | None = None
        self._accepted = self._last_data = self.loop.time()
        self._frame_started: float | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._watchdog_at = 0.0

    # -- asyncio.Protocol --------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's SSL transport is not an asyncio.Transport
        peer = transport.get_extra_info("peername") or ("?", 0)
        self.session.peer = str(peer[0])
        self.session.peer_port = int(peer[1]) if len(peer) > 1 else 0
        refuse = self.server.admit(self)
        if refuse is not None:
            log.warning("refusing connection from %s: %s reached", self.session.peer, refuse)
            self._closing = True
            transport.close()
            return
        self._arm(self._deadline()[0])

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self._last_data = self.loop.time()
        if self.session.authenticated and self.conn.receive_limit < self.conn.max_frame:
            self.conn.set_receive_limit(self.conn.max_frame)
        try:
            self.conn.receive_data(data)
            completed = False
            while True:
                event = self.conn.next_event()
                if event is wire.NEED_DATA or isinstance(event, wire.ConnectionClosed):
                    break
                completed = True
                if isinstance(event, wire.Request):
                    self._start_request(event)
        except RemoteProtocolError as exc:
            log.info("protocol error from %s: %s", self.session.peer, exc)
            self.close()
            return
        if not self.conn.buffered:
            self._frame_started = None
        elif completed or self._frame_started is None:
            self._frame_started = self._last_data
            deadline = self._deadline()[0]
            if deadline < self._watchdog_at:
                self._arm(deadline)

    def eof_received(self) -> bool:
        return False  # close; replies still queued are flushed by the transport

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            log.debug("connection from %s lost: %s", self.session.peer, exc)
        self._closing = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self.loop.create_task(self._finish())

    async def _finish(self) -> None:
        # The session's directory handles stay open until no request can touch them.
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self.session.close_fs()
        self.server.connections.discard(self)
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # -- time limits ---------------------------------------------------------------------
    def _deadline(self) -> tuple[float, str]:
        """When the connection is closed if nothing changes, and the limit that says so."""
        cfg = self.server.config
        if self.session.authenticated:
            deadline, limit = self._last_data + cfg.idle_timeout, f"idle_timeout={cfg.idle_timeout:g}s"
        else:
            deadline, limit = self._accepted + cfg.login_grace, f"login_grace={cfg.login_grace:g}s"
        if self._frame_started is not None and self._frame_started + cfg.frame_timeout < deadline:
            deadline, limit = self._frame_started + cfg.frame_timeout, f"frame_timeout={cfg.frame_timeout:g}s"
        return deadline, limit

    def _arm(self, when: float) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._watchdog_at = when
        self._watchdog = self.loop.call_at(when, self._check_limits)

    def _check_limits(self) -> None:
        if self._closing:
            return
        now = self.loop.time()
        deadline, limit = self._deadline()
        if deadline > now:
            self._arm(deadline)  # data arrived since: the limit moved on
        elif limit.startswith("idle") and self._tasks:
            self._arm(now + self.server.config.idle_timeout)  # a long request in flight is not idleness
        else:
            log.info("closing connection from %s: %s reached", self.session.peer, limit)
            self.close()

    # -- sending -------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        if not self._closing and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def notify(self, method: str, params: dict[str, Any]) -> None:
        """Queue a notification (never blocks; dropped once the connection is closing)."""
        if self.conn.closed or self._closing:
            return
        self._write(self.conn.send(wire.Notification(method, params)))

    async def _reply(self, event: wire.Reply | wire.ErrorReply) -> None:
        if self.conn.closed or self._closing:
            return
        try:
            data = self.conn.send(event)
        except ValueError as exc:  # a frame over the limit that cannot be split (an error text)
            data = self.conn.send(wire.ErrorReply(event.id, "command", f"reply too large: {exc}"))
        self._write(data)
        if self._write_paused and not self._closing:
            # The client is not reading: this request waits (and so counts against the
            # per-connection limit) until the transport's buffer drains.
            if self._drained is None or self._drained.done():
                self._drained = self.loop.create_future()
            await self._drained

    # -- requests ------------------------------------------------------------------------
    async def _serve_request(self, request: wire.Request) -> None:
        try:
            result = await dispatch(self.server, self.session, request.method, request.params)
            reply: wire.Reply | wire.ErrorReply = wire.Reply(request.id, result)
        except JettuiError as exc:
            reply = wire.ErrorReply(request.id, exc.code, exc.message)
        except Exception as exc:
            log.exception("handler %s failed", request.method)
            reply = wire.ErrorReply(request.id, "command", f"internal error: {exc.__class__.__name__}: {exc}")
        await self._reply(reply)

    def _start_request(self, request: wire.Request) -> None:
        limit = self.server.config.max_requests_per_connection
        if len(self._tasks) >= limit:
            error = CommandError(
                f"too many requests in flight on this connection (max_requests_per_connection={limit})"
            )
            task = self.loop.create_task(self._reply(wire.ErrorReply(request.id, error.code, error.message)))
        else:
            task = self.loop.create_task(self._serve_request(request), name=f"api-{request.method}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- closing -------------------------------------------------------------------------
    def close(self) -> None:
        """Close at once: requests still running are cancelled, written replies are flushed."""
        if self._closing:
            return
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        if self.transport is not None:
            self.transport.close()

    async def aclose(self) -> None:
        self.close()
        if self.transport is None:
            return
        try:
            async with asyncio.timeout(2):
                await asyncio.shield(self.closed)
        except TimeoutError:
            self.transport.abort()
