"""The transfer engine on a simulated long, lossy path (no root, no network, a few seconds a cell).

Runs the sans-IO Sender and Receiver over ``jettui.transfer.simulation`` links: a rate cap
with a tail-drop queue of one RTT (at least 20 ms), half the RTT of delay each way and the
same random loss both ways, as ``bench/wan.py``'s emulator does.  For each cell it prints
goodput (payload over the time the sender reported the outcome), how much of the lost time
went to the handshake, the data phase and the tail, drops at the queue, resends and the
reverse-path share.  Use it to tune rate control and loss recovery before a real
``bench/wan.py`` run; its figures leave out CPU, timers and the IP/UDP headers.

    python bench/wan_sim.py [--mb 50] [--rtts 20,100,300] [--losses 0,1,5] [--rate 100] [--seed 1]
    python bench/wan_sim.py --mb 50 --rtts 300 --losses 1 --trace   # rate, delivery, queue per RTT/2
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from jettui.transfer import TransferConfig  # noqa: E402
from jettui.transfer.simulation import Link, Simulation, build, make_entries  # noqa: E402


def run_cell(rate_mbit: float, rtt: float, loss: float, mb: float, seed: int, trace: bool) -> dict[str, float]:
    data = random.Random(seed).randbytes(int(mb * 1e6))
    forward = Link(random.Random(seed), delay=rtt / 2, loss=loss, rate_bps=rate_mbit * 1e6, queue_limit=max(rtt, 0.02))
    backward = Link(random.Random(seed + 7), delay=rtt / 2, loss=loss)
    config = TransferConfig(min_cipher=0, max_cipher=0)
    # As the server builds manifests: no digest up front, the sender hashes while sending.
    entries = make_entries([data], digests=False)
    sim = build(
        [data], sender_config=config, receiver_config=TransferConfig(min_cipher=0, max_cipher=0),
        forward=forward, backward=backward, seed=seed, entries=entries,
    )  # fmt: skip
    marks: dict[str, float] = {}
    seen = 0
    next_trace = 0.0

    def step(s: Simulation) -> None:
        nonlocal seen, next_trace
        for event in s.sender_events[seen:]:
            marks.setdefault(type(event).__name__, s.now)
        seen = len(s.sender_events)
        sent_once = s.sender.stats.blocks_sent - s.sender.stats.blocks_retransmitted
        if "last_new" not in marks and sent_once >= s.sender.total_blocks > 0:
            marks["last_new"] = s.now
        if trace and s.now >= next_trace:
            r = s.sender._rate
            print(
                f"  t {s.now:7.3f}  {r.state.name:8} rate {r.rate * 8 / 1e6:6.1f}"
                f"  delivered {r.delivery_rate * 8 / 1e6:6.1f}  queue {r.queue_delay * 1000:6.1f} ms"
                f"  drops {forward.dropped}"
            )
            next_trace = s.now + rtt / 2

    sim.on_step = step
    started = time.perf_counter()
    sim.run(until=600)
    done = marks.get("TransferCompleted", sim.now)
    stats = sim.sender.stats
    ideal = len(data) * 8 / (rate_mbit * 1e6 * (1 - loss))
    return {
        "goodput": len(data) * 8 / done / 1e6,
        "done": done,
        "ideal": ideal,
        "handshake": marks.get("TransferAccepted", 0.0),
        "last_new": marks.get("last_new", done),
        "drops": forward.dropped,  # random loss and queue overflow together
        "resent_pct": 100 * stats.blocks_retransmitted / max(sim.sender.total_blocks, 1),
        "reverse_pct": 100 * backward.bytes_sent / max(forward.bytes_sent, 1),
        "wall": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=50.0, help="file size in MB")
    parser.add_argument("--rtts", default="20,100,300", help="round-trip times in ms")
    parser.add_argument("--losses", default="0,1,5", help="random loss in %% (both directions)")
    parser.add_argument("--rate", type=float, default=100.0, help="link rate in Mbit/s")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--trace", action="store_true", help="print the rate controller every half RTT")
    args = parser.parse_args()
    print(
        f"{'RTT':>5} {'loss%':>5} {'goodput':>8} {'ideal s':>8} {'done s':>7} {'handshake':>9} {'data':>6}"
        f" {'tail':>6} {'resent%':>7} {'drops':>6} {'rev%':>5}"
    )
    for rtt_ms in (float(x) for x in args.rtts.split(",")):
        for loss_pct in (float(x) for x in args.losses.split(",")):
            cell = run_cell(args.rate, rtt_ms / 1000, loss_pct / 100, args.mb, args.seed, args.trace)
            print(
                f"{rtt_ms:5.0f} {loss_pct:5.1f} {cell['goodput']:8.1f} {cell['ideal']:8.2f} {cell['done']:7.2f}"
                f" {cell['handshake']:9.2f} {cell['last_new'] - cell['handshake']:6.2f}"
                f" {cell['done'] - cell['last_new']:6.2f} {cell['resent_pct']:7.2f} {cell['drops']:6d}"
                f" {cell['reverse_pct']:5.2f}",
                flush=True,
            )
    print(
        "goodput: Mbit/s of payload until the sender reported the outcome; ideal: payload at the link rate"
        " less the random loss;\nhandshake: until the receiver accepted; data: until every block was sent"
        " once; tail: from there to the outcome."
    )


if __name__ == "__main__":
    main()
