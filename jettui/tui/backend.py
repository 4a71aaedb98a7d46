"""The protocol worker: the one object that owns the commander's API connections.

Strategy: widgets never touch ``jettui.api``.  They start Textual ``@work`` async workers
that await the coroutines of :class:`Backend`, which run on the app's event loop (the
client is asyncio-native, so no thread is needed) and either return a result to the worker
or raise a :class:`~jettui.errors.JettuiError` that the worker shows.  What the servers push
(events, transfer progress) and connection state changes are posted to the app as messages
(:mod:`jettui.tui.messages`).

Connections are keyed by ``user@host:port`` (or ``token@host:port``), so two panes on the
same server share one connection, one subscription and one transfer list.  A monitor task
(:meth:`Backend.monitor`) notices dropped connections, reconnects them with back-off, keeps
idle ones alive, and refreshes the transfer lists the queue shows.

First contact with a server is a two-step affair: :meth:`Backend.handshake` opens TLS only
and reports whether the certificate is new; the connect screen shows the fingerprint and
only after the user trusts it does :meth:`Backend.login` pin it and send credentials (the
pin is checked before any application data is sent, as shared/notes §7 requires).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import posixpath
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from textual.message import Message

from jettui.api import AsyncAPIInterface, TrustStore
from jettui.constants import (
    LS_TYPE_DIRECTORY,
    LS_TYPE_SYMLINK,
    MANIFEST_STATUS_COMPLETE,
    OVERWRITE_ALWAYS,
)
from jettui.errors import CommandError, ConnectionLost, JettuiError, TimeoutError_
from jettui.tui.messages import ConnectionChanged, ServerEvent, TransfersListed, TransferUpdated
from jettui.tui.sites import Site

__all__ = ["Backend", "ConnState", "Connection", "ListingPage", "join_path", "parent_path"]

log = logging.getLogger("jettui.tui")

T = TypeVar("T")

#: Seconds between monitor passes (dropped-connection detection and queue refresh).
MONITOR_INTERVAL = 1.0
#: Seconds between transfer-list refreshes of a connection (notifications carry the rest).
TRANSFER_REFRESH = 2.0
#: Keep-alive period: the server closes authenticated connections silent for 300 s.
KEEPALIVE = 60.0
#: Entries on the first page of a progressive listing (lsAsync ``pageSize``): a few screens'
#: worth, statted by the server in a few milliseconds.
LS_FIRST_PAGE = 1000
#: Most entries fetched by one getRequestPage: under 1 MB, decoded in a few milliseconds,
#: so the UI never stalls on one big reply.
LS_PAGE_MAX = 10_000
#: Reconnect back-off, in seconds.
BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0)


@dataclass(frozen=True, slots=True)
class ListingPage:
    """One piece of a directory listing (:meth:`Backend.ls_pages`)."""

    entries: list[dict[str, Any]]
    at_root: bool
    """A root listing (lsRootsAsync): no ``..`` row."""
    done: bool
    """The last piece."""
    expected: int | None
    """How many entries the whole listing should have (an upper bound), if known."""


class ConnState(enum.Enum):
    IDLE = "idle"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    FAILED = "failed"
    CLOSED = "closed"


class _AskFirst(TrustStore):
    """Known-servers check that does not pin a new server by itself: the user decides."""

    def check(self, endpoint: str, fingerprint: str) -> bool:
        if self.get(endpoint) is None:
            return True
        return super().check(endpoint, fingerprint)


def site_key(site: Site) -> str:
    who = site.user or ("token" if site.token else "")
    return f"{who}@{site.endpoint}" if who else site.endpoint


def join_path(directory: str, name: str) -> str:
    """Path of ``name`` in ``directory``; in the root listing a name is a root."""
    if directory == "":
        return "/" if name == "/" else f"{name}:/"
    return directory.rstrip("/") + "/" + name if not directory.endswith(":/") else directory + name


def parent_path(path: str) -> str:
    """The parent of a virtual path; ``""`` (the root listing) above a root."""
    if path in ("", "/") or path.endswith(":/"):
        return ""
    head = path.rstrip("/").rsplit("/", 1)[0]
    if head == "":
        return "/"
    if head.endswith(":"):
        return head + "/"
    return head


def is_dir_entry(entry: dict[str, Any] | Any) -> bool:
    kind = entry.get("type")
    return isinstance(kind, int) and kind != LS_TYPE_SYMLINK and bool(kind & LS_TYPE_DIRECTORY)


class Connection:
    """One server connection: its site, its API object, and its state."""

    def __init__(self, key: str, site: Site, backend: Backend) -> None:
        self.key = key
        self.site = site
        self._backend = backend
        trust: TrustStore | bool = False if site.fingerprint else _AskFirst()
        self.api = AsyncAPIInterface(site.host, site.port, fingerprint=site.fingerprint, trust=trust)
        self.api.add_notification_handler(self._on_notification)
        self.state = ConnState.IDLE
        self.error = ""
        self.first_contact = False
        self.elevated = False
        """superuser() was called; repeated after a reconnect."""
        self.paged_ls: bool | None = None
        """The server lists in pages (lsAsync pageSize); None until asked."""
        self.transfers_supported: bool | None = None
        """None until getTransfers answered once; False while the server lacks it."""
        self._lock = asyncio.Lock()
        self._last_call = 0.0
        self._last_refresh = 0.0
        self._backoff = 0
        self._next_attempt = 0.0

    @property
    def fingerprint(self) -> str | None:
        return self.api.server_fingerprint

    def _set_state(self, state: ConnState, error: str = "") -> None:
        if state is self.state and error == self.error:
            return
        log.debug("%s: %s -> %s %s", self.key, self.state.value, state.value, error)
        self.state = state
        self.error = error
        self._backend.post(ConnectionChanged(self.key, state.value, error))

    def _on_notification(self, method: str, params: dict[str, Any]) -> None:
        if method == "events.event":
            self._backend.post(ServerEvent(self.key, params))
        elif method == "transfers.progress":
            self._backend.post(TransferUpdated(self.key, params))

    # -- connecting ------------------------------------------------------------------------

    async def handshake(self) -> bool:
        """Open TLS (no credentials sent); True if the server's certificate is not known yet."""
        self._set_state(ConnState.CONNECTING)
        try:
            await self.api.connect()
        except JettuiError as exc:
            self._set_state(ConnState.FAILED, str(exc))
            raise
        self.first_contact = self.api.first_contact
        return self.first_contact

    def trust(self) -> None:
        """Pin the certificate seen in :meth:`handshake` (the user accepted it)."""
        fingerprint = self.api.server_fingerprint
        if fingerprint and self.site.fingerprint is None:
            TrustStore().pin(self.site.endpoint, fingerprint)
        self.first_contact = False

    async def login(self) -> None:
        """Authenticate, subscribe to events and transfers, and restore superuser."""
        if self.first_contact:
            raise CommandError(f"the certificate of {self.site.endpoint} is not trusted yet")
        try:
            if not self.api.connected:
                await self.api.connect()
            server = self.api.server
            if self.site.token:
                await server.authToken(self.site.token, self.site.password or None)
            else:
                await server.auth(self.site.user, self.site.password)
            with contextlib.suppress(CommandError):
                # Older servers lack notifications; the queue's refresh still works then.
                await server.subscribe(["events", "transfers"])
            if self.elevated:
                await server.superuser()
        except JettuiError as exc:
            self._set_state(ConnState.FAILED, str(exc))
            with contextlib.suppress(Exception):
                await self.api.disconnect()
            raise
        self._backoff = 0
        self._last_call = asyncio.get_running_loop().time()
        self._set_state(ConnState.CONNECTED)

    async def open(self) -> None:
        """Handshake and login in one go, for sites whose certificate is pinned or known."""
        if await self.handshake():
            raise CommandError(f"{self.site.endpoint} is not a known server: confirm its fingerprint first")
        await self.login()

    async def close(self) -> None:
        self._set_state(ConnState.CLOSED)
        await self.api.disconnect()

    # -- calls -------------------------------------------------------------------------------

    async def call(self, func: Callable[[AsyncAPIInterface], Awaitable[T]]) -> T:
        """Run ``func(api)``; a dropped connection is reported and left to the monitor."""
        if self.state is not ConnState.CONNECTED or not self.api.connected:
            if self.state is ConnState.CONNECTED:
                self._lost("connection dropped")
            raise ConnectionLost(f"{self.site.label}: not connected ({self.state.value})")
        self._last_call = asyncio.get_running_loop().time()
        try:
            return await func(self.api)
        except TimeoutError_:
            raise
        except ConnectionLost as exc:
            self._lost(str(exc))
            raise

    async def request(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call a ``...Async`` ServerInterface method and wait for its result."""

        async def run(api: AsyncAPIInterface) -> Any:
            req = await getattr(api.server, method)(*args, **kwargs)
            return await api.server.getRequestResult(req)

        return await self.call(run)

    def _lost(self, reason: str) -> None:
        if self.state is ConnState.CONNECTED:
            self._next_attempt = 0.0
            self._set_state(ConnState.RECONNECTING, reason)

    async def _reconnect(self, now: float) -> None:
        if now < self._next_attempt:
            return
        try:
            async with self._lock:
                await self.api.connect()
                await self.login()
        except JettuiError as exc:
            delay = BACKOFF[min(self._backoff, len(BACKOFF) - 1)]
            self._backoff += 1
            self._next_attempt = now + delay
            # login() set FAILED; a drop is still a reconnect in progress.
            self._set_state(ConnState.RECONNECTING, f"{exc} — retrying in {delay:g} s")


class Backend:
    """All connections of the commander; methods are coroutines for Textual workers."""

    def __init__(self, post: Callable[[Message], Any]) -> None:
        self.post = post
        self.connections: dict[str, Connection] = {}

    # -- connections ---------------------------------------------------------------------------

    def add(self, site: Site) -> Connection:
        """The connection for ``site`` (made, not opened, if new)."""
        key = site_key(site)
        conn = self.connections.get(key)
        if conn is not None and conn.state in (ConnState.CONNECTED, ConnState.CONNECTING, ConnState.RECONNECTING):
            return conn
        # A failed or closed connection is replaced whole: new credentials, new client.
        conn = Connection(key, site, self)
        self.connections[key] = conn
        return conn

    def get(self, key: str) -> Connection:
        try:
            return self.connections[key]
        except KeyError:
            raise ConnectionLost(f"no connection {key!r}") from None

    async def close_all(self) -> None:
        for conn in list(self.connections.values()):
            with contextlib.suppress(Exception):
                await conn.close()

    async def monitor(self) -> None:
        """Reconnect dropped connections, keep idle ones alive, refresh transfer lists."""
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            for conn in list(self.connections.values()):
                try:
                    await self._tend(conn, now)
                except Exception:  # the monitor must outlive any one server's misbehaviour
                    log.exception("monitor: %s", conn.key)
            await asyncio.sleep(MONITOR_INTERVAL)

    async def _tend(self, conn: Connection, now: float) -> None:
        if conn.state is ConnState.CONNECTED and not conn.api.connected:
            conn._lost("the server closed the connection")
        if conn.state is ConnState.RECONNECTING:
            await conn._reconnect(now)
            return
        if conn.state is not ConnState.CONNECTED:
            return
        if now - conn._last_refresh >= (TRANSFER_REFRESH if conn.transfers_supported is not False else 15.0):
            conn._last_refresh = now
            await self.refresh_transfers(conn.key)
        elif now - conn._last_call >= KEEPALIVE:
            with contextlib.suppress(JettuiError):
                await conn.call(lambda api: api.server.echo("keepalive"))

    # -- files -----------------------------------------------------------------------------------

    async def ls(self, key: str, path: str) -> tuple[list[dict[str, Any]], bool]:
        """The entries of ``path`` (the roots for ``""``) and whether it is the root listing."""
        conn = self.get(key)
        if path == "":
            result = await conn.request("lsRootsAsync")
            return list(result.get("files", [])), True
        result = await conn.request("lsAsync", path)
        return list(result.get("files", [])), False

    async def ls_pages(self, key: str, path: str) -> AsyncIterator[ListingPage]:
        """The entries of ``path`` as they arrive: a first page at once, then the rest.

        On a jettui server this is lsAsync with ``pageSize`` and getRequestPage (a jettui
        extension): the first page, in name order with directories first, is out after
        the server has read the names and statted :data:`LS_FIRST_PAGE` entries.  Other
        servers, and the root listing, give one page with everything.
        """
        conn = self.get(key)
        if path == "" or conn.paged_ls is False:
            entries, at_root = await self.ls(key, path)
            yield ListingPage(entries, at_root, True, len(entries))
            return
        try:
            request = await conn.call(lambda api: api.server.lsAsync(path, pageSize=LS_FIRST_PAGE))
        except CommandError as exc:
            if "pageSize" not in exc.message:
                raise
            conn.paged_ls = False  # not a jettui server (or an old one): the seed way
            entries, at_root = await self.ls(key, path)
            yield ListingPage(entries, at_root, True, len(entries))
            return
        conn.paged_ls = True
        offset = 0
        while True:
            # Pages are read as the server publishes them, so decoding and merging here
            # overlap its stat calls (the embedded server runs in a process of its own; in
            # this one it took the GIL at every stat and waiting for the end was faster).
            # Full listing of 100,000 entries: 1.63 s waiting for the end, 1.29 s overlapped.
            page = await conn.call(lambda api, at=offset: api.server.getRequestPage(request, at, LS_PAGE_MAX, False))
            files = page.get("files") if isinstance(page, dict) else None
            if not isinstance(files, list) or (not files and not page.get("done")):
                raise CommandError(f"listing {path}: the server sent a malformed page")
            offset += len(files)
            expected = page.get("expected")
            done = bool(page.get("done"))
            yield ListingPage(files, False, done, expected if type(expected) is int else None)
            if done:
                return

    async def stat(self, key: str, path: str, hash_type: str | None = None) -> dict[str, Any]:
        """The entry of ``path`` itself (lsListAsync statOnly), with a hash when asked."""
        conn = self.get(key)
        result = await conn.request("lsListAsync", [path], True, hash_type)
        # lsListAsync answers one ls result per path, each {"path", "files": [entry]}.
        items = result if isinstance(result, list) else result.get("results", [])
        files = items[0].get("files", []) if items else []
        if not files:
            raise CommandError(f"{path}: no such file")
        return dict(files[0])

    async def du(self, key: str, path: str) -> int:
        result = await self.get(key).request("duAsync", path)
        return int(result.get("du", 0)) if isinstance(result, dict) else int(result or 0)

    async def mkdir(self, key: str, path: str) -> None:
        await self.get(key).request("mkdirAsync", path)

    async def mv(self, key: str, path: str, new_path: str) -> None:
        await self.get(key).request("mvAsync", path, new_path)

    async def rm(self, key: str, paths: list[str]) -> None:
        conn = self.get(key)
        for path in paths:
            await conn.request("rmAsync", path)

    # -- information -------------------------------------------------------------------------------

    async def server_info(self, key: str) -> dict[str, Any]:
        return dict(await self.get(key).call(lambda api: api.server.getServerInfo()))

    async def event_log(
        self, key: str, name: str | None = None, after: int | None = None, before: int | None = None, limit: int = 500
    ) -> list[dict[str, Any]]:
        result = await self.get(key).call(
            lambda api: api.server.getEventLog(eventName=name or None, before=before, after=after, limit=limit)
        )
        return list(result.get("eventLog", []))

    async def superuser(self, key: str) -> None:
        conn = self.get(key)
        await conn.call(lambda api: api.server.superuser())
        conn.elevated = True

    async def call(self, key: str, func: Callable[[AsyncAPIInterface], Awaitable[T]]) -> T:
        """Any other API call on one connection (the admin screen's)."""
        return await self.get(key).call(func)

    async def request(self, key: str, method: str, *args: Any, **kwargs: Any) -> Any:
        return await self.get(key).request(method, *args, **kwargs)

    # -- transfers -------------------------------------------------------------------------------------

    async def copy(
        self,
        src_key: str,
        dst_key: str,
        sources: list[str],
        dst_dir: str,
        *,
        overwrite: int = OVERWRITE_ALWAYS,
        cipher: int | None = None,
    ) -> dict[str, Any]:
        """Order a server-to-server transfer of ``sources`` into ``dst_dir``.

        The source server sends straight to the destination server's receiver: the
        commander only orders it (DESIGN.md: servers move the bytes between themselves).
        Returns the Transfer Structure.
        """
        src, dst = self.get(src_key), self.get(dst_key)
        info = await dst.call(lambda api: api.server.getServerInfo())
        receiver = info.get("receiver") or {}
        recv_port = receiver.get("receiverPort")
        if not isinstance(recv_port, int):
            raise CommandError(f"{dst.site.label} does not report a receiver port")
        site = dst.site
        mappings = {posixpath.basename(path.rstrip("/")) or path: path for path in sources}

        async def order(api: AsyncAPIInterface) -> dict[str, Any]:
            send = api.send
            destination = await send.createDestination(
                site.host,
                recv_port,
                userName=None if site.token else site.user,
                password=site.password or None,
                token=site.token or None,
                minCipher=cipher,
            )
            manifest = await send.createManifest(mappings)
            if manifest.get("status") != MANIFEST_STATUS_COMPLETE:
                manifest = await send.waitForManifest(manifest["manifestId"])
            if manifest.get("status") != MANIFEST_STATUS_COMPLETE:
                raise CommandError(f"manifest failed: {manifest.get('errorMessage') or manifest.get('status')}")
            return await send.createTransfer(
                destination["destinationId"],
                manifest["manifestId"],
                destinationPath=dst_dir,
                overwrite=overwrite,
                minCipher=cipher,
            )

        transfer = dict(await src.call(order))
        self.post(TransferUpdated(src_key, transfer))
        return transfer

    async def retry(self, key: str, transfer: dict[str, Any]) -> dict[str, Any]:
        """Order the same manifest to the same destination again (resumes from checkpoints)."""
        conn = self.get(key)
        result = await conn.call(
            lambda api: api.send.createTransfer(
                transfer["destinationId"], transfer["manifestId"], destinationPath=transfer.get("destinationPath")
            )
        )
        self.post(TransferUpdated(key, dict(result)))
        return dict(result)

    async def transfer_action(self, key: str, transfer_id: Any, action: str) -> dict[str, Any] | None:
        """``suspend``, ``resume``, ``cancel`` or ``delete`` one transfer."""
        methods = {
            "suspend": "suspendTransfer",
            "resume": "resumeTransfer",
            "cancel": "cancelTransfer",
            "delete": "deleteTransfer",
        }
        name = methods[action]
        result = await self.get(key).call(lambda api: getattr(api.send, name)(transfer_id))
        if isinstance(result, dict):
            self.post(TransferUpdated(key, dict(result)))
            return dict(result)
        return None

    async def refresh_transfers(self, key: str) -> list[dict[str, Any]] | None:
        """getTransfers on one connection, posted as :class:`TransfersListed`.

        A server without the transfer engine answers "unknown method": that is remembered
        (and retried now and then) rather than reported as an error every two seconds.
        """
        conn = self.get(key)
        try:
            transfers = await conn.call(lambda api: api.send.getTransfers())
        except CommandError as exc:
            if "unknown method" in str(exc).lower() or "not implemented" in str(exc).lower():
                if conn.transfers_supported is not False:
                    self.post(TransfersListed(key, [], supported=False))
                conn.transfers_supported = False
                return None
            raise
        conn.transfers_supported = True
        listed = [dict(t) for t in transfers if isinstance(t, dict)]
        self.post(TransfersListed(key, listed))
        return listed
