"""The synchronous facade for scripts: the async interface coroutines, run on the caller's thread.

The sync interface classes are generated from the async ones, method by method, so each
API method exists once.  Their connection is a :class:`~jettui.api.blocking.BlockingClient`,
whose ``call`` completes without suspending, so each coroutine runs to its end in a single
step on the calling thread: no event loop, no thread hop.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from jettui.api.blocking import BlockingClient
from jettui.api.connect import AsyncAPIInterface
from jettui.api.interfaces import AsyncRecvInterface, AsyncSendInterface, AsyncServerInterface
from jettui.api.trust import TrustStore
from jettui.constants import DEFAULT_API_PORT, DEFAULT_SERVER_ADDRESS, DEFAULT_TIMEOUT_SECONDS
from jettui.errors import ConnectionLost

T = TypeVar("T")
log = logging.getLogger("jettui.api")


def run_inline(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that does not suspend (its I/O blocks) and return its result."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("an API coroutine suspended on the blocking client")


class _SyncInterface:
    _async_class: type = object

    def __init__(
        self,
        api_interface: APIInterface,
        sync_interface: object | None = None,
        logging_interface: logging.Logger | None = None,
    ) -> None:
        """``sync_interface`` is accepted for the seed's signature and not needed here."""
        self._api_interface = api_interface
        self._async = self._async_class(api_interface)
        self._log = logging_interface or log


def _sync_method(name: str, async_func: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., Any]:
    @functools.wraps(async_func)
    def method(self: _SyncInterface, *args: Any, **kwargs: Any) -> Any:
        return run_inline(getattr(self._async, name)(*args, **kwargs))

    return method


def _make_sync(async_cls: type, name: str) -> type:
    namespace: dict[str, Any] = {"__doc__": async_cls.__doc__, "_async_class": async_cls, "__module__": __name__}
    for member, func in vars(async_cls).items():
        if not member.startswith("_") and inspect.iscoroutinefunction(func):
            namespace[member] = _sync_method(member, func)
    return type(name, (_SyncInterface,), namespace)


ServerInterface = _make_sync(AsyncServerInterface, "ServerInterface")
SendInterface = _make_sync(AsyncSendInterface, "SendInterface")
RecvInterface = _make_sync(AsyncRecvInterface, "RecvInterface")


class APIInterface:
    """A synchronous API connection; also a context manager (connects on entry).

    One connection may be shared by threads.  Notification handlers run on whichever
    thread reads the notification: a caller waiting for its reply, or the connection's
    listener thread between calls.
    """

    def __init__(
        self,
        host: str = DEFAULT_SERVER_ADDRESS,
        port: int = DEFAULT_API_PORT,
        timeout: float | None = DEFAULT_TIMEOUT_SECONDS,
        fingerprint: str | None = None,
        trust: TrustStore | bool = True,
    ) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.fingerprint = fingerprint
        self.trust: TrustStore | None = TrustStore() if trust is True else (trust or None)
        self._client: BlockingClient | None = None
        self._handlers: list[Callable[[str, dict[str, Any]], None]] = []
        self.server = ServerInterface(self)
        self.send = SendInterface(self)
        self.recv = RecvInterface(self)

    @property
    def client(self) -> BlockingClient:
        if self._client is None:
            raise ConnectionLost(f"not connected to {self.host}:{self.port}: call connect() first")
        return self._client

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    @property
    def server_fingerprint(self) -> str | None:
        return self._client.fingerprint if self._client else None

    @property
    def first_contact(self) -> bool:
        """True when this connection pinned the server's certificate (first use)."""
        return bool(self._client and self._client.first_contact)

    def connect(self) -> APIInterface:
        if self._client is not None:
            self._client.close()
        client = BlockingClient(self.host, self.port, self.timeout, self.fingerprint, self.trust)
        for handler in self._handlers:
            client.add_notification_handler(handler)
        client.connect()
        self._client = client
        return self

    def disconnect(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def add_notification_handler(self, handler: Callable[[str, dict[str, Any]], None]) -> None:
        """Handlers survive reconnection; see the class docstring for their thread."""
        self._handlers.append(handler)
        if self._client is not None:
            self._client.add_notification_handler(handler)

    def __enter__(self) -> APIInterface:
        if not self.connected:
            self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.disconnect()

    def __del__(self) -> None:
        try:
            if self._client is not None:
                self._client.close()
        except Exception:
            pass


class JetStream:
    """Entry object of the seed examples: ``JetStream().api(host, port)``."""

    def api(
        self,
        serverAddress: str = DEFAULT_SERVER_ADDRESS,
        serverPort: int = DEFAULT_API_PORT,
        timeout: float | None = DEFAULT_TIMEOUT_SECONDS,
        fingerprint: str | None = None,
        trust: TrustStore | bool = True,
    ) -> APIInterface:
        return APIInterface(serverAddress, serverPort, timeout, fingerprint, trust)

    def asyncApi(
        self,
        serverAddress: str = DEFAULT_SERVER_ADDRESS,
        serverPort: int = DEFAULT_API_PORT,
        timeout: float | None = DEFAULT_TIMEOUT_SECONDS,
        fingerprint: str | None = None,
        trust: TrustStore | bool = True,
    ) -> AsyncAPIInterface:
        return AsyncAPIInterface(serverAddress, serverPort, timeout, fingerprint, trust)


Jetstream = JetStream  # the 1.9.0 spelling


def connect(
    host: str = DEFAULT_SERVER_ADDRESS,
    port: int = DEFAULT_API_PORT,
    timeout: float | None = DEFAULT_TIMEOUT_SECONDS,
    fingerprint: str | None = None,
    trust: TrustStore | bool = True,
) -> APIInterface:
    """Open a synchronous API connection."""
    return APIInterface(host, port, timeout, fingerprint, trust).connect()
