"""Pacing, round-trip estimation and delay-based rate control.  ``now`` is always injected.

Strategy:

* :class:`Pacer` is a token bucket refilled at the target rate and drained by whole
  datagrams.  The driver is woken about once per millisecond (``tick``) and sends the
  whole per-tick budget in one batch, so the per-packet cost is one subtraction and a
  batch can go out as one GSO send.  Credit is capped at ``burst`` ticks so an idle
  period never turns into a line-rate spike.
* :class:`RateController` follows the queueing delay, not the loss: the receiver
  reports, per ACK interval, the minimum one-way delay (receiver clock minus the sender's
  timestamp; the constant clock offset cancels) and the controller subtracts the lowest
  delay seen over ``base_window`` seconds.  That difference is the queue our packets
  sit in at the bottleneck.  Random loss does not raise it, so 1 % random loss leaves
  the rate alone; a bottleneck that is overrun does, within one RTT.
* STARTUP doubles the rate each round trip from ``initial_rate`` until the queue passes
  half the target, then falls to the rate the receiver measured (the bottleneck's) and
  enters STEADY: each ACK moves the rate a fraction ``dt / RTT`` of the way towards the
  delivered rate (measured over the last round trip) times
  ``1 + gain * (target - queue) / target`` (clamped to one gain step either way): down
  only when the queue is above target, up only when it is below, so the rate settles
  where the standing queue equals ``queue_target`` with the link full, and a sender that
  cannot reach its own pacing rate is not talked down by its own shortfall.
  Growth is held while the sender is application-limited so an idle sender does not
  accumulate a rate it never tested.  ``max_rate`` (sendRateMax, server limits) can
  change at any time.
"""

from __future__ import annotations

import enum
import logging
import math
from collections import deque

__all__ = ["Pacer", "RateController", "RateState", "RttEstimator", "WindowedMin"]

#: How far a delivery sample may exceed our own peak sending rate of the last round trips:
#: pacing sends in per-tick bursts, so over a 20 ms window delivery can read a little high.
SENT_RATE_SLACK = 1.1

logger = logging.getLogger(__name__)


class RttEstimator:
    """Smoothed RTT and variation as in RFC 9002 section 5."""

    __slots__ = ("srtt", "rttvar", "min_rtt", "latest", "samples")

    def __init__(self, initial: float = 0.1) -> None:
        self.srtt = initial
        self.rttvar = initial / 2
        self.min_rtt = math.inf
        self.latest = initial
        self.samples = 0

    def update(self, sample: float) -> None:
        if sample <= 0 or not math.isfinite(sample):
            return
        self.latest = sample
        self.min_rtt = min(self.min_rtt, sample)
        if self.samples == 0:
            self.srtt = sample
            self.rttvar = sample / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - sample)
            self.srtt = 0.875 * self.srtt + 0.125 * sample
        self.samples += 1

    def pto(self, max_ack_delay: float, granularity: float = 0.001) -> float:
        """Probe timeout: how long to wait for an answer before probing."""
        return self.srtt + max(4 * self.rttvar, granularity) + max_ack_delay


class WindowedMin:
    """Minimum of the samples seen in the last one to two ``window`` seconds."""

    __slots__ = ("window", "_current", "_previous", "_started")

    def __init__(self, window: float) -> None:
        self.window = window
        self._current = math.inf
        self._previous = math.inf
        self._started: float | None = None

    def update(self, now: float, sample: float) -> float:
        if self._started is None:
            self._started = now
        elif now - self._started >= self.window:
            # Rotate: forget data older than two windows so a route change is followed.
            self._previous = self._current if now - self._started < 2 * self.window else math.inf
            self._current = math.inf
            self._started = now
        if sample < self._current:
            self._current = sample
        return self.value

    @property
    def value(self) -> float:
        return min(self._current, self._previous)


