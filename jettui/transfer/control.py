"""The reliable control channel: an ordered byte stream of msgpack maps, in CONTROL packets.

Strategy: as QUIC's CRYPTO/STREAM frames do, control messages form one byte stream per
direction, carried in CONTROL packets as (offset, chunk) and acknowledged by CONTROL_ACK
with the cumulative offset received.  Messages of any size (long paths, big manifests)
are then chunked for free and packets are filled.  Lost chunks are resent from the
acknowledged offset (go-back-N) after a probe timeout that doubles per attempt: control
traffic is small, so simplicity beats selective repeat here.

Message vocabulary (every message is a map with a ``"type"`` string):

sender -> receiver
    ``open``  ``{transfer: str, count: int, blockSize: int, params: map}``
    ``files`` ``{first: int, entries: [FileEntry.to_wire(), ...]}`` (in order, until count)
    ``eof``   ``{files: [int], digests: [bytes], early?: true}`` the files' digests: once
              every block of them is acknowledged (then the receiver answers ``missing``
              for any it lacks), or ``early`` once every block was sent (small files: as
              their last block goes, even before ``ready``)
    ``close`` ``{}`` all files verified; the session ends
sender <- receiver
    ``have``     ``{file: int, ranges: bytes}`` blocks already present (resume)
    ``ready``    ``{skip: [[int, str]]}`` accepted; files declined with a reason
    ``reject``   ``{message: str}`` the request is refused
    ``verified`` ``{results: [[int, bool, str]]}`` per-file verification verdicts
    ``missing``  ``{file: int, ranges: bytes}`` after ``eof``: blocks the receiver lacks
either way
    ``error``    ``{message: str}`` the session is aborted
"""

from __future__ import annotations

from typing import Any

import msgpack

from .rate import RttEstimator

__all__ = ["ControlError", "ControlStream"]

SENDER_MESSAGES = frozenset({"open", "files", "eof", "close", "error"})
RECEIVER_MESSAGES = frozenset({"have", "ready", "reject", "verified", "missing", "error"})


class ControlError(Exception):
    """The peer's control stream broke the rules (bad msgpack, over the buffer limit...)."""


class ControlStream:
    """Both directions of the control stream of one session."""

    def __init__(self, buffer_limit: int, max_probe_interval: float) -> None:
        self._limit = buffer_limit
        self._max_probe = max_probe_interval
        # Outgoing: _out holds the stream from offset _out_base; _acked <= _sent <= end.
        self._out = bytearray()
        self._out_base = 0
        self._acked = 0
        self._sent = 0
        self._retransmit_at: float | None = None
        self._backoff = 0
        self._timed: tuple[int, float] | None = None
        # Incoming.
        self._in_next = 0
        self._pending: dict[int, bytes] = {}
        self._pending_bytes = 0
        self._unpacker = msgpack.Unpacker(raw=False, max_buffer_size=buffer_limit, strict_map_key=False)
        #: A CONTROL_ACK should go out (new or duplicate data arrived).
        self.ack_needed = False

    # -- outgoing ---------------------------------------------------------------------------
    def send(self, message: dict[str, Any]) -> None:
        self._out += msgpack.packb(message, use_bin_type=True)

    @property
    def end(self) -> int:
        return self._out_base + len(self._out)

    @property
    def all_acked(self) -> bool:
        return self._acked == self.end

    @property
    def unsent(self) -> bool:
        return self._sent < self.end

    def chunks_to_send(self, now: float, max_chunk: int, rtt: RttEstimator) -> list[tuple[int, bytes]]:
        """Chunks due now: unsent data, or everything unacknowledged when the timer fired."""
        start = self._sent
        fired = self._retransmit_at is not None and now >= self._retransmit_at and self._acked < self._sent
        if fired:
            start = self._acked
            self._backoff += 1
            self._timed = None  # Karn: no RTT sample from a retransmitted range
        end = self.end
        if start >= end:
            return []
        chunks = []
        pos = start
        while pos < end:
            stop = min(end, pos + max_chunk)
            chunks.append((pos, bytes(self._out[pos - self._out_base : stop - self._out_base])))
            pos = stop
        if start == self._sent and self._timed is None:
            self._timed = (end, now)
        self._sent = end
        if fired or self._retransmit_at is None:
            pto = rtt.pto(0.0)
            self._retransmit_at = now + max(pto, min(pto * 2**self._backoff, self._max_probe))
        return chunks

    def on_ack(self, offset: int, now: float, rtt: RttEstimator) -> None:
        if offset > self._sent:
            raise ControlError(f"CONTROL_ACK for offset {offset} beyond {self._sent} sent")
        if offset <= self._acked:
            return
        if self._timed is not None and offset >= self._timed[0]:
            rtt.update(now - self._timed[1])
            self._timed = None
        del self._out[: offset - self._out_base]
        self._out_base = offset
        self._acked = offset
        self._backoff = 0
        self._retransmit_at = None if offset == self._sent else now + rtt.pto(0.0)

    def timer(self) -> float | None:
        return self._retransmit_at if self._acked < self._sent else None

    # -- incoming ---------------------------------------------------------------------------
    @property
    def received_offset(self) -> int:
        return self._in_next

    def receive(self, offset: int, data: bytes) -> list[dict[str, Any]]:
        """Take one chunk; return the messages it completes, in order."""
        self.ack_needed = True
        end = offset + len(data)
        if end <= self._in_next:
            return []
        if offset > self._in_next:
            if end - self._in_next > self._limit or offset in self._pending:
                return []  # beyond what we buffer: it will be resent
            self._pending[offset] = data
            self._pending_bytes += len(data)
            if self._pending_bytes > self._limit:
                self._pending.clear()
                self._pending_bytes = 0
            return []
        self._feed(data[self._in_next - offset :])
        while self._pending:
            progressed = False
            for off in sorted(self._pending):
                chunk = self._pending[off]
                if off > self._in_next:
                    break
                del self._pending[off]
                self._pending_bytes -= len(chunk)
                if off + len(chunk) > self._in_next:
                    self._feed(chunk[self._in_next - off :])
                progressed = True
            if not progressed:
                break
        messages: list[dict[str, Any]] = []
        try:
            for item in self._unpacker:
                if not isinstance(item, dict) or not isinstance(item.get("type"), str):
                    raise ControlError("control message is not a map with a type")
                messages.append(item)
        except ControlError:
            raise
        except Exception as exc:  # msgpack raises several unrelated classes
            raise ControlError(f"undecodable control stream: {exc}") from exc
        return messages

    def _feed(self, data: bytes) -> None:
        try:
            self._unpacker.feed(data)
        except msgpack.BufferFull as exc:
            raise ControlError("control stream over its buffer limit") from exc
        self._in_next += len(data)
