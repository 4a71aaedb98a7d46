"""The server's UDP port: one socket for discovery and for the transfer data plane.

The stdlib ``DatagramProtocol`` reads one datagram per wake-up into a fresh 256 KiB buffer
and loses most packets at speed (shared/notes/transport-performance.md), so this reads with
``add_reader`` and drains the socket with ``recvfrom_into`` into one reused buffer.
Datagrams are routed by their first byte to the handler registered for it; unknown kinds
are dropped and counted.

While datagrams stream in, the socket is polled instead of woken per datagram (interrupt
mitigation, as the kernel's NAPI does): see :data:`POLL_INTERVAL`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import struct
import time
from collections.abc import Callable, Sequence

log = logging.getLogger("jettui.server.udp")

DatagramHandler = Callable[[memoryview, tuple[str, int]], None]

RECV_BUFFER = 64 * 1024 * 1024
SEND_BUFFER = 8 * 1024 * 1024
MAX_DATAGRAM = 65536
#: Datagrams handled per wake-up before yielding to other tasks.
DRAIN_BUDGET = 512
#: The drained callbacks also run after this many datagrams within one wake-up, so a long
#: drain (64 KiB datagrams on loopback) does not hold back the ACKs it makes due.
FLUSH_EVERY = 64
#: A wake-up within this long of the previous one means datagrams are streaming in: the
#: reader is then removed and the socket drained every POLL_INTERVAL until a poll finds it
#: empty.  At 100 Mbit/s the 1.4 KB datagrams arrive ~120 us apart through a shaping
#: router, and the event loop's own cost per wake-up was most of the receiver's CPU
#: (py-spy: 85 % of its samples inside uvloop's run loop); polled, ~8 datagrams share one.
#: A datagram waits at most one interval more (the delay signal's target is 10 ms), and
#: sparse traffic (handshakes, control) is still read at once.
POLL_INTERVAL = 0.001
#: Polling needs room for an interval's datagrams at full speed (~0.8 MB at 800 MB/s).
POLL_MIN_BUFFER = 2 * 1024 * 1024
#: UDP GSO (Linux >= 4.18): one sendmsg carries up to 64 equal-sized datagrams that the
#: kernel cuts apart; the notes measured 5x the packet rate of one sendto per datagram.
SOL_UDP = getattr(socket, "SOL_UDP", 17)
UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)
GSO_MAX_SEGMENTS = 64
GSO_MAX_BYTES = 65000
#: Datagrams at most this big are batched (larger ones are loopback-sized already).
GSO_MAX_SEGMENT = 1472


def _set_buffer(sock: socket.socket, force_opt: int, opt: int, size: int) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, force_opt, size)  # root may exceed the sysctl cap
    except OSError:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, opt, size)


class UdpEndpoint:
    def __init__(self, host: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        _set_buffer(self.sock, getattr(socket, "SO_RCVBUFFORCE", 33), socket.SO_RCVBUF, RECV_BUFFER)
        _set_buffer(self.sock, getattr(socket, "SO_SNDBUFFORCE", 32), socket.SO_SNDBUF, SEND_BUFFER)
        self.sock.bind((host, port))
        self.port: int = self.sock.getsockname()[1]
        self.handlers: dict[int, DatagramHandler] = {}
        self._drained: list[Callable[[], None]] = []
        self.dropped_unknown = 0
        self.received = 0
        self.gso = True  # cleared the first time the kernel refuses a GSO send
        self._buf = bytearray(MAX_DATAGRAM)
        self._view = memoryview(self._buf)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_wake = 0.0
        self._poll: asyncio.TimerHandle | asyncio.Handle | None = None
        #: Polling is left off when the receive buffer could overflow between two polls.
        self.poll_enabled = self.buffer_sizes[0] >= POLL_MIN_BUFFER
        self.wakeups = 0  # reader wake-ups plus polls: received / wakeups is the batching
        self.polls = 0

    @property
    def buffer_sizes(self) -> tuple[int, int]:
        return (
            self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
            self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
        )

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self._on_readable)

    def close(self) -> None:
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self.sock.fileno())
        self.sock.close()

    def register(self, first_byte: int, handler: DatagramHandler) -> None:
        self.handlers[first_byte] = handler

    def on_drained(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` after each batch of datagrams read in one wake-up (the transfer
        driver sends what the batch made due then, instead of after every datagram)."""
        self._drained.append(callback)

    def _flush(self) -> None:
        for callback in self._drained:
            try:
                callback()
            except Exception:
                log.exception("udp drained callback failed")

    def sendto(self, data: bytes, addr: tuple[str, int]) -> bool:
        """Send one datagram; False when the kernel buffer is full (the caller paces)."""
        try:
            self.sock.sendto(data, addr)
            return True
        except BlockingIOError:
            return False
        except OSError as exc:
            if exc.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                return False
            raise

    def sendmany(self, datagrams: Sequence[bytes], addr: tuple[str, int]) -> int:
        """Send ``datagrams`` in order, runs of equal size as one GSO send each; return how
        many the kernel did not take (buffer full: the caller paces)."""
        failed = 0
        i, n = 0, len(datagrams)
        while i < n:
            size = len(datagrams[i])
            j = i + 1
            if self.gso and size <= GSO_MAX_SEGMENT:
                limit = min(n, i + GSO_MAX_SEGMENTS, i + GSO_MAX_BYTES // size)
                while j < limit and len(datagrams[j]) == size:
                    j += 1
                if j < limit and len(datagrams[j]) < size:
                    j += 1  # the last segment of a GSO send may be shorter
            if j - i == 1:
                failed += not self.sendto(datagrams[i], addr)
            else:
                failed += self._send_gso(datagrams[i:j], size, addr)
            i = j
        return failed

    def _send_gso(self, run: Sequence[bytes], size: int, addr: tuple[str, int]) -> int:
        try:
            self.sock.sendmsg([b"".join(run)], [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", size))], 0, addr)
            return 0
        except BlockingIOError:
            return len(run)
        except OSError as exc:
            if exc.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                return len(run)
            if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOPROTOOPT, errno.EIO):
                log.info("UDP GSO unavailable (%s): one send per datagram from now on", exc)
                self.gso = False
                return sum(not self.sendto(d, addr) for d in run)
            raise

    def _on_readable(self) -> None:
        now = time.monotonic()
        streaming = now - self._last_wake < POLL_INTERVAL
        self._last_wake = now
        self.wakeups += 1
        try:
            got = self._drain()
        finally:
            self._flush()
        if streaming and self.poll_enabled and self._loop is not None and self.sock.fileno() >= 0:
            self._loop.remove_reader(self.sock.fileno())
            self._schedule_poll(got)

    def _schedule_poll(self, got: int) -> None:
        assert self._loop is not None
        if got >= DRAIN_BUDGET:
            self._poll = self._loop.call_soon(self._on_poll)  # more is waiting: no pause
        else:
            self._poll = self._loop.call_later(POLL_INTERVAL, self._on_poll)

    @property
    def polling(self) -> bool:
        return self._poll is not None

    def _on_poll(self) -> None:
        self._poll = None
        self.wakeups += 1
        self.polls += 1
        try:
            got = self._drain()
        finally:
            self._flush()
        if self.sock.fileno() < 0:
            return  # closed by a handler
        if got:
            self._schedule_poll(got)
        else:
            assert self._loop is not None
            self._last_wake = time.monotonic()
            self._loop.add_reader(self.sock.fileno(), self._on_readable)

    def _drain(self) -> int:
        """Read and dispatch what is waiting, up to DRAIN_BUDGET datagrams; return how many."""
        view, sock = self._view, self.sock
        for i in range(1, DRAIN_BUDGET + 1):
            if i % FLUSH_EVERY == 0:
                self._flush()
            try:
                n, addr = sock.recvfrom_into(self._buf)
            except (BlockingIOError, InterruptedError):
                return i - 1
            except OSError as exc:  # ICMP errors surface here on Linux; they are not fatal
                log.debug("udp receive error: %s", exc)
                continue
            self.received += 1
            if n == 0:
                continue
            handler = self.handlers.get(self._buf[0])
            if handler is None:
                self.dropped_unknown += 1
                continue
            try:
                handler(view[:n], addr)
            except Exception:
                log.exception("udp handler failed")
        return DRAIN_BUDGET
