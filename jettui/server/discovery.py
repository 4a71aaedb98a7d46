"""Receiver discovery (recvDiscoverPacketAsync / sendDiscoverPacketAsync).

Server A makes a secret discover id and waits; server B, told the id through the API,
sends A a few UDP packets; A learns B's address and port as they arrive.

Packet (exactly 42 bytes)::

    0xD1 | b"JTD" | lookup (8) | nonce (14) | tag (16)

``lookup`` is the first 8 bytes of SHA-256(discoverId) so A finds the waiter without
exposing the id; ``tag`` is HMAC-SHA256(discoverId, lookup | nonce) cut to 16 bytes, so only
a holder of the id can make a packet A accepts.  A repeated nonce is a replay and is
ignored.  A never answers a discovery packet at all: an unvalidated (possibly spoofed)
source gets no bytes back, so discovery cannot be used to amplify traffic.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field

PACKET_TYPE = 0xD1
MAGIC = bytes([PACKET_TYPE]) + b"JTD"
PACKET_SIZE = 4 + 8 + 14 + 16
DEFAULT_TIMEOUT = 30.0
MAX_TIMEOUT = 3600.0
SEND_COUNT = 5
SEND_INTERVAL = 0.05


def lookup_of(discover_id: str) -> bytes:
    return hashlib.sha256(discover_id.encode()).digest()[:8]


def _tag(discover_id: str, lookup: bytes, nonce: bytes) -> bytes:
    return hmac.new(discover_id.encode(), lookup + nonce, hashlib.sha256).digest()[:16]


def make_packet(discover_id: str, nonce: bytes | None = None) -> bytes:
    lookup = lookup_of(discover_id)
    nonce = nonce if nonce is not None else os.urandom(14)
    return MAGIC + lookup + nonce + _tag(discover_id, lookup, nonce)


@dataclass
class _Waiter:
    discover_id: str
    future: asyncio.Future[tuple[str, int]]
    seen: set[bytes] = field(default_factory=set)


class DiscoveryTable:
    """Waiting discover ids and the packets that answer them."""

    def __init__(self) -> None:
        self._waiters: dict[bytes, _Waiter] = {}
        self.rejected = 0
        self.replayed = 0

    def new(self) -> tuple[str, asyncio.Future[tuple[str, int]]]:
        discover_id = secrets.token_urlsafe(24)
        fut: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()
        self._waiters[lookup_of(discover_id)] = _Waiter(discover_id, fut)
        return discover_id, fut

    def forget(self, discover_id: str) -> None:
        self._waiters.pop(lookup_of(discover_id), None)

    def datagram(self, data: memoryview, addr: tuple[str, int]) -> None:
        if len(data) != PACKET_SIZE or bytes(data[:4]) != MAGIC:
            self.rejected += 1
            return
        lookup, nonce, tag = bytes(data[4:12]), bytes(data[12:26]), bytes(data[26:42])
        waiter = self._waiters.get(lookup)
        if waiter is None or not hmac.compare_digest(tag, _tag(waiter.discover_id, lookup, nonce)):
            self.rejected += 1
            return
        if nonce in waiter.seen or waiter.future.done():
            self.replayed += 1
            return
        waiter.seen.add(nonce)
        waiter.future.set_result((addr[0], addr[1]))
