"""The asyncio driver over real UDP sockets on loopback, with in-memory files."""

from __future__ import annotations

import asyncio
import os

from jettui.server.udp import UdpEndpoint
from jettui.transfer import (
    FileReceived,
    Receiver,
    Sender,
    StaticKey,
    TransferCompleted,
    TransferConfig,
    TransferRequested,
)
from jettui.transfer.digest import digest_of
from jettui.transfer.driver import KEY_PACKET, TransferEndpoint
from jettui.transfer.packet import MAGIC_VERSION
from jettui.transfer.simulation import MemorySink, MemorySource, make_entries


async def run_pair(contents: list[bytes], config: TransferConfig) -> tuple[MemorySink, list[object], list[object]]:
    rx_key, tx_key = StaticKey.generate(), StaticKey.generate()
    rx_udp, tx_udp = UdpEndpoint("127.0.0.1", 0), UdpEndpoint("127.0.0.1", 0)
    rx_udp.start()
    tx_udp.start()
    entries = make_entries(contents)
    sink = MemorySink()
    rx_events: list[object] = []
    tx_events: list[object] = []
    done = asyncio.get_running_loop().create_future()

    def on_rx_event(session, event) -> None:  # type: ignore[no-untyped-def]
        rx_events.append(event)
        if isinstance(event, TransferRequested):
            sink.open(event.files)
            session.machine.accept()
        elif isinstance(event, FileReceived):
            ok = digest_of(bytes(sink.files[event.file_index])) == entries[event.file_index].digest
            session.machine.file_verified(event.file_index, ok)

    def on_hello(session_id, addr):  # type: ignore[no-untyped-def]
        receiver = Receiver(config, sink, static_key=rx_key, session_id=session_id, peer_addr=addr)
        return rx_end.add(receiver, on_rx_event)

    def on_tx_event(session, event) -> None:  # type: ignore[no-untyped-def]
        tx_events.append(event)
        if isinstance(event, TransferCompleted) and not done.done():
            done.set_result(None)

    rx_end = TransferEndpoint(rx_udp, rx_key.public_bytes, "rx-uid", on_hello)
    tx_end = TransferEndpoint(tx_udp, tx_key.public_bytes, "tx-uid", lambda s, a: None)
    try:
        key, uid = await tx_end.fetch_public_key(("127.0.0.1", rx_udp.port))
        assert key == rx_key.public_bytes and uid == "rx-uid"
        sender = Sender(config, entries, MemorySource(contents), static_key=tx_key, peer_public_key=key,
                        peer_addr=("127.0.0.1", rx_udp.port))  # fmt: skip
        tx_end.add(sender, on_tx_event).pump()
        async with asyncio.timeout(30):
            await done
        await asyncio.sleep(0.1)
    finally:
        rx_end.close_all()
        tx_end.close_all()
        rx_udp.close()
        tx_udp.close()
    return sink, rx_events, tx_events


async def test_files_cross_real_udp_byte_identical() -> None:
    contents = [os.urandom(n) for n in (0, 1, 5000, 2_000_000)]
    sink, rx_events, tx_events = await run_pair(contents, TransferConfig(max_datagram_size=8192))
    assert [bytes(f) for f in sink.files] == contents
    completed = [e for e in tx_events if isinstance(e, TransferCompleted)]
    assert completed and completed[0].failed == ()


async def test_key_request_never_amplifies() -> None:
    udp = UdpEndpoint("127.0.0.1", 0)
    udp.start()
    end = TransferEndpoint(udp, b"k" * 32, "uid", lambda s, a: None)
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.setblocking(False)
        loop = asyncio.get_running_loop()
        for request in (bytes([KEY_PACKET]) + b"JTK?" + b"\0" * 59, bytes([KEY_PACKET]) + b"JTK?"):
            probe.sendto(request, ("127.0.0.1", udp.port))
            await asyncio.sleep(0.05)
        replies = []
        while True:
            try:
                replies.append(probe.recv(1000))
            except BlockingIOError:
                break
        assert len(replies) == 1 and len(replies[0]) <= 64  # the short request got nothing
        assert loop is not None
    end.close_all()
    udp.close()


async def test_unknown_sessions_are_dropped_and_counted() -> None:
    udp = UdpEndpoint("127.0.0.1", 0)
    udp.start()
    end = TransferEndpoint(udp, b"k" * 32, "uid", lambda s, a: None)
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(bytes([MAGIC_VERSION, 3]) + os.urandom(40), ("127.0.0.1", udp.port))  # DATA of nobody
        s.sendto(bytes([MAGIC_VERSION]), ("127.0.0.1", udp.port))  # truncated header
        await asyncio.sleep(0.1)
    assert end.dropped_unknown_session == 1 and end.dropped_malformed == 1
    udp.close()
