"""The sending side of a server: destinations, manifests and transfers (SendInterface).

Strategy
--------
* Records are plain dicts shaped like the seed's structures and persisted as JSON in
  SQLite (``destinations``, ``manifests``, ``transfers``); a transfer's resume checkpoint
  (acknowledged block ranges) is saved beside it every ``checkpointFrequencySeconds``.
* Transfers wait in a priority queue (lower number first, then age) and at most
  ``max_active`` run at once.  Each running transfer gets its own UDP socket, so a server
  can send to itself and a destination's traffic never mixes with the receive port.
* The outgoing bandwidth limit is shared equally by the running transfers and each
  transfer's ``sendRateMax`` caps its share.
* Timestamps follow the seed: wall time is sampled once at ``requestTime``; the others are
  offsets from it on the monotonic clock, so durations are exact even if the clock jumps.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgpack

from jettui.constants import (
    CIPHER_NAMES,
    FILETYPE_DIRECTORY,
    MANIFEST_STATUS_COMPLETE,
    MANIFEST_STATUS_ERROR,
    MANIFEST_STATUS_PENDING,
    MIN_CIPHER_ENCRYPTED_256,
    MIN_CIPHER_NONE,
    OVERWRITE_ALWAYS,
    OVERWRITE_NAMES,
    OVERWRITE_VERSIONED,
    SYMLINKS_FOLLOW,
    SYMLINKS_IGNORE,
    TRANSFER_END_STATUSES,
    TRANSFER_FLAG_WRITE_ONLY_NEWER,
    TRANSFER_STATUS_CANCELLED,
    TRANSFER_STATUS_COMPLETE,
    TRANSFER_STATUS_ERROR,
    TRANSFER_STATUS_PENDING,
    TRANSFER_STATUS_SENDING,
    TRANSFER_STATUS_SUSPENDED,
)
from jettui.errors import CommandError
from jettui.server.core import _is_loopback, now_us
from jettui.server.fsview import FileSystemView
from jettui.server.udp import UdpEndpoint
from jettui.transfer import (
    Checkpoint,
    FileEntry,
    FileVerified,
    Sender,
    StaticKey,
    TransferCompleted,
    TransferConfig,
    TransferFailed,
)
from jettui.transfer.driver import DriverSession, TransferEndpoint
from jettui.transfer.source import FileSource, SourceChanged, build_manifest

if TYPE_CHECKING:
    from jettui.server.core import Server
    from jettui.server.session import Principal

log = logging.getLogger("jettui.server.sending")

#: Largest UDP payload for loopback destinations (MTU 65536) and for everything else.
LOOPBACK_DATAGRAM = 65000
WAN_DATAGRAM = 1400
PROGRESS_INTERVAL = 0.5
MAX_SOURCE_RESTARTS = 3
#: A session whose peer is silent this long is given up and tried again from the checkpoints
#: (a restarted receiver knows nothing of the old session and drops its datagrams).
SESSION_IDLE_TIMEOUT = 20.0
#: Failures that mean "the receiver went away", retried with back-off up to MAX_RETRIES times.
RETRYABLE = ("no packet from the peer", "handshake failed after")
MAX_RETRIES = 100
MAX_RETRY_DELAY = 30.0
#: Manifests whose entries stay decoded in memory (most recently built, up to that many files).
ENTRY_CACHE = 16
ENTRY_CACHE_FILES = 100_000


def object_id(value: object, key: str) -> Any:
    """An id given directly or inside its structure."""
    if isinstance(value, dict):
        value = value.get(key)
    if value is None or isinstance(value, bool) or not isinstance(value, str | int):
        raise CommandError(f"{key} must be an id or a structure with a {key!r} key")
    return value


@dataclass
class Running:
    """What a running transfer holds besides its record."""

    transfer_id: int
    session: DriverSession | None = None
    udp: UdpEndpoint | None = None
    endpoint: TransferEndpoint | None = None
    source: FileSource | None = None
    fs: FileSystemView | None = None
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    outcome: tuple[str, str] = (TRANSFER_STATUS_ERROR, "")
    task: asyncio.Task[None] | None = None
    #: The receiver's reason for the first file that failed (the transfer's error names it).
    first_failure: str = ""


class SendManager:
    def __init__(self, server: Server, static_key: StaticKey, max_active: int = 4) -> None:
        self.server = server
        self.state = server.state
        self.static_key = static_key
        self.max_active = max_active
        #: Keyed by (owner, token session or "", destinationId): the id is "address:port", and
        #: each user (and each token session, which sees only its own objects) has their own.
        self.destinations: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.manifests: dict[str, dict[str, Any]] = {}
        self.transfers: dict[int, dict[str, Any]] = {}
        self.running: dict[int, Running] = {}
        self._manifest_done: dict[str, asyncio.Event] = {}
        self._entry_cache: dict[str, tuple[FileEntry, ...]] = {}
        self._builds: set[asyncio.Task[None]] = set()
        self._wakeup = asyncio.Event()
        self._scheduler: asyncio.Task[None] | None = None
        self._progress: asyncio.Task[None] | None = None
        self._mono0 = time.monotonic()
        self._load()

    # -- persistence ---------------------------------------------------------------------------------
    def _load(self) -> None:
        for row in self.state.query("SELECT owner, token_session, destination_id, data FROM destinations"):
            self.destinations[(row["owner"], row["token_session"], row["destination_id"])] = json.loads(row["data"])
        for row in self.state.query("SELECT manifest_id, data FROM manifests"):
            record = json.loads(row["data"])
            if record["status"] == MANIFEST_STATUS_PENDING:  # interrupted while building
                record.update(status=MANIFEST_STATUS_ERROR, processing=False, errorMessage="server restarted")
            self.manifests[row["manifest_id"]] = record
        for row in self.state.query("SELECT transfer_id, data FROM transfers"):
            record = json.loads(row["data"])
            if record["status"] in (TRANSFER_STATUS_SENDING,):
                record["status"] = TRANSFER_STATUS_PENDING  # resumes from its checkpoint
                record["processing"] = True
            self.transfers[row["transfer_id"]] = record

    def _save_destination(self, d: dict[str, Any]) -> None:
        self.state.execute(
            "INSERT OR REPLACE INTO destinations(destination_id, owner, token_session, data) VALUES(?, ?, ?, ?)",
            (d["destinationId"], d["owner"], d["ownerTokenSession"] or "", json.dumps(d)),
        )

    def _save_manifest(self, m: dict[str, Any], entries: list[FileEntry] | None = None) -> None:
        if entries is None:
            self.state.execute(
                "INSERT INTO manifests(manifest_id, owner, created_us, data) VALUES(?, ?, ?, ?) "
                "ON CONFLICT(manifest_id) DO UPDATE SET data = excluded.data",
                (m["manifestId"], m["owner"], m["creationTime"], json.dumps(m)),
            )
        else:
            self._entry_cache.pop(m["manifestId"], None)
            if len(entries) <= ENTRY_CACHE_FILES:
                self._entry_cache[m["manifestId"]] = tuple(entries)
            while len(self._entry_cache) > ENTRY_CACHE:
                del self._entry_cache[next(iter(self._entry_cache))]
            blob = msgpack.packb([e.to_wire() for e in entries], use_bin_type=True)
            self.state.execute(
                "UPDATE manifests SET data = ?, entries = ? WHERE manifest_id = ?",
                (json.dumps(m), blob, m["manifestId"]),
            )

    def _entries(self, manifest_id: str) -> list[FileEntry]:
        # The entries of the manifests built since the server started are kept (the stored
        # blob of 10,000 entries took ~0.1 s to decode on the loop, per transfer, py-spy).
        cached = self._entry_cache.get(manifest_id)
        if cached is not None:
            return list(cached)
        rows = self.state.query("SELECT entries FROM manifests WHERE manifest_id = ?", (manifest_id,))
        if not rows or rows[0]["entries"] is None:
            raise CommandError(f"manifest {manifest_id} has no files (is it complete?)")
        return [FileEntry.from_wire(e) for e in msgpack.unpackb(rows[0]["entries"], raw=False)]

    def _save_transfer(self, t: dict[str, Any], checkpoint: Checkpoint | None = None) -> None:
        if checkpoint is None:
            self.state.execute(
                "INSERT INTO transfers(transfer_id, owner, data) VALUES(?, ?, ?) "
                "ON CONFLICT(transfer_id) DO UPDATE SET data = excluded.data",
                (t["transferId"], t["owner"], json.dumps(t)),
            )
        else:
            blob = msgpack.packb(checkpoint.to_wire(), use_bin_type=True)
            self.state.execute(
                "UPDATE transfers SET data = ?, checkpoint = ? WHERE transfer_id = ?",
                (json.dumps(t), blob, t["transferId"]),
            )

    def _checkpoint(self, transfer_id: int) -> Checkpoint | None:
        rows = self.state.query("SELECT checkpoint FROM transfers WHERE transfer_id = ?", (transfer_id,))
        if not rows or rows[0]["checkpoint"] is None:
            return None
        try:
            return Checkpoint.from_wire(msgpack.unpackb(rows[0]["checkpoint"], raw=False, strict_map_key=False))
        except (ValueError, KeyError, TypeError, msgpack.UnpackException):
            log.warning("transfer %s: unreadable checkpoint, starting over", transfer_id)
            return None

    def _time(self) -> int:
        """Microseconds, as an offset from a wall-clock sample (see the module docstring)."""
        return self._wall0 + int((time.monotonic() - self._mono0) * 1_000_000)

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        self._wall0 = now_us()
        self._mono0 = time.monotonic()
        self._scheduler = asyncio.create_task(self._schedule(), name="jettui-send-scheduler")
        self._progress = asyncio.create_task(self._progress_loop(), name="jettui-send-progress")

    async def stop(self) -> None:
        for task in (self._scheduler, self._progress):
            if task is not None:
                task.cancel()
        for run in list(self.running.values()):
            if run.task is not None:
                run.task.cancel()
        tasks = [r.task for r in self.running.values() if r.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- visibility -----------------------------------------------------------------------------------
    @staticmethod
    def _may_see(p: Principal, record: dict[str, Any]) -> bool:
        if p.wrangler or p.superuser:
            return True
        if record.get("owner") != p.user_name:
            return False
        # A token session sees what its token session made.
        return p.token is None or record.get("ownerTokenSession") in (None, p.token_session)

    def _find(self, table: dict[Any, dict[str, Any]], key: Any, what: str, p: Principal) -> dict[str, Any]:
        record = table.get(key)
        if record is None or not self._may_see(p, record):
            raise CommandError(f"{what} {key} not found")
        return record

    # -- destinations ----------------------------------------------------------------------------------
    async def create_destination(self, p: Principal, peer: str, params: dict[str, Any]) -> dict[str, Any]:
        address, port = params["destinationAddress"], params["destinationPort"]
        if not 0 < port < 65536:
            raise CommandError(f"destinationPort must be in 1..65535 (got {port})")
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(address, port, type=2)  # SOCK_DGRAM
        except OSError as exc:
            raise CommandError(f"cannot resolve destination {address!r}: {exc}") from exc
        ip = infos[0][4][0]
        destination_id = f"{address}:{port}"
        if params.get("minCipher") is not None and params["minCipher"] not in CIPHER_NAMES:
            raise CommandError(f"minCipher must be one of {sorted(CIPHER_NAMES)} (MIN_CIPHER_*)")
        if params.get("sendRateMax") is not None and params["sendRateMax"] <= 0:
            raise CommandError("sendRateMax must be positive (kbit/s)")
        key = (p.user_name, p.token_session or "", destination_id)
        existing = self.destinations.get(key)
        settings = {k: params.get(k) for k in ("userName", "password", "token", "sendRateMax", "minCipher")}
        if existing is not None:
            if existing["_settings"] == settings:
                return self.public_destination(existing)  # idempotent for identical parameters
            if self._busy(existing):
                raise CommandError(f"destination {destination_id} has transfers in progress: delete them first")
        record = {
            "destinationId": destination_id,
            "connectionId": destination_id,
            "destinationAddress": address,
            "destinationIP": ip,
            "destinationPort": port,
            "destinationPublicKey": params.get("destinationPublicKey"),
            "permittedDestinationPublicKey": params.get("destinationPublicKey"),
            "encryptedConnectionState": "disconnected",
            "encryptionEnabled": True,
            "lastDestinationServerId": None,
            "lastDestinationServerUid": None,
            "lastError": None,
            "lastErrorMessage": "",
            "lastRecvTime": None,
            "lastSendTime": None,
            "owner": p.user_name,
            "ownerToken": p.token,
            "ownerTokenSession": p.token_session,
            "sendRateMax": settings["sendRateMax"],
            "minCipher": settings["minCipher"],
            "userName": settings["userName"],
            "userData": {},
            "_settings": settings,
        }
        self.destinations[key] = record
        self._save_destination(record)
        self.server.events.emit(
            "destinationCreated",
            owner=p.user_name,
            trigger="send.destinationCreated",
            trigger_args=[f"{ip}:{port}", f"{peer}"],
            destinationId=destination_id,
        )
        return self.public_destination(record)

    def _uses(self, d: dict[str, Any]) -> list[dict[str, Any]]:
        """The transfers ordered to destination ``d`` (by its owner)."""
        return [
            t
            for t in self.transfers.values()
            if t["destinationId"] == d["destinationId"] and self.destination_of(t) is d
        ]

    def _busy(self, d: dict[str, Any]) -> bool:
        return any(t["status"] not in TRANSFER_END_STATUSES for t in self._uses(d))

    def destination_of(self, t: dict[str, Any]) -> dict[str, Any] | None:
        owner = t.get("destinationOwner", t["owner"])
        session = t.get("destinationTokenSession", t.get("ownerTokenSession")) or ""
        return self.destinations.get((owner, session, t["destinationId"]))

    def public_destination(self, d: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in d.items() if not k.startswith("_")}
        out["numTransfersQueued"] = sum(1 for t in self._uses(d) if t["status"] == "pending")
        return out

    def visible_destinations(self, p: Principal) -> list[dict[str, Any]]:
        return [d for d in self.destinations.values() if self._may_see(p, d)]

    def get_destination(self, p: Principal, destination_id: str) -> dict[str, Any]:
        own = self.destinations.get((p.user_name, p.token_session or "", destination_id))
        if own is not None:
            return own
        # A user sees what their token sessions made; wranglers reach every user's objects.
        for (_, _, did), d in self.destinations.items():
            if did == destination_id and self._may_see(p, d):
                return d
        raise CommandError(f"destination {destination_id} not found")

    def delete_destination(self, p: Principal, destination_id: str) -> None:
        d = self.get_destination(p, destination_id)
        if self._busy(d):
            raise CommandError(f"destination {destination_id} has transfers in progress: cancel them first")
        session = d["ownerTokenSession"] or ""
        del self.destinations[(d["owner"], session, destination_id)]
        self.state.execute(
            "DELETE FROM destinations WHERE owner = ? AND token_session = ? AND destination_id = ?",
            (d["owner"], session, destination_id),
        )
        self.server.events.emit(
            "destinationDeleted",
            owner=d["owner"],
            trigger="send.destinationDeleted",
            trigger_args=[f"{d['destinationIP']}:{d['destinationPort']}", ""],
            destinationId=destination_id,
        )

    # -- manifests ---------------------------------------------------------------------------------------
    def create_manifest(self, p: Principal, fs: FileSystemView, mappings: dict[str, Any]) -> dict[str, Any]:
        if not mappings:
            raise CommandError("mappings is empty: give {destination path: source path, ...}")
        for dest, src in mappings.items():
            if not isinstance(src, str | dict):
                raise CommandError(f"mapping for {dest!r}: the source must be a path or a mapping item")
        manifest_id = uuid.uuid4().hex
        record = {
            "manifestId": manifest_id,
            "owner": p.user_name,
            "ownerToken": p.token,
            "ownerTokenSession": p.token_session,
            "status": MANIFEST_STATUS_PENDING,
            "processing": True,
            "errorMessage": None,
            "totalFiles": None,
            "totalSize": None,
            "userData": {},
            "creationTime": now_us(),
            "_roots": p.sandbox_roots,
            "_mappings": mappings,
        }
        self.manifests[manifest_id] = record
        self._save_manifest(record)
        done = self._manifest_done[manifest_id] = asyncio.Event()

        async def build() -> None:
            try:
                entries = await asyncio.to_thread(build_manifest, fs, mappings, SYMLINKS_FOLLOW, digests=False)
            except Exception as exc:  # CommandError, or an OSError the builder did not map
                message = exc.message if isinstance(exc, CommandError) else f"{exc.__class__.__name__}: {exc}"
                record.update(status=MANIFEST_STATUS_ERROR, processing=False, errorMessage=message)
                self._save_manifest(record)
            else:
                record.update(
                    status=MANIFEST_STATUS_COMPLETE,
                    processing=False,
                    errorMessage="",
                    totalFiles=sum(1 for e in entries if e.kind != FILETYPE_DIRECTORY),
                    totalSize=sum(e.size for e in entries),
                    _sources=list(entries.src_paths),
                )
                self._save_manifest(record, entries)
            finally:
                done.set()
                self._manifest_done.pop(manifest_id, None)

        task = asyncio.create_task(build(), name=f"manifest-{manifest_id}")
        self._builds.add(task)
        task.add_done_callback(self._builds.discard)
        return self.public_manifest(record)

    @staticmethod
    def public_manifest(m: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in m.items() if not k.startswith("_")}

    def get_manifest(self, p: Principal, manifest_id: str) -> dict[str, Any]:
        return self._find(self.manifests, manifest_id, "manifest", p)

    async def wait_manifest(self, p: Principal, manifest_id: str, timeout: float | None) -> dict[str, Any]:
        m = self.get_manifest(p, manifest_id)
        done = self._manifest_done.get(manifest_id)
        if done is not None:
            try:
                async with asyncio.timeout(timeout):
                    await done.wait()
            except TimeoutError:
                raise CommandError(f"manifest {manifest_id} still processing after {timeout} s") from None
        return self.public_manifest(m)

    def manifest_files(self, p: Principal, manifest_id: str) -> dict[str, Any]:
        m = self.get_manifest(p, manifest_id)
        if m["status"] != MANIFEST_STATUS_COMPLETE:
            raise CommandError(f"manifest {manifest_id} is {m['status']}: its files are not known")
        sources = m.get("_sources") or []
        mappings = []
        for i, e in enumerate(self._entries(manifest_id)):
            mappings.append(
                {
                    "destPath": e.path,
                    "srcPath": sources[i] if i < len(sources) else None,
                    "fileSize": e.size,
                    "isEmptyDir": e.kind == FILETYPE_DIRECTORY,
                    "executable": bool(e.mode & 0o111) and e.kind != FILETYPE_DIRECTORY,
                    "modificationTime": e.mtime_ns // 1000,
                }
            )
        return {"manifestId": manifest_id, "fileMappings": mappings}

    def delete_manifest(self, p: Principal, manifest_id: str) -> None:
        self.get_manifest(p, manifest_id)
        if any(t["manifestId"] == manifest_id and t["status"] not in TRANSFER_END_STATUSES
               for t in self.transfers.values()):  # fmt: skip
            raise CommandError(f"manifest {manifest_id} is used by a transfer in progress")
        del self.manifests[manifest_id]
        self._entry_cache.pop(manifest_id, None)
        self.state.execute("DELETE FROM manifests WHERE manifest_id = ?", (manifest_id,))

    # -- transfers ------------------------------------------------------------------------------------------
    def create_transfer(self, p: Principal, params: dict[str, Any]) -> dict[str, Any]:
        d = self.get_destination(p, params["destinationId"])
        m = self.get_manifest(p, params["manifestId"])
        if m["status"] != MANIFEST_STATUS_COMPLETE:
            raise CommandError(
                f"manifest {m['manifestId']} is {m['status']}: wait for it (waitForManifest) before createTransfer"
            )
        if params["overwrite"] not in OVERWRITE_NAMES:
            raise CommandError(f"overwrite must be one of {sorted(OVERWRITE_NAMES)} (OVERWRITE_*)")
        if not 0 <= params["transferFlags"] <= 15:
            raise CommandError("transferFlags must combine TRANSFER_FLAG_* values (0..15)")
        if params["symlinks"] not in (SYMLINKS_FOLLOW, SYMLINKS_IGNORE):
            raise CommandError("symlinks must be SYMLINKS_FOLLOW or SYMLINKS_IGNORE")
        cipher = params.get("minCipher")
        if cipher is None:
            cipher = d.get("minCipher")
        if cipher is not None and cipher not in CIPHER_NAMES:
            raise CommandError(f"minCipher must be one of {sorted(CIPHER_NAMES)} (MIN_CIPHER_*)")
        freq = params.get("checkpointFrequencySeconds")
        if freq is not None and freq <= 0:
            raise CommandError("checkpointFrequencySeconds must be positive, or None to disable checkpoints")
        transfer_id = self.state.execute("INSERT INTO transfers(owner, data) VALUES(?, '{}')", (p.user_name,))
        now = self._time()
        record = {
            "transferId": transfer_id,
            "destinationId": d["destinationId"],
            "destinationOwner": d["owner"],
            "destinationTokenSession": d["ownerTokenSession"],
            "manifestId": m["manifestId"],
            "destinationPath": params.get("destinationPath"),
            "overwrite": params["overwrite"],
            "transferFlags": params["transferFlags"],
            "symlinks": params["symlinks"],
            "priority": params["priority"],
            "checkpointFrequencySeconds": freq,
            "minCipher": cipher,
            "cipher": None,
            "status": TRANSFER_STATUS_PENDING,
            "processing": True,
            "errorMessage": "",
            "owner": p.user_name,
            "ownerToken": p.token,
            "ownerTokenSession": p.token_session,
            "requestTime": now,
            "queueTime": now,
            "startTime": None,
            "endTime": None,
            "snapshotTime": now,
            "blockSize": 0,
            "blocksAcked": 0,
            "blocksSent": 0,
            "blocksRetransmitted": 0,
            "bytesSent": 0,
            "bytesRecv": 0,
            "packetsSent": 0,
            "packetsRecv": 0,
            "totalBlocks": 0,
            "totalBytes": m["totalSize"] or 0,
            "totalFiles": m["totalFiles"] or 0,
            "filesComplete": 0,
            "filesSkipped": 0,
            "filesFailed": 0,
            "sendRate": 0.0,
            "roundTripTimeMs": None,
            "restarts": 0,
            "retries": 0,
            "retryAt": None,
            "userData": {},
        }
        self.transfers[transfer_id] = record
        self._save_transfer(record)
        self.server.events.emit("transferCreated", owner=p.user_name, transferId=transfer_id,
                                destinationId=d["destinationId"], manifestId=m["manifestId"])  # fmt: skip
        self._wakeup.set()
        return dict(record)

    def get_transfer(self, p: Principal, transfer_id: int) -> dict[str, Any]:
        t = self._find(self.transfers, transfer_id, "transfer", p)
        self._refresh(t)
        return dict(t)

    def list_transfers(self, p: Principal) -> list[dict[str, Any]]:
        out = []
        for t in self.transfers.values():
            if self._may_see(p, t):
                self._refresh(t)
                out.append(dict(t))
        return out

    def _set_status(self, t: dict[str, Any], status: str, message: str = "") -> None:
        old = t["status"]
        t["status"] = status
        t["processing"] = status not in TRANSFER_END_STATUSES
        if message or status == TRANSFER_STATUS_ERROR:
            t["errorMessage"] = message
        if status in TRANSFER_END_STATUSES:
            t["endTime"] = self._time()
        t["snapshotTime"] = self._time()
        self._save_transfer(t)
        if old != status:
            fields = {"transferId": t["transferId"], "status": status, "destinationId": t["destinationId"]}
            self.server.events.emit("transferUpdated", owner=t["owner"], trigger="send.transferUpdated", **fields)
            if status == TRANSFER_STATUS_COMPLETE:
                self.server.events.emit("transferComplete", owner=t["owner"], trigger="send.transferComplete",
                                        **fields)  # fmt: skip
            elif status == TRANSFER_STATUS_ERROR:
                self.server.events.emit("transferError", owner=t["owner"], trigger="send.transferError",
                                        errorMessage=message, **fields)  # fmt: skip
            self._notify(t)

    def suspend(self, p: Principal, transfer_id: int) -> dict[str, Any]:
        t = self._find(self.transfers, transfer_id, "transfer", p)
        if t["status"] in TRANSFER_END_STATUSES:
            raise CommandError(f"transfer {transfer_id} is {t['status']}: it cannot be suspended")
        run = self.running.get(transfer_id)
        if run is not None and run.session is not None:
            run.session.machine.pause()  # type: ignore[union-attr]
        self._set_status(t, TRANSFER_STATUS_SUSPENDED)
        return dict(t)

    def resume(self, p: Principal, transfer_id: int) -> dict[str, Any]:
        t = self._find(self.transfers, transfer_id, "transfer", p)
        if t["status"] != TRANSFER_STATUS_SUSPENDED:
            raise CommandError(f"transfer {transfer_id} is {t['status']}, not suspended")
        run = self.running.get(transfer_id)
        if run is not None and run.session is not None:
            run.session.machine.resume()  # type: ignore[union-attr]
            run.session.pump()
            self._set_status(t, TRANSFER_STATUS_SENDING)
        else:
            self._set_status(t, TRANSFER_STATUS_PENDING)
            self._wakeup.set()
        return dict(t)

    def stop_transfer(self, p: Principal, transfer_id: int, status: str, message: str) -> dict[str, Any]:
        """cancelTransfer (status cancelled) and failTransfer (status error)."""
        t = self._find(self.transfers, transfer_id, "transfer", p)
        if t["status"] in TRANSFER_END_STATUSES:
            raise CommandError(f"transfer {transfer_id} already ended: {t['status']}")
        run = self.running.get(transfer_id)
        if run is not None:
            run.outcome = (status, message)
            if run.session is not None:
                run.session.machine.abort(message)
                run.session.pump()
            if not run.done.done():
                run.done.set_result(None)
        else:
            self._set_status(t, status, message)
        return dict(t)

    def delete_transfer(self, p: Principal, transfer_id: int) -> None:
        t = self._find(self.transfers, transfer_id, "transfer", p)
        if t["status"] not in TRANSFER_END_STATUSES:
            self.stop_transfer(p, transfer_id, TRANSFER_STATUS_CANCELLED, "deleted")
        self.transfers.pop(transfer_id, None)
        self.state.execute("DELETE FROM transfers WHERE transfer_id = ?", (transfer_id,))

    def garbage_collect(self, force: bool, limit_s: int) -> dict[str, int]:
        cutoff = now_us() - (0 if force else limit_s * 1_000_000)
        old = [tid for tid, t in self.transfers.items()
               if t["status"] in TRANSFER_END_STATUSES and (t["endTime"] or 0) <= cutoff]  # fmt: skip
        for tid in old:
            self.transfers.pop(tid)
            self.state.execute("DELETE FROM transfers WHERE transfer_id = ?", (tid,))
        used = {t["manifestId"] for t in self.transfers.values()}
        stale = [mid for mid, m in self.manifests.items()
                 if mid not in used and not m["processing"] and m["creationTime"] <= cutoff]  # fmt: skip
        for mid in stale:
            self.manifests.pop(mid)
            self._entry_cache.pop(mid, None)
            self.state.execute("DELETE FROM manifests WHERE manifest_id = ?", (mid,))
        return {"transfers": len(old), "manifests": len(stale)}

    # -- user data -------------------------------------------------------------------------------------------
    def object_record(self, p: Principal, object_id: Any) -> tuple[dict[str, Any], Callable[[], None]]:
        if isinstance(object_id, int) or (isinstance(object_id, str) and object_id.isdigit()):
            t = self.transfers.get(int(object_id))
            if t is not None and self._may_see(p, t):
                return t, lambda: self._save_transfer(t)
        key = str(object_id)
        if key in self.manifests and self._may_see(p, self.manifests[key]):
            m = self.manifests[key]
            return m, lambda: self._save_manifest(m)
        with contextlib.suppress(CommandError):
            d = self.get_destination(p, key)
            return d, lambda: self._save_destination(d)
        raise CommandError(f"no destination, manifest or transfer {object_id!r}")

    # -- connections -------------------------------------------------------------------------------------------
    def connection(self, d: dict[str, Any]) -> dict[str, Any]:
        active = [r for r in self.running.values()
                  if self.destination_of(self.transfers[r.transfer_id]) is d and r.session]  # fmt: skip
        rtt = None
        for r in active:
            assert r.session is not None
            rtt = r.session.machine.rtt.srtt * 1000
        out = self.public_destination(d)
        out.update(
            rateControllerActive=True,
            rateControlMethod="delay",
            relayIP=None,
            relayPort=None,
            roundTripTimeMs=rtt,
            activeTransferCount=len(active),
        )
        return out

    # -- running ---------------------------------------------------------------------------------------------
    def _refresh(self, t: dict[str, Any]) -> None:
        run = self.running.get(t["transferId"])
        if run is None or run.session is None:
            return
        machine = run.session.machine
        snap = machine.snapshot()
        t.update({k: snap[k] for k in ("blocksSent", "blocksAcked", "blocksRetransmitted", "bytesSent",
                                        "bytesRecv", "packetsSent", "packetsRecv", "blockSize", "totalBlocks",
                                        "totalBytes") if k in snap})  # fmt: skip
        t["sendRate"] = snap.get("sendRate", 0.0)
        t["roundTripTimeMs"] = snap.get("roundTripTimeMs")
        t["snapshotTime"] = self._time()

    def _notify(self, t: dict[str, Any]) -> None:
        for conn in list(self.server.connections):
            s = conn.session
            if "transfers" in s.subscriptions and s.principal is not None and self._may_see(s.principal, t):
                s.notify and s.notify("transfers.progress", dict(t))

    async def _progress_loop(self) -> None:
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL)
            for tid in list(self.running):
                t = self.transfers.get(tid)
                if t is not None:
                    self._refresh(t)
                    self._notify(t)

    def _rate_limit(self, t: dict[str, Any]) -> float:
        """This transfer's ceiling in bits/s: its destination's sendRateMax and a share of the server limit."""
        limits = [10e9]
        d = self.destination_of(t) or {}
        if d.get("sendRateMax"):
            limits.append(float(d["sendRateMax"]) * 1000)
        bw = self.server.bandwidth_limits()
        if bw["outgoingLimitActive"] and bw["outgoingRateLimit"]:
            total = float(bw["outgoingRateLimit"]) * 1000
            if bw["borrowIncoming"] and bw["incomingLimitActive"] and not self.server.receiving.active_count():
                total += float(bw["incomingRateLimit"]) * 1000
            limits.append(total / max(1, len(self.running)))
        return min(limits)

    def rebalance(self) -> None:
        for run in self.running.values():
            if run.session is not None:
                run.session.machine.set_max_rate(self._rate_limit(self.transfers[run.transfer_id]))  # type: ignore[union-attr]

    async def _schedule(self) -> None:
        while True:
            self._wakeup.clear()
            now = now_us()
            pending = sorted(
                (t for t in self.transfers.values() if t["status"] == TRANSFER_STATUS_PENDING),
                key=lambda t: (t["priority"], t["transferId"]),
            )
            later = [t["retryAt"] for t in pending if (t.get("retryAt") or 0) > now]
            for t in pending:
                if len(self.running) >= self.max_active:
                    break
                if (t.get("retryAt") or 0) > now:
                    continue  # backing off after a lost connection
                run = Running(t["transferId"])
                self.running[t["transferId"]] = run
                run.task = asyncio.create_task(self._run(t, run), name=f"transfer-{t['transferId']}")
            wait = (min(later) - now) / 1e6 if later else None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wakeup.wait()

    async def _run(self, t: dict[str, Any], run: Running) -> None:
        tid = t["transferId"]
        try:
            await self._run_session(t, run)
        except asyncio.CancelledError:
            # The server is stopping: the record stays "sending" on disk and resumes at the next start.
            raise
        except Exception as exc:
            message = exc.message if isinstance(exc, CommandError) else f"{exc.__class__.__name__}: {exc}"
            log.info("transfer %s failed: %s", tid, message)
            self._set_status(t, TRANSFER_STATUS_ERROR, message)
        finally:
            if run.session is not None:
                run.session.close()
            if run.source is not None:
                run.source.close()
            if run.udp is not None:
                run.udp.close()
            if run.fs is not None:
                run.fs.close()
            self.running.pop(tid, None)
            self.rebalance()
            self._wakeup.set()
            self.server.transfer_ended()

    async def _run_session(self, t: dict[str, Any], run: Running) -> None:
        tid = t["transferId"]
        d = self.destination_of(t)
        m = self.manifests.get(t["manifestId"])
        if d is None or m is None:
            raise CommandError("its destination or manifest was deleted")
        t["startTime"] = t["startTime"] or self._time()
        self._set_status(t, TRANSFER_STATUS_SENDING)
        run.fs = FileSystemView(m.get("_roots"))
        if t["symlinks"] == SYMLINKS_IGNORE:
            # Manifests follow symlinks; this transfer leaves them out, so list the files again.
            manifest = await asyncio.to_thread(build_manifest, run.fs, m["_mappings"], SYMLINKS_IGNORE, digests=False)
            entries, sources = list(manifest), list(manifest.src_paths)
        else:
            entries, sources = self._entries(m["manifestId"]), m.get("_sources") or []
        run.source = FileSource(run.fs, entries, sources, t["transferFlags"])
        addr = (d["destinationIP"], int(d["destinationPort"]))
        family_host = "::" if ":" in addr[0] else "0.0.0.0"
        run.udp = UdpEndpoint(family_host, 0)
        run.udp.start()
        endpoint = run.endpoint = TransferEndpoint(
            run.udp, self.static_key.public_bytes, self.server.server_uid, lambda sid, a: None
        )
        key_hex = d.get("destinationPublicKey")
        if not key_hex:
            try:
                key, uid = await endpoint.fetch_public_key(addr)
            except TimeoutError as exc:
                raise CommandError(f"destination {d['destinationId']}: {exc}") from None
            d["destinationPublicKey"] = key_hex = key.hex()
            d["lastDestinationServerUid"] = uid
            self._save_destination(d)
        cipher = t["minCipher"]
        config = TransferConfig(
            max_datagram_size=LOOPBACK_DATAGRAM if _is_loopback(addr[0]) else WAN_DATAGRAM,
            min_cipher=MIN_CIPHER_NONE if cipher is None else cipher,
            max_cipher=MIN_CIPHER_ENCRYPTED_256 if cipher is None else cipher,
            max_rate=self._rate_limit(t),
            idle_timeout=SESSION_IDLE_TIMEOUT,
            initial_rate=min(self._rate_limit(t), 8e9 if _is_loopback(addr[0]) else 100e6),
        )
        may_skip = t["overwrite"] not in (OVERWRITE_ALWAYS, OVERWRITE_VERSIONED)
        if may_skip or t["transferFlags"] & TRANSFER_FLAG_WRITE_ONLY_NEWER:
            # The receiver may skip files in these modes: wait for its answer before data
            # flows rather than send the first early_data_limit bytes for nothing.
            config.early_data_limit = 0
        checkpoint = self._checkpoint(tid)
        settings = d["_settings"]
        params = {
            "transferId": tid,
            "sourceServerUid": self.server.server_uid,
            "userName": settings["userName"],
            "password": settings["password"],
            "token": settings["token"],
            "destinationPath": t["destinationPath"],
            "overwrite": t["overwrite"],
            "transferFlags": t["transferFlags"],
            "checkpointFrequencySeconds": t["checkpointFrequencySeconds"],
        }
        sender = Sender(
            config,
            entries,
            run.source,
            static_key=self.static_key,
            peer_public_key=bytes.fromhex(key_hex),
            transfer_id=str(tid),
            params=params,
            acked=checkpoint.ranges if checkpoint and checkpoint.block_size == config.resolved_block_size() else None,
            peer_addr=addr,
        )
        # Every session gives every file a verdict (a resume's files present on the receiver
        # too): counting from zero keeps a resumed transfer's figures within totalFiles.
        t["filesComplete"] = t["filesSkipped"] = t["filesFailed"] = 0
        run.session = endpoint.add(sender, lambda s, e: self._on_event(t, run, e), lambda s: self._finished(run))
        if t["status"] == TRANSFER_STATUS_SUSPENDED:
            sender.pause()
        self.rebalance()
        run.session.pump()
        d["encryptedConnectionState"] = "negotiating"
        freq = t["checkpointFrequencySeconds"]
        while not run.done.done():
            try:
                async with asyncio.timeout(freq or 3600):
                    await asyncio.shield(run.done)
            except TimeoutError:
                # Only when the timer fired: once run.done is set the outcome is known, and
                # a checkpoint of 10,000 files (~20 ms on the loop) would only delay it.
                if freq and not sender.is_finished:
                    self._refresh(t)
                    self._save_transfer(t, sender.checkpoint())
        self._refresh(t)
        status, message = run.outcome
        if status == TRANSFER_STATUS_COMPLETE:
            try:
                await asyncio.to_thread(run.source.check_empty)
            except SourceChanged as exc:
                status, message = run.outcome = (TRANSFER_STATUS_ERROR, exc.message)
        if status == TRANSFER_STATUS_ERROR and run.source.changed is not None and t["restarts"] < MAX_SOURCE_RESTARTS:
            await self._restart_changed(t, m, run)
            return
        if status != TRANSFER_STATUS_COMPLETE:
            self._save_transfer(t, sender.checkpoint())  # where a retry, resume or restart picks up
        d["encryptedConnectionState"] = "disconnected"
        if status == TRANSFER_STATUS_ERROR and message.startswith(RETRYABLE) and t["retries"] < MAX_RETRIES:
            t["retries"] += 1
            delay = min(2.0 ** (t["retries"] - 1), MAX_RETRY_DELAY)
            t["retryAt"] = now_us() + int(delay * 1e6)
            note = f"connection lost ({message}); retry {t['retries']} in {delay:g} s"
            self._set_status(t, TRANSFER_STATUS_PENDING, note)
            return
        d["lastSendTime"] = self._time()
        self._set_status(t, status, message)

    async def _restart_changed(self, t: dict[str, Any], m: dict[str, Any], run: Running) -> None:
        """A source file changed while it was sent: rebuild the manifest and start over."""
        assert run.fs is not None
        entries = await asyncio.to_thread(build_manifest, run.fs, m["_mappings"], SYMLINKS_FOLLOW, digests=False)
        m["_sources"] = list(entries.src_paths)
        self._save_manifest(m, entries)
        self.state.execute("UPDATE transfers SET checkpoint = NULL WHERE transfer_id = ?", (t["transferId"],))
        t["restarts"] += 1
        t["errorMessage"] = f"restarted: a source file changed during the transfer ({run.outcome[1]})"
        self._set_status(t, TRANSFER_STATUS_PENDING, t["errorMessage"])

    def _on_event(self, t: dict[str, Any], run: Running, event: object) -> None:
        if isinstance(event, FileVerified):
            if event.skipped:
                t["filesSkipped"] += 1
            elif event.ok:
                t["filesComplete"] += 1
            else:
                t["filesFailed"] += 1
                if not run.first_failure:
                    run.first_failure = event.message
        elif isinstance(event, TransferCompleted):
            if event.failed:
                first = f"; the first: {run.first_failure}" if run.first_failure else ""
                run.outcome = (TRANSFER_STATUS_ERROR, f"{len(event.failed)} file(s) failed on the receiver{first}")
            elif run.outcome[0] == TRANSFER_STATUS_ERROR and not run.outcome[1]:
                run.outcome = (TRANSFER_STATUS_COMPLETE, "")
            if not run.done.done():
                run.done.set_result(None)
        elif isinstance(event, TransferFailed):
            if run.outcome[1] == "":  # not cancelled or failed by the API
                run.outcome = (TRANSFER_STATUS_ERROR, event.message)
            d = self.destination_of(t) or {}
            d["lastError"] = self._time()
            d["lastErrorMessage"] = event.message
            if not run.done.done():
                run.done.set_result(None)
        else:
            name = type(event).__name__
            if name == "HandshakeCompleted":
                d = self.destination_of(t) or {}
                d["encryptedConnectionState"] = "connected"
                t["cipher"] = CIPHER_NAMES.get(getattr(event, "cipher", -1))

    def _finished(self, run: Running) -> None:
        if not run.done.done():
            run.done.set_result(None)

    def active_count(self) -> int:
        return len(self.running)
