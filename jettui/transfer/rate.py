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
  enters STEADY: each ACK sets the rate to the delivered rate times
  ``1 + gain * (target - queue) / target`` (clamped to one gain step either way), so the
  rate settles where the standing queue equals ``queue_target`` with the link full.
  Growth is held while the sender is application-limited so an idle sender does not
  accumulate a rate it never tested.  ``max_rate`` (sendRateMax, server limits) can
  change at any time.
"""

from __future__ import annotations

import enum
import logging
import math

__all__ = ["Pacer", "RateController", "RateState", "RttEstimator", "WindowedMin"]

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
        gain_up: float = 0.25,
        gain_down: float = 0.25,
        base_window: float = 10.0,
    ) -> None:
        self.min_rate = min_rate
        self.max_rate = max_rate
        self.queue_target = queue_target
        self.gain_up = gain_up
        self.gain_down = gain_down
        self.rate = max_rate if not active else max(min_rate, min(initial_rate, max_rate))
        self.state = RateState.STARTUP if active else RateState.FIXED
        self._base = WindowedMin(base_window)
        self.queue_delay = 0.0
        self.delivery_rate = 0.0
        self._last_update: float | None = None
        self._last_recv: tuple[float, int] | None = None

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
        if self._last_recv is not None:
            dt_r = recv_time - self._last_recv[0]
            if dt_r > 0.002:
                sample = (bytes_received - self._last_recv[1]) / dt_r
                self.delivery_rate = sample if self.delivery_rate == 0 else 0.5 * self.delivery_rate + 0.5 * sample
                self._last_recv = (recv_time, bytes_received)
        else:
            self._last_recv = (recv_time, bytes_received)
        if self.state is RateState.FIXED or math.isnan(owd):
            return
        base = self._base.update(now, owd)
        q = max(0.0, owd - base)
        self.queue_delay = q
        last = self._last_update
        self._last_update = now
        if last is None:
            return
        rtt = max(srtt, 0.010)
        dt = min(now - last, rtt)
        if self.state is RateState.STARTUP:
            if q >= self.queue_target / 2:
                if self.delivery_rate > 0:
                    self.rate = min(self.rate, self.delivery_rate)
                self._set_state(RateState.STEADY)
            elif not app_limited:
                self.rate *= 2.0 ** (dt / rtt)
        elif self.delivery_rate > 0:
            # Aim at what the path delivered, nudged by how far the queue is from target:
            # up to gain_up faster when it is empty, gain_down slower when it is twice the
            # target or more.  Steering the rate relative to the measured delivery rate
            # (rather than integrating) keeps the overshoot to one gain step, and random
            # loss p only shrinks the nudge by p: below ~20 % it never pulls the rate down.
            err = max(-1.0, min(1.0, (self.queue_target - q) / self.queue_target))
            gain = self.gain_up if err >= 0 else self.gain_down
            target = self.delivery_rate * (1.0 + gain * err)
            # An application-limited sender measured itself, not the path: only a queue
            # above target may lower its rate then.
            if not app_limited or (err < 0 and target < self.rate):
                self.rate = target
        self.rate = max(self.min_rate, min(self.rate, self.max_rate))
