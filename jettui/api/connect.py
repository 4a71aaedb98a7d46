"""The asyncio APIInterface and ``connect_async()``."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from jettui.api.client import AsyncClient, NotificationHandler
from jettui.api.interfaces import AsyncRecvInterface, AsyncSendInterface, AsyncServerInterface
from jettui.api.trust import TrustStore
from jettui.constants import DEFAULT_API_PORT, DEFAULT_SERVER_ADDRESS, DEFAULT_TIMEOUT_SECONDS
from jettui.errors import ConnectionLost


class AsyncAPIInterface:
    """One API connection: ``.server``, ``.send`` and ``.recv`` hang off it.

    ``fingerprint`` pins the server's certificate explicitly; otherwise the known-servers
    file pins it on first use (``trust=False`` disables that, for throwaway tests only).
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
        self._client: AsyncClient | None = None
        self._handlers: list[NotificationHandler] = []
        self.server = AsyncServerInterface(self)
        self.send = AsyncSendInterface(self)
        self.recv = AsyncRecvInterface(self)

    @property
    def client(self) -> AsyncClient:
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
        return bool(self._client and self._client.first_contact)

    def add_notification_handler(self, handler: NotificationHandler) -> None:
        """Handlers survive reconnection."""
        self._handlers.append(handler)
        if self._client is not None:
            self._client.add_notification_handler(handler)

    async def connect(self) -> AsyncAPIInterface:
        if self._client is not None:
            await self._client.close()
        client = AsyncClient(self.host, self.port, self.timeout, self.fingerprint, self.trust)
        await client.connect()
        for handler in self._handlers:
            client.add_notification_handler(handler)
        self._client = client
        return self

    async def disconnect(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def __aenter__(self) -> AsyncAPIInterface:
        if not self.connected:
            await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.disconnect()


class _Connecting:
    """``await connect_async(...)`` or ``async with connect_async(...) as api``."""

    def __init__(self, api: AsyncAPIInterface) -> None:
        self._api = api

    def __await__(self) -> Generator[Any, None, AsyncAPIInterface]:
        return self._api.connect().__await__()

    async def __aenter__(self) -> AsyncAPIInterface:
        return await self._api.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self._api.disconnect()


def connect_async(
    host: str = DEFAULT_SERVER_ADDRESS,
    port: int = DEFAULT_API_PORT,
    timeout: float | None = DEFAULT_TIMEOUT_SECONDS,
    fingerprint: str | None = None,
    trust: TrustStore | bool = True,
) -> _Connecting:
    return _Connecting(AsyncAPIInterface(host, port, timeout, fingerprint, trust))
