"""In-memory harness: block source and sink, an impaired link model and a runner that
drives a :class:`Sender` and a :class:`Receiver` on a simulated clock.

Used by the unit tests and ``bench/transfer_core.py``; pure like the machines it drives
(the random generator is passed in, so every run with one seed is identical).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from .config import TransferConfig
from .crypto import StaticKey
from .digest import digest_of
from .events import Event, FileReceived, TransferRequested
from .manifest import FileEntry
from .packet import PacketType
from .ranges import RangeSet
from .receiver import EarlyDataBudget, Receiver
from .sender import BlockSource, Sender

__all__ = ["Link", "MemorySink", "MemorySource", "Simulation", "build", "make_entries"]


def make_entries(contents: Sequence[bytes], prefix: str = "file", digests: bool = True) -> list[FileEntry]:
    """Manifest entries for in-memory file contents, with their digests unless ``digests``
    is False (as the server builds them: the sender's eof brings the digest)."""
    return [
        FileEntry(
            f"{prefix}{i}",
            len(data),
            1_700_000_000_000_000_000 + i,
            digest=digest_of(data) if digests else b"",
        )
        for i, data in enumerate(contents)
    ]


class MemorySource:
    """Block source over in-memory file contents."""

    def __init__(self, contents: Sequence[bytes]) -> None:
        self.contents = [memoryview(c) for c in contents]
        self.reads = 0

    def read(self, file_index: int, offset: int, length: int) -> bytes:
        self.reads += 1
        return bytes(self.contents[file_index][offset : offset + length])

    def digest(self, file_index: int) -> bytes:
        """Whole-file digest, for manifests without digests (as FileSource gives it)."""
        return digest_of(self.contents[file_index])


class MemorySink:
    """Block sink into per-file bytearrays, sized from the manifest."""

    def __init__(self, initial: Sequence[bytes] | None = None) -> None:
        self.files: list[bytearray] = []
        self.writes = 0
        self.fail_after: int | None = None
        self.initial = initial

    def open(self, entries: Sequence[FileEntry]) -> None:
        """Size the buffers; with ``initial`` (a resumed part-file) start from that content."""
        self.files = [
            bytearray(self.initial[i]) if self.initial is not None else bytearray(e.size) for i, e in enumerate(entries)
        ]

    def write(self, file_index: int, offset: int, data: memoryview) -> None:
        if self.fail_after is not None and self.writes >= self.fail_after:
            raise OSError(28, "No space left on device")
        buf = self.files[file_index]
        if offset + len(data) > len(buf):
            raise AssertionError("write past the declared size reached the sink")
        buf[offset : offset + len(data)] = data
        self.writes += 1


@dataclass
class Link:
    """One direction of a simulated path.

    Order of impairments per datagram: dark periods, random loss, Gilbert burst loss, the
    ``drop`` hook, then a rate-limited FIFO with a tail-drop queue, a fixed delay, and
    optional reordering (extra delay) and duplication.
    """

    rng: random.Random
    delay: float = 0.010
    loss: float = 0.0
    rate_bps: float | None = None
    queue_limit: float | None = None
    reorder: float = 0.0
    reorder_delay: float = 0.003
    duplicate: float = 0.0
    burst_enter: float = 0.0
    burst_length: float = 10.0
    dark: list[tuple[float, float]] = field(default_factory=list)
    drop: Callable[[bytes, float], bool] | None = None
    record: bool = False
    sent: int = 0
    dropped: int = 0
    dropped_data: int = 0
    delivered: int = 0
    bytes_sent: int = 0
    log: list[bytes] = field(default_factory=list)
    _queue: list[tuple[float, int, bytes]] = field(default_factory=list)
    _seq: int = 0
    _next_free: float = 0.0
    _in_burst: bool = False

    def send(self, datagram: bytes, now: float) -> None:
        self.sent += 1
        self.bytes_sent += len(datagram)
        if self.record:
            self.log.append(datagram)
        if self._lost(datagram, now):
            self.dropped += 1
            if len(datagram) > 1 and datagram[1] == PacketType.DATA:
                self.dropped_data += 1
            return
        start = now
        if self.rate_bps is not None:
            start = max(now, self._next_free)
            if self.queue_limit is not None and start - now > self.queue_limit:
                self.dropped += 1
                return
            self._next_free = start + len(datagram) * 8 / self.rate_bps
            start = self._next_free
        due = start + self.delay
        if self.reorder and self.rng.random() < self.reorder:
            due += self.rng.random() * self.reorder_delay
        self._push(due, datagram)
        if self.duplicate and self.rng.random() < self.duplicate:
            self._push(due + self.rng.random() * 0.002, datagram)

    def _lost(self, datagram: bytes, now: float) -> bool:
        if any(t0 <= now < t1 for t0, t1 in self.dark):
            return True
        if self.loss and self.rng.random() < self.loss:
            return True
        if self.burst_enter:
            if self._in_burst:
                self._in_burst = self.rng.random() >= 1.0 / self.burst_length
            else:
                self._in_burst = self.rng.random() < self.burst_enter
            if self._in_burst:
                return True
        return self.drop is not None and self.drop(datagram, now)

    def _push(self, due: float, datagram: bytes) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (due, self._seq, datagram))

    def next_time(self) -> float | None:
        return self._queue[0][0] if self._queue else None

    def pop_due(self, now: float) -> list[bytes]:
        out = []
        queue = self._queue
        while queue and queue[0][0] <= now:
            out.append(heapq.heappop(queue)[2])
        self.delivered += len(out)
        return out


