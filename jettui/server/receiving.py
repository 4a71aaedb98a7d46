"""The receiving side of a server (RecvInterface): sessions opened by other servers' HELLOs.

A HELLO for an unknown session opens a :class:`~jettui.transfer.Receiver` unless the
incoming connection limit is reached; the handshake itself enforces the cipher minimum
and, when only authorized clients are allowed, the allowlist of sender keys.  The
transfer request must then authenticate like an API login (user name and password, or an
API token with the WRITE permission): files land under that user's sandbox, through a
:class:`~jettui.transfer.writer.FileWriter` on the user's :class:`FileSystemView`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import hmac
import json
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jettui.constants import (
    CIPHER_NAMES,
    RECV_STATUS_COMPLETE,
    RECV_STATUS_ERROR,
    RECV_STATUS_RECEIVING,
    Permissions,
)
from jettui.errors import CommandError, JettuiError
from jettui.server.core import now_us
from jettui.server.fsview import FileSystemView
from jettui.transfer import (
    FileReceived,
    HandshakeCompleted,
    Receiver,
    StaticKey,
    TransferCompleted,
    TransferConfig,
    TransferFailed,
    TransferRequested,
)
from jettui.transfer.driver import Address, DriverSession, TransferEndpoint
from jettui.transfer.ranges import RangeSet
from jettui.transfer.receiver import EarlyDataBudget
from jettui.transfer.writer import FileWriter

if TYPE_CHECKING:
    from jettui.server.core import Server
    from jettui.server.session import Principal
    from jettui.server.udp import UdpEndpoint

log = logging.getLogger("jettui.server.receiving")

#: How often the checkpoint loop looks for receptions due (each has its own frequency).
CHECKPOINT_TICK = 0.25
DEFAULT_CHECKPOINT_SECONDS = 5.0
#: Most files verified and installed by one finish_files call: each holds its directory's
#: descriptor until the batch's renames, and a queue of 40,000 small files in one batch ran
#: the receiver out of descriptors (EMFILE) before this bound.
FINISH_BATCH = 512
#: How long a sender's verified user name and password are trusted without scrypt again.
#: scrypt (N=2^17) costs ~1 s of CPU, measured, and every transfer request carries the
#: destination's credentials: without this the receiver spent more time checking the
#: password than moving a 256 MiB file.  The entry is bound to the user's row (password
#: hash, uid, group), so a changed password or a deleted user is checked again at once.
CREDENTIAL_TTL = 600.0
#: Data all sessions together may hold before their transfers are accepted (see
#: TransferConfig.early_data_limit): senders not yet authenticated cannot make it more.
EARLY_DATA_BUDGET = 64 << 20
#: Receptions remembered after they end (the seed: the receiver forgets them after a while).
KEEP_ENDED = 1000


class DeferredSink:
    """The receiver's sink until the request is accepted and the writer exists."""

    def __init__(self) -> None:
        self.target: FileWriter | None = None

    def write(self, file_index: int, offset: int, data: memoryview) -> None:
        if self.target is None:
            raise CommandError("data before the transfer was accepted")
        self.target.write(file_index, offset, data)


@dataclass
class Reception:
    key: str
    source: Address
    started: float = field(default_factory=time.monotonic)
    sink: DeferredSink = field(default_factory=DeferredSink)
    writer: FileWriter | None = None
    fs: FileSystemView | None = None
    record: dict[str, Any] = field(default_factory=dict)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    checkpoint_every: float | None = DEFAULT_CHECKPOINT_SECONDS
    last_checkpoint: float = field(default_factory=time.monotonic)
    finish_queue: deque[tuple[int, bytes]] = field(default_factory=deque)
    """Received files (index, expected digest) waiting for verification; one thread at a
    time finishes them in batches (RecvManager._finish_worker)."""
    finish_lock: threading.Lock = field(default_factory=threading.Lock)
    finishing: bool = False
    """A finishing thread runs (it clears this, under finish_lock, when it finds no work)."""


