"""The asyncio driver of the data plane: sans-IO machines on the server's UDP port.

One :class:`TransferEndpoint` per server routes every transfer datagram by session id to
its :class:`Sender` or :class:`Receiver`, feeds ``time.monotonic()``, sends what the machine
wants sent after every input, and keeps exactly one ``call_at`` timer per session.  A
HELLO for an unknown session asks the server (``on_hello``) whether to open a receiving
session; anything else for an unknown session is dropped and counted.

Events go to the session's owner through ``on_event``; the owner may answer synchronously
(``accept``) or later from a task, and then calls :meth:`DriverSession.pump`.

Public keys: before the first transfer to a destination the sender learns the receiver's
long-term key with a KEY request (``0xD2`` datagrams).  The reply is never larger than the
request, so the exchange cannot amplify traffic towards a spoofed source; the key learned
is then proven by the handshake and pinned in the destination (trust on first use, like
SSH), or given explicitly by the operator.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .events import Event
from .packet import MAGIC_VERSION, PacketError, PacketType, decode_header
from .receiver import Receiver
from .sender import Sender

log = logging.getLogger("jettui.transfer.driver")

Machine = Sender | Receiver
Address = tuple[str, int]

#: The machines' clock.  Not ``loop.time()``: uvloop's is libuv's cached, millisecond
#: ``uv_now``, which quantised one-way delays to whole milliseconds (the rate controller's
#: queue signal on loopback is a few ms) and gave every datagram of a drain the same
#: arrival time.  Same CLOCK_MONOTONIC base, so ``call_at`` deadlines stay comparable.
clock = time.monotonic

KEY_PACKET = 0xD2
KEY_REQUEST = bytes([KEY_PACKET]) + b"JTK?"
KEY_REPLY = bytes([KEY_PACKET]) + b"JTK!"
#: Requests are padded to this size; a reply (5 + 8 + 32 bytes) is smaller.
KEY_REQUEST_SIZE = 64


class UdpSender(Protocol):
    """What the driver needs of the server's UDP socket."""

    def sendto(self, data: bytes, addr: Address) -> bool: ...

    def register(self, first_byte: int, handler: Callable[[memoryview, Address], None]) -> None: ...


@dataclass(eq=False)
class DriverSession:
    endpoint: TransferEndpoint
    machine: Machine
    on_event: Callable[[DriverSession, Event], None]
    on_finished: Callable[[DriverSession], None] | None = None
    context: Any = None
    """Whatever the owner wants to find again (its transfer record)."""
    _timer: asyncio.TimerHandle | None = None
    _timer_at: float | None = None
    _pumping: bool = False
    _again: bool = False
    closed: bool = False
    sent_datagrams: int = 0
    send_failures: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def session_id(self) -> int:
        return self.machine.session_id

    def pump(self) -> None:
        """Send what the machine has to send, deliver its events, re-arm its timer."""
        if self.closed:
            return
        if self._pumping:
            self._again = True  # an event handler fed the machine: go round once more
            return
        self._pumping = True
        try:
            while True:
                self._again = False
                now = clock()
                addr = self.machine.peer_addr
                datagrams = self.machine.datagrams_to_send(now)
                if addr is not None and datagrams:
                    self.sent_datagrams += len(datagrams)
                    sendmany = self.endpoint.sendmany
                    if sendmany is not None and len(datagrams) > 1:
                        self.send_failures += sendmany(datagrams, addr)
                    else:
                        for datagram in datagrams:
                            if not self.endpoint.udp.sendto(datagram, addr):
                                self.send_failures += 1
                while (event := self.machine.next_event()) is not None:
                    try:
                        self.on_event(self, event)
                    except Exception:
                        log.exception("transfer event handler failed for %r", event)
                if not self._again:
                    break
        finally:
            self._pumping = False
        if self.machine.is_finished and self.machine.get_timer() is None:
            self.close()
            return
        self._arm(self.machine.get_timer())

    def _arm(self, when: float | None) -> None:
        if when == self._timer_at and self._timer is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = None if when is None else self.endpoint.loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = None
        if self.closed:
            return
        self.machine.handle_timer(clock())
        self.pump()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.endpoint.sessions.pop(self.session_id, None)
        if self.on_finished is not None:
            try:
                self.on_finished(self)
            except Exception:
                log.exception("transfer finish handler failed")


#: Called with (session id, source address) of a HELLO for an unknown session; returns the
#: receiving session to open (made with :meth:`TransferEndpoint.add`), or None to drop it.
HelloHandler = Callable[[int, Address], "DriverSession | None"]


