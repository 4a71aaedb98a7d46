"""Per-packet Python cost of the pure transfer machines, in memory (no network, no files).

Runs one Sender and one Receiver back to back on a simulated clock (1 ms ticks, rate
control off, ceiling far above what Python can do) and prints, per cipher level and
datagram size, the datagrams/s and MB/s each side processes and the pair together.

    python bench/transfer_core.py [--mib 64] [--sizes 1400,8192,61440] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from jettui.constants import CIPHER_NAMES  # noqa: E402
from jettui.transfer import (  # noqa: E402
    CIPHER_SUITES,
    FileReceived,
    Receiver,
    Sender,
    StaticKey,
    TransferConfig,
    TransferRequested,
)
from jettui.transfer.digest import digest_of
from jettui.transfer.simulation import MemorySink, MemorySource, make_entries  # noqa: E402


def run_once(level: int, size: int, data: bytes) -> tuple[float, float, int, int]:
    """Return (sender seconds, receiver seconds, datagrams, payload bytes)."""
    cfg = TransferConfig(
        max_datagram_size=size,
        min_cipher=level,
        max_cipher=level,
        rate_control=False,
        max_rate=8e9,
        ack_every=max(16, 64 * 1400 // size),
    )
    skey, rkey = StaticKey.generate(), StaticKey.generate()
    contents = [data]
    sink = MemorySink()
    sender = Sender(
        cfg,
        make_entries(contents),
        MemorySource(contents),
        static_key=skey,
        peer_public_key=rkey.public_bytes,
    )
    receiver = Receiver(cfg, sink, static_key=rkey)
    t_send = t_recv = t_hash = 0.0
    now = 0.0
    addr = ("127.0.0.1", 8886)
    while not (sender.is_finished and receiver.is_finished):
        t0 = time.perf_counter()
        for timer, machine in ((sender.get_timer(), sender), (receiver.get_timer(), receiver)):
            if timer is not None and timer <= now:
                machine.handle_timer(now)
        out = sender.datagrams_to_send(now)
        t1 = time.perf_counter()
        for datagram in out:
            receiver.receive_datagram(datagram, addr, now)
        while (event := receiver.next_event()) is not None:
            if isinstance(event, TransferRequested):
                sink.open(event.files)
                receiver.accept()
            elif isinstance(event, FileReceived):
                # Verification is the driver's work (a thread), not the machine's: untimed.
                th = time.perf_counter()
                ok = digest_of(sink.files[0]) == receiver.files[0].digest
                t_hash += time.perf_counter() - th
                receiver.file_verified(event.file_index, ok)
        back = receiver.datagrams_to_send(now)
        t2 = time.perf_counter()
        for datagram in back:
            sender.receive_datagram(datagram, addr, now)
        while sender.next_event() is not None:
            pass
        t3 = time.perf_counter()
        t_send += (t1 - t0) + (t3 - t2)
        t_recv += t2 - t1 - t_hash
        t_hash = 0.0
        now += cfg.tick
        if now > 600:
            raise RuntimeError("transfer did not finish")
    assert bytes(sink.files[0]) == data, "corrupted transfer"
    return t_send, t_recv, sender.stats.packets_sent, len(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=64, help="file size in MiB")
    parser.add_argument("--sizes", default="1400,8192,61440", help="datagram sizes")
    parser.add_argument("--repeat", type=int, default=3, help="runs per cell (median shown)")
    args = parser.parse_args()
    data = os.urandom(args.mib << 20)
    print(f"in-memory sender+receiver, {args.mib} MiB file, median of {args.repeat} runs")
    print(
        f"{'cipher':<14} {'dgram':>6} {'dgrams/s pair':>14} {'MB/s pair':>10} "
        f"{'snd µs/dg':>10} {'rcv µs/dg':>10} {'snd MB/s':>9} {'rcv MB/s':>9}"
    )
    for size in (int(s) for s in args.sizes.split(",")):
        for level in sorted(CIPHER_SUITES):
            runs = [run_once(level, size, data) for _ in range(args.repeat)]
            ts = statistics.median(r[0] for r in runs)
            tr = statistics.median(r[1] for r in runs)
            n, nbytes = runs[0][2], runs[0][3]
            total = ts + tr
            print(
                f"{CIPHER_NAMES[level]:<14} {size:>6} {n / total:>14,.0f} {nbytes / total / 1e6:>10.0f} "
                f"{ts / n * 1e6:>10.2f} {tr / n * 1e6:>10.2f} "
                f"{nbytes / ts / 1e6:>9.0f} {nbytes / tr / 1e6:>9.0f}"
            )


if __name__ == "__main__":
    main()
