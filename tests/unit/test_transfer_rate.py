"""Pacing and delay-based rate control: loss alone never cuts the rate, queueing delay does."""

from __future__ import annotations

import math
import random

from jettui.transfer import SenderState, TransferConfig
from jettui.transfer.rate import Pacer, RateController, RateState, RttEstimator, WindowedMin
from jettui.transfer.simulation import Link, build

MBIT = 1e6


def test_pacer_batches_per_tick():
    pacer = Pacer(rate=100 * MBIT / 8, tick=0.001)
    sent_per_tick = []
    now = 0.0
    for _ in range(100):
        credit = pacer.refill(now, 1400)
        n = 0
        while credit > 0:
            pacer.spend(1400)
            credit -= 1400
            n += 1
        sent_per_tick.append(n)
        assert pacer.next_send_time() >= now + 0.001 - 1e-12
        now += 0.001
    # 100 Mbit/s = 12.5 kB per ms: 8 or 9 datagrams of 1400 B per tick, ~893 over 100 ms.
    assert set(sent_per_tick) <= {8, 9, 10} and abs(sum(sent_per_tick) - 893) <= 10


def test_pacer_caps_burst_after_idle():
    pacer = Pacer(rate=1e6, tick=0.001, burst=2.0)
    pacer.refill(0.0, 1400)
    assert pacer.refill(10.0, 1400) == 2000.0  # two ticks of credit, not ten seconds


def test_rtt_estimator_and_windowed_min():
    rtt = RttEstimator()
    for sample in (0.1, 0.1, 0.2):
        rtt.update(sample)
    assert rtt.min_rtt == 0.1 and 0.1 < rtt.srtt < 0.2
    assert rtt.pto(0.01) > rtt.srtt
    wm = WindowedMin(10.0)
    assert wm.update(0.0, 5.0) == 5.0 and wm.update(5.0, 7.0) == 5.0
    assert wm.update(12.0, 8.0) == 5.0  # previous window still remembered
    assert wm.update(25.0, 9.0) == 8.0  # windows rotate: 5.0 is gone, 8.0 still counts
    assert wm.update(50.0, 10.0) == 10.0  # after two idle windows everything old is gone


class Feeder:
    """Plays the receiver's reports: the path delivers whatever the controller sends."""

    def __init__(self, ctrl: RateController, srtt: float = 0.05) -> None:
        self.ctrl, self.srtt, self.now, self.received = ctrl, srtt, 0.0, 0

    def feed(self, owds, step: float = 0.01) -> None:
        for owd in owds:
            self.received += int(self.ctrl.rate * step)
            self.ctrl.on_report(self.now, owd, self.srtt, 1000.0 + self.now, self.received, app_limited=False)
            self.now += step


class Bottleneck:
    """A fluid model of one bottleneck: the controller's rate in, ``capacity`` out through a
    FIFO queue whose delay the receiver reports, an ACK every ``step``.  ``loss`` drops that
    share of what leaves the queue (random loss past the bottleneck)."""

    def __init__(self, ctrl: RateController, capacity: float, loss: float = 0.0, base_rtt: float = 0.05) -> None:
        self.ctrl, self.capacity, self.loss, self.base_rtt = ctrl, capacity, loss, base_rtt
        self.now, self.queue, self.received = 0.0, 0.0, 0.0
        self.trace: list[tuple[float, float, float]] = []  # (time, rate, queue delay)

    def run(self, seconds: float, step: float = 0.005) -> None:
        for _ in range(round(seconds / step)):
            sent = self.ctrl.rate * step
            out = min(self.queue + sent, self.capacity * step)
            self.queue += sent - out
            self.received += out * (1 - self.loss)
            delay = self.queue / self.capacity
            srtt = self.base_rtt + delay
            self.ctrl.on_report(
                self.now, self.base_rtt / 2 + delay, srtt, 1000.0 + self.now, int(self.received), app_limited=False
            )
            self.now += step
            self.trace.append((self.now, self.ctrl.rate, delay))

    def since(self, t: float) -> list[tuple[float, float, float]]:
        return [x for x in self.trace if x[0] >= t]


def test_controller_finds_the_bottleneck_drains_and_holds_a_short_queue():
    ctrl = RateController(10 * MBIT / 8, 0.1 * MBIT / 8, 1000 * MBIT / 8)
    path = Bottleneck(ctrl, 100 * MBIT / 8)
    states = []
    for _ in range(60):
        path.run(0.05)
        states.append(ctrl.state)
    # Doubling per round trip, then a drain below the bottleneck, then steady.
    assert states[0] is RateState.STARTUP and RateState.DRAIN in states and states[-1] is RateState.STEADY
    assert states.index(RateState.DRAIN) < states.index(RateState.STEADY)
    late = path.since(2.0)
    mean = sum(r for _, r, _ in late) / len(late)
    assert 0.97 * path.capacity < mean < 1.1 * path.capacity
    assert max(q for _, _, q in late) < 3 * ctrl.queue_target


def test_controller_random_loss_does_not_cut_the_rate():
    ctrl = RateController(100 * MBIT / 8, 0.1 * MBIT / 8, 1000 * MBIT / 8)
    path = Bottleneck(ctrl, 100 * MBIT / 8, loss=0.01)
    path.run(4.0)
    late = path.since(2.0)
    # The link stays full: the sender never falls below the bottleneck's rate for long, and
    # the queue does not run dry.
    assert sum(r for _, r, _ in late) / len(late) >= 0.995 * path.capacity
    assert sum(1 for _, _, q in late if q == 0) < 0.1 * len(late)


