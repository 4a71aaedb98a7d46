"""The sending side of a transfer session, sans-IO (aioquic's shape).

Strategy: the sender paces DATA datagrams at the rate controller's target, new blocks in
file order, retransmissions first.  It never waits for acknowledgements to send new data
(the receiver ACKs block ranges every ~10 ms); it only stops when no ACK at all came for
``ack_stall_timeout`` (a dead link) and then probes with PINGs, backing off to
``max_probe_interval``.

Loss detection: every DATA datagram is remembered with its send time and the block runs
it carried.  Each ACK echoes the send time of the newest datagram the receiver saw; any
remembered datagram sent more than ``reorder_time + srtt/8`` before that, whose blocks
are still not all acknowledged, is presumed lost and its missing blocks are queued for
resending.  The tail is covered by the probe: a PING's echo makes everything older
eligible.  Acknowledged ranges are cumulative knowledge (RangeSet per file) so late or
duplicated ACKs are harmless, and a block is checked against it again just before it is
resent.

Tail parity (:mod:`.fec`): on a path that has lost blocks, the last round trip of new
data goes in groups of consecutive blocks of a file, each preceded by a PARITY datagram
from which the receiver rebuilds any one block of the group that does not arrive, so a
loss there no longer costs the transfer one more round trip.

Resume: ``acked`` (our checkpoint) and the receiver's ``have`` messages both remove
blocks from what must be sent.  Once a file is fully acknowledged the sender says
``eof``; a receiver that lacks blocks anyway (it lost state) answers ``missing`` and they
are resent, so a stale checkpoint cannot leave a file incomplete.

Digests: ``eof`` carries each file's whole-file digest, the manifest's or (when the
manifest was built without hashing) the source's, computed while the file was read for
sending.  The receiver verifies a complete file only once it has that digest.  A small
file's (EARLY_DIGEST_MAX) goes in an ``early`` eof as soon as its last block has been sent,
even before the transfer is accepted, gathered EARLY_DIGEST_BATCH at a time: the receiver
then verifies it as its last block lands, instead of after the round trip of its ACK and
the eof that answers it (10,000 small files on loopback: finishing started only once the
sender had seen the acceptance and the ACKs of the early data, ~80 ms after the accept).
On a resumed session the eof after the file's ACKs still follows, with an empty digest: it
is the one that asks for missing blocks; so does it when there is no digest
(TRANSFER_FLAG_READ off), as the receiver verifies on it.  Files whose last block goes in a
parity group are left to those later eofs.
"""

from __future__ import annotations

import enum
import math
import secrets
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from .config import TransferConfig
from .control import ControlError
from .crypto import CIPHER_SUITES, CryptoError, InitiatorHandshake, StaticKey, cipher_name
from .events import FileVerified, HandshakeCompleted, TransferAccepted, TransferCompleted
from .fec import group_size, parity_of
from .manifest import Checkpoint, FileEntry, block_count, block_length
from .packet import (
    BLOCK_HEADER_SIZE,
    DATA_PREFIX_SIZE,
    TAG_SIZE,
    PacketError,
    PacketType,
    block_overhead,
    data_parts,
    decode_ack,
    encode_parity,
)
from .ranges import NO_RANGES, RangeSet
from .rate import Pacer, RateController
from .session import SessionBase, check_message

__all__ = ["BlockSource", "Sender", "SenderState"]

#: Manifest entries per ``files`` control message.
_FILES_PER_MESSAGE = 256
#: Files this small have their digest sent as soon as their last block has been: the source
#: hashes them as it reads them, so the digest is ready without waiting for a hash thread.
EARLY_DIGEST_MAX = 256 * 1024
#: Early digests gathered into one eof (sent sooner once every block is out or an ACK
#: interval has passed since the first of them was queued).
EARLY_DIGEST_BATCH = 64


class BlockSource(Protocol):
    """Where the sender's block data comes from (the driver reads files; tests use memory)."""

    def read(self, file_index: int, offset: int, length: int) -> bytes | memoryview:
        """Exactly ``length`` bytes of file ``file_index`` at byte ``offset`` (a view is
        fine: the sender copies it into the datagram before it reads again)."""
        ...

    # Optional: ``digest(file_index) -> bytes``, the whole-file digest for an entry whose
    # manifest carries none (sent in the file's ``eof``; FileSource hashes while it reads).


class SenderState(enum.Enum):
    HANDSHAKE = "handshake"
    REQUESTING = "requesting"
    SENDING = "sending"
    CLOSING = "closing"
    COMPLETE = "complete"
    FAILED = "failed"