class Pacer:
    """Token bucket in bytes, refilled at ``rate`` bytes/s and spent per datagram."""

    __slots__ = ("rate", "tick", "burst", "_credit", "_last")

    def __init__(self, rate: float, tick: float = 0.001, burst: float = 2.0) -> None:
        self.rate = rate
        self.tick = tick
        self.burst = burst
        self._credit = 0.0
        self._last: float | None = None

    def refill(self, now: float, min_credit: int) -> float:
        """Bring the credit up to ``now``; return it.  ``min_credit`` is one full datagram,
        so even a rate below one datagram per tick can accumulate enough to send."""
        last = self._last
        if last is None:
            self._credit = max(self.rate * self.tick, float(min_credit))
        elif now > last:
            cap = max(self.rate * self.tick * self.burst, float(min_credit))
            self._credit = min(cap, self._credit + (now - last) * self.rate)
        self._last = now
        return self._credit

    def spend(self, nbytes: int) -> None:
        self._credit -= nbytes

    @property
    def credit(self) -> float:
        return self._credit

    def next_send_time(self) -> float:
        """When credit turns positive again, at least one tick after the last refill."""
        last = self._last
        if last is None:
            return -math.inf
        if self._credit > 0:
            return last
        wait = -self._credit / self.rate if self.rate > 0 else math.inf
        return last + max(wait, self.tick)

    def reset_idle(self, now: float) -> None:
        """Forget credit: after an idle or stalled period start from an empty bucket."""
        self._credit = min(self._credit, 0.0)
        self._last = now


class RateState(enum.Enum):
    FIXED = "fixed"
    STARTUP = "startup"
    DRAIN = "drain"
    STEADY = "steady"