class Simulation:
    """Runs a sender and a receiver over two links until both finish (or ``until``).

    The receiver side answers events as a server would: ``TransferRequested`` ->
    ``accept(present, skip)``, ``FileReceived`` -> hash the sink's buffer and report.
    Every event is kept in ``sender_events`` / ``receiver_events``.
    """

    def __init__(
        self,
        sender: Sender,
        receiver: Receiver,
        sink: MemorySink,
        forward: Link,
        backward: Link,
        *,
        present: Mapping[int, RangeSet] | None = None,
        skip: Mapping[int, str] | None = None,
        accept: bool = True,
    ) -> None:
        self.sender = sender
        self.receiver = receiver
        self.sink = sink
        self.forward = forward
        self.backward = backward
        self.present = present
        self.skip = skip
        self.accept = accept
        self.now = 0.0
        self.sender_events: list[Event] = []
        self.receiver_events: list[Event] = []
        #: Expected digest of each file, from its FileReceived.
        self.digests: dict[int, bytes] = {}
        self.steps = 0
        self.on_step: Callable[[Simulation], None] | None = None

    @property
    def done(self) -> bool:
        return self.sender.is_finished and self.receiver.is_finished

    def _events(self) -> None:
        while (event := self.sender.next_event()) is not None:
            self.sender_events.append(event)
        receiver = self.receiver
        while (event := receiver.next_event()) is not None:
            self.receiver_events.append(event)
            if isinstance(event, TransferRequested) and self.accept:
                self.sink.open(event.files)
                receiver.accept(self.present, self.skip)
            elif isinstance(event, FileReceived):
                self.digests[event.file_index] = event.digest
                ok = self.verify(event.file_index)
                receiver.file_verified(event.file_index, ok, "" if ok else "digest mismatch")

    def verify(self, index: int) -> bool:
        """Default verification: the sink's bytes hash to the digest of the file's
        FileReceived (the manifest's, or the one the sender's eof brought)."""
        digest = digest_of(self.sink.files[index])
        return digest == (self.digests.get(index) or self.receiver.files[index].digest)

    def _flush(self) -> None:
        now = self.now
        for datagram in self.sender.datagrams_to_send(now):
            self.forward.send(datagram, now)
        for datagram in self.receiver.datagrams_to_send(now):
            self.backward.send(datagram, now)

    def run(self, until: float = 600.0) -> float:
        """Advance simulated time until both machines finish; return the time reached."""
        stuck = 0
        self._flush()
        while not self.done:
            times = [
                t
                for t in (
                    self.sender.get_timer(),
                    self.receiver.get_timer(),
                    self.forward.next_time(),
                    self.backward.next_time(),
                )
                if t is not None
            ]
            if not times:
                raise RuntimeError("simulation stalled: no timer and nothing in flight")
            t = min(times)
            if t > until:
                self.now = until
                break
            if t <= self.now:
                stuck += 1
                if stuck > 10_000:
                    raise RuntimeError(f"livelock at t={self.now}")
            else:
                stuck = 0
                self.now = t
            now = self.now
            for datagram in self.forward.pop_due(now):
                self.receiver.receive_datagram(datagram, ("sender", 1), now)
            for datagram in self.backward.pop_due(now):
                self.sender.receive_datagram(datagram, ("receiver", 2), now)
            for machine in (self.sender, self.receiver):
                timer = machine.get_timer()
                if timer is not None and timer <= now:
                    machine.handle_timer(now)
            self._events()
            self._flush()
            self._events()
            self.steps += 1
            if self.on_step is not None:
                self.on_step(self)
        return self.now


def build(
    contents: Sequence[bytes],
    *,
    sender_config: TransferConfig | None = None,
    receiver_config: TransferConfig | None = None,
    forward: Link | None = None,
    backward: Link | None = None,
    seed: int = 0,
    entries: Sequence[FileEntry] | None = None,
    acked: Mapping[int, RangeSet] | None = None,
    present: Mapping[int, RangeSet] | None = None,
    initial: Sequence[bytes] | None = None,
    skip: Mapping[int, str] | None = None,
    sender_key: StaticKey | None = None,
    receiver_key: StaticKey | None = None,
    expected_receiver_key: bytes | None = None,
    authorized_keys: Sequence[bytes] | None = None,
    source: BlockSource | None = None,
    sink: MemorySink | None = None,
    early_budget: EarlyDataBudget | None = None,
) -> Simulation:
    """A ready-to-run sender/receiver pair over two links with seeded impairments."""
    skey = sender_key or StaticKey.generate()
    rkey = receiver_key or StaticKey.generate()
    sink = sink or MemorySink(initial)
    sender = Sender(
        sender_config or TransferConfig(),
        make_entries(contents) if entries is None else entries,
        source or MemorySource(contents),
        static_key=skey,
        peer_public_key=expected_receiver_key or rkey.public_bytes,
        transfer_id="t1",
        params={"destinationPath": "/in"},
        acked=acked,
        session_id=0x1234_5678_9ABC_DEF0,
    )
    receiver = Receiver(
        receiver_config or TransferConfig(),
        sink,
        static_key=rkey,
        authorized_keys=authorized_keys,
        early_budget=early_budget,
    )
    forward = forward or Link(random.Random(seed))
    backward = backward or Link(random.Random(seed + 1_000_003))
    return Simulation(sender, receiver, sink, forward, backward, present=present, skip=skip)