#: States in which ACKs are taken: data flows from the transfer request on.
_ACKED_STATES = frozenset({SenderState.REQUESTING, SenderState.SENDING, SenderState.CLOSING})
#: States in which queued early digests are sent.
_DIGEST_STATES = frozenset({SenderState.REQUESTING, SenderState.SENDING})


class Sender(SessionBase):
    """Sends ``files`` (read through ``source``) to the receiver whose key is ``peer_public_key``."""

    role = "sender"
    END_STATES = frozenset({SenderState.COMPLETE, SenderState.FAILED})

    def __init__(
        self,
        config: TransferConfig,
        files: Sequence[FileEntry],
        source: BlockSource,
        *,
        static_key: StaticKey,
        peer_public_key: bytes,
        transfer_id: str = "",
        params: Mapping[str, Any] | None = None,
        acked: Mapping[int, RangeSet] | None = None,
        peer_addr: Any = None,
        session_id: int | None = None,
        ephemeral_key: X25519PrivateKey | None = None,
    ) -> None:
        super().__init__(config, secrets.randbits(64) if session_id is None else session_id, peer_addr)
        self._state = SenderState.HANDSHAKE
        self.files = tuple(files)
        self.transfer_id = transfer_id
        self._params = dict(params or {})
        self._source = source
        self.block_size = bs = config.resolved_block_size()
        self._sizes = [f.size for f in self.files]
        self._nblocks = [block_count(f.size, bs) for f in self.files]
        self.total_blocks = sum(self._nblocks)
        self.total_bytes = sum(self._sizes)
        self._acked = [RangeSet() for _ in self.files]
        for index, ranges in (acked or {}).items():
            if not 0 <= index < len(self.files):
                raise ValueError(f"checkpoint names file {index} of {len(self.files)}")
            for s, e in ranges:
                self.stats.blocks_acked += self._acked[index].add(s, min(e, self._nblocks[index]))
        # From a checkpoint the receiver may lack blocks we count as acknowledged: then every
        # file gets the eof after its ACKs, which asks it what is missing.
        self._resumed = self.stats.blocks_acked > 0
        # New blocks still to send per file; None for a file not reached yet, whose blocks are
        # all those not acknowledged (materialised by _next_run: a RangeSet per file up front
        # cost 8.7 ms for 10,000 files, between the handshake and the manifest's departure).
        self._pending: list[RangeSet | None] = []
        self._new_remaining = 0
        self._cur_file = 0
        self._run: list[int] | None = None
        self._retx: deque[tuple[int, int, int]] = deque()
        # New blocks of the current parity group, already read: sent before any other new one.
        self._grouped: deque[tuple[int, int, bytes | memoryview]] = deque()
        self._inflight: deque[tuple[float, list[list[int]]]] = deque()
        self._skipped: dict[int, str] = {}
        self._verdicts: dict[int, FileVerified] = {}
        self._eof_sent = bytearray(len(self.files))
        self._eof_queue: list[int] = []
        self._digest_queue: list[int] = []  # small files whose last block was sent (early eof)
        self._digest_queued_at = 0.0
        # Files whose digest an eof carried already: later eofs (after the ACKs, which still
        # ask the receiver what is missing) carry an empty one for them.
        self._digest_sent = bytearray(len(self.files))
        self._known_complete = RangeSet()  # files the receiver's ACKs said are complete
        self._request_unsent = False  # the request is queued and not yet in a datagram
        self._early_eof_sent = False
        self._early_left = 0
        self._handshake = InitiatorHandshake(
            static_key, peer_public_key, config.min_cipher, config.max_cipher, bs, ephemeral_key
        )
        self._handshake_error = ""
        self._hello_started: float | None = None
        self._hello_next: float | None = None
        self._hello_interval = config.hello_interval
        self._rate = RateController(
            config.initial_rate / 8,
            config.min_rate / 8,
            config.max_rate / 8,
            active=config.rate_control,
            queue_target=config.queue_target,
            wire_factor=(bs + block_overhead() + TAG_SIZE) / bs,
        )
        self._pacer = Pacer(self._rate.rate, config.tick, config.pacing_burst)
        self._app_limited = False
        self._last_ack: float | None = None
        self._last_echo = -math.inf
        self._last_eliciting = -math.inf
        self._probe_count = 0
        self._paused = False
        self._close_deadline: float | None = None
        self._outcome_reported = False
        self._last_data_sent = self._tail_probed = -math.inf
        self._tail_probes = 0

    # -- controls for the driver -------------------------------------------------------------------
    @property
    def rate(self) -> float:
        """Current target rate in bits/s."""
        return self._rate.rate * 8

    @property
    def queue_delay(self) -> float:
        """Latest queueing delay estimate (s)."""
        return self._rate.queue_delay

    def set_max_rate(self, bits_per_second: float) -> None:
        """Change the rate ceiling (sendRateMax, server bandwidth share) at any time."""
        self._rate.set_max_rate(bits_per_second / 8)

    def pause(self) -> None:
        """Stop sending data (keepalives continue); :meth:`resume` continues."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    def abort(self, message: str) -> None:
        """End the session in error and tell the receiver (cancel, source changed...)."""
        self._fail(message, remote=False, notify=True)

    def checkpoint(self) -> Checkpoint:
        """Acknowledged ranges per file, to save and pass back as ``acked`` on resume."""
        return Checkpoint(self.block_size, {i: rs.copy() for i, rs in enumerate(self._acked) if rs})

    def snapshot(self) -> dict[str, Any]:
        """Live figures in Transfer Structure terms."""
        data: dict[str, Any] = self.stats.as_structure()
        data.update(
            blockSize=self.block_size,
            totalBlocks=self.total_blocks,
            totalBytes=self.total_bytes,
            roundTripTimeMs=self.rtt.srtt * 1000,
            sendRate=self.rate,
            rateControllerActive=self._rate.active,
        )
        return data

    # -- sans-IO surface ---------------------------------------------------------------------------
    def receive_datagram(self, data: bytes | memoryview, addr: Any, now: float) -> None:
        if self._state in self.END_STATES:
            return
        opened = self._open(data, now)
        if opened is None:
            return
        ptype, pn, payload = opened
        if ptype == PacketType.HELLO_REPLY:
            self._on_hello_reply(data, pn, now)
        elif ptype == PacketType.HELLO:
            self.drops.unexpected += 1
        else:
            self.peer_addr = addr
            self._dispatch(ptype, payload, now)

    def datagrams_to_send(self, now: float) -> list[bytes]:
        if self._state in self.END_STATES:
            return self._final_datagrams(now)
        if self._state is SenderState.HANDSHAKE:
            return self._hello_datagrams(now)
        if not self._early_eof_sent and self._state is SenderState.SENDING and not self._new_remaining:
            # Every block has been sent once: the digests of the files still waiting for
            # ACKs go now, so the receiver can verify each file as its last block lands
            # instead of a round trip after the sender saw it acknowledged (one RTT less
            # of tail: 0.3 s at 300 ms).  The eof after the ACKs still follows, and only it
            # asks the receiver what is missing: these blocks may still be in flight.
            self._early_eof_sent = True
            early = [i for i, n in enumerate(self._nblocks) if n and not self._eof_sent[i] and i not in self._skipped]
            self._digest_queue.clear()  # those files are in this eof
            if early and not self._send_eof(early, early=True):
                return self._final_datagrams(now)
        if self._eof_queue:
            queue, self._eof_queue = self._eof_queue, []
            if not self._send_eof(queue):
                return self._final_datagrams(now)
        out: list[bytes] = []
        self._common_datagrams(now, out)
        if self._request_unsent:
            # The request and the manifest leave alone, and the data follows at the next
            # call (get_timer: at once): reading the first burst of small files (~5 ms on
            # loopback) held them back while the receiver had nothing to set up.
            self._request_unsent = False
        elif self._data_may_flow():
            self._send_data(now, out)
        due = self._digest_deadline()
        if due is not None and (len(self._digest_queue) >= EARLY_DIGEST_BATCH or not self._new_remaining or now >= due):
            queue, self._digest_queue = self._digest_queue, []
            if not self._send_eof(queue, early=True):
                return self._final_datagrams(now)
            self._control_chunks(now, out)
        probe = self._probe_deadline()
        if (probe is not None and now >= probe) or now >= self._last_send + self._config.keepalive_interval:
            if probe is not None and now >= probe:
                self._probe_count += 1
            out.append(self._ping(now))
            self._last_eliciting = now
        elif (tail := self._tail_probe_time()) is not None and now >= tail:
            self._tail_probes = self._tail_probes + 1 if self._tail_probed >= self._last_data_sent else 1
            out.append(self._ping(now))
            self._last_eliciting = self._tail_probed = now
        return out

    def _tail_probe_time(self) -> float | None:
        """At the tail (everything sent, some of it unacknowledged), one PING just late enough
        that its echo marks every DATA datagram before it as lost if unacknowledged: the
        loss of the last blocks shows about one round trip after they went out, instead of
        after a probe timeout per round of resends (7 RTTs of tail at 5 % loss, measured in
        simulation).  Two per burst of data (either may be lost), so a small transfer adds two
        ACKs, not a stream."""
        if self._state is not SenderState.SENDING or self._paused or not self._inflight or self._has_data():
            return None
        wait = self._config.reorder_time + self.rtt.srtt / 8 + self._config.tick
        if self._tail_probed < self._last_data_sent:
            return self._last_data_sent + wait
        if self._tail_probes < 2:  # the probe or its ACK may be lost too: one more
            return self._tail_probed + wait
        return None

    def get_timer(self) -> float | None:
        if self._state in self.END_STATES:
            return None
        if self._state is SenderState.HANDSHAKE:
            if self._hello_next is None or self._hello_started is None:
                return None
            return min(self._hello_next, self._hello_started + self._config.handshake_timeout)
        times = [self._last_send + self._config.keepalive_interval]
        for t in (
            self._control.timer(),
            self._idle_deadline(),
            self._probe_deadline(),
            self._close_deadline,
            self._tail_probe_time(),
            self._digest_deadline(),
        ):
            if t is not None:
                times.append(t)
        if self._data_may_flow() and self._has_data():
            t = self._pacer.next_send_time()
            stall = self._stall_deadline()
            if stall is None or t < stall:
                times.append(t)
        return min(times)

    def handle_timer(self, now: float) -> None:
        if self._state in self.END_STATES:
            return
        if self._state is SenderState.HANDSHAKE:
            started = self._hello_started
            if started is not None and now >= started + self._config.handshake_timeout:
                reason = self._handshake_error or "no answer"
                self._fail(
                    f"handshake failed after {self._config.handshake_timeout:g} s: {reason} "
                    "(unreachable receiver, or not the expected public key)",
                    remote=False,
                    notify=False,
                )
            return
        self._check_idle(now)
        if self._close_deadline is not None and now >= self._close_deadline:
            self._complete()

    # -- handshake ---------------------------------------------------------------------------------
    def _hello_datagrams(self, now: float) -> list[bytes]:
        if self._hello_next is not None and now < self._hello_next:
            return []
        if self._hello_started is None:
            self._hello_started = now
        self._hello_next = now + self._hello_interval
        self._hello_interval = min(self._hello_interval * 2, 2.0)
        datagram = self._handshake.hello_datagram(self.session_id, self._next_pn())
        self._count_sent(datagram, now)
        return [datagram]

    def _on_hello_reply(self, data: bytes | memoryview, pn: int, now: float) -> None:
        if self._state is not SenderState.HANDSHAKE:
            self.drops.unexpected += 1
            return
        try:
            reply, keys = self._handshake.process_reply(data)
        except PacketError:
            self.drops.malformed += 1
            return
        except CryptoError as exc:
            self.drops.unauthentic += 1
            self._handshake_error = str(exc)
            return
        self._replay.commit(pn)
        self._authentic(len(data), now)
        self._last_ack = now
        if not reply.accepted:
            self._fail(f"refused by receiver: {reply.message}", remote=True, notify=False)
            return
        level = reply.cipher
        cfg = self._config
        if level not in CIPHER_SUITES or not cfg.min_cipher <= level <= cfg.max_cipher:
            self._fail(f"receiver chose {cipher_name(level)}, outside what we allow", False, False)
            return
        self._keys_ready(*keys.protections(level), level)
        self.peer_public_key = self._handshake.peer_static
        self._events.append(HandshakeCompleted(self.session_id, level, self.peer_public_key))
        self._set_state(SenderState.REQUESTING)
        self._control.send(
            {"type": "open", "transfer": self.transfer_id, "count": len(self.files), "params": self._params}
        )
        self._request_unsent = True
        for first in range(0, len(self.files), _FILES_PER_MESSAGE):
            entries = [f.to_wire() for f in self.files[first : first + _FILES_PER_MESSAGE]]
            self._control.send({"type": "files", "first": first, "entries": entries})
        # Data starts now, not once the receiver has answered: it holds up to
        # early_data_limit bytes until it accepts (a round trip saved).  Its answer may
        # still skip files or say it has blocks already; _on_ready takes those out.
        self._pending = [None] * len(self.files)
        self._new_remaining = self.total_blocks - self.stats.blocks_acked
        # Not on a resume: the receiver then has part-files we would send again.
        self._early_left = 0 if self.stats.blocks_acked else self._config.early_data_limit

    # -- control messages --------------------------------------------------------------------------
    def _on_control(self, message: dict[str, Any], now: float) -> None:
        kind = message["type"]
        state = self._state
        if kind == "error":
            self._fail(f"receiver: {message.get('message', '')}", remote=True, notify=False)
        elif kind == "reject" and state is SenderState.REQUESTING:
            self._fail(f"rejected by receiver: {message.get('message', '')}", remote=True, notify=False)
        elif kind == "have" and state is SenderState.REQUESTING:
            check_message(message, file=int, ranges=bytes)
            index = self._file_index(message["file"])
            present = self._ranges(message["ranges"], index)
            self._count_acked(index, self._acked[index].update(present))
        elif kind == "ready" and state is SenderState.REQUESTING:
            check_message(message, skip=list)
            self._on_ready(message["skip"], now)
        elif kind == "verified" and state in (SenderState.SENDING, SenderState.CLOSING):
            check_message(message, results=list)
            for item in message["results"]:
                if not (isinstance(item, list) and len(item) == 3 and isinstance(item[1], bool)):
                    raise ControlError("bad verified result")
                index = self._file_index(item[0])
                if index not in self._verdicts:
                    verdict = FileVerified(index, item[1], str(item[2]))
                    self._verdicts[index] = verdict
                    self._events.append(verdict)
                    if verdict.ok:
                        # Verified means received whole: its blocks count as acknowledged even
                        # if the ACKs saying so are still on the way (the verdict can overtake
                        # them, and then the transfer ended with blocksAcked short).
                        self._count_acked(index, self._acked[index].add(0, self._nblocks[index]))
            self._maybe_close(now)
        elif kind == "missing" and state is SenderState.SENDING:
            check_message(message, file=int, ranges=bytes)
            index = self._file_index(message["file"])
            missing = self._ranges(message["ranges"], index)
            self.stats.blocks_acked -= self._acked[index].difference_update(missing)
            self._eof_sent[index] = 0
            self._retx.extend((index, s, e) for s, e in missing)
        else:
            raise ControlError(f"unexpected control message {kind!r} in state {state.name}")

    def _count_acked(self, index: int, newly: int) -> None:
        """``newly`` blocks of file ``index`` were just added to its acknowledged set (by a
        "have", a verdict or an ACK's complete files).  A file not reached yet makes its
        pending blocks from that set when it is reached, so they also leave the count of new
        blocks to send: left in it, the sender had data by its count and none to find, and
        spun until "ready" came."""
        self.stats.blocks_acked += newly
        if newly and self._pending and self._pending[index] is None:
            self._new_remaining -= newly

    def _unacked_blocks(self, index: int) -> RangeSet:
        """The blocks of file ``index`` not acknowledged: its new blocks when first reached."""
        n, acked = self._nblocks[index], self._acked[index]
        if acked.count >= n:
            return NO_RANGES
        todo = RangeSet.span(0, n)
        todo.difference_update(acked)
        return todo

    def _file_index(self, value: object) -> int:
        if not isinstance(value, int) or not 0 <= value < len(self.files):
            raise ControlError(f"file index {value!r} out of range")
        return value

    def _ranges(self, data: bytes, index: int) -> RangeSet:
        try:
            return RangeSet.from_bytes(data, limit=self._nblocks[index])
        except ValueError as exc:
            raise ControlError(f"bad ranges for file {index}: {exc}") from exc

    def _on_ready(self, skip: list[Any], now: float) -> None:
        for item in skip:
            if not (isinstance(item, list) and len(item) == 2):
                raise ControlError("bad skip entry")
            index = self._file_index(item[0])
            self._skipped[index] = str(item[1])
        for index in sorted(self._skipped):
            verdict = FileVerified(index, True, self._skipped[index], skipped=True)
            self._verdicts[index] = verdict
        run = self._run
        pending, acked, nblocks = self._pending, self._acked, self._nblocks
        remaining = 0
        for index, todo in enumerate(pending):
            if index in self._skipped:
                pending[index] = NO_RANGES
                if run is not None and run[0] == index:
                    self._run = None
                continue
            done = acked[index].count  # the receiver's "have" included
            if todo is None and not done:
                remaining += nblocks[index]  # not reached yet, nothing of it acknowledged
                continue
            if todo is None:
                # Fixed now: a later "missing" puts blocks back on the resend queue, not here.
                todo = pending[index] = self._unacked_blocks(index)
            else:
                todo.difference_update(acked[index])
            remaining += todo.count
            if done and done == nblocks[index]:
                self._file_acked(index)
        self._new_remaining = remaining
        if self._run is not None:
            self._new_remaining += self._run[2] - self._run[1]
        self._last_ack = now
        self._set_state(SenderState.SENDING)
        self._events.append(TransferAccepted(tuple(sorted(self._skipped))))
        self._events.extend(self._verdicts[i] for i in sorted(self._skipped))
        self._maybe_close(now)

    def _on_control_acked(self, now: float) -> None:
        if self._state is SenderState.CLOSING and self._control.all_acked:
            self._complete()

    def _maybe_close(self, now: float) -> None:
        if self._state is SenderState.SENDING and len(self._verdicts) == len(self.files):
            self._control.send({"type": "close"})
            self._close_deadline = now + self._config.close_timeout
            self._set_state(SenderState.CLOSING)
            # Every file has its verdict (the receiver renamed it into place before saying
            # so): that is the outcome.  Reporting it now rather than after the close is
            # acknowledged saves a round trip (300 ms on a long path); the close finishes
            # in the background and can no longer turn the outcome into a failure.
            self._report_outcome()

    def _report_outcome(self) -> None:
        if not self._outcome_reported:
            self._outcome_reported = True
            failed = tuple(sorted(i for i, v in self._verdicts.items() if not v.ok))
            self._events.append(TransferCompleted(failed))

    def _complete(self) -> None:
        self._set_state(SenderState.COMPLETE)
        self._report_outcome()

    def _fail(self, message: str, remote: bool, notify: bool) -> None:
        if self._outcome_reported:
            # A close that went wrong after every verdict was in: the transfer is done.
            self._set_state(SenderState.COMPLETE)
            return
        super()._fail(message, remote, notify)

    def _enter_failed(self) -> None:
        self._set_state(SenderState.FAILED)

    def _digest(self, index: int) -> bytes:
        """The whole-file digest the receiver checks: the manifest's, else the source's."""
        digest = self.files[index].digest
        if not digest:
            source_digest = getattr(self._source, "digest", None)
            if source_digest is not None:
                digest = source_digest(index)
        return digest

    def _send_eof(self, files: list[int], early: bool = False) -> bool:
        sent = self._digest_sent
        try:
            digests = [b"" if sent[index] else self._digest(index) for index in files]
        except Exception as exc:  # the source is the driver's file I/O: report, don't crash
            self._fail(f"cannot hash a source file: {exc}", remote=False, notify=True)
            return False
        for index in files:
            sent[index] = 1
        if early and not self._resumed:
            # A fresh session's receiver has every block it acknowledged: once it has the
            # digest too, an eof after the ACKs would tell it nothing.
            eof_sent = self._eof_sent
            for index, digest in zip(files, digests, strict=True):
                if digest:
                    eof_sent[index] = 1
        message: dict[str, Any] = {"type": "eof", "files": files, "digests": digests}
        if early:
            message["early"] = True
        self._control.send(message)
        return True

    def _digest_deadline(self) -> float | None:
        """When the queued early digests go at the latest (None: none queued, or not now)."""
        state = self._state
        if not self._digest_queue or state not in _DIGEST_STATES:
            return None
        if state is SenderState.REQUESTING and not self._control.all_acked:
            # Before the accept, one at a time behind the file list: at 20 % loss a stream of
            # them delayed the file list (go-back-N) and the accept by seconds (simulated).
            return None
        return self._digest_queued_at + self._config.ack_interval

    def _queue_digest(self, index: int, now: float) -> None:
        """File ``index`` has had every block sent once: its digest goes in the next early
        eof.  On a resumed session the eof after its ACKs still follows (with an empty
        digest): only that one asks the receiver for blocks it lacks (a stale checkpoint).
        So does it when the digest is empty (TRANSFER_FLAG_READ off): the receiver verifies
        on that eof."""
        if not self._digest_queue:
            self._digest_queued_at = now
        self._digest_queue.append(index)

    def _file_acked(self, index: int) -> None:
        if not self._eof_sent[index] and self._nblocks[index]:
            self._eof_sent[index] = 1
            self._eof_queue.append(index)

    # -- acknowledgements and loss ---------------------------------------------------------------------
    def _on_packet(self, ptype: int, payload: bytes | memoryview, now: float) -> None:
        if ptype != PacketType.ACK or self._state not in _ACKED_STATES:
            self.drops.unexpected += 1
            return
        ack = decode_ack(payload)
        self.stats.acks_recv += 1
        self._last_ack = now
        self._probe_count = 0
        rtt = self.rtt
        if ack.echo_time > self._last_echo:
            self._last_echo = ack.echo_time
            if ack.echo_time <= now:
                rtt.update(now - ack.echo_time - ack.ack_delay)
        acked = self._acked
        nblocks = self._nblocks
        nfiles = len(acked)
        newly_total = 0
        for index, ranges in ack.groups:
            if index >= nfiles:
                self.drops.out_of_range += 1
                continue
            rs = acked[index]
            n = nblocks[index]
            if rs.count == n:
                continue  # already complete: a repeated group (small files: most of them)
            newly = 0
            for s, e in ranges:
                newly += rs.add(s, e if e <= n else n)
            if newly:
                newly_total += newly
                if rs.count == n:
                    self._file_acked(index)
        self.stats.blocks_acked += newly_total
        self._files_complete(((0, ack.complete_below), *ack.complete_ranges))
        threshold = self._last_echo - (self._config.reorder_time + rtt.srtt / 8)
        inflight = self._inflight
        retx = self._retx
        while inflight:
            sent_time, runs = inflight[0]
            done = True
            for f, s, e in runs:
                if not acked[f].covers(s, e):
                    done = False
                    break
            if not done:
                if sent_time > threshold:
                    break
                for f, s, e in runs:
                    for gap in acked[f].missing(s, e):
                        retx.append((f, gap[0], gap[1]))
            inflight.popleft()
        self._rate.on_report(now, ack.owd_min, rtt.srtt, ack.recv_time, ack.bytes_received, self._app_limited)
        self._app_limited = False

    def _files_complete(self, ranges: Sequence[tuple[int, int]]) -> None:
        """Every block of the files in ``ranges`` (of indices) is in (counted by
        _count_acked).  Each file is looked at once, whatever the ACKs repeat."""
        known, acked, nblocks, skipped = self._known_complete, self._acked, self._nblocks, self._skipped
        nfiles = len(acked)
        for first, end in ranges:
            end = min(end, nfiles)
            if known.covers(first, end):
                continue
            for s, e in known.missing(first, end):
                for index in range(s, e):
                    rs = acked[index]
                    n = nblocks[index]
                    if rs.count != n and index not in skipped:
                        self._count_acked(index, rs.add(0, n))
                        self._file_acked(index)
            known.add(first, end)

    def _stall_deadline(self) -> float | None:
        """When new data stops for want of any ACK (None: nothing in flight)."""
        if not self._inflight or self._last_ack is None:
            return None
        return self._last_ack + max(self._config.ack_stall_timeout, 4 * self.rtt.srtt)

    def _stalled(self, now: float) -> bool:
        deadline = self._stall_deadline()
        return deadline is not None and now >= deadline

    def _probe_deadline(self) -> float | None:
        if not self._inflight:
            return None
        base = max(self._last_ack or -math.inf, self._last_eliciting)
        pto = self.rtt.pto(self._config.ack_interval)
        return base + max(pto, min(pto * 2**self._probe_count, self._config.max_probe_interval))

    # -- data ---------------------------------------------------------------------------------------
    def _data_may_flow(self) -> bool:
        """Sending, or requesting with early data left (the pacing timer runs in both: early
        data sent only when some datagram happened to arrive went out in bursts)."""
        if self._paused:
            return False
        return self._state is SenderState.SENDING or (self._state is SenderState.REQUESTING and self._early_left > 0)

    def _has_data(self) -> bool:
        return bool(self._retx) or self._run is not None or self._new_remaining > 0

    def _next_run(self) -> list[int] | None:
        if self._run is not None:
            return self._run
        pending = self._pending
        while (cur := self._cur_file) < len(pending):
            todo = pending[cur]
            if todo is None:
                # Reached for the first time: its blocks not acknowledged (nearly always all).
                n, acked = self._nblocks[cur], self._acked[cur]
                if not acked:
                    pending[cur] = NO_RANGES
                    if n:
                        self._run = [cur, 0, n]
                        return self._run
                    self._cur_file += 1
                    continue
                todo = pending[cur] = self._unacked_blocks(cur)
            first = todo.pop_first()
            if first is not None:
                self._run = [cur, first[0], first[1]]
                return self._run
            self._cur_file += 1
        # Nothing left to find: the count says so too, whatever it was (it only ever lagged
        # behind blocks acknowledged from elsewhere), so no timer asks for data that is not there.
        self._new_remaining = 0
        return None

    def _send_data(self, now: float, out: list[bytes]) -> None:
        if not self._has_data():
            self._app_limited = True
            return
        if self._stalled(now):
            self._app_limited = True
            # Keep the pacer's clock current: its next send time would otherwise stay in the
            # past, and get_timer would ask to be woken at it again and again (a paused sender
            # resumed after the stall timeout with data in flight spun until a probe's answer).
            self._pacer.refill(now, self._config.max_datagram_size)
            return
        pacer = self._pacer
        pacer.rate = self._rate.rate
        credit = pacer.refill(now, self._config.max_datagram_size)
        early = self._state is SenderState.REQUESTING
        k = 0 if early else self._parity_group_size()  # once per tick, not per datagram
        while credit > 0:
            if early and self._early_left <= 0:
                break
            parity = self._parity_datagram(k, now) if k and not self._grouped and not self._retx else None
            if parity is not None:
                out.append(parity)
                pacer.spend(len(parity))
                credit -= len(parity)
                continue
            datagram = self._build_data(now)
            if datagram is None:
                self._app_limited = True
                break
            if early:
                self._early_left -= len(datagram)
            out.append(datagram)
            pacer.spend(len(datagram))
            credit -= len(datagram)
            self._last_eliciting = self._last_data_sent = now

    def _read_block(self, f: int, b: int) -> bytes | memoryview | None:
        """Block ``b`` of file ``f`` from the source; None when that failed the transfer."""
        length = block_length(self._sizes[f], self.block_size, b)
        try:
            data = self._source.read(f, b * self.block_size, length)
        except Exception as exc:  # the source is the driver's file I/O: report, don't crash
            self._fail(f"cannot read {self.files[f].path!r}: {exc}", remote=False, notify=True)
            return None
        if len(data) != length:
            self._fail(f"short read from {self.files[f].path!r} (file changed?)", False, True)
            return None
        return data

    def _parity_group_size(self) -> int:
        """Blocks per parity now: 0 unless sending on a lossy path with no more new data
        left than one round trip carries (module docstring)."""
        if self._state is not SenderState.SENDING or not self._new_remaining:
            return 0
        one_round_trip = self._rate.rate * (self.rtt.srtt + self._config.ack_interval)  # bytes
        if self._new_remaining * self.block_size > one_round_trip:
            return 0
        return group_size(self.stats.blocks_retransmitted, self.stats.blocks_sent)

    def _parity_datagram(self, k: int, now: float) -> bytes | None:
        """The PARITY of the next ``k`` new blocks of the current file (fewer at its end;
        None for a lone block).  The group's blocks are read now and go next."""
        run = self._next_run()
        if run is None:
            return None
        f, b, e = run
        n = min(k, e - b)
        if n < 2:
            return None  # a lone block goes as it is
        group: list[tuple[int, int, bytes | memoryview]] = []
        for block in range(b, b + n):
            data = self._read_block(f, block)
            if data is None:
                return None
            group.append((f, block, data))
        run[1] = b + n
        if run[1] >= e:
            self._run = None
        self._grouped.extend(group)
        self.stats.parity_sent += 1
        return self._seal_parts(PacketType.PARITY, [encode_parity(f, b, n, parity_of([g[2] for g in group]))], now)

    def _build_data(self, now: float) -> bytes | None:
        room = self._max_payload - DATA_PREFIX_SIZE
        hs = BLOCK_HEADER_SIZE
        bs = self.block_size
        sizes = self._sizes
        retx = self._retx
        skipped = self._skipped
        blocks: list[tuple[int, int, bytes | memoryview]] = []
        runs: list[list[int]] = []
        resent = 0
        while room > hs:
            data: bytes | memoryview | None = None  # read already for a parity group's block
            if retx:
                f, b, e = retx[0]
                acked = self._acked[f]
                if f in skipped:  # sent before the receiver said it skips the file
                    retx.popleft()
                    continue
                if b in acked:
                    retx.popleft()
                    retx.extendleft((f, gs, ge) for gs, ge in reversed(acked.missing(b, e)))
                    continue
                length = block_length(sizes[f], bs, b)
                if length + hs > room:
                    break
                if b + 1 < e:
                    retx[0] = (f, b + 1, e)
                else:
                    retx.popleft()
                resent += 1
            elif self._grouped:
                f, b, data = self._grouped[0]
                length = len(data)
                if length + hs > room:
                    break
                self._grouped.popleft()
                self._new_remaining -= 1
            else:
                run = self._next_run()
                if run is None:
                    break
                f, b, e = run
                length = block_length(sizes[f], bs, b)
                if length + hs > room:
                    break
                run[1] = b + 1
                if b + 1 >= e:
                    self._run = None
                    # Its last new block (no eof has gone for it yet: they follow ACKs or the
                    # end of new data); with a manifest digest the receiver has it already.
                    if sizes[f] <= EARLY_DIGEST_MAX and not self._pending[f] and not self.files[f].digest:
                        self._queue_digest(f, now)
                self._new_remaining -= 1
            if data is None:
                data = self._read_block(f, b)
                if data is None:
                    return None
            blocks.append((f, b, data))
            room -= length + hs
            if runs and runs[-1][0] == f and runs[-1][2] == b:
                runs[-1][2] = b + 1
            else:
                runs.append([f, b, b + 1])
        if not blocks:
            return None
        datagram = self._seal_parts(PacketType.DATA, data_parts(now, blocks), now)
        self._inflight.append((now, runs))
        self.stats.blocks_sent += len(blocks)
        self.stats.blocks_retransmitted += resent
        return datagram
