"""The asyncio side of the control protocol: one task per TLS connection.

Each connection drives a sans-IO :class:`jettui.wire.Connection`.  Requests run as tasks
of their own, so a slow request delays neither other connections nor later requests on
the same one; replies go out in completion order and the client matches them by id.
A protocol error, a silent client or a slow one closes that connection only.
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
    def _read_timeout(self) -> float:
        cfg = self.server.config
        return cfg.idle_timeout if self.session.authenticated else cfg.login_grace

    async def run(self) -> None:
        try:
            while True:
                try:
                    async with asyncio.timeout(self._read_timeout()):
                        data = await self.reader.read(READ_SIZE)
                except TimeoutError:
                    if self._tasks and self.session.authenticated:
                        continue  # a long request in flight is not idleness
                    log.info("closing idle connection from %s", self.session.peer)
                    return
                self.conn.receive_data(data)
                while True:
                    event = self.conn.next_event()
                    if event is wire.NEED_DATA or isinstance(event, wire.ConnectionClosed):
                        break
                    if isinstance(event, wire.Request):
                        self._start_request(event)
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
