"""The caller-thread driver of the client: a plain socket, TLS on memory BIOs, and the same
sans-IO :class:`jettui.wire.Connection` as the asyncio driver.

The synchronous API runs the interface coroutines of :mod:`jettui.api.interfaces` on the
caller's own thread.  They never suspend, because this client's ``call`` does its I/O
blocking, so a round trip costs one send and one receive: no event loop and no thread hop
(a hop to a loop thread and back cost more than the server's whole answer).

Threads
-------
Any number of threads may share one client.  A lock keeps each frame whole on the socket.
Reading is done by one waiting thread at a time, the *reader* (leader/follower): it reads
until its own reply is in, files replies for the others and wakes them; when it leaves,
another waiter takes over.  TLS state (an ``ssl.SSLObject``) is only touched under one
lock, so OpenSSL never sees two threads at once; blocking waits happen on the socket
outside it.  TLS records must leave in the order they were sealed, so a sender holds the
send lock from sealing to the last byte written.

Notifications are delivered on the thread that reads them.  Once a handler is registered a
daemon thread reads whenever no call is reading, so they also arrive between calls.
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from jettui import wire
from jettui.api.client import (
    DEFAULT,
    ClientState,
    NotificationHandler,
    check_identity,
    client_ssl_context,
)
from jettui.api.trust import TrustStore
from jettui.constants import DEFAULT_TIMEOUT_SECONDS
from jettui.errors import (
    ConnectionLost,
    JettuiError,
    LocalProtocolError,
    RemoteProtocolError,
    TimeoutError_,
    construct_error,
    map_exceptions,
)

log = logging.getLogger("jettui.api")

READ_SIZE = 256 * 1024


class BlockingClient:
    """A connection to one jettui server, driven by the threads that call it."""

    def __init__(
        self,
        host: str,
        port: int,
        timeout: float | None = DEFAULT_TIMEOUT_SECONDS,
        fingerprint: str | None = None,
        trust: TrustStore | None = None,
        max_reply: int = wire.connection.DEFAULT_MAX_REPLY,
    ) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.expected_fingerprint = fingerprint
        self.trust = trust
        self.fingerprint: str | None = None
        self.first_contact = False
        self.state = ClientState.UNOPENED
        self._conn = wire.Connection(wire.CLIENT, max_reply=max_reply)
        self._sock: socket.socket | None = None
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls: ssl.SSLObject | None = None
        # _lock guards the TLS object, the wire connection and everything below it.
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._send_lock = threading.Lock()
        self._reading = False
        self._replies: dict[int, wire.Reply | wire.ErrorReply] = {}
        self._abandoned: set[int] = set()
        self._close_reason: JettuiError | None = None
        self._handlers: list[NotificationHandler] = []
        self._listener: threading.Thread | None = None
        # One poller per role, since a poll object must not be polled by two threads at once.
        self._poll_in = self._poll_out = select.poll()

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        return self.state is ClientState.OPEN

    # -- connecting ------------------------------------------------------------------------
    def connect(self) -> None:
        if self.state is not ClientState.UNOPENED:
            raise LocalProtocolError(f"client is {self.state.value}: make a new one to reconnect")
        deadline = _deadline(self.timeout)
        with map_exceptions(f"connecting to {self.endpoint}"):
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            self._sock = sock
            self._poll_in, self._poll_out = select.poll(), select.poll()
            self._poll_in.register(sock, select.POLLIN)
            self._poll_out.register(sock, select.POLLOUT)
            self._tls = client_ssl_context().wrap_bio(self._incoming, self._outgoing, server_side=False)
            with map_exceptions(f"TLS handshake with {self.endpoint}"):
                self._handshake(deadline)
            der = self._tls.getpeercert(binary_form=True)
            self.fingerprint, self.first_contact = check_identity(
                self.endpoint, der, self.expected_fingerprint, self.trust
            )
        except BaseException:
            sock.close()
            self._sock = None
            raise
        self.state = ClientState.OPEN
        if self._handlers:
            self._start_listener()

    def _handshake(self, deadline: float | None) -> None:
        assert self._tls is not None
        while True:
            try:
                self._tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._send_bytes(self._outgoing.read(), deadline)
                data = self._recv(deadline)
                if not data:
                    raise ConnectionLost(f"{self.endpoint} closed the connection during the TLS handshake")
                self._incoming.write(data)
        self._send_bytes(self._outgoing.read(), deadline)

    # -- socket ----------------------------------------------------------------------------
    def _wait(self, poller: select.poll, deadline: float | None) -> None:
        remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        if not poller.poll(None if remaining is None else remaining * 1000):
            raise TimeoutError

    def _send_bytes(self, data: bytes, deadline: float | None) -> None:
        """Send all of ``data`` (send lock held)."""
        assert self._sock is not None
        try:
            sent = self._sock.send(data)
        except BlockingIOError:
            sent = 0
        if sent == len(data):
            return
        view = memoryview(data)[sent:]
        while view:
            self._wait(self._poll_out, deadline)
            try:
                view = view[self._sock.send(view) :]
            except BlockingIOError:
                pass

    def _recv(self, deadline: float | None, poller: select.poll | None = None) -> bytes:
        """Wait for data and return it (reader role held); b"" at end of stream."""
        assert self._sock is not None
        while True:
            # Wait first: a reply is never already there when its request has just left.
            self._wait(poller or self._poll_in, deadline)
            try:
                return self._sock.recv(READ_SIZE)
            except BlockingIOError:
                pass

    def send_data(self, data: bytes, timeout: float | None = DEFAULT_TIMEOUT_SECONDS) -> None:
        """Seal ``data`` as TLS application data and send it as it is (tests use this to
        send frames byte by byte)."""
        self._check_open()
        with self._send_lock:
            with self._lock:
                assert self._tls is not None
                self._tls.write(data)
                sealed = self._outgoing.read()
            with map_exceptions(f"sending to {self.endpoint}"):
                self._send_bytes(sealed, _deadline(timeout))

    # -- calls -----------------------------------------------------------------------------
    async def call(self, method: str, params: dict[str, Any], timeout: Any = DEFAULT) -> Any:
        """The interface coroutines' entry point; never suspends (see the module docstring)."""
        return self.request(method, params, timeout)

    def request(self, method: str, params: dict[str, Any], timeout: Any = DEFAULT) -> Any:
        """Send one request and wait for its result (raises the server's error)."""
        self._check_open()
        limit = self.timeout if timeout is DEFAULT else timeout
        deadline = _deadline(limit)
        with self._send_lock:
            with self._lock:
                assert self._tls is not None
                if self._close_reason is not None:
                    raise type(self._close_reason)(self._close_reason.message)
                request_id, frame = self._conn.start_request(method, params)
                self._tls.write(frame)
                sealed = self._outgoing.read()
            try:
                self._send_bytes(sealed, deadline)
            except TimeoutError as exc:
                # Part of a frame may be out: the stream cannot carry another one.
                self._fail(TimeoutError_(f"{method}: could not send to {self.endpoint} within {limit} s"))
                raise TimeoutError_(f"{method}: could not send to {self.endpoint} within {limit} s") from exc
            except OSError as exc:
                self._fail(ConnectionLost(f"connection to {self.endpoint} lost: {exc}"))
                raise ConnectionLost(f"connection to {self.endpoint} lost: {exc}") from exc
        reply = self._await_reply(request_id, method, limit, deadline)
        if isinstance(reply, wire.ErrorReply):
            raise construct_error(reply.code, reply.message)
        return reply.result

    def _await_reply(
        self, request_id: int, method: str, limit: float | None, deadline: float | None
    ) -> wire.Reply | wire.ErrorReply:
        with self._changed:
            while True:
                reply = self._replies.pop(request_id, None)
                if reply is not None:
                    return reply
                if self._close_reason is not None:
                    raise type(self._close_reason)(self._close_reason.message)
                if deadline is not None and time.monotonic() >= deadline:
                    self._abandoned.add(request_id)
                    raise TimeoutError_(f"{method}: no answer from {self.endpoint} within {limit} s")
                if self._reading:
                    self._changed.wait(None if deadline is None else deadline - time.monotonic())
                    continue
                self._read_once(deadline)

    def _read_once(self, deadline: float | None, poller: select.poll | None = None) -> None:
        """Take the reader role for one receive (called and returning with the lock held)."""
        self._reading = True
        notifications: list[wire.Notification] = []
        try:
            self._lock.release()
            try:
                data = self._recv(deadline, poller)
            except TimeoutError:
                return
            except OSError as exc:
                with self._lock:
                    self._fail_locked(ConnectionLost(f"connection to {self.endpoint} lost: {exc}"))
                return
            finally:
                self._lock.acquire()
            notifications = self._absorb(data)
        finally:
            self._reading = False
            self._changed.notify_all()
        if notifications:
            self._lock.release()
            try:
                self._deliver(notifications)
            finally:
                self._lock.acquire()

    def _absorb(self, data: bytes) -> list[wire.Notification]:
        """Decrypt received bytes and file the events they complete (lock held)."""
        assert self._tls is not None
        notifications: list[wire.Notification] = []
        try:
            if data:
                self._incoming.write(data)
                plain = bytearray()
                closed = False
                # Stop when both buffers are empty rather than on SSLWantReadError: an exception
                # per reply is a measurable share of a round trip.
                while self._incoming.pending or self._tls.pending():
                    try:
                        chunk = self._tls.read(READ_SIZE)
                    except ssl.SSLWantReadError:
                        break  # a partial record: the rest comes with the next receive
                    if not chunk:  # close_notify: the server has closed its side
                        closed = True
                        break
                    plain += chunk
                if plain:
                    self._conn.receive_data(bytes(plain))
                if closed:
                    self._conn.receive_data(b"")
            else:
                self._conn.receive_data(b"")
            while True:
                event = self._conn.next_event()
                if event is wire.NEED_DATA:
                    break
                if isinstance(event, wire.ConnectionClosed):
                    self._fail_locked(ConnectionLost(f"{self.endpoint} closed the connection"))
                    break
                if isinstance(event, wire.Notification):
                    notifications.append(event)
                elif isinstance(event, wire.Reply | wire.ErrorReply):
                    if event.id in self._abandoned:
                        self._abandoned.discard(event.id)
                    else:
                        self._replies[event.id] = event
        except RemoteProtocolError as exc:
            log.warning("protocol error from %s: %s", self.endpoint, exc)
            self._fail_locked(exc)
        except ssl.SSLZeroReturnError:
            self._fail_locked(ConnectionLost(f"{self.endpoint} closed the connection"))
        except ssl.SSLError as exc:
            self._fail_locked(ConnectionLost(f"connection to {self.endpoint} lost: {exc}"))
        return notifications

    # -- notifications ---------------------------------------------------------------------
    def add_notification_handler(self, handler: NotificationHandler) -> Callable[[], None]:
        self._handlers.append(handler)
        if self.connected:
            self._start_listener()
        return lambda: self._handlers.remove(handler) if handler in self._handlers else None

    def _deliver(self, notifications: list[wire.Notification]) -> None:
        for note in notifications:
            for handler in list(self._handlers):
                try:
                    handler(note.method, note.params)
                except Exception:
                    log.exception("notification handler failed")

    def _start_listener(self) -> None:
        with self._lock:
            if self._listener is not None:
                return
            self._listener = threading.Thread(target=self._listen, name=f"jettui-notify-{self.endpoint}", daemon=True)
        self._listener.start()

    def _listen(self) -> None:
        """Read whenever the socket has data and no call is reading it."""
        assert self._sock is not None
        poller = select.poll()
        poller.register(self._sock, select.POLLIN)
        while self.state is ClientState.OPEN:
            try:
                ready = poller.poll(1000)
            except (OSError, ValueError):
                return
            if not ready:
                continue
            with self._changed:
                while self._reading and self._close_reason is None:
                    self._changed.wait()  # that call reads what arrived; look again after it
                if self._close_reason is not None:
                    return
                try:
                    self._read_once(time.monotonic(), poller)  # data is there, or another reader took it
                except JettuiError:
                    return

    # -- closing ---------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self.state is not ClientState.OPEN:
            raise self._close_reason or ConnectionLost(f"not connected to {self.endpoint}")

    def _fail(self, reason: JettuiError) -> None:
        with self._lock:
            self._fail_locked(reason)

    def _fail_locked(self, reason: JettuiError) -> None:
        if self._close_reason is None:
            self._close_reason = reason
        if self.state is ClientState.OPEN:
            self.state = ClientState.CLOSED
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)  # wakes every thread waiting on it
            except OSError:
                pass
        self._changed.notify_all()

    def close(self) -> None:
        if self.state is ClientState.UNOPENED or self._sock is None:
            self.state = ClientState.CLOSED
            return
        # A polite close_notify when no frame is half-sent; the shutdown follows either way.
        if self.state is ClientState.OPEN and self._send_lock.acquire(timeout=1):
            try:
                with self._lock:
                    assert self._tls is not None
                    try:
                        self._tls.unwrap()
                    except ssl.SSLError:
                        pass
                    sealed = self._outgoing.read()
                self._send_bytes(sealed, _deadline(1))
            except (OSError, TimeoutError):
                pass
            finally:
                self._send_lock.release()
        with self._lock:
            self._fail_locked(ConnectionLost("connection closed"))
            listener, self._listener = self._listener, None
        if listener is not None and listener is not threading.current_thread():
            listener.join(2)
        self._sock.close()


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout
