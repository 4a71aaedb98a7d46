"""The synchronous facade for scripts: the async core run on a private event-loop thread.

The sync interface classes are generated from the async ones, method by method, so each
API method exists once.  All sync API objects of a process share one daemon loop thread.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from jettui.api.connect import AsyncAPIInterface
from jettui.api.interfaces import AsyncRecvInterface, AsyncSendInterface, AsyncServerInterface
from jettui.api.trust import TrustStore
from jettui.constants import DEFAULT_API_PORT, DEFAULT_SERVER_ADDRESS, DEFAULT_TIMEOUT_SECONDS
from jettui.loop import new_event_loop

T = TypeVar("T")
log = logging.getLogger("jettui.api")


class Portal:
    """Runs coroutines on a background event loop and waits for them."""

    def __init__(self) -> None:
        self.loop = new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="jettui-api-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a synchronous API method was called from the API's own loop")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()


_portal: Portal | None = None
_portal_lock = threading.Lock()


def portal() -> Portal:
    global _portal
    with _portal_lock:
        if _portal is None:
            _portal = Portal()
        return _portal


class _SyncInterface:
    _async_attr = ""

    def __init__(
        self,
        api_interface: APIInterface,
        sync_interface: Portal | None = None,
        logging_interface: logging.Logger | None = None,
    ) -> None:
        self._api_interface = api_interface
        self._portal = sync_interface or portal()
        self._log = logging_interface or log

    @property
    def _async(self) -> Any:
        return getattr(self._api_interface.async_api, self._async_attr)


def _sync_method(name: str, async_func: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., Any]:
    @functools.wraps(async_func)
    def method(self: _SyncInterface, *args: Any, **kwargs: Any) -> Any:
        return self._portal.run(getattr(self._async, name)(*args, **kwargs))

    return method


def _make_sync(async_cls: type, name: str, attr: str) -> type:
    namespace: dict[str, Any] = {"__doc__": async_cls.__doc__, "_async_attr": attr, "__module__": __name__}
    for member, func in vars(async_cls).items():
        if not member.startswith("_") and inspect.iscoroutinefunction(func):
            namespace[member] = _sync_method(member, func)
    return type(name, (_SyncInterface,), namespace)


ServerInterface = _make_sync(AsyncServerInterface, "ServerInterface", "server")
SendInterface = _make_sync(AsyncSendInterface, "SendInterface", "send")
RecvInterface = _make_sync(AsyncRecvInterface, "RecvInterface", "recv")


class APIInterface:
    """A synchronous API connection; also a context manager (connects on entry)."""

    def __init__(
        self,
        host: str = DEFAULT_SERVER_ADDRESS,
        port: int = DEFAULT_API_PORT,
        timeout: float | None = DEFAULT_TIMEOUT_SECONDS,
        fingerprint: str | None = None,
        trust: TrustStore | bool = True,
    ) -> None:
        self._portal = portal()
        self.async_api = AsyncAPIInterface(host, port, timeout, fingerprint, trust)
        self.server = ServerInterface(self, self._portal, log)
        self.send = SendInterface(self, self._portal, log)
        self.recv = RecvInterface(self, self._portal, log)

    @property
    def host(self) -> str:
        return self.async_api.host

    @property
    def port(self) -> int:
        return self.async_api.port

    @property
    def connected(self) -> bool:
        return self.async_api.connected

    @property
    def server_fingerprint(self) -> str | None:
        return self.async_api.server_fingerprint

    def connect(self) -> APIInterface:
        self._portal.run(self.async_api.connect())
        return self

    def disconnect(self) -> None:
        self._portal.run(self.async_api.disconnect())

    def add_notification_handler(self, handler: Callable[[str, dict[str, Any]], None]) -> None:
        """Handlers run on the API's loop thread."""
        self.async_api.add_notification_handler(handler)

    def __enter__(self) -> APIInterface:
        if not self.connected:
            self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.disconnect()

    def __del__(self) -> None:
        try:
            if self.async_api.connected and not self._portal.loop.is_closed():
                asyncio.run_coroutine_threadsafe(self.async_api.disconnect(), self._portal.loop)
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
