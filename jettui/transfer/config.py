"""Settings of one transfer session (either side).  Rates are in bits per second."""

from __future__ import annotations

from dataclasses import dataclass

from ..constants import MIN_CIPHER_ENCRYPTED_128, MIN_CIPHER_ENCRYPTED_256, MIN_CIPHER_NONE
from .packet import MAX_BLOCK_SIZE, TAG_SIZE, block_overhead

__all__ = ["TransferConfig"]


@dataclass
class TransferConfig:
    """Configuration of a :class:`~jettui.transfer.Sender` or :class:`~jettui.transfer.Receiver`."""

    max_datagram_size: int = 1400
    """Largest UDP payload this side sends.  Keep at or below 1472 on 1500-MTU paths (a
    lost fragment loses the whole datagram); 8-60 KiB is right for loopback only."""

    block_size: int | None = None
    """Bytes per block (sender only; the receiver takes the sender's).  None means the
    largest block that fits one per datagram at ``max_datagram_size``."""

    min_cipher: int = MIN_CIPHER_ENCRYPTED_128
    """Lowest MIN_CIPHER_* level this side accepts."""

    max_cipher: int = MIN_CIPHER_ENCRYPTED_256
    """Highest MIN_CIPHER_* level this side offers; the session uses the highest both allow."""

    initial_rate: float = 100e6
    """Rate (bits/s) the sender starts at before it has measured the path."""

    max_rate: float = 10e9
    """Ceiling (bits/s): sendRateMax or the server's outgoing limit.  Settable at runtime."""

    min_rate: float = 1e5
    """Floor (bits/s) the rate controller never goes under."""

    rate_control: bool = True
    """Adapt the rate to queueing delay (rateControllerActive); False sends at ``max_rate``."""

    queue_target: float = 0.010
    """Queueing delay (s) the rate controller steers towards; the link stays full with it."""

    tick: float = 0.001
    """Pacing granularity (s): the sender emits a batch of datagrams per tick."""

    pacing_burst: float = 4.0
    """Most credit (in ticks) the pacer keeps when a wake-up comes late.  Timers fire up to
    ~1 ms late (uvloop rounds to whole milliseconds) and a busy loop adds more: with only
    2 ticks a sender woken every 3 ms reached 2/3 of its rate.  4 ms at 100 Mbit/s is
    50 kB, far below any bottleneck queue worth the name."""

    ack_interval: float = 0.010
    """Receiver: longest time (s) a received datagram waits to be acknowledged."""

    ack_every: int = 64
    """Receiver: acknowledge at least every this many DATA datagrams."""

    ack_repeat: int = 3
    """Receiver: how many consecutive ACKs repeat a newly received block range, so one
    lost ACK does not cause resends."""

    reorder_time: float = 0.005
    """Sender: a block is presumed lost once a datagram sent this much later (plus an
    eighth of the RTT) has been acknowledged."""

    ack_stall_timeout: float = 1.0
    """Sender: keep sending new data for this long (s, or 4 RTT if more) without any ACK,
    then only probe until the peer answers again."""

    max_probe_interval: float = 1.0
    """Longest back-off (s) between probes while the peer is silent."""

    keepalive_interval: float = 2.0
    """Send a PING when nothing has been sent for this long (s)."""

    hello_interval: float = 0.5
    """Sender: first HELLO retransmission delay (s); doubles up to 2 s."""

    handshake_timeout: float = 10.0
    """Sender: give up when no valid HELLO_REPLY came within this many seconds."""

    idle_timeout: float = 90.0
    """Fail the session when nothing authentic arrived for this many seconds."""

    close_timeout: float = 5.0
    """Sender: after all files are verified, how long to wait for the close to be acknowledged."""

    drain_timeout: float = 3.0
    """Receiver: how long to keep answering after the sender closed (its close ACK may be lost)."""

    replay_window: int = 2048
    """Width of the packet-number replay window."""

    early_data_limit: int = 32 << 20
    """Bytes of DATA the sender sends after its transfer request and before the receiver's
    answer, and the receiver holds until it accepts: the start costs one round trip instead
    of two (0.3 s at 300 ms).  It also keeps a fast sender reading while the receiver
    prepares its files (10,000 small files on loopback: 8 MiB gave 13.6 k files/s, 32 MiB
    14.5 k, medians of 9 alternated runs).  32 MiB covers a round trip at 100 Mbit/s up to
    ~2.5 s; what does not fit is sent again after the answer.  0 turns it off."""

    control_buffer_limit: int = 16 << 20
    """Largest amount of unread control-stream data (bytes) the peer may make us buffer."""

    def tag_size(self) -> int:
        """Bytes each protected datagram of a session of this side may carry as its tag.

        A side that offers NONE at most will have no tag (the session is NONE or refused), so
        its blocks take those bytes: on a 100 Mbit/s link that is 1.2 % more goodput."""
        return 0 if self.max_cipher <= MIN_CIPHER_NONE else TAG_SIZE

    def resolved_block_size(self) -> int:
        """The block size the sender will use."""
        if self.block_size is not None:
            if not 1 <= self.block_size <= MAX_BLOCK_SIZE:
                raise ValueError(f"block_size must be 1..{MAX_BLOCK_SIZE}")
            if self.block_size + block_overhead() + self.tag_size() > self.max_datagram_size:
                raise ValueError("block_size does not fit in max_datagram_size")
            return self.block_size
        size = self.max_datagram_size - block_overhead() - self.tag_size()
        if size < 1:
            raise ValueError("max_datagram_size too small")
        return min(size, MAX_BLOCK_SIZE)