def test_controller_follows_a_narrower_path():
    """Capacity falls from 100 to 40 Mbit/s (cross traffic takes the rest): the queue that
    builds cuts the rate within a few round trips and stays bounded."""
    ctrl = RateController(100 * MBIT / 8, 0.1 * MBIT / 8, 1000 * MBIT / 8)
    path = Bottleneck(ctrl, 100 * MBIT / 8)
    path.run(2.0)
    path.capacity = 40 * MBIT / 8
    path.run(2.0)
    assert max(q for _, _, q in path.since(2.0)) < 0.2
    late = path.since(3.0)
    assert sum(r for _, r, _ in late) / len(late) < 1.1 * path.capacity
    assert max(q for _, _, q in late) < 3 * ctrl.queue_target


def test_a_burst_counted_by_a_busy_receiver_is_not_taken_for_the_bottleneck():
    """A receiver busy for 60 ms counts what waited in its socket within 4 ms of its clock:
    1.5 Gbit/s read off a 100 Mbit/s path became the bottleneck estimate and the rate (the
    emulator's queue then dropped a quarter of a tree).  Delivery is capped by what we sent."""
    ctrl = RateController(100 * MBIT / 8, 0.1 * MBIT / 8, 1000 * MBIT / 8)
    ctrl.on_report(0.0, 0.05, 0.1, 1000.0, 0, app_limited=False)
    waited = int(100 * MBIT / 8 * 0.06)
    ctrl.on_report(0.005, 0.05, 0.1, 1000.004, waited, app_limited=False)
    assert ctrl.delivery_rate <= 1.1 * 100 * MBIT / 8 and ctrl.bottleneck <= 1.1 * 100 * MBIT / 8
    path = Bottleneck(ctrl, 100 * MBIT / 8, base_rtt=0.1)
    path.run(3.0)
    assert max(r for _, r, _ in path.trace) < 2.5 * path.capacity  # STARTUP's overshoot, no more


def test_controller_fixed_and_max_rate_changes():
    ctrl = RateController(10e6, 1e5, 50e6, active=False)
    assert ctrl.state is RateState.FIXED and ctrl.rate == 50e6
    ctrl.set_max_rate(20e6)
    assert ctrl.rate == 20e6
    active = RateController(100e6, 1e5, 200e6)
    active.set_max_rate(30e6)
    assert active.rate == 30e6
    feeder = Feeder(active)
    feeder.feed([0.01] * 50)
    assert active.rate == 30e6  # growth stops at the ceiling
    feeder.feed([math.nan] * 5)  # intervals without data change nothing
    assert active.rate == 30e6


def run_rate_sim(forward: Link, max_rate: float, size: int, samples: list, **cfg):
    contents = [random.Random(1).randbytes(size)]
    sender_config = TransferConfig(max_rate=max_rate, initial_rate=cfg.pop("initial_rate", 20 * MBIT), **cfg)
    sim = build(contents, sender_config=sender_config, forward=forward, backward=Link(random.Random(2), delay=0.02))

    def sample(s):
        if s.sender.state is SenderState.SENDING:
            samples.append((s.now, s.sender.rate, s.sender.queue_delay))

    sim.on_step = sample
    sim.run(60)
    assert sim.sender.state is SenderState.COMPLETE
    assert bytes(sim.sink.files[0]) == contents[0]
    return sim


def test_one_percent_random_loss_does_not_cut_the_rate():
    samples: list = []
    sim = run_rate_sim(Link(random.Random(3), delay=0.02, loss=0.01), 40 * MBIT, 4_000_000, samples)
    steady = [rate for t, rate, _ in samples if t > 0.3]
    assert steady and min(steady) == 40 * MBIT  # pinned at the ceiling throughout
    s = sim.sender.stats
    assert 0.005 * s.blocks_sent < s.blocks_retransmitted < 0.02 * s.blocks_sent


def test_bottleneck_queue_found_and_kept_short():
    """A 30 Mbit/s bottleneck with a 200 ms buffer; the sender may go to 300 Mbit/s."""
    samples: list = []
    link = Link(random.Random(4), delay=0.02, rate_bps=30 * MBIT, queue_limit=0.2)
    sim = run_rate_sim(link, 300 * MBIT, 6_000_000, samples)
    late = [(rate, q) for t, rate, q in samples if t > 0.6]
    rates = [r for r, _ in late]
    mean_rate = sum(rates) / len(rates)
    assert 24 * MBIT < mean_rate < 36 * MBIT
    assert max(q for _, q in late) < 0.06  # never near the 200 ms buffer
    s = sim.sender.stats
    assert s.blocks_retransmitted < 0.05 * s.blocks_sent
    goodput = 6_000_000 * 8 / sim.now
    assert goodput > 0  # finished; exact time depends on the ramp


def test_rising_delay_cuts_the_rate():
    """Cross traffic fills the bottleneck queue: delay climbs 100 ms per second from t=0.5."""

    class RisingDelay(Link):
        def send(self, datagram, now):
            self.delay = 0.02 + min(max(0.0, now - 0.5), 1.0) * 0.1
            super().send(datagram, now)

    samples: list = []
    run_rate_sim(RisingDelay(random.Random(5), delay=0.02), 50 * MBIT, 6_000_000, samples, initial_rate=50 * MBIT)
    before = [r for t, r, _ in samples if 0.3 < t < 0.5]
    # The controller moves a fraction dt/RTT of the way per report, so the cut shows over a
    # few round trips (RTT here grows from 40 to 140 ms), not within one.
    after = [r for t, r, _ in samples if 1.2 < t < 1.4]
    assert before and min(before) == 50 * MBIT
    assert after and max(after) < 0.5 * 50 * MBIT
