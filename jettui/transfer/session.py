"""Plumbing shared by the sender and receiver machines: packet numbers, sealing, opening,
replay checks, drop counters, the control stream, PING/PONG and the event queue.

Theory of operation: a datagram enters through ``_open``, which checks in this order
header (malformed), session id (wrong_session), protection present (unexpected), replay
window (replayed) and authentication (unauthentic); only an authentic datagram commits
its packet number and refreshes the idle timer.  Every rejection is silent apart from
its counter, so a forger learns nothing and cannot make us answer.
"""

from __future__ import annotations

import enum
import logging
import math
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from .config import TransferConfig
from .control import ControlError, ControlStream
from .crypto import CryptoError, PacketProtection, ReplayWindow
from .events import Event, TransferFailed
from .packet import (
    HEADER,
    HEADER_SIZE,
    MAGIC_VERSION,
    PacketError,
    PacketType,
    decode_control,
    decode_control_ack,
    decode_header,
    decode_ping,
    decode_pong,
    encode_control,
    encode_control_ack,
    encode_ping,
    encode_pong,
)
from .rate import RttEstimator

__all__ = ["DropCounters", "SessionBase", "TransferStats"]

logger = logging.getLogger("jettui.transfer")

_HANDSHAKE_TYPES = (PacketType.HELLO, PacketType.HELLO_REPLY)


@dataclass(slots=True)
class DropCounters:
    """Datagrams (or blocks) dropped silently, by reason."""

    malformed: int = 0
    """Could not be parsed (short, bad magic, bad lengths)."""
    wrong_session: int = 0
    """Carried another session id (the driver counts ids it knows nothing about)."""
    unexpected: int = 0
    """Valid but not acceptable in the current state (e.g. DATA before keys)."""
    replayed: int = 0
    """Packet number already seen or older than the replay window."""
    unauthentic: int = 0
    """Failed authentication: forged, corrupted, or keyed for someone else."""
    out_of_range: int = 0
    """Blocks refused: unknown or declined file, past the declared size, wrong length."""

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @property
    def total(self) -> int:
        return sum(asdict(self).values())


@dataclass(slots=True)
class TransferStats:
    """Counters of one session, named after the Transfer Structure where it has one."""

    packets_sent: int = 0
    packets_recv: int = 0
    bytes_sent: int = 0
    bytes_recv: int = 0
    blocks_sent: int = 0
    blocks_acked: int = 0
    blocks_retransmitted: int = 0
    blocks_received: int = 0
    blocks_duplicate: int = 0
    blocks_recovered: int = 0  # rebuilt from a PARITY (receiver)
    parity_sent: int = 0
    block_bytes_received: int = 0
    acks_sent: int = 0
    acks_recv: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def as_structure(self) -> dict[str, int]:
        """The Transfer Structure keys (camelCase) these counters feed."""
        return {
            "blocksSent": self.blocks_sent,
            "blocksAcked": self.blocks_acked,
            "blocksRetransmitted": self.blocks_retransmitted,
            "bytesSent": self.bytes_sent,
            "bytesRecv": self.bytes_recv,
            "packetsSent": self.packets_sent,
            "packetsRecv": self.packets_recv,
        }


