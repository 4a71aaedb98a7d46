"""The receiving side of a transfer session, sans-IO (aioquic's shape).

Strategy: every DATA block is checked against the manifest (known file, block number
inside the declared size, exact length) before it reaches the :class:`BlockSink`, then
recorded in the file's :class:`RangeSet`.  Acknowledgements are aggregate and deferred:
one ACK per ``ack_every`` DATA datagrams or ``ack_interval`` seconds, whichever comes
first (at 1400-byte datagrams that is well under 1 % of the forward bytes).  An ACK
says which files are complete, cumulatively (all below a watermark, then runs of file
indices), and for the others carries the block runs received since the previous ACK,
repeated in the next ``ack_repeat - 1`` ACKs so a lost ACK costs no resend, plus each
touched file's contiguous prefix; duplicates are reported again so spurious resends stop
at once.
It also echoes the newest sender timestamp (RTT), and the interval's minimum and mean
one-way delay and cumulative byte count (the sender's rate control).

The machine never decides policy: who may send (beyond the key allowlist), where files
go, what is already on disk and whether a file verified are the driver's answers to
:class:`TransferRequested` and :class:`FileReceived` (``accept``/``reject``,
``file_verified``).  After any call, the driver calls ``datagrams_to_send``.

A PARITY datagram (:mod:`.fec`) opens a group over blocks not received yet; each member
that arrives is folded into it, and once a datagram has come and gone with exactly one
member still missing, that member is rebuilt and taken as if it had arrived.  (Waiting one
datagram spares rebuilding a block that was merely next in line.)
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import math
from collections import deque
from collections.abc import Collection, Iterable, Mapping
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ..errors import LocalProtocolError
from .config import TransferConfig
from .control import ControlError
from .crypto import CryptoError, NegotiationError, ResponderHandshake, StaticKey, negotiate_cipher
from .digest import DIGEST_SIZE, EMPTY_DIGEST
from .events import (
    FileReceived,
    HandshakeCompleted,
    TransferCompleted,
    TransferFailed,
    TransferRequested,
)
from .fec import ParityGroup
from .manifest import Checkpoint, FileEntry, block_count
from .packet import (
    HEADER,
    HEADER_SIZE,
    MAGIC_VERSION,
    TAG_SIZE,
    Ack,
    PacketError,
    PacketType,
    decode_data,
    decode_header,
    decode_parity,
    encode_ack_prefix,
)
from .ranges import RangeSet, varint_ranges_fitting
from .session import SessionBase, check_message

__all__ = ["BlockSink", "EarlyDataBudget", "Receiver", "ReceiverState"]

_DATA = int(PacketType.DATA)

#: Most ACKs one datagrams_to_send call adds for runs that did not fit in the first.
_MAX_EXTRA_ACKS = 16

#: Most files one session may announce.
MAX_FILES = 10_000_000

#: Bytes of accepted early data processed per slice (see Receiver._replay_backlog): 16
#: loopback datagrams of ~240 small files, about 1 ms of the loop.
REPLAY_SLICE = 1 << 20

#: Most bytes the open parity groups of one session hold (a group holds one block-sized
#: integer and covers two blocks or more): an authenticated sender cannot make it more,
#: whatever its block size (up to 64 KiB on loopback).
MAX_PARITY_BYTES = 32 << 20


class BlockSink(Protocol):
    """Where received blocks go (the driver writes part-files; tests use memory)."""

    def write(self, file_index: int, offset: int, data: memoryview) -> None:
        """Store ``data`` at byte ``offset`` of file ``file_index``; must not keep ``data``."""
        ...


class ReceiverState(enum.Enum):
    AWAIT_HELLO = "await_hello"
    AWAIT_REQUEST = "await_request"
    AWAIT_ACCEPT = "await_accept"
    RECEIVING = "receiving"
    DRAINING = "draining"
    CLOSED = "closed"
    FAILED = "failed"


class EarlyDataBudget:
    """Bytes of not-yet-accepted DATA that all the receivers sharing it may hold together.

    Data that arrives before the transfer is accepted comes from a peer whose credentials
    are not checked yet, so a server gives its receivers one budget: many sessions that
    never log in cannot make it hold more than ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, n: int) -> bool:
        if self.used + n > self.limit:
            return False
        self.used += n
        return True

    def give(self, n: int) -> None:
        self.used -= n