class RecvManager:
    def __init__(self, server: Server, static_key: StaticKey) -> None:
        self.server = server
        self.static_key = static_key
        self.endpoint: TransferEndpoint | None = None
        self.active: dict[int, DriverSession] = {}
        self.records: dict[str, dict[str, Any]] = {}
        self.refused_connections = 0
        self._cred_key = os.urandom(32)
        self._creds: dict[tuple[str, str], tuple[bytes, float, Principal]] = {}
        self._checkpointer: asyncio.Task[None] | None = None
        self.early_budget = EarlyDataBudget(EARLY_DATA_BUDGET)
        for row in server.state.query("SELECT reception_key, data FROM receptions ORDER BY updated_us"):
            record = json.loads(row["data"])
            if record["status"] == RECV_STATUS_RECEIVING:
                record["status"] = RECV_STATUS_ERROR
                record["lastErrorTime"] = now_us()
            self.records[row["reception_key"]] = record

    # -- settings -------------------------------------------------------------------------------------
    @property
    def only_authorized(self) -> bool:
        return bool(self.server.state.get_setting("onlyAuthorizedClients", False))

    def set_only_authorized(self, value: bool) -> None:
        self.server.state.set_setting("onlyAuthorizedClients", bool(value))

    def authorized_keys(self) -> list[str]:
        return [r["public_key"] for r in self.server.state.query("SELECT public_key FROM authorized_clients")]

    def add_authorized(self, key: str) -> None:
        self.server.state.execute("INSERT OR IGNORE INTO authorized_clients(public_key) VALUES(?)", (key,))

    def remove_authorized(self, key: str) -> None:
        if self.server.state.execute("DELETE FROM authorized_clients WHERE public_key = ?", (key,)) == 0:
            raise CommandError(f"public key {key[:16]}... is not an authorized client")

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self, udp: UdpEndpoint) -> None:
        self.endpoint = TransferEndpoint(udp, self.static_key.public_bytes, self.server.server_uid, self.on_hello)
        self._checkpointer = asyncio.create_task(self._checkpoint_loop(), name="jettui-recv-checkpoints")

    async def stop(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.cancel()
        for session in list(self.active.values()):
            reception: Reception = session.context
            for task in reception.tasks:
                task.cancel()
            if reception.writer is not None:
                with contextlib.suppress(Exception):
                    reception.writer.checkpoint()
                    reception.writer.abort()
            session.close()
        if self.endpoint is not None:
            self.endpoint.close_all()

    def active_count(self) -> int:
        return len(self.active)

    # -- sessions ---------------------------------------------------------------------------------------------
    def on_hello(self, session_id: int, addr: Address) -> DriverSession | None:
        assert self.endpoint is not None
        limits = self.server.bandwidth_limits()
        cap = int(limits.get("incomingMaxConnections") or 0)
        if cap and len(self.active) >= cap:
            self.refused_connections += 1
            return None
        authorized = None
        if self.only_authorized:
            authorized = {bytes.fromhex(k) for k in self.authorized_keys()}
        config = TransferConfig(min_cipher=self.server.min_cipher)
        reception = Reception(key="", source=addr)
        receiver = Receiver(
            config,
            reception.sink,
            static_key=self.static_key,
            authorized_keys=authorized,
            session_id=session_id,
            peer_addr=addr,
            early_budget=self.early_budget,
        )
        session = self.endpoint.add(receiver, self._on_event, self._on_finished, reception)
        self.active[session_id] = session
        return session

    def _spawn(self, session: DriverSession, coro: Any) -> None:
        reception: Reception = session.context
        task = asyncio.create_task(coro)
        reception.tasks.add(task)
        task.add_done_callback(reception.tasks.discard)

    def _on_event(self, session: DriverSession, event: object) -> None:
        reception: Reception = session.context
        record = reception.record
        if isinstance(event, HandshakeCompleted):
            reception.record.update(cipher=CIPHER_NAMES.get(event.cipher), sourcePublicKey=event.peer_public_key.hex())
        elif isinstance(event, TransferRequested):
            self._spawn(session, self._accept(session, event))
        elif isinstance(event, FileReceived):
            # Queued for the finishing thread, started unless one runs (see _finish_worker).
            with reception.finish_lock:
                reception.finish_queue.append((event.file_index, event.digest))
                start, reception.finishing = not reception.finishing, True
            if start:
                loop = asyncio.get_running_loop()
                try:
                    loop.run_in_executor(None, self._finish_worker, session, loop)
                except RuntimeError:  # the executor is shut down: the server is stopping
                    self._finishing_stopped(reception)
        elif isinstance(event, TransferCompleted):
            self._end(session, RECV_STATUS_ERROR if event.failed else RECV_STATUS_COMPLETE, "")
        elif isinstance(event, TransferFailed):
            if record:
                record["lastErrorTime"] = now_us()
                record["errorMessage"] = event.message
            self._end(session, RECV_STATUS_ERROR, event.message)

    async def _accept(self, session: DriverSession, event: TransferRequested) -> None:
        reception: Reception = session.context
        receiver: Receiver = session.machine  # type: ignore[assignment]
        params = dict(event.params)
        peer = reception.source[0]
        sender_id = receiver.peer_public_key.hex()[:16] if receiver.peer_public_key else peer
        reception.key = f"{sender_id}:{event.transfer_id}"
        record = self.records.get(reception.key) or {}
        record.update(
            transferId=params.get("transferId", event.transfer_id),
            destinationPath=params.get("destinationPath"),
            sourceIP=peer,
            sourcePort=reception.source[1],
            status=RECV_STATUS_RECEIVING,
            totalSize=sum(f.size for f in event.files),
            totalFiles=len(event.files),
            lastErrorTime=record.get("lastErrorTime"),
            lastRecvTime=now_us(),
            lastSendTime=now_us(),
            errorMessage="",
            userName=None,
        )
        record.update(reception.record)
        reception.record = self.records[reception.key] = record
        self._retire_older(session, reception.key)
        every = params.get("checkpointFrequencySeconds", DEFAULT_CHECKPOINT_SECONDS)
        reception.checkpoint_every = float(every) if isinstance(every, int | float) and every > 0 else None
        try:
            principal = await self._authenticate(peer, params)
            record["userName"] = principal.user_name
            roots = self.server.sandbox_for(principal)
            fs = reception.fs = FileSystemView(roots)

            def open_writer() -> tuple[FileWriter, dict[int, RangeSet], dict[int, str]]:
                # In a worker, like plan(): for 40,000 entries the constructor alone held
                # the loop ~0.2 s while the sender's early data was arriving.
                writer = FileWriter(
                    fs,
                    params.get("destinationPath"),
                    list(event.files),
                    int(params.get("overwrite", 4)),
                    int(params.get("transferFlags", 3)),
                    block_size=event.block_size,
                    # The same for every session of this transfer: a resume adopts its stages.
                    stage_tag=hashlib.sha256(reception.key.encode("utf-8", "surrogatepass")).hexdigest()[:12],
                )
                try:
                    return writer, *writer.plan()
                except BaseException:
                    writer.close()
                    raise

            writer, present, skip = await asyncio.to_thread(open_writer)
        except JettuiError as exc:
            self._reject(session, exc.message)
            return
        except (OSError, ValueError) as exc:
            self._reject(session, f"receiver cannot accept the transfer: {exc}")
            return
        reception.writer = writer
        reception.sink.target = writer
        if session.closed or receiver.is_finished:
            writer.abort()
            return
        receiver.accept(present, skip)
        self.server.events.emit("recvTransferStarted", owner=principal.user_name, transferId=record["transferId"],
                                sourceIP=peer, trigger="recv.transferStarted")  # fmt: skip
        self._save(reception)
        session.pump()

    def _retire_older(self, session: DriverSession, key: str) -> None:
        """A resumed transfer supersedes the stale session of the same transfer (its sender
        restarted): that one must stop writing and must not checkpoint over the new one."""
        for other in list(self.active.values()):
            older: Reception = other.context
            if other is session or older.key != key:
                continue
            if older.writer is not None:
                older.writer.abort()
                older.writer = None
                older.sink.target = None
            older.record = {}
            if not other.machine.is_finished:
                other.machine.abort("superseded by a new session of the same transfer")
                other.pump()

    def _reject(self, session: DriverSession, message: str) -> None:
        receiver: Receiver = session.machine  # type: ignore[assignment]
        if not session.closed and not receiver.is_finished:
            receiver.reject(message)
            session.pump()

    async def _authenticate(self, peer: str, params: dict[str, Any]) -> Any:
        token, user, password = params.get("token"), params.get("userName"), params.get("password")
        if token:
            principal = await self.server.authenticate_token(peer, str(token), password, None)
            if not principal.permissions & Permissions.WRITE:
                raise CommandError("the destination's API token lacks the WRITE permission")
            return principal
        if user:
            return await self._authenticate_password(peer, str(user), str(password or ""))
        raise CommandError(
            "the receiver requires authentication: give userName and password, or a token, in createDestination"
        )

    def _credential_tag(self, user: str, password: str) -> bytes | None:
        rows = self.server.state.query("SELECT uid, grp, password_hash FROM users WHERE name = ?", (user,))
        if not rows:
            return None  # not a stored user (the embedded one is cheap to check anyway)
        row = rows[0]
        material = "\0".join((user, str(row["uid"]), str(row["grp"]), str(row["password_hash"]), password))
        return hmac.new(self._cred_key, material.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()

    async def _authenticate_password(self, peer: str, user: str, password: str) -> Principal:
        """``server.authenticate_password`` with a cache of recent successes (CREDENTIAL_TTL)."""
        key = (peer, user)
        tag = self._credential_tag(user, password)
        hit = self._creds.get(key)
        if tag is not None and hit is not None and hit[1] > time.monotonic() and hmac.compare_digest(hit[0], tag):
            cached = hit[2]
            # Sandboxes and wranglers may have changed since: resolve them again, as a login does.
            return dataclasses.replace(
                cached,
                sandbox_roots=self.server.sandboxes.resolve(cached.user_name),
                wrangler=self.server.wranglers.is_wrangler(cached.uid, cached.group),
            )
        principal = await self.server.authenticate_password(peer, user, password)
        if tag is not None:
            if len(self._creds) >= KEEP_ENDED:
                self._creds.clear()  # bounded; worst case a few more scrypt runs
            self._creds[key] = (tag, time.monotonic() + CREDENTIAL_TTL, dataclasses.replace(principal))
        return principal

    def _finish_worker(self, session: DriverSession, loop: asyncio.AbstractEventLoop) -> None:
        """Verify and install received files in batches until none is waiting (a worker thread).

        The thread takes the next batch itself as soon as one is done and hands the verdicts
        to the loop, rather than a loop task handing each batch to a thread: the loop is
        busiest exactly then (the accept's replay of held data, the last arrivals), and
        traced with 10,000 small files the second batch waited 47 ms for it and every other
        batch 1-3 ms, a quarter of the finishing time.  Whatever arrives while a batch is
        being verified and synced goes into the next one (one syncfs and one fsync per
        directory per batch, not per file).
        """
        reception: Reception = session.context
        queue = reception.finish_queue
        while True:
            with reception.finish_lock:
                writer = reception.writer
                if not queue or writer is None or session.closed:
                    reception.finishing = False
                    return
                items = [queue.popleft() for _ in range(min(len(queue), FINISH_BATCH))]
            batch = [index for index, _ in items]
            try:
                results = writer.finish_files(batch, [digest for _, digest in items])
            except (OSError, JettuiError) as exc:
                results = [(False, str(exc))] * len(batch)
            except Exception as exc:  # a bug: the files fail, the thread goes on
                log.exception("finishing received files failed")
                results = [(False, f"internal error while finishing: {exc!r}")] * len(batch)
            try:
                loop.call_soon_threadsafe(self._verified, session, batch, results)
            except RuntimeError:  # the loop is closed: the server stopped
                self._finishing_stopped(reception)
                return

    @staticmethod
    def _finishing_stopped(reception: Reception) -> None:
        with reception.finish_lock:
            reception.finishing = False

    def _verified(self, session: DriverSession, batch: list[int], results: list[tuple[bool, str]]) -> None:
        """The verdicts of one batch of _finish_worker, on the loop."""
        receiver: Receiver = session.machine  # type: ignore[assignment]
        if session.closed or receiver.is_finished:
            return
        for index, (ok, message) in zip(batch, results, strict=True):
            receiver.file_verified(index, ok, message)
        session.context.record["lastRecvTime"] = now_us()
        session.pump()

    def _end(self, session: DriverSession, status: str, message: str) -> None:
        reception: Reception = session.context
        if reception.writer is not None:
            with contextlib.suppress(Exception):
                if status == RECV_STATUS_COMPLETE:
                    reception.writer.close()
                else:
                    reception.writer.checkpoint()
                    reception.writer.abort()
            # The finishing thread stops after its batch: nothing more is installed once the
            # transfer has failed (its verdicts would reach nobody, and a resume would find
            # files it never heard of).
            with reception.finish_lock:
                reception.writer = None
                reception.finish_queue.clear()
        if reception.record:
            reception.record["status"] = status
            if message:
                reception.record["errorMessage"] = message
            self._save(reception)
            if status == RECV_STATUS_COMPLETE:
                record = reception.record
                self.server.events.emit(
                    "recvTransferComplete",
                    owner=record.get("userName"),
                    trigger="recv.transferComplete",
                    trigger_args=[str(record.get("transferId")), str(record.get("destinationPath"))],
                    transferId=record.get("transferId"),
                    sourceIP=reception.source[0],
                )

    def _on_finished(self, session: DriverSession) -> None:
        reception: Reception = session.context
        self.active.pop(session.session_id, None)
        if reception.record.get("status") == RECV_STATUS_RECEIVING:
            self._end(session, RECV_STATUS_ERROR, "session ended")
        if reception.fs is not None:
            reception.fs.close()
            reception.fs = None
        if len(self.records) > KEEP_ENDED:
            for key in list(self.records)[: len(self.records) - KEEP_ENDED]:
                if self.records[key]["status"] != RECV_STATUS_RECEIVING:
                    del self.records[key]
        self.server.transfer_ended()

    def _save(self, reception: Reception) -> None:
        if not reception.key:
            return
        data = {k: v for k, v in reception.record.items()}
        self.server.state.execute(
            "INSERT OR REPLACE INTO receptions(reception_key, updated_us, data) VALUES(?, ?, ?)",
            (reception.key, now_us(), json.dumps(data)),
        )

    async def _checkpoint_loop(self) -> None:
        while True:
            await asyncio.sleep(CHECKPOINT_TICK)
            now = time.monotonic()
            for session in list(self.active.values()):
                reception: Reception = session.context
                every = reception.checkpoint_every
                if reception.writer is None or session.closed or every is None:
                    continue
                if now - reception.last_checkpoint < every:
                    continue
                reception.last_checkpoint = now
                try:
                    # fsync can take a while: keep the loop (and every other transfer) moving.
                    await asyncio.to_thread(reception.writer.checkpoint)
                except (OSError, JettuiError) as exc:
                    log.warning("checkpoint of %s failed: %s", reception.key, exc)
                reception.record["lastRecvTime"] = now_us()

    # -- structures ---------------------------------------------------------------------------------------------
    def transfers(self) -> list[dict[str, Any]]:
        out = []
        for record in self.records.values():
            out.append({k: record.get(k) for k in (
                "destinationPath", "lastErrorTime", "lastRecvTime", "lastSendTime", "sourceIP", "sourcePort",
                "status", "totalSize", "transferId", "errorMessage", "cipher", "totalFiles", "userName",
            )})  # fmt: skip
        for session in self.active.values():
            reception: Reception = session.context
            if reception.record:
                snap = session.machine.snapshot()
                for item in out:
                    if item["transferId"] == reception.record.get("transferId") and item["status"] == "receiving":
                        item.update(bytesRecv=snap.get("bytesRecv"), roundTripTimeMs=snap.get("roundTripTimeMs"))
        return out

    def sources(self) -> list[dict[str, Any]]:
        by_source: dict[tuple[str, int], dict[str, Any]] = {}
        for record in self.records.values():
            key = (record["sourceIP"], record["sourcePort"])
            src = by_source.setdefault(key, {
                "sourceIP": key[0], "sourcePort": key[1], "activeTransferCount": 0, "completeTransferCount": 0,
                "errorTransferCount": 0, "inactiveTransferCount": 0, "aveRecvRate": 0.0, "aveRecvRateWindow": 0.0,
                "destinationPublicKey": record.get("sourcePublicKey"), "encryptionEnabled": True,
                "encryptedConnectionState": "disconnected",
            })  # fmt: skip
            status = record["status"]
            if status == RECV_STATUS_RECEIVING:
                src["activeTransferCount"] += 1
                src["encryptedConnectionState"] = "connected"
            elif status == RECV_STATUS_COMPLETE:
                src["completeTransferCount"] += 1
                src["inactiveTransferCount"] += 1
            else:
                src["errorTransferCount"] += 1
                src["inactiveTransferCount"] += 1
        for session in self.active.values():
            reception: Reception = session.context
            src = by_source.get(reception.source)
            if src is not None:
                elapsed = max(time.monotonic() - reception.started, 1e-3)
                rate = session.machine.stats.bytes_recv * 8 / 1000 / elapsed
                src["aveRecvRate"] += rate
                src["aveRecvRateWindow"] += rate
        return list(by_source.values())