class TransferEndpoint:
    def __init__(
        self,
        udp: UdpSender,
        public_key: bytes,
        server_uid: str,
        on_hello: HelloHandler,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.udp = udp
        self.loop = loop or asyncio.get_running_loop()
        self.public_key = public_key
        self.server_uid = server_uid
        self.on_hello = on_hello
        self.sessions: dict[int, DriverSession] = {}
        self.dropped_malformed = 0
        self.dropped_unknown_session = 0
        # Sessions fed since the socket's last drained callback.  Pumping once per batch
        # instead of once per datagram saves the datagrams_to_send / get_timer / call_at
        # round per datagram; a socket without the callback gets a pump per datagram.
        self._fed: dict[int, DriverSession] = {}
        # A whole pacing batch in few syscalls (UDP GSO) where the socket offers it.
        self.sendmany: Callable[[list[bytes], Address], int] | None = getattr(udp, "sendmany", None)
        on_drained = getattr(udp, "on_drained", None)
        self._batched = on_drained is not None
        if on_drained is not None:
            on_drained(self.flush)
        self._key_waiters: dict[bytes, asyncio.Future[tuple[bytes, str]]] = {}
        udp.register(MAGIC_VERSION, self.datagram)
        udp.register(KEY_PACKET, self.key_datagram)

    # -- sessions --------------------------------------------------------------------------------
    def add(
        self,
        machine: Machine,
        on_event: Callable[[DriverSession, Event], None],
        on_finished: Callable[[DriverSession], None] | None = None,
        context: Any = None,
    ) -> DriverSession:
        session = DriverSession(self, machine, on_event, on_finished, context)
        if machine.session_id in self.sessions:
            raise ValueError(f"session id {machine.session_id:#x} already in use")
        self.sessions[machine.session_id] = session
        return session

    def datagram(self, data: memoryview, addr: Address) -> None:
        try:
            ptype, session_id, _ = decode_header(data)
        except PacketError:
            self.dropped_malformed += 1
            return
        session = self.sessions.get(session_id)
        if session is None:
            if ptype != PacketType.HELLO:
                self.dropped_unknown_session += 1
                return
            session = self.on_hello(session_id, addr)
            if session is None:
                self.dropped_unknown_session += 1
                return
        # Handshake packets may be kept by the machine; data is consumed at once.
        payload: bytes | memoryview = bytes(data) if ptype in (PacketType.HELLO, PacketType.HELLO_REPLY) else data
        session.machine.receive_datagram(payload, addr, clock())
        if self._batched:
            self._fed[session.session_id] = session
        else:
            session.pump()

    def flush(self) -> None:
        """Pump every session fed since the last flush (the socket calls this after a batch)."""
        while self._fed:
            fed, self._fed = self._fed, {}
            for session in fed.values():
                session.pump()

    def close_all(self) -> None:
        for session in list(self.sessions.values()):
            session.close()
        for fut in self._key_waiters.values():
            if not fut.done():
                fut.cancel()

    # -- public key discovery ---------------------------------------------------------------------
    def key_datagram(self, data: memoryview, addr: Address) -> None:
        if len(data) == KEY_REQUEST_SIZE and bytes(data[:5]) == KEY_REQUEST:
            nonce = bytes(data[5:13])
            reply = KEY_REPLY + nonce + self.public_key + self.server_uid.encode()[:16]
            if len(reply) <= len(data):  # never answer with more than was received
                self.udp.sendto(reply, addr)
            return
        if len(data) >= 45 and bytes(data[:5]) == KEY_REPLY:
            fut = self._key_waiters.get(bytes(data[5:13]))
            if fut is not None and not fut.done():
                fut.set_result((bytes(data[13:45]), bytes(data[45:]).decode(errors="replace")))

    async def fetch_public_key(self, addr: Address, timeout: float = 5.0) -> tuple[bytes, str]:
        """Ask the server at ``addr`` for its long-term public key (and server uid prefix)."""
        nonce = os.urandom(8)
        fut: asyncio.Future[tuple[bytes, str]] = self.loop.create_future()
        self._key_waiters[nonce] = fut
        request = (KEY_REQUEST + nonce).ljust(KEY_REQUEST_SIZE, b"\0")
        try:
            async with asyncio.timeout(timeout):
                delay = 0.1
                while True:
                    self.udp.sendto(request, addr)
                    try:
                        return await asyncio.wait_for(asyncio.shield(fut), delay)
                    except TimeoutError:
                        delay = min(delay * 2, 1.0)
        except TimeoutError:
            raise TimeoutError(f"no answer from the receiver at {addr[0]}:{addr[1]} within {timeout:g} s") from None
        finally:
            self._key_waiters.pop(nonce, None)
