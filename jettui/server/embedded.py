"""The embedded default: a real server of our own, on a free loopback port, in a thread.

``jettui`` with no arguments starts one and opens both panes on it.  Its only account is
the current OS user with a random secret known to this process alone, and its certificate
fingerprint is handed to the client directly, so nothing is pinned on disk for it.  It is
not sandboxed: it runs with the user's own rights and shows the user's own files.
"""

from __future__ import annotations

import asyncio
import getpass
import secrets
import threading
from dataclasses import dataclass

from jettui.loop import new_event_loop
from jettui.server.config import ServerConfig
from jettui.server.core import Server


@dataclass(frozen=True)
class EmbeddedInfo:
    host: str
    port: int
    recv_port: int
    fingerprint: str
    user: str
    secret: str


class EmbeddedServer:
    """Start with :meth:`start`, stop with :meth:`stop` (or use as a context manager)."""

    def __init__(self, config: ServerConfig | None = None) -> None:
        user = getpass.getuser()
        self.config = config or ServerConfig(api_port=0, recv_port=0, recv_host="127.0.0.1")
        self.config.embedded_user = user
        self.config.embedded_secret = secrets.token_urlsafe(32)
        self.server: Server | None = None
        self.info: EmbeddedInfo | None = None
        self._loop = new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="jettui-embedded", daemon=True)

    def start(self) -> EmbeddedInfo:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        self.info = future.result(timeout=30)
        return self.info

    async def _start(self) -> EmbeddedInfo:
        self.server = Server(self.config)
        await self.server.start()
        assert self.config.embedded_user and self.config.embedded_secret
        return EmbeddedInfo(
            self.config.api_host,
            self.server.api_port,
            self.server.recv_port,
            self.server.fingerprint,
            self.config.embedded_user,
            self.config.embedded_secret,
        )

    def stop(self) -> None:
        if self.server is not None and self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(timeout=30)
            self.server = None
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        if not self._thread.is_alive() and not self._loop.is_closed():
            self._loop.close()

    def __enter__(self) -> EmbeddedInfo:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
