"""Shared test helpers: real servers on loopback, run in a thread so sync scripts can call them."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from jettui.api import APIInterface, JetStream
from jettui.loop import new_event_loop
from jettui.server import Server, ServerConfig

#: Cheap scrypt for test users (the format records the cost; production uses 2^17).
TEST_LOG_N = 10


@dataclass
class ServerThread:
    """A real jettui server on its own event loop thread."""

    config: ServerConfig
    server: Server | None = None
    loop: asyncio.AbstractEventLoop = field(default_factory=new_event_loop)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def start(self) -> ServerThread:
        self._thread.start()

        async def start() -> Server:
            server = Server(self.config)
            await server.start()
            return server

        self.server = self.run(start())
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.run(self.server.stop())
            self.server = None
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.api_port

    def add_user(self, name: str, password: str, group: str = "") -> None:
        assert self.server is not None
        self.server.users.add(name, password, group, log_n=TEST_LOG_N)

    def api(self, **kwargs: Any) -> APIInterface:
        """A sync API object pinned to this server (not connected)."""
        assert self.server is not None
        kwargs.setdefault("fingerprint", self.server.fingerprint)
        return JetStream().api("127.0.0.1", self.port, **kwargs)


def free_port() -> int:
    """A TCP port free on loopback right now (for servers started as separate processes)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_config(**overrides: Any) -> ServerConfig:
    overrides.setdefault("api_port", 0)
    overrides.setdefault("recv_port", 0)
    overrides.setdefault("recv_host", "127.0.0.1")
    return ServerConfig(**overrides)


@contextmanager
def running_server(**overrides: Any) -> Iterator[ServerThread]:
    st = ServerThread(make_config(**overrides)).start()
    try:
        yield st
    finally:
        st.stop()
