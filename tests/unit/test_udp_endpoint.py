"""The UDP endpoint on real loopback sockets: draining, and polling while datagrams stream."""

from __future__ import annotations

import asyncio
import multiprocessing
import socket
import time

from jettui.server.udp import POLL_INTERVAL, UdpEndpoint

KIND = 0x7E


def stream(port: int, count: int, gap: float, size: int = 1400) -> None:
    """Send ``count`` datagrams ``gap`` seconds apart (busy-waited: sleep is too coarse)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        due = time.perf_counter()
        for i in range(count):
            while time.perf_counter() < due:
                pass
            s.sendto(bytes([KIND]) + i.to_bytes(4, "big") + bytes(size - 5), ("127.0.0.1", port))
            due += gap


def start_stream(port: int, count: int, gap: float) -> multiprocessing.Process:
    """Stream from another process: a busy thread here would hold the GIL, and the loop
    would wake only at the switch interval."""
    sender = multiprocessing.get_context("spawn").Process(target=stream, args=(port, count, gap))
    sender.start()
    return sender


async def receive_stream(udp: UdpEndpoint, count: int, gap: float) -> list[int]:
    seen: list[int] = []
    udp.register(KIND, lambda view, addr: seen.append(int.from_bytes(view[1:5], "big")))
    udp.start()
    sender = start_stream(udp.port, count, gap)
    await asyncio.to_thread(sender.join)
    for _ in range(100):
        if len(seen) == count:
            break
        await asyncio.sleep(0.01)
    return seen


async def test_streaming_datagrams_are_polled_in_batches_and_all_delivered() -> None:
    udp = UdpEndpoint("127.0.0.1", 0)
    udp.poll_enabled = True
    try:
        seen = await receive_stream(udp, 2000, 0.0002)
        assert seen == list(range(2000))
        assert udp.polls > 0
        assert udp.wakeups < len(seen) / 2, (udp.wakeups, len(seen))
        # Once the stream stops, an empty poll re-arms the reader: sparse datagrams are
        # read as they come, not a poll interval later.
        await asyncio.sleep(POLL_INTERVAL * 20)
        assert not udp.polling
        polls = udp.polls
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(bytes([KIND]) + (9999).to_bytes(4, "big"), ("127.0.0.1", udp.port))
        for _ in range(100):
            if seen[-1] == 9999:
                break
            await asyncio.sleep(0.001)
        assert seen[-1] == 9999
        assert udp.polls == polls
    finally:
        udp.close()


async def test_without_polling_every_datagram_still_arrives() -> None:
    udp = UdpEndpoint("127.0.0.1", 0)
    udp.poll_enabled = False
    try:
        seen = await receive_stream(udp, 1000, 0.0002)
        assert seen == list(range(1000))
        assert udp.polls == 0 and not udp.polling
    finally:
        udp.close()


async def test_close_while_polling_stops_the_poll() -> None:
    udp = UdpEndpoint("127.0.0.1", 0)
    udp.poll_enabled = True
    seen: list[int] = []
    udp.register(KIND, lambda view, addr: seen.append(1))
    udp.start()
    sender = start_stream(udp.port, 20000, 0.0001)
    while not udp.polling and sender.is_alive():
        await asyncio.sleep(0.0005)
    assert udp.polling
    udp.close()
    assert not udp.polling
    sender.kill()
    await asyncio.to_thread(sender.join)
    await asyncio.sleep(POLL_INTERVAL * 5)  # a stale poll would raise on the closed socket
    assert udp.sock.fileno() == -1