class SessionBase:
    """Common state of a :class:`Sender` or :class:`Receiver`; not used on its own."""

    role = "session"
    _state: enum.Enum
    END_STATES: frozenset[Any] = frozenset()

    def __init__(self, config: TransferConfig, session_id: int, peer_addr: Any) -> None:
        self._config = config
        self.session_id = session_id
        self.peer_addr = peer_addr
        self.stats = TransferStats()
        self.drops = DropCounters()
        self.rtt = RttEstimator()
        #: Negotiated MIN_CIPHER_* level, None before the handshake.
        self.cipher: int | None = None
        self.peer_public_key: bytes | None = None
        self._events: deque[Event] = deque()
        self._pn = 0
        self._send_prot: PacketProtection | None = None
        self._recv_prot: PacketProtection | None = None
        self._replay = ReplayWindow(config.replay_window)
        self._control = ControlStream(config.control_buffer_limit, config.max_probe_interval)
        self._pongs: list[tuple[float, float]] = []
        self._last_recv: float | None = None
        self._last_send = -math.inf
        self._max_payload = config.max_datagram_size - HEADER_SIZE - config.tag_size()

    # -- public surface shared by both roles ---------------------------------------------------
    @property
    def state(self) -> enum.Enum:
        return self._state

    @property
    def is_finished(self) -> bool:
        return self._state in self.END_STATES

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    # -- helpers for subclasses -------------------------------------------------------------------
    def _set_state(self, state: enum.Enum) -> None:
        if state is not self._state:
            logger.debug("%s %016x: %s -> %s", self.role, self.session_id, self._state.name, state.name)
            self._state = state

    def _keys_ready(self, send: PacketProtection, recv: PacketProtection, cipher: int) -> None:
        self._send_prot = send
        self._recv_prot = recv
        self.cipher = cipher

    def _next_pn(self) -> int:
        pn = self._pn
        self._pn = pn + 1
        return pn

    def _seal(self, ptype: int, payload: bytes, now: float) -> bytes:
        assert self._send_prot is not None
        pn = self._pn
        self._pn = pn + 1
        datagram = self._send_prot.seal(HEADER.pack(MAGIC_VERSION, ptype, self.session_id, pn), pn, payload)
        self._count_sent(datagram, now)
        return datagram

    def _seal_parts(self, ptype: int, parts: list[bytes | memoryview], now: float) -> bytes:
        """:meth:`_seal` of a payload given as pieces (see PacketProtection.seal_parts)."""
        assert self._send_prot is not None
        pn = self._pn
        self._pn = pn + 1
        datagram = self._send_prot.seal_parts(HEADER.pack(MAGIC_VERSION, ptype, self.session_id, pn), pn, parts)
        self._count_sent(datagram, now)
        return datagram

    def _count_sent(self, datagram: bytes, now: float) -> None:
        self.stats.packets_sent += 1
        self.stats.bytes_sent += len(datagram)
        self._last_send = now

    def _open(self, data: bytes | memoryview, now: float) -> tuple[int, int, bytes | memoryview] | None:
        """Check and open a datagram; None when it was dropped (and counted)."""
        try:
            ptype, sid, pn = decode_header(data)
        except PacketError:
            self.drops.malformed += 1
            return None
        if sid != self.session_id:
            self.drops.wrong_session += 1
            return None
        if ptype in _HANDSHAKE_TYPES:
            return ptype, pn, data
        prot = self._recv_prot
        if prot is None:
            self.drops.unexpected += 1
            return None
        if not self._replay.check(pn):
            self.drops.replayed += 1
            return None
        try:
            payload = prot.open(data, pn)
        except CryptoError:
            self.drops.unauthentic += 1
            return None
        self._replay.commit(pn)
        self._authentic(len(data), now)
        return ptype, pn, payload

    def _authentic(self, size: int, now: float) -> None:
        self.stats.packets_recv += 1
        self.stats.bytes_recv += size
        self._last_recv = now

    def _handle_common(self, ptype: int, payload: bytes | memoryview, now: float) -> bool:
        """Handle the packet types both roles treat alike; False when it is not one of them.

        Raises PacketError (malformed payload) or ControlError (broken control stream).
        """
        if ptype == PacketType.CONTROL:
            offset, chunk = decode_control(payload)
            for message in self._control.receive(offset, chunk):
                if self._state in self.END_STATES:
                    break
                self._on_control(message, now)
        elif ptype == PacketType.CONTROL_ACK:
            self._control.on_ack(decode_control_ack(payload), now, self.rtt)
            self._on_control_acked(now)
        elif ptype == PacketType.PING:
            self._pongs.append((decode_ping(payload), now))
            self._on_ping(now)
        elif ptype == PacketType.PONG:
            echo, delay = decode_pong(payload)
            if echo <= now:
                self.rtt.update(now - echo - delay)
        else:
            return False
        return True

    def _dispatch(self, ptype: int, payload: bytes | memoryview, now: float) -> None:
        try:
            if not self._handle_common(ptype, payload, now):
                self._on_packet(ptype, payload, now)
        except PacketError:
            self.drops.malformed += 1
        except ControlError as exc:
            self._fail(f"protocol error from peer: {exc}", remote=False, notify=True)

    def _common_datagrams(self, now: float, out: list[bytes]) -> None:
        """PONGs, the control ACK and due control chunks."""
        for echo, received in self._pongs:
            out.append(self._seal(PacketType.PONG, encode_pong(echo, now - received), now))
        self._pongs.clear()
        control = self._control
        if control.ack_needed:
            control.ack_needed = False
            out.append(self._seal(PacketType.CONTROL_ACK, encode_control_ack(control.received_offset), now))
        self._control_chunks(now, out)

    def _control_chunks(self, now: float, out: list[bytes]) -> None:
        """The control stream's chunks due now (first sends and retransmissions)."""
        for offset, chunk in self._control.chunks_to_send(now, self._max_payload - 8, self.rtt):
            out.append(self._seal(PacketType.CONTROL, encode_control(offset, chunk), now))

    def _final_datagrams(self, now: float) -> list[bytes]:
        """After the end: flush what was queued last (an error or close), never retransmit."""
        out: list[bytes] = []
        if self._send_prot is not None and self._control.unsent:
            self._common_datagrams(now, out)
        return out

    def _ping(self, now: float) -> bytes:
        return self._seal(PacketType.PING, encode_ping(now), now)

    def _idle_deadline(self) -> float | None:
        if self._last_recv is None:
            return None
        return self._last_recv + self._config.idle_timeout

    def _check_idle(self, now: float) -> None:
        deadline = self._idle_deadline()
        if deadline is not None and now >= deadline:
            self._fail(f"no packet from the peer for {self._config.idle_timeout:g} s", remote=False, notify=False)

    def _fail(self, message: str, remote: bool, notify: bool) -> None:
        if self._state in self.END_STATES:
            return
        logger.info("%s %016x failed: %s", self.role, self.session_id, message)
        if notify and self._send_prot is not None:
            self._control.send({"type": "error", "message": message})
        self._events.append(TransferFailed(message, remote))
        self._enter_failed()

    # -- hooks ----------------------------------------------------------------------------------
    def _enter_failed(self) -> None:
        raise NotImplementedError

    def _on_control(self, message: dict[str, Any], now: float) -> None:
        raise NotImplementedError

    def _on_control_acked(self, now: float) -> None:
        """Called after a CONTROL_ACK moved the acknowledged offset (or not)."""

    def _on_ping(self, now: float) -> None:
        """Called after a PING arrived."""

    def _on_packet(self, ptype: int, payload: bytes | memoryview, now: float) -> None:
        raise NotImplementedError


def check_message(message: dict[str, Any], **fields: type | tuple[type, ...]) -> None:
    """Raise ControlError unless every named field is present with the given type."""
    for name, kind in fields.items():
        value = message.get(name)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ControlError(f"control message {message.get('type')!r}: bad field {name!r}")