class Receiver(SessionBase):
    """Receives one session.  ``session_id`` None adopts the id of the first HELLO."""

    role = "receiver"
    END_STATES = frozenset({ReceiverState.CLOSED, ReceiverState.FAILED})

    def __init__(
        self,
        config: TransferConfig,
        sink: BlockSink,
        *,
        static_key: StaticKey,
        authorized_keys: Collection[bytes] | None = None,
        session_id: int | None = None,
        peer_addr: Any = None,
        ephemeral_key: X25519PrivateKey | None = None,
        early_budget: EarlyDataBudget | None = None,
    ) -> None:
        super().__init__(config, -1 if session_id is None else session_id, peer_addr)
        self._state = ReceiverState.AWAIT_HELLO
        # DATA that came before accept(): (payload, packet number, arrival), replayed then.
        self._early: list[tuple[bytes, int, float]] = []
        # Accepted early data still to process, and what arrived behind it (see _replay_backlog).
        self._backlog: deque[tuple[bytes, int, float]] = deque()
        self._eof_behind: list[int] = []  # files whose eof came while the backlog was not empty
        self._ping_behind: tuple[float, int, float] | None = None  # a PING's (echo, largest pn, arrival) likewise
        self._early_bytes = 0
        self._early_budget = early_budget
        self._sink = sink
        self._static = static_key
        self._authorized = None if authorized_keys is None else frozenset(authorized_keys)
        self._ephemeral = ephemeral_key
        self._hs: ResponderHandshake | None = None
        self._reply: tuple[bool, int, str] | None = None
        self._reply_due = False
        self._reply_sent_at: float | None = None
        self.block_size = 0
        self.transfer_id = ""
        self.params: dict[str, Any] = {}
        self.files: list[FileEntry] = []
        self._expected_files = -1
        self._nblocks: list[int] = []
        self._last_len: list[int] = []
        self._received: list[RangeSet] = []
        self._active = bytearray()  # 1 = accepted and not yet complete
        self._complete = bytearray()
        self._failed_files: set[int] = set()
        self._verified: list[list[Any]] = []
        self._verdict_given = bytearray()
        # Expected whole-file digest per file: the manifest's, or the one the sender's eof
        # brings (manifests built without hashing); a complete file waits for it.
        self._digests: list[bytes] = []
        self._awaiting_digest = bytearray()
        # Acknowledgement state.
        self._largest_pn = -1
        # Largest authentic DATA datagram seen: the path carries datagrams that big, so ACKs
        # may be that big too (loopback: 65000 B instead of the configured 1400).
        self._peer_datagram = 0
        self._ack_overflow = False
        self._echo_pn = -1
        self._echo_time = 0.0
        self._echo_recv = 0.0
        self._runs: list[list[int]] = []
        self._complete_files = RangeSet()  # indices of complete files (Ack.complete_*)
        self._history: deque[list[list[int]]] = deque(maxlen=max(config.ack_repeat - 1, 0))
        self._ack_since: float | None = None
        self._ack_count = 0
        self._ack_now = False
        self._owd_min = math.inf
        self._owd_sum = 0.0
        self._owd_n = 0
        self._drain_deadline: float | None = None
        self._drain_final = ReceiverState.CLOSED
        self._first_seen: float | None = None
        # Tail parity: open groups by member (file, block), and groups left one short.
        self._parity: dict[tuple[int, int], ParityGroup] = {}
        self._short: list[ParityGroup] = []

    # -- decisions from the driver -----------------------------------------------------------------
    def accept(self, present: Mapping[int, RangeSet] | None = None, skip: Mapping[int, str] | None = None) -> None:
        """Accept the request: ``present`` blocks are already on disk (resume), ``skip``
        files are declined with a reason (overwrite NEVER, WRITE_ONLY_NEWER...)."""
        if self._state is not ReceiverState.AWAIT_ACCEPT:
            raise LocalProtocolError(f"accept() in state {self._state.name}, expected AWAIT_ACCEPT")
        skip = dict(skip or {})
        for index, ranges in (present or {}).items():
            if 0 <= index < len(self.files):
                n = self._nblocks[index]
                rs = self._received[index]
                for s, e in ranges:
                    rs.add(s, min(e, n))
                if rs and index not in skip:
                    self._control.send({"type": "have", "file": index, "ranges": rs.to_bytes()})
        self._control.send({"type": "ready", "skip": [[i, str(r)] for i, r in sorted(skip.items())]})
        early = self._early
        self._release_early()
        self._set_state(ReceiverState.RECEIVING)
        for index in range(len(self.files)):
            if index in skip:
                self._verdict_given[index] = 1
            elif self._received[index].count == self._nblocks[index]:
                self._complete_file(index)
            else:
                self._active[index] = 1
        self._backlog.extend(early)
        self._replay_backlog()

    def reject(self, message: str) -> None:
        """Refuse the request (bad credentials, sandbox...); the sender fails with ``message``."""
        if self._state not in (ReceiverState.AWAIT_REQUEST, ReceiverState.AWAIT_ACCEPT):
            raise LocalProtocolError(f"reject() in state {self._state.name}")
        self._release_early()
        self._control.send({"type": "reject", "message": message})
        self._fail(f"rejected: {message}", remote=False, notify=False)

    def file_verified(self, file_index: int, ok: bool, message: str = "") -> None:
        """Report the verification of a file announced by :class:`FileReceived`."""
        if not 0 <= file_index < len(self.files) or not self._complete[file_index]:
            raise LocalProtocolError(f"file {file_index} has not been received")
        if self._verdict_given[file_index]:
            raise LocalProtocolError(f"file {file_index} already has a verdict")
        self._verdict_given[file_index] = 1
        if not ok:
            self._failed_files.add(file_index)
        self._verified.append([file_index, ok, message])

    def abort(self, message: str) -> None:
        """End the session in error (disk full, cancelled) and tell the sender."""
        self._fail(message, remote=False, notify=True)

    def checkpoint(self) -> Checkpoint:
        """Received ranges per file; save them only after the part-files are flushed."""
        return Checkpoint(self.block_size, {i: rs.copy() for i, rs in enumerate(self._received) if rs})

    def snapshot(self) -> dict[str, Any]:
        data: dict[str, Any] = self.stats.as_structure()
        data.update(
            totalSize=sum(f.size for f in self.files),
            blocksReceived=self.stats.blocks_received,
            roundTripTimeMs=self.rtt.srtt * 1000,
        )
        return data

    # -- sans-IO surface ---------------------------------------------------------------------------
    def receive_datagram(self, data: bytes | memoryview, addr: Any, now: float) -> None:
        if not self._short:
            self._receive(data, addr, now)
            return
        # Groups left one short by an earlier datagram: if this one did not bring the
        # missing block either, it is taken as lost and rebuilt.
        short, self._short = self._short, []
        self._receive(data, addr, now)
        for group in short:
            if len(group.missing) == 1 and self._state is ReceiverState.RECEIVING:
                self._rebuild(group, now)

    def _receive(self, data: bytes | memoryview, addr: Any, now: float) -> None:
        if self._state is ReceiverState.RECEIVING and len(data) > HEADER_SIZE:
            # Fast path for the bulk of the traffic: DATA while receiving.  Same checks,
            # in the same order, as SessionBase._open, without the generality.
            magic, ptype, sid, pn = HEADER.unpack_from(data)
            if ptype == _DATA and magic == MAGIC_VERSION and sid == self.session_id:
                replay = self._replay
                if pn <= replay.largest and not replay.check(pn):
                    self.drops.replayed += 1
                    return
                try:
                    payload = self._recv_prot.open(data, pn)  # type: ignore[union-attr]
                except CryptoError:
                    self.drops.unauthentic += 1
                    return
                replay.commit(pn)
                stats = self.stats
                stats.packets_recv += 1
                size = len(data)
                stats.bytes_recv += size
                if size > self._peer_datagram:
                    self._peer_datagram = size
                self._last_recv = now
                if pn > self._largest_pn:
                    self._largest_pn = pn
                self.peer_addr = addr
                try:
                    self._on_data(payload, pn, now)
                except PacketError:
                    self.drops.malformed += 1
                return
        if self._state in self.END_STATES:
            return
        if self._first_seen is None:
            self._first_seen = now
        if self.session_id == -1:
            try:
                ptype, sid, _ = decode_header(data)
            except PacketError:
                self.drops.malformed += 1
                return
            if ptype != PacketType.HELLO:
                self.drops.unexpected += 1
                return
            self.session_id = sid
        opened = self._open(data, now)
        if opened is None:
            return
        ptype, pn, payload = opened
        if ptype == PacketType.HELLO:
            self._on_hello(data, pn, addr, now)
            return
        if ptype == PacketType.HELLO_REPLY:
            self.drops.unexpected += 1
            return
        if self._reply_sent_at is not None:
            # First authentic packet after our single reply: a handshake RTT sample.
            self.rtt.update(now - self._reply_sent_at)
            self._reply_sent_at = None
        if pn > self._largest_pn:
            self._largest_pn = pn
        self.peer_addr = addr
        if ptype == PacketType.DATA:
            try:
                self._on_data(payload, pn, now)
            except PacketError:
                self.drops.malformed += 1
        else:
            self._dispatch(ptype, payload, now)

    def datagrams_to_send(self, now: float) -> list[bytes]:
        if self._state in self.END_STATES:
            return self._final_datagrams(now)
        out: list[bytes] = []
        if self._reply_due and self._hs is not None and self._reply is not None:
            self._reply_due = False
            accepted, level, message = self._reply
            datagram = self._hs.reply_datagram(self.session_id, self._next_pn(), accepted, level, message)
            self._count_sent(datagram, now)
            out.append(datagram)
        if self._send_prot is None:
            return out
        if self._verified:
            self._control.send({"type": "verified", "results": self._verified})
            self._verified = []
        if self._ack_since is not None or self._ack_now:
            due = self._ack_now or self._ack_count >= self._config.ack_every
            if due or now >= self._ack_since + self._config.ack_interval:  # type: ignore[operator]
                out.append(self._build_ack(now))
                # Runs that did not fit go out at once in further ACKs, never dropped: an
                # unreported block is a block the sender resends (10,000 small files on
                # loopback: 17,305 needless resends of 10,000 blocks, measured).
                extra = 0
                while self._ack_overflow and extra < _MAX_EXTRA_ACKS:
                    out.append(self._build_ack(now))
                    extra += 1
        self._common_datagrams(now, out)
        return out

    def get_timer(self) -> float | None:
        if self._state in self.END_STATES:
            return None
        times = []
        if self._state is ReceiverState.AWAIT_HELLO and self._first_seen is not None:
            times.append(self._first_seen + self._config.handshake_timeout)
        for t in (self._control.timer(), self._idle_deadline(), self._drain_deadline):
            if t is not None:
                times.append(t)
        if self._ack_since is not None:
            times.append(self._ack_since + self._config.ack_interval)
        if self._backlog:
            times.append(self._last_recv or 0.0)  # at once
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        if self._state in self.END_STATES:
            return
        if self._drain_deadline is not None and now >= self._drain_deadline:
            self._set_state(self._drain_final)
            return
        first = self._first_seen
        if self._state is ReceiverState.AWAIT_HELLO and first is not None:
            if now >= first + self._config.handshake_timeout:
                self._fail("no valid HELLO arrived", remote=False, notify=False)
            return
        if self._backlog:
            self._replay_backlog()
        self._check_idle(now)

    # -- handshake ---------------------------------------------------------------------------------
    def _on_hello(self, data: bytes | memoryview, pn: int, addr: Any, now: float) -> None:
        if self._hs is not None:
            # A retransmitted HELLO means our reply was lost: answer it again, unchanged.
            if self._hs.hello_payload == bytes(memoryview(data)[HEADER_SIZE:-TAG_SIZE]) and self._replay.check(pn):
                self._replay.commit(pn)
                self._reply_due = True
                self._reply_sent_at = None
            else:
                self.drops.unexpected += 1
            return
        try:
            hs = ResponderHandshake(self._static, data, self._ephemeral)
        except PacketError:
            self.drops.malformed += 1
            return
        except CryptoError:
            self.drops.unauthentic += 1
            return
        self._replay.commit(pn)
        self._authentic(len(data), now)
        self._hs = hs
        self.peer_addr = addr
        self.peer_public_key = hs.peer_static
        self.block_size = hs.hello.block_size
        self._reply_due = True
        self._reply_sent_at = now
        cfg = self._config
        if self._authorized is not None and hs.peer_static not in self._authorized:
            self._refuse(f"sender key {hs.peer_static.hex()} is not an authorized client", now)
            return
        try:
            level = negotiate_cipher(hs.hello.min_cipher, hs.hello.max_cipher, cfg.min_cipher, cfg.max_cipher)
        except NegotiationError as exc:
            self._refuse(str(exc), now)
            return
        self._reply = (True, level, "")
        self._keys_ready(*hs.keys.protections(level), level)
        self._set_state(ReceiverState.AWAIT_REQUEST)
        self._events.append(HandshakeCompleted(self.session_id, level, hs.peer_static))

    def _refuse(self, message: str, now: float) -> None:
        self._reply = (False, 0, message)
        self._drain(now, ReceiverState.FAILED)
        self._events.append(TransferFailed(message, remote=False))

    def _drain(self, now: float, final: ReceiverState) -> None:
        self._drain_final = final
        self._drain_deadline = now + self._config.drain_timeout
        self._set_state(ReceiverState.DRAINING)

    def _fail(self, message: str, remote: bool, notify: bool) -> None:
        if self._state in self.END_STATES or self._state is ReceiverState.DRAINING:
            return
        super()._fail(message, remote, notify)

    def _replay_backlog(self, budget: int = 0) -> None:
        """Process held datagrams, up to ``budget`` bytes (REPLAY_SLICE from the accept and
        the timer): between slices the driver runs, so the files the first slices completed are
        being finished while the rest is replayed (32 MiB of early data in one go held the
        loop ~35 ms with nothing finished).  What arrives meanwhile queues behind it: in
        order, no ACK reports a later datagram ahead of an earlier one, which the sender
        would take for lost and send again."""
        backlog = self._backlog
        budget = budget or REPLAY_SLICE
        while backlog and budget > 0 and self._state is ReceiverState.RECEIVING:
            payload, pn, arrived = backlog.popleft()
            budget -= len(payload)
            self._process_data(payload, pn, arrived)
        if self._state is not ReceiverState.RECEIVING:
            backlog.clear()  # a write failed: nothing more is written
            self._eof_behind = []
            self._ping_behind = None
        elif not backlog:
            # Control messages and PINGs are not queued: one that came while data waited
            # here is answered now, or an eof would ask for blocks already on the way and a
            # PING's echo would have the sender take the waiting datagrams for lost.
            for index in self._eof_behind:
                if self._active[index]:
                    self._send_missing(index)
            self._eof_behind = []
            if self._ping_behind is not None:
                self._echo_ping(*self._ping_behind)
                self._ping_behind = None

    def _send_missing(self, index: int) -> None:
        missing = RangeSet(self._received[index].missing(0, self._nblocks[index]))
        self._control.send({"type": "missing", "file": index, "ranges": missing.to_bytes()})

    def _release_early(self) -> None:
        self._early = []
        if self._early_budget is not None:
            self._early_budget.give(self._early_bytes)
        self._early_bytes = 0

    def _hold_early(self, payload: bytes | memoryview, pn: int, now: float) -> None:
        n = len(payload)
        if self._early_bytes + n > self._config.early_data_limit or (
            self._early_budget is not None and not self._early_budget.take(n)
        ):
            self.drops.unexpected += 1  # the sender sends it again once it is accepted
            return
        self._early_bytes += n
        self._early.append((bytes(payload), pn, now))

    def _enter_failed(self) -> None:
        self._release_early()
        self._backlog.clear()
        # Linger (answering retransmissions) only if the peer has something to hear from us.
        if self._send_prot is not None and not self._control.all_acked:
            self._drain(self._last_recv or 0.0, ReceiverState.FAILED)
        else:
            self._set_state(ReceiverState.FAILED)

    # -- control messages --------------------------------------------------------------------------
    def _on_control(self, message: dict[str, Any], now: float) -> None:
        kind = message["type"]
        state = self._state
        if kind == "error":
            self._fail(f"sender: {message.get('message', '')}", remote=True, notify=False)
        elif kind == "open" and state is ReceiverState.AWAIT_REQUEST and self._expected_files < 0:
            check_message(message, transfer=str, count=int, params=dict)
            if not 0 <= message["count"] <= MAX_FILES:
                raise ControlError("file count out of range")
            self.transfer_id = message["transfer"]
            self.params = message["params"]
            self._expected_files = message["count"]
            self._maybe_requested()
        elif kind == "files" and state is ReceiverState.AWAIT_REQUEST and self._expected_files >= 0:
            check_message(message, first=int, entries=list)
            if message["first"] != len(self.files):
                raise ControlError("manifest entries out of order")
            if len(self.files) + len(message["entries"]) > self._expected_files:
                raise ControlError("more manifest entries than announced")
            try:
                self.files.extend(FileEntry.from_wire(item) for item in message["entries"])
            except ValueError as exc:
                raise ControlError(f"bad manifest entry: {exc}") from exc
            self._maybe_requested()
        elif kind == "eof" and (
            state in (ReceiverState.RECEIVING, ReceiverState.DRAINING)
            or (state is ReceiverState.AWAIT_ACCEPT and message.get("early") is True)
        ):
            # Before the accept only early digests come (small files sent as early data):
            # kept, and a file completed by the accept's replay of its blocks is verified at once.
            check_message(message, files=list, digests=list)
            if len(message["digests"]) != len(message["files"]):
                raise ControlError("eof has not one digest per file")
            # An early eof comes ahead of the ACKs: its blocks may still be on the way, so
            # only the eof after them asks for what is missing.
            early = message.get("early") is True
            for index, digest in zip(message["files"], message["digests"], strict=True):
                if not isinstance(index, int) or not 0 <= index < len(self.files):
                    raise ControlError(f"eof for unknown file {index!r}")
                if not isinstance(digest, bytes) or len(digest) not in (0, DIGEST_SIZE):
                    raise ControlError(f"bad digest for file {index}")
                if digest:
                    self._digests[index] = digest
                if self._active[index]:
                    if early:
                        continue
                    if self._backlog:
                        self._eof_behind.append(index)  # its blocks may wait in the backlog
                    else:
                        self._send_missing(index)
                elif self._awaiting_digest[index]:
                    self._awaiting_digest[index] = 0
                    self._events.append(FileReceived(index, self._digests[index]))
        elif kind == "close" and state is ReceiverState.RECEIVING:
            self._events.append(TransferCompleted(tuple(sorted(self._failed_files))))
            self._drain(now, ReceiverState.CLOSED)
        elif kind == "close" and state is ReceiverState.DRAINING:
            pass  # a retransmitted close: the control ACK is what the sender needs
        else:
            raise ControlError(f"unexpected control message {kind!r} in state {state.name}")

    def _maybe_requested(self) -> None:
        if len(self.files) != self._expected_files:
            return
        bs = self.block_size
        sizes = [entry.size for entry in self.files]
        self._nblocks = [block_count(size, bs) for size in sizes]
        self._last_len = [size - (n - 1) * bs if n else 0 for size, n in zip(sizes, self._nblocks, strict=True)]
        self._received = [RangeSet() for _ in sizes]
        count = len(self.files)
        self._digests = [e.digest or (EMPTY_DIGEST if not e.size else b"") for e in self.files]
        self._awaiting_digest = bytearray(count)
        self._active = bytearray(count)
        self._complete = bytearray(count)
        self._verdict_given = bytearray(count)
        self._set_state(ReceiverState.AWAIT_ACCEPT)
        self._events.append(TransferRequested(self.transfer_id, self.params, tuple(self.files), bs))

    def _complete_file(self, index: int) -> None:
        self._complete_files.add(index, index + 1)
        self._active[index] = 0
        self._complete[index] = 1
        if self._digests[index]:
            self._events.append(FileReceived(index, self._digests[index]))
        else:
            self._awaiting_digest[index] = 1  # the sender's eof brings it

    def _on_ping(self, now: float) -> None:
        if self._backlog or self._early:
            # Its echo would tell the sender that every datagram before it is in or lost,
            # while some are held (early data, then the backlog): it counts once they are
            # processed (the sender's tail probes come while its early data is held).
            self._ping_behind = (self._pongs[-1][0], self._largest_pn, now)
            return
        self._echo_ping(self._pongs[-1][0], self._largest_pn, now)

    def _echo_ping(self, echo: float, largest_pn: int, now: float) -> None:
        if largest_pn > self._echo_pn:
            self._echo_pn = largest_pn
            self._echo_time = echo
            self._echo_recv = now
        if self._state is ReceiverState.RECEIVING:
            self._ack_now = True

    # -- data ---------------------------------------------------------------------------------------
    def _on_packet(self, ptype: int, payload: bytes | memoryview, now: float) -> None:
        if ptype == PacketType.PARITY and self._state is ReceiverState.RECEIVING:
            self._on_parity(payload)
        else:
            self.drops.unexpected += 1

    def _on_parity(self, payload: bytes | memoryview) -> None:
        f, first, count, parity = decode_parity(payload)
        # Two blocks or more: one of them is whole, so the parity is one block long.
        if f >= len(self._received) or first + count > self._nblocks[f] or len(parity) != self.block_size:
            self.drops.out_of_range += 1
            return
        received = self._received[f]
        blocks = range(first, first + count)
        # A member already here cannot be folded in (its bytes are gone): the group is of no
        # use, and the ARQ covers it as before.  So is a block another group already covers.
        if (
            not self._active[f]
            or (len(self._parity) + count) // 2 * self.block_size > MAX_PARITY_BYTES
            or any(b in received or (f, b) in self._parity for b in blocks)
        ):
            return
        group = ParityGroup(f, blocks, parity)
        for b in blocks:
            self._parity[(f, b)] = group

    def _rebuild(self, group: ParityGroup, now: float) -> None:
        f = group.file_index
        n = self._nblocks[f]
        (b,) = group.missing
        data = group.rebuild(self.block_size if b < n - 1 else self._last_len[f])
        del self._parity[(f, b)]
        group.missing.clear()
        if not self._active[f] or not self._received[f].add(b, b + 1):
            return
        try:
            self._sink.write(f, b * self.block_size, memoryview(data))
        except Exception as exc:  # the sink is the driver's file I/O: report, don't crash
            self._fail(f"cannot write {self.files[f].path!r}: {exc}", remote=False, notify=True)
            return
        self.stats.blocks_received += 1
        self.stats.blocks_recovered += 1
        self.stats.block_bytes_received += len(data)
        runs = self._runs
        if runs and runs[-1][0] == f and runs[-1][2] == b:
            runs[-1][2] = b + 1
        else:
            runs.append([f, b, b + 1])
        self._ack_now = True  # the sender may be about to resend it
        if self._received[f].count == n:
            self._complete_file(f)

    def _on_data(self, payload: bytes | memoryview, pn: int, now: float) -> None:
        if self._state is not ReceiverState.RECEIVING:
            if self._state in (ReceiverState.AWAIT_REQUEST, ReceiverState.AWAIT_ACCEPT):
                self._hold_early(payload, pn, now)
            else:
                self.drops.unexpected += 1
            return
        if self._backlog:
            self._backlog.append((bytes(payload), pn, now))
            # Twice its size processed from the front: the backlog shrinks with every
            # arrival, so it stays within what was held even when the data comes faster
            # than it is written (the socket buffer, not memory, takes the excess again).
            self._replay_backlog(2 * len(payload))
            return
        self._process_data(payload, pn, now)

    def _process_data(self, payload: bytes | memoryview, pn: int, now: float) -> None:
        send_time, blocks = decode_data(payload)
        owd = now - send_time
        if owd < self._owd_min:
            self._owd_min = owd
        self._owd_sum += owd
        self._owd_n += 1
        if pn >= self._echo_pn:
            self._echo_pn = pn
            self._echo_time = send_time
            self._echo_recv = now
        nfiles = len(self._received)
        active = self._active
        nblocks = self._nblocks
        bs = self.block_size
        runs = self._runs
        stats = self.stats
        parity = self._parity
        for f, b, view in blocks:
            if f >= nfiles:
                self.drops.out_of_range += 1
                continue
            n = nblocks[f]
            length = len(view)
            if b >= n or length != (bs if b < n - 1 else self._last_len[f]):
                self.drops.out_of_range += 1
                continue
            stats.block_bytes_received += length
            if active[f] and self._received[f].add(b, b + 1):
                try:
                    self._sink.write(f, b * bs, view)
                except Exception as exc:  # the sink is the driver's file I/O: report, don't crash
                    self._fail(f"cannot write {self.files[f].path!r}: {exc}", remote=False, notify=True)
                    return
                if parity:
                    group = parity.pop((f, b), None)
                    if group is not None:
                        group.absorb(b, view)
                        if len(group.missing) == 1:
                            self._short.append(group)
                stats.blocks_received += 1
                if self._received[f].count == n:
                    self._complete_file(f)
            elif b in self._received[f]:
                stats.blocks_duplicate += 1
            else:
                self.drops.out_of_range += 1  # a declined file
                continue
            if runs and runs[-1][0] == f and runs[-1][2] == b:
                runs[-1][2] = b + 1
            else:
                runs.append([f, b, b + 1])
        self._ack_count += 1
        if self._ack_since is None:
            self._ack_since = now

    def _ack_groups(
        self, run_lists: Iterable[list[list[int]]], covered: int
    ) -> tuple[tuple[int, list[tuple[int, int]]], ...]:
        """The (file, ranges) groups of an ACK reporting ``run_lists``, by file; none for
        the complete files below ``covered`` (the ACK's file ranges say they are in)."""
        received = self._received
        complete = self._complete
        # A file's group starts as its received prefix (a plain pair) and becomes a
        # RangeSet only when a run lies outside it: many small files, each one run
        # inside its prefix, cost no RangeSet each (py-spy: a tenth of the loop).
        per_file: dict[int, RangeSet | tuple[int, int]] = {}
        for runs in run_lists:
            for f, s, e in runs:
                if f < covered and complete[f]:
                    continue
                rs = per_file.get(f)
                if rs is None:
                    first = received[f].first()
                    if first is not None and first[0] == 0:
                        if e <= first[1]:
                            per_file[f] = first
                            continue
                        rs = per_file[f] = RangeSet([first])
                    else:
                        rs = per_file[f] = RangeSet()
                elif type(rs) is tuple:
                    if rs[0] <= s and e <= rs[1]:
                        continue
                    rs = per_file[f] = RangeSet([rs])
                rs.add(s, e)  # type: ignore[union-attr]
        return tuple((f, [rs] if isinstance(rs, tuple) else list(rs)) for f, rs in sorted(per_file.items()))

    def _build_ack(self, now: float) -> bytes:
        current = self._runs
        self._runs = []
        limit = max(self._max_payload, self._peer_datagram - HEADER_SIZE - TAG_SIZE)
        # No more runs than could fit (each takes two bytes at least): the work per ACK
        # stays bounded by its size however many holes there are.
        complete = list(itertools.islice(self._complete_files, limit // 4 + 1))
        below = complete[0][1] if complete and complete[0][0] == 0 else 0
        if below:
            del complete[0]
        above = tuple(complete[: varint_ranges_fitting(complete, limit // 2)])
        covered = above[-1][1] if above else below
        ack = Ack(
            self._largest_pn,
            self._echo_time,
            max(0.0, now - self._echo_recv),
            now,
            self.stats.packets_recv,
            self.stats.block_bytes_received,
            self._owd_min if self._owd_n else math.nan,
            self._owd_sum / self._owd_n if self._owd_n else math.nan,
            self._ack_groups((*self._history, current), covered),
            below,
            above,
        )
        payload, fitted = encode_ack_prefix(ack, limit)
        if fitted < len(ack.groups) and self._history:
            # Too many ranges for one datagram: the repeats of earlier ACKs go first.
            ack = dataclasses.replace(ack, groups=self._ack_groups((current,), covered))
            payload, fitted = encode_ack_prefix(ack, limit)
        leftover: list[list[int]] = []
        while fitted == 0 < len(ack.groups) and len(current) > 1:
            # One file's runs alone overflow (not seen in practice: ACKs come every 64
            # datagrams at the latest): report half of them now.
            half = len(current) // 2
            leftover = current[half:] + leftover
            current = current[:half]
            ack = dataclasses.replace(ack, groups=self._ack_groups((current,), covered))
            payload, fitted = encode_ack_prefix(ack, limit)
        if fitted < len(ack.groups):
            # Still too many: the later files' runs go out in the next ACK (one cut, not
            # halving and encoding again: that cost 64 ms for 10,000 files' early data).
            cut = ack.groups[fitted][0]
            leftover = [run for run in current if run[0] >= cut] + leftover
            current = [run for run in current if run[0] < cut]
        if self._history.maxlen:
            self._history.append(current)
        self._ack_overflow = bool(leftover)
        if leftover:
            self._runs = leftover + self._runs
        self._ack_since = None
        self._ack_count = 0
        self._ack_now = False
        self._owd_min = math.inf
        self._owd_sum = 0.0
        self._owd_n = 0
        if leftover:
            self._ack_since = now  # what is still left goes out within ack_interval at the latest
        self.stats.acks_sent += 1
        return self._seal(PacketType.ACK, payload, now)
