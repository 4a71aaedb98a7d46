"""The server's UDP port: one socket for discovery and for the transfer data plane.

The stdlib ``DatagramProtocol`` reads one datagram per wake-up into a fresh 256 KiB buffer
and loses most packets at speed (shared/notes/transport-performance.md), so this reads with
``add_reader`` and drains the socket with ``recvfrom_into`` into one reused buffer.
Datagrams are routed by their first byte to the handler registered for it; unknown kinds
are dropped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import struct
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
        try:
            self._drain()
        finally:
            self._flush()

    def _drain(self) -> None:
        view, sock = self._view, self.sock
        for i in range(1, DRAIN_BUDGET + 1):
            if i % FLUSH_EVERY == 0:
                self._flush()
            try:
                n, addr = sock.recvfrom_into(self._buf)
            except (BlockingIOError, InterruptedError):
                return
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
