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
import contextlib
import logging
import ssl
from typing import TYPE_CHECKING, Any

from jettui import wire
from jettui.errors import CommandError, JettuiError, RemoteProtocolError
from jettui.server.dispatch import dispatch
from jettui.server.session import Session

if TYPE_CHECKING:
    from jettui.server.core import Server

log = logging.getLogger("jettui.server")

READ_SIZE = 256 * 1024


class ClientConnection:
    def __init__(self, server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername") or ("?", 0)
        self.session = Session(peer=str(peer[0]), peer_port=int(peer[1]) if len(peer) > 1 else 0)
        self.session.notify = self.notify
        self.conn = wire.Connection(wire.SERVER)
        self.conn.set_receive_limit(server.config.max_unauthenticated_frame)
        self._tasks: set[asyncio.Task[None]] = set()
        self._write_lock = asyncio.Lock()
        self._closing = False

    # -- sending -------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        if not self._closing and not self.writer.is_closing():
            self.writer.write(data)

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
        async with self._write_lock:
            self._write(data)
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await self.writer.drain()

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
            task = asyncio.create_task(self._reply(wire.ErrorReply(request.id, error.code, error.message)))
        else:
            task = asyncio.create_task(self._serve_request(request), name=f"api-{request.method}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- main loop -----------------------------------------------------------------------
    def _read_timeout(self, now: float, accepted: float, frame_started: float | None) -> tuple[float, str]:
        """Seconds the next read may wait, and the limit that sets it."""
        cfg = self.server.config
        if self.session.authenticated:
            timeout, limit = cfg.idle_timeout, f"idle_timeout={cfg.idle_timeout:g}s"
        else:
            timeout, limit = accepted + cfg.login_grace - now, f"login_grace={cfg.login_grace:g}s"
        if frame_started is not None and frame_started + cfg.frame_timeout - now < timeout:
            timeout, limit = frame_started + cfg.frame_timeout - now, f"frame_timeout={cfg.frame_timeout:g}s"
        return max(timeout, 0.0), limit

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        accepted = loop.time()
        frame_started: float | None = None
        try:
            while True:
                timeout, limit = self._read_timeout(loop.time(), accepted, frame_started)
                try:
                    async with asyncio.timeout(timeout):
                        data = await self.reader.read(READ_SIZE)
                except TimeoutError:
                    if limit.startswith("idle") and self._tasks:
                        continue  # a long request in flight is not idleness
                    if limit.startswith("login") and self.session.authenticated:
                        continue  # logged in while we waited: the idle timeout applies now
                    log.info("closing connection from %s: %s reached", self.session.peer, limit)
                    return
                if self.session.authenticated and self.conn.receive_limit < self.conn.max_frame:
                    self.conn.set_receive_limit(self.conn.max_frame)
                self.conn.receive_data(data)
                completed = False
                while True:
                    event = self.conn.next_event()
                    if event is wire.NEED_DATA or isinstance(event, wire.ConnectionClosed):
                        break
                    completed = True
                    if isinstance(event, wire.Request):
                        self._start_request(event)
                if not self.conn.buffered:
                    frame_started = None
                elif completed or frame_started is None:
                    frame_started = loop.time()
                if not data:
                    return
        except RemoteProtocolError as exc:
            log.info("protocol error from %s: %s", self.session.peer, exc)
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            log.debug("connection from %s lost: %s", self.session.peer, exc)
        finally:
            await self.close()

    async def close(self) -> None:
        if self._closing:
            return
        # Let replies already computed go out, but do not wait on long requests.
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self.session.close_fs()
        self.writer.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await self.writer.wait_closed()
