"""The server: owns the listener, the state, the keys and the request table."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import getpass
import hmac
import ipaddress
import logging
import os
import socket
import time
import uuid
from typing import Any

from jettui.constants import PERMISSIONS_ALL
from jettui.errors import AuthenticationError, CommandError
from jettui.server.auth import LoginThrottle, UserStore
from jettui.server.config import ServerConfig
from jettui.server.discovery import PACKET_TYPE as DISCOVERY_PACKET
from jettui.server.discovery import DiscoveryTable
from jettui.server.events import EventLog
from jettui.server.keys import ServerKeys, load_or_create_keys
from jettui.server.listener import ClientConnection
from jettui.server.requests import RequestTable
from jettui.server.sandboxes import SandboxStore
from jettui.server.session import Principal, Session
from jettui.server.state import StateStore
from jettui.server.tokens import TokenStore
from jettui.server.udp import UdpEndpoint
from jettui.server.wranglers import WranglerStore

log = logging.getLogger("jettui.server")


def now_us() -> int:
    """Timestamps of the API: microseconds since the epoch, UTC."""
    return time.time_ns() // 1000


#: Garbage collection defaults and allowed ranges (seed: updateGarbageCollectSettings).
GC_DEFAULTS = {"intervalSeconds": 3600, "timeLimitSeconds": 172800}
GC_RANGES = {"intervalSeconds": (60, 2147483647), "timeLimitSeconds": (0, 2147483647)}
BANDWIDTH_KEYS = (
    "incomingLimitActive",
    "incomingRateLimit",
    "incomingMaxConnections",
    "borrowOutgoing",
    "outgoingLimitActive",
    "outgoingRateLimit",
    "borrowIncoming",
)


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
        self.tokens = TokenStore(self.state, config.scrypt_log_n)
        self.sandboxes = SandboxStore(self.state, str(config.sandbox_dir) if config.sandbox_dir else None)
        self.wranglers = WranglerStore(self.state, self.users)
        self.events = EventLog(self.state, now_us, config.trigger_dir)
        self.events.add_listener(self._broadcast_event)
        self.discovery = DiscoveryTable()
        self.udp: UdpEndpoint | None = None
        from jettui.server.receiving import RecvManager
        from jettui.server.sending import SendManager
        from jettui.transfer import StaticKey

        self.static_key = StaticKey(self.keys.transfer_key)
        self.sending = SendManager(self, self.static_key)
        self.receiving = RecvManager(self, self.static_key)
        self.gc_hooks: list[Any] = [self.sending.garbage_collect]
        self._gc_task: asyncio.Task[None] | None = None
        self._gc_wakeup = asyncio.Event()
        self.connections: set[ClientConnection] = set()
        self._listener: asyncio.Server | None = None
        self._stopped = asyncio.Event()
        self._stopping = False
        self.api_port = config.api_port
        self.recv_port = config.recv_port

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        self._listener = await asyncio.get_running_loop().create_server(
            lambda: ClientConnection(self),
            self.config.api_host,
            self.config.api_port,
            ssl=self.keys.ssl_context(),
            ssl_handshake_timeout=self.config.handshake_timeout,
            backlog=1024,
        )
        self.api_port = self._listener.sockets[0].getsockname()[1]
        self.udp = UdpEndpoint(self.config.recv_host, self.config.recv_port)
        self.udp.register(DISCOVERY_PACKET, self.discovery.datagram)
        self.udp.start()
        self.recv_port = self.udp.port
        self.receiving.start(self.udp)
        self.sending.start()
        self._gc_task = asyncio.create_task(self._gc_loop(), name="jettui-gc")
        self.events.emit("serverStarted", serverId=self.server_id, trigger="launch", trigger_args=[str(self.api_port)])
        log.info("jettui server %s listening on %s:%d", self.server_name, self.config.api_host, self.api_port)

    def transfer_ended(self) -> None:
        """Run Python's cyclic GC now if no transfer is left either way.  The objects of a
        10,000-file transfer (entries, block ranges) filled most of generation 0's 200,000
        (cli.GC_THRESHOLDS), so the next transfer paid a ~35 ms collection on the sender
        in every second run (traced); collected while nothing runs, nobody waits for it."""
        if not self.sending.running and not self.receiving.active:
            asyncio.get_running_loop().call_soon(gc.collect, 1)

    async def stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        self.events.emit("serverStopping", serverId=self.server_id)
        if self._gc_task is not None:
            self._gc_task.cancel()
        if self._listener is not None:
            self._listener.close()
        if self.connections:
            await asyncio.gather(*(conn.aclose() for conn in list(self.connections)))
        await self.requests.cancel_all()
        await self.sending.stop()
        await self.receiving.stop()
        await self.events.wait_triggers()
        if self.udp is not None:
            self.udp.close()
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
            1 for c in self.connections if not c.session.authenticated and (peer is None or c.session.peer == peer)
        )

    def admit(self, conn: ClientConnection) -> str | None:
        """Register a new connection, or return the limit that refuses it."""
        cfg = self.config
        if self._stopping:
            return "server stopping"
        if len(self.connections) >= cfg.max_connections:
            return f"max_connections={cfg.max_connections}"
        if self._unauthenticated() >= cfg.max_unauthenticated:
            return f"max_unauthenticated={cfg.max_unauthenticated}"
        if self._unauthenticated(conn.session.peer) >= cfg.max_unauthenticated_per_address:
            return f"max_unauthenticated_per_address={cfg.max_unauthenticated_per_address}"
        self.connections.add(conn)
        return None

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
            self.events.emit("authFailed", owner=None, userName=user_name[:64], address=peer)
            raise AuthenticationError("authentication failed: wrong user name or password")
        self.throttle.succeeded(peer)
        principal.sandbox_roots = self.sandboxes.resolve(principal.user_name)
        principal.wrangler = self.wranglers.is_wrangler(principal.uid, principal.group)
        return principal

    def _check_password(self, user_name: str, password: str) -> Principal | None:
        cfg = self.config
        if cfg.embedded_user is not None and cfg.embedded_secret is not None and user_name == cfg.embedded_user:
            if hmac.compare_digest(password.encode(), cfg.embedded_secret.encode()):
                return Principal(user_name, uid=os.getuid(), superuser_eligible=True, permissions=PERMISSIONS_ALL)
            return None
        user = self.users.verify(user_name, password)
        if user is None:
            return None
        return Principal(user.name, user.uid, user.group, superuser_eligible=self.superuser_eligible(user.name))

    async def authenticate_token(
        self, peer: str, token: str, password: str | None, token_session: str | None
    ) -> Principal:
        delay = self.throttle.delay(peer, time.monotonic())
        if delay:
            await asyncio.sleep(delay)
        found = await asyncio.to_thread(self.tokens.verify, token, password, now_us())
        owner = self.users.get(found.owner) if found is not None else None
        if found is None or (owner is None and found.owner != self.config.embedded_user):
            self.throttle.failed(peer, time.monotonic())
            self.events.emit("authFailed", owner=None, token=token.split(".", 1)[0][:32], address=peer)
            raise AuthenticationError("authentication failed: unknown, expired or wrong API token or password")
        self.throttle.succeeded(peer)
        principal = Principal(
            found.owner,
            owner.uid if owner else os.getuid(),
            owner.group if owner else "",
            token=found.token_id,
            token_session=token_session or uuid.uuid4().hex,
            permissions=found.permissions,
        )
        roots = self.sandboxes.resolve(found.owner)
        if found.path is not None:
            roots = await asyncio.to_thread(self._confine, roots, found.path)
        principal.sandbox_roots = roots
        return principal

    @staticmethod
    def _confine(roots: dict[str, str] | None, path: str) -> dict[str, str]:
        """Roots of a token confined to ``path`` inside its owner's view."""
        from jettui.server.fsview import FileSystemView

        view = FileSystemView(roots)
        try:
            try:
                fd = view.open_dir_for_write(path, create=False)
            except CommandError as exc:
                # Its directory was removed or renamed since the token was made: say so,
                # rather than a bare "cannot open directory" on a login.
                raise CommandError(f"this API token is confined to {path}, which cannot be opened now ({exc.message})")
            try:
                real = os.readlink(f"/proc/self/fd/{fd}")
            finally:
                os.close(fd)
        finally:
            view.close()
        return {"": real}

    def on_authenticated(self, session: Session) -> None:
        p = session.principal
        assert p is not None
        self.events.emit("authSucceeded", owner=p.user_name, userName=p.user_name, token=p.token, address=session.peer)

    def sandbox_for(self, principal: Principal) -> dict[str, str] | None:
        """Sandbox roots of a session, resolved when it authenticated."""
        return principal.sandbox_roots

    # -- what getServerInfo reports (the administration and transfer code refine these) --------
    def locked_bandwidth(self) -> dict[str, Any]:
        """Limits given on the command line: reported, and refused to the API."""
        bw = self.config.bandwidth
        locked: dict[str, Any] = {}
        if bw.incoming_rate_limit is not None:
            locked.update(incomingLimitActive=True, incomingRateLimit=float(bw.incoming_rate_limit))
        if bw.outgoing_rate_limit is not None:
            locked.update(outgoingLimitActive=True, outgoingRateLimit=float(bw.outgoing_rate_limit))
        if bw.borrow_incoming is not None:
            locked["borrowIncoming"] = bool(bw.borrow_incoming)
        if bw.borrow_outgoing is not None:
            locked["borrowOutgoing"] = bool(bw.borrow_outgoing)
        return locked

    def bandwidth_limits(self) -> dict[str, Any]:
        limits: dict[str, Any] = {
            "borrowIncoming": False,
            "borrowOutgoing": False,
            "incomingLimitActive": False,
            "incomingMaxConnections": 0,
            "incomingRateLimit": 0.0,
            "outgoingLimitActive": False,
            "outgoingRateLimit": 0.0,
        }
        limits.update(self.state.get_setting("bandwidthLimits", {}))
        limits.update(self.locked_bandwidth())
        return limits

    def update_bandwidth(self, changes: dict[str, Any]) -> None:
        locked = self.locked_bandwidth()
        refused = sorted(k for k in changes if k in locked)
        if refused:
            raise CommandError(
                f"bandwidth limits {', '.join(refused)} were set on the server command line and are locked"
            )
        for key in ("incomingRateLimit", "outgoingRateLimit", "incomingMaxConnections"):
            if key in changes and changes[key] < 0:
                raise CommandError(f"{key} must not be negative (got {changes[key]})")
        stored = dict(self.state.get_setting("bandwidthLimits", {}))
        stored.update(changes)
        self.state.set_setting("bandwidthLimits", stored)

    def license_info(self) -> dict[str, Any]:
        # An open build: always valid, never expires.
        return {
            "valid": True,
            "expiry": None,
            "errorMessage": "",
            "key": self.state.get_setting("licenseKey"),
        }

    def gc_settings(self) -> dict[str, int]:
        return {**GC_DEFAULTS, **self.state.get_setting("garbageCollect", {})}

    def update_gc_settings(self, changes: dict[str, int]) -> dict[str, int]:
        for key, value in changes.items():
            low, high = GC_RANGES[key]
            if not low <= value <= high:
                raise CommandError(f"{key} must be between {low} and {high} (got {value})")
        settings = {**self.gc_settings(), **changes}
        self.state.set_setting("garbageCollect", settings)
        self._gc_wakeup.set()
        return settings

    def garbage_collect(self, force: bool = False) -> dict[str, int]:
        limit = 0 if force else self.gc_settings()["timeLimitSeconds"]
        counts = {
            "requests": self.requests.expire(force=force, time_limit=min(limit, self.requests.ttl)),
            "tokens": self.tokens.expire(now_us(), grace_us=limit * 1_000_000),
            "events": self.events.trim(),
        }
        for hook in self.gc_hooks:
            counts.update(hook(force, limit))
        return counts

    async def _gc_loop(self) -> None:
        while True:
            self._gc_wakeup.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.gc_settings()["intervalSeconds"]):
                    await self._gc_wakeup.wait()
                    continue
            try:
                self.garbage_collect()
            except Exception:
                log.exception("garbage collection failed")

    # -- notifications ------------------------------------------------------------------------
    def _broadcast_event(self, event: dict[str, Any], owner: str | None) -> None:
        for conn in list(self.connections):
            session = conn.session
            p = session.principal
            if "events" in session.subscriptions and p is not None and (p.superuser or p.user_name == owner):
                session.notify and session.notify("events.event", event)

    @property
    def min_cipher(self) -> int:
        return self.config.min_cipher

    @property
    def only_authorized_clients(self) -> bool:
        return self.receiving.only_authorized

    @property
    def external_address(self) -> str | None:
        return self.state.get_setting("externalAddress") or self.config.external_address

    @property
    def socket_buffer_sizes(self) -> tuple[int, int]:
        return self.udp.buffer_sizes if self.udp is not None else (0, 0)

    @property
    def api_tokens_available(self) -> bool:
        return True

    @property
    def event_log_available(self) -> bool:
        return True
