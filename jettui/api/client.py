"""The asyncio driver of the client: a TLS stream beside a sans-IO wire.Connection.

One reader task feeds received bytes to the connection and resolves the future of each
reply by request id; notifications go to registered handlers.  Calls from any number of
tasks may be in flight at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import logging
import ssl
from collections.abc import Callable
from typing import Any

from jettui import wire
from jettui.api.trust import TrustStore
from jettui.constants import DEFAULT_TIMEOUT_SECONDS
from jettui.errors import (
    ConnectionLost,
    JettuiError,
    LocalProtocolError,
    RemoteProtocolError,
    TimeoutError_,
    TrustError,
    construct_error,
    map_exceptions,
)

log = logging.getLogger("jettui.api")

NotificationHandler = Callable[[str, dict[str, Any]], None]

#: Marker for "use the client's default timeout".
DEFAULT = object()


class ClientState(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


def client_ssl_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # Identity is the pinned certificate fingerprint, not a CA chain; this order is required.
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


def check_identity(
    endpoint: str, der: bytes | None, expected: str | None, trust: TrustStore | None
) -> tuple[str, bool]:
    """Check the certificate a server presented; return its fingerprint and whether this was
    the first contact.  Called after the handshake, before any application data is sent."""
    if not der:
        raise ConnectionLost(f"{endpoint} presented no certificate")
    fingerprint = hashlib.sha256(der).hexdigest()
    if expected is not None:
        if fingerprint != expected.lower():
            raise TrustError(f"{endpoint} presented certificate {fingerprint}, expected {expected}")
        return fingerprint, False
    return fingerprint, trust.check(endpoint, fingerprint) if trust is not None else False


class AsyncClient:
    """A connection to one jettui server."""

    def __init__(
        self,
        host: str,
        port: int,
        timeout: float | None = DEFAULT_TIMEOUT_SECONDS,
        fingerprint: str | None = None,
        trust: TrustStore | None = None,
        max_reply: int = wire.connection.DEFAULT_MAX_REPLY,
    ) -> None:
        """``max_reply``: the largest reply (reassembled from parts) accepted from the server."""
        self.host = host
        self.port = port
        self.timeout = timeout
        self.expected_fingerprint = fingerprint
        self.trust = trust
        self.fingerprint: str | None = None
        self.first_contact = False
        self.state = ClientState.UNOPENED
        self._conn = wire.Connection(wire.CLIENT, max_reply=max_reply)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._read_task: asyncio.Task[None] | None = None
        self._waiters: dict[int, asyncio.Future[Any]] = {}
        self._handlers: list[NotificationHandler] = []
        self._close_reason: JettuiError | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        return self.state is ClientState.OPEN

    async def connect(self) -> None:
        if self.state is not ClientState.UNOPENED:
            raise LocalProtocolError(f"client is {self.state.value}: make a new one to reconnect")
        with map_exceptions(f"connecting to {self.endpoint}"):
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_connection(
                    self.host, self.port, ssl=client_ssl_context(), limit=1024 * 1024
                )
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        try:
            self.fingerprint, self.first_contact = check_identity(
                self.endpoint, der, self.expected_fingerprint, self.trust
            )
        except JettuiError:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            raise
        self._reader, self._writer = reader, writer
        self.state = ClientState.OPEN
        self._read_task = asyncio.create_task(self._read_loop(), name=f"jettui-client-{self.endpoint}")

    def add_notification_handler(self, handler: NotificationHandler) -> Callable[[], None]:
        self._handlers.append(handler)
        return lambda: self._handlers.remove(handler) if handler in self._handlers else None

    async def _read_loop(self) -> None:
        assert self._reader is not None
        reason: JettuiError = ConnectionLost(f"{self.endpoint} closed the connection")
        try:
            while True:
                data = await self._reader.read(256 * 1024)
                self._conn.receive_data(data)
                while True:
                    event = self._conn.next_event()
                    if event is wire.NEED_DATA:
                        break
                    if isinstance(event, wire.ConnectionClosed):
                        return
                    self._deliver(event)
        except RemoteProtocolError as exc:
            reason = exc
            log.warning("protocol error from %s: %s", self.endpoint, exc)
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            reason = ConnectionLost(f"connection to {self.endpoint} lost: {exc}")
        except asyncio.CancelledError:
            reason = ConnectionLost("connection closed")
            raise
        finally:
            self._fail_all(reason)

    def _deliver(self, event: wire.Event) -> None:
        if isinstance(event, wire.Notification):
            for handler in list(self._handlers):
                try:
                    handler(event.method, event.params)
                except Exception:
                    log.exception("notification handler failed")
            return
        if isinstance(event, wire.Reply | wire.ErrorReply):
            fut = self._waiters.pop(event.id, None)
            if fut is None or fut.done():
                return
            if isinstance(event, wire.Reply):
                fut.set_result(event.result)
            else:
                fut.set_exception(construct_error(event.code, event.message))

    def _fail_all(self, reason: JettuiError) -> None:
        if self.state is ClientState.OPEN:
            self.state = ClientState.CLOSED
        self._close_reason = reason
        for fut in self._waiters.values():
            if not fut.done():
                fut.set_exception(type(reason)(reason.message))
        self._waiters.clear()
        if self._writer is not None:
            self._writer.close()

    async def call(self, method: str, params: dict[str, Any], timeout: Any = DEFAULT) -> Any:
        """Send one request and wait for its result (raises the server's error)."""
        if self.state is not ClientState.OPEN or self._writer is None:
            raise self._close_reason or ConnectionLost(f"not connected to {self.endpoint}")
        request_id, data = self._conn.start_request(method, params)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters[request_id] = fut
        limit = self.timeout if timeout is DEFAULT else timeout
        try:
            with map_exceptions(method):
                self._writer.write(data)
                await self._writer.drain()
            async with asyncio.timeout(limit):
                return await fut
        except TimeoutError as exc:
            raise TimeoutError_(f"{method}: no answer from {self.endpoint} within {limit} s") from exc
        finally:
            self._waiters.pop(request_id, None)

    async def close(self) -> None:
        if self.state is ClientState.CLOSED and self._read_task is None:
            return
        self.state = ClientState.CLOSED
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self._writer.wait_closed()
        if self._read_task is not None:
            self._read_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._read_task
            self._read_task = None
