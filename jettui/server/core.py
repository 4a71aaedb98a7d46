"""The server: owns the listener, the state, the keys and the request table."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import hmac
import ipaddress
import logging
import os
import socket
import time
import uuid
from typing import Any

from jettui.errors import AuthenticationError, CommandError
from jettui.server.auth import LoginThrottle, UserStore
from jettui.server.config import ServerConfig
from jettui.server.keys import ServerKeys, load_or_create_keys
from jettui.server.listener import ClientConnection
from jettui.server.requests import RequestTable
from jettui.server.session import Principal, Session
from jettui.server.state import StateStore

log = logging.getLogger("jettui.server")


def now_us() -> int:
    """Timestamps of the API: microseconds since the epoch, UTC."""
    return time.time_ns() // 1000


def _is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Server:
    """A jettui server.  Use ``async with Server(config) as server:`` or start()/stop()."""

    def __init__(self, config: ServerConfig) -> None:
        if not _is_loopback(config.api_host) and not config.api_allow_remote_control:
            raise CommandError(
                f"--api-host {config.api_host} is not a loopback address: "
                "add --api-allow-remote-control to accept remote API connections"
            )
        self.config = config
        self.state = StateStore(config.persistent_state_dir)
        self.users = UserStore(self.state)
        self.keys: ServerKeys = load_or_create_keys(config.persistent_state_dir)
        self.requests = RequestTable(time.monotonic)
        self.throttle = LoginThrottle()
        self.server_id = uuid.uuid4().hex
        self.server_uid: str = self.state.get_setting("serverUid") or uuid.uuid4().hex
        self.state.set_setting("serverUid", self.server_uid)
        self.server_name = config.server_name or socket.gethostname()
        self.start_user = getpass.getuser()
        self.connections: set[ClientConnection] = set()
        self._listener: asyncio.Server | None = None
        self._conn_tasks: set[asyncio.Task[None]] = set()
        self._stopped = asyncio.Event()
        self.api_port = config.api_port
        self.recv_port = config.recv_port

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        self._listener = await asyncio.start_server(
            self._accept,
            self.config.api_host,
            self.config.api_port,
            ssl=self.keys.ssl_context(),
            ssl_handshake_timeout=self.config.handshake_timeout,
            backlog=1024,
            limit=1024 * 1024,
        )
        self.api_port = self._listener.sockets[0].getsockname()[1]
        log.info("jettui server %s listening on %s:%d", self.server_name, self.config.api_host, self.api_port)

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
        for conn in list(self.connections):
            await conn.close()
        for task in list(self._conn_tasks):
            task.cancel()
        if self._conn_tasks:
            await asyncio.gather(*self._conn_tasks, return_exceptions=True)
        await self.requests.cancel_all()
        if self._listener is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self._listener.wait_closed()
        self.state.close()
        self._stopped.set()

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def request_stop(self) -> None:
        """Ask serve_forever() to return (terminate(), SIGTERM)."""
        self._stopped.set()

    async def serve_forever(self) -> None:
        await self._stopped.wait()

    @property
    def fingerprint(self) -> str:
        return self.keys.fingerprint

    # -- connections ---------------------------------------------------------------------
    def _unauthenticated(self, peer: str | None = None) -> int:
        return sum(
            1
            for c in self.connections
            if not c.session.authenticated and (peer is None or c.session.peer == peer)
        )

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = ClientConnection(self, reader, writer)
        cfg = self.config
        refuse = None
        if len(self.connections) >= cfg.max_connections:
            refuse = f"max_connections={cfg.max_connections}"
        elif self._unauthenticated() >= cfg.max_unauthenticated:
            refuse = f"max_unauthenticated={cfg.max_unauthenticated}"
        elif self._unauthenticated(conn.session.peer) >= cfg.max_unauthenticated_per_address:
            refuse = f"max_unauthenticated_per_address={cfg.max_unauthenticated_per_address}"
        if refuse is not None:
            log.warning("refusing connection from %s: %s reached", conn.session.peer, refuse)
            writer.close()
            return
        self.connections.add(conn)
        task = asyncio.current_task()
        if task is not None:
            self._conn_tasks.add(task)
        try:
            await conn.run()
        finally:
            self.connections.discard(conn)
            if task is not None:
                self._conn_tasks.discard(task)

    # -- authentication --------------------------------------------------------------------
    def superuser_eligible(self, user_name: str) -> bool:
        return (
            user_name in self.config.superusers
            or user_name == self.config.embedded_user
            or user_name == self.start_user
        )

    async def authenticate_password(self, peer: str, user_name: str, password: str) -> Principal:
        delay = self.throttle.delay(peer, time.monotonic())
        if delay:
            await asyncio.sleep(delay)
        principal = await asyncio.to_thread(self._check_password, user_name, password)
        if principal is None:
            self.throttle.failed(peer, time.monotonic())
            raise CommandError("authentication failed: wrong user name or password")
        self.throttle.succeeded(peer)
        return principal

    def _check_password(self, user_name: str, password: str) -> Principal | None:
        cfg = self.config
        if (
            cfg.embedded_user is not None
            and cfg.embedded_secret is not None
            and user_name == cfg.embedded_user
        ):
            if hmac.compare_digest(password.encode(), cfg.embedded_secret.encode()):
                return Principal(user_name, uid=os.getuid(), superuser_eligible=True)
            return None
        user = self.users.verify(user_name, password)
        if user is None:
            return None
        return Principal(
            user.name, user.uid, user.group, superuser_eligible=self.superuser_eligible(user.name)
        )

    async def authenticate_token(
        self, peer: str, token: str, password: str | None, token_session: str | None
    ) -> Principal:
        raise AuthenticationError("this server does not accept API tokens")

    def on_authenticated(self, session: Session) -> None:
        """Hook for what follows a successful login (events, sandboxes)."""

    def sandbox_for(self, principal: Principal) -> dict[str, str] | None:
        """Sandbox roots of a new session (the administration issue adds mappings)."""
        return principal.sandbox_roots

    # -- what getServerInfo reports (the administration and transfer code refine these) --------
    def bandwidth_limits(self) -> dict[str, Any]:
        bw = self.config.bandwidth
        return {
            "borrowIncoming": bool(bw.borrow_incoming),
            "borrowOutgoing": bool(bw.borrow_outgoing),
            "incomingLimitActive": bw.incoming_rate_limit is not None,
            "incomingMaxConnections": 0,
            "incomingRateLimit": bw.incoming_rate_limit or 0.0,
            "outgoingLimitActive": bw.outgoing_rate_limit is not None,
            "outgoingRateLimit": bw.outgoing_rate_limit or 0.0,
        }

    def license_info(self) -> dict[str, Any]:
        # An open build: always valid, never expires.
        return {"valid": True, "expiry": None, "errorMessage": ""}

    def gc_settings(self) -> dict[str, int]:
        return {"intervalSeconds": 3600, "timeLimitSeconds": 172800}

    @property
    def min_cipher(self) -> int:
        return self.config.min_cipher

    @property
    def only_authorized_clients(self) -> bool:
        return False

    @property
    def external_address(self) -> str | None:
        return self.config.external_address

    @property
    def socket_buffer_sizes(self) -> tuple[int, int]:
        return (0, 0)

    @property
    def api_tokens_available(self) -> bool:
        return False

    @property
    def event_log_available(self) -> bool:
        return False