class RateController:
    """Target sending rate in bytes/s, driven by ACK reports.  See the module docstring."""

    def __init__(
        self,
        initial_rate: float,
        min_rate: float,
        max_rate: float,
        *,
        active: bool = True,
        queue_target: float = 0.010,
        gain_up: float = 0.1,
        gain_down: float = 0.25,
        drain_gain: float = 0.5,
        queue_gain: float = 0.5,
        wire_factor: float = 1.0,
        base_window: float = 10.0,
        queue_window: float = 0.030,
    ) -> None:
        self.min_rate = min_rate
        self.max_rate = max_rate
        self.queue_target = queue_target
        self.gain_up = gain_up
        self.gain_down = gain_down
        self.drain_gain = drain_gain
        self.queue_gain = queue_gain
        # The receiver counts block payload, the pacer whole datagrams: this converts.
        self.wire_factor = wire_factor
        self.rate = max_rate if not active else max(min_rate, min(initial_rate, max_rate))
        self.state = RateState.STARTUP if active else RateState.FIXED
        self._base = WindowedMin(base_window)
        # The queue signal is the minimum one-way delay over the reports of the last
        # ``queue_window`` seconds, not the latest: a standing queue persists, while a
        # receiver descheduled for a moment (measured on loopback on the loaded 2-core box:
        # single reports of 15-100 ms between 0.2 ms ones) is not a bottleneck and must not
        # cut the rate.  (time, owd) pairs, oldest first.
        self.queue_window = queue_window
        self._recent: deque[tuple[float, float]] = deque()
        self.queue_delay = 0.0
        self.delivery_rate = 0.0
        self._last_update: float | None = None
        self._deliveries: deque[tuple[float, int]] = deque()  # (receiver time, cumulative bytes)
        # The bottleneck estimate: the highest delivery rate of the last few round trips (a
        # monotonic deque of (time, rate)), since loss and pacing gaps only ever lower a sample.
        self._bw_samples: deque[tuple[float, float]] = deque()
        self.bottleneck = 0.0
        # Our own pacing rate over the last round trips, highest first (a monotonic deque of
        # (time, rate)): what the path delivered cannot have come faster than we sent it.
        self._sent_peaks: deque[tuple[float, float]] = deque()
        self._drain_since = 0.0
        self._plateau_rate = 0.0
        self._plateau_since: float | None = None

    @property
    def active(self) -> bool:
        return self.state is not RateState.FIXED

    def _set_state(self, state: RateState) -> None:
        if state is not self.state:
            logger.debug("rate controller %s -> %s at %.0f B/s", self.state.name, state.name, self.rate)
            self.state = state

    def set_max_rate(self, max_rate: float) -> None:
        """Change the ceiling (bytes/s) at runtime; the rate follows at once if above it."""
        self.max_rate = max(max_rate, self.min_rate)
        if self.state is RateState.FIXED:
            self.rate = self.max_rate
        else:
            self.rate = min(self.rate, self.max_rate)

    def on_report(
        self,
        now: float,
        owd: float,
        srtt: float,
        recv_time: float,
        bytes_received: int,
        app_limited: bool,
    ) -> None:
        """Feed one ACK: interval minimum one-way delay (NaN when the interval had no data),
        smoothed RTT, the receiver's clock and its cumulative received byte count."""
        # Delivery rate over the last round trip (20-250 ms) of the receiver's clock, not per
        # ACK: datagrams arrive in pacing bursts, and 2-10 ms samples on the 100 Mbit/s
        # emulated link ranged 46-217 Mbit/s, which made the rate swing 45-200 Mbit/s and
        # overflow the bottleneck queue (2 % retransmissions at 1 % loss, measured).
        hist = self._deliveries
        if not hist or recv_time > hist[-1][0]:
            hist.append((recv_time, bytes_received))
        span = min(max(srtt, 0.020), 0.250)
        while len(hist) > 2 and hist[1][0] <= recv_time - span:
            hist.popleft()
        dt_r = hist[-1][0] - hist[0][0]
        ceiling = self._sent_peak(now, span + max(srtt, 0.020))
        if dt_r > 0.002:
            # A receiver that was busy for a while (accepting a transfer, finishing files)
            # counts a socket buffer's worth of datagrams within a few ms of its clock: such a
            # sample read 430 Mbit/s on the 100 Mbit/s link, became the bottleneck estimate,
            # and the rate that followed overflowed the queue (24 % resent at 5 % loss, trees
            # on the emulator).  Delivery is capped by our own recent sending rate.
            measured = (hist[-1][1] - hist[0][1]) / dt_r * self.wire_factor
            self.delivery_rate = min(measured, ceiling * SENT_RATE_SLACK)
            self._track_bottleneck(now, self.delivery_rate, srtt, app_limited)
        if self.state is RateState.FIXED or math.isnan(owd):
            return
        base = self._base.update(now, owd)
        recent = self._recent
        while recent and recent[-1][1] >= owd:
            recent.pop()  # a monotonic deque: the front is always the window's minimum
        recent.append((now, owd))
        while recent[0][0] < now - self.queue_window:
            recent.popleft()
        # STARTUP exits on the first sign of a queue (a doubling rate overshoots fast); a
        # spurious early exit only means growing by gain steps from there.
        q = max(0.0, (owd if self.state is RateState.STARTUP else recent[0][1]) - base)
        self.queue_delay = q
        last = self._last_update
        self._last_update = now
        if last is None:
            return
        rtt = max(srtt, 0.010)
        dt = min(now - last, rtt)
        if self.state is RateState.STARTUP:
            # Two ways out: the first sign of a queue, or a delivery rate that stopped
            # growing (BBR's full-pipe test, over two round trips rather than three).  At
            # short RTTs the queue shows late relative to the doubling (ACK intervals are a
            # third of a 20 ms RTT): waiting for 5 ms of it let the rate reach 5x the
            # bottleneck and overflow a 20 ms buffer (4 % drops, simulated), so the
            # threshold is a tenth of the RTT there (2 ms at least, for timer noise).
            if self.delivery_rate > 0 and self.delivery_rate >= 1.25 * self._plateau_rate:
                self._plateau_rate, self._plateau_since = self.delivery_rate, now
            # (Only while we send well above it: a sender held at max_rate sees a plateau too.)
            plateau = (
                self._plateau_since is not None
                and not app_limited
                and now - self._plateau_since >= 2 * rtt
                and self.rate > 1.25 * self._plateau_rate
            )
            if q >= min(self.queue_target / 2, max(0.002, rtt / 10)) or plateau:
                # The queue shows one round trip after the rate passed the bottleneck, and the
                # doubling has gone on meanwhile: up to a round trip's worth of data sits in
                # the bottleneck queue.  Drain it quickly below the measured bottleneck rather
                # than by gain steps (which took ~3 RTT at 300 ms and then overshot again).
                if self.bottleneck > 0:
                    self.rate = min(self.rate, self.bottleneck) * self.drain_gain
                self._drain_since = now
                self._set_state(RateState.DRAIN)
            elif not app_limited:
                self.rate *= 2.0 ** (dt / rtt)
        elif self.state is RateState.DRAIN:
            # The queue goes on growing for a round trip (what was sent before the cut is
            # still arriving); after that it shrinks, and at the target the link is full
            # with a short queue: send at the bottleneck rate from then on.
            # The queue we read is half a round trip old, and a new rate takes another half
            # to reach the bottleneck: leave when what is left will have drained by then.
            if now - self._drain_since >= rtt and q <= self.queue_target + (1 - self.drain_gain) * rtt:
                if self.bottleneck > 0:
                    self.rate = self.bottleneck
                self._set_state(RateState.STEADY)
        elif self.bottleneck > 0:
            # Send at the bottleneck rate, nudged by how far the queue is from its target: up
            # to gain_up faster when it is empty, gain_down slower when it is twice the target
            # or more.  Anchoring at the bottleneck (the highest recent delivery rate) rather
            # than at the last delivery keeps a dip (a drained queue, a lost ACK) from pulling
            # the rate down, and bounds an overshoot to gain_up for one round trip: with
            # gain_up 0.1 and an RTT of 300 ms, 30 ms of queue.  Random loss p lowers the
            # measured bottleneck by p, which the queue term makes up while p < gain_up; a
            # path that got faster shows in the delivery rate, which lifts the bottleneck.
            nudge = max(-self.gain_down, min(self.gain_up, self.queue_gain * (self.queue_target - q) / rtt))
            if nudge < 0:
                # A standing queue above target: the path is full, so what it delivered over
                # the last round trip is our share of it (the bottleneck estimate lags by its
                # window when cross traffic takes part of the path).  Go below that, and keep
                # cutting by that fraction per round trip for as long as the queue stands.
                share = self.delivery_rate or self.bottleneck
                self.rate = min(self.rate * (1.0 + nudge * dt / rtt), share * (1.0 + nudge))
            elif not app_limited:
                # Below target only ever raise the rate: a sender that falls short of its own
                # pacing rate (a busy CPU, late timers) delivers less than it aims at, and
                # steering to delivery x (1 + nudge) would spiral down (measured on loopback
                # with the earlier controller: stuck at ~1.3 Gbit/s, both processes half idle).
                self.rate = max(self.rate, self.bottleneck * (1.0 + nudge))
        self.rate = max(self.min_rate, min(self.rate, self.max_rate))

    def _sent_peak(self, now: float, window: float) -> float:
        """The highest pacing rate of the last ``window`` seconds, the current one included."""
        peaks = self._sent_peaks
        while peaks and peaks[-1][1] <= self.rate:
            peaks.pop()
        peaks.append((now, self.rate))
        while peaks[0][0] < now - window:
            peaks.popleft()
        return peaks[0][1]

    def _track_bottleneck(self, now: float, rate: float, srtt: float, app_limited: bool) -> None:
        samples = self._bw_samples
        window = 4 * min(max(srtt, 0.020), 0.500)
        while samples and samples[0][0] < now - window:
            samples.popleft()
        if not app_limited or not samples:
            while samples and samples[-1][1] <= rate:
                samples.pop()
            samples.append((now, rate))
        self.bottleneck = samples[0][1] if samples else 0.0
