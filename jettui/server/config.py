"""Server configuration: one dataclass, filled from the command line or by tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from jettui.constants import DEFAULT_API_PORT, DEFAULT_RECV_PORT, MIN_CIPHER_NONE


@dataclass
class BandwidthOptions:
    """Bandwidth limits given at start; any value given here is locked for the API."""

    incoming_rate_limit: float | None = None
    """Incoming limit in kbit/s (``--incoming-rate-limit``)."""
    outgoing_rate_limit: float | None = None
    """Outgoing limit in kbit/s (``--outgoing-rate-limit``)."""
    borrow_incoming: bool | None = None
    """Lend unused incoming bandwidth to outgoing (``--borrow-incoming-rate``)."""
    borrow_outgoing: bool | None = None
    """Lend unused outgoing bandwidth to incoming (``--borrow-outgoing-rate``)."""


@dataclass
class ServerConfig:
    api_host: str = "127.0.0.1"
    """Address the TLS API listens on."""
    api_port: int = DEFAULT_API_PORT
    """TCP port of the API; 0 picks a free port."""
    api_allow_remote_control: bool = False
    """Accept API connections from non-loopback addresses (required for a non-loopback api_host)."""
    recv_host: str = "0.0.0.0"
    """Address of the UDP data plane."""
    recv_port: int = DEFAULT_RECV_PORT
    """UDP port of the data plane (both directions); 0 picks a free port."""
    persistent_state_dir: Path | None = None
    """Where keys and SQLite state live; None keeps everything in memory."""
    server_name: str = ""
    """Friendly name; defaults to the host name."""
    superusers: list[str] = field(default_factory=list)
    """User names eligible for superuser()."""
    external_address: str | None = None
    """host[:port] advertised as serverExternalAddress."""
    bandwidth: BandwidthOptions = field(default_factory=BandwidthOptions)
    """Command-line bandwidth limits (locked)."""
    min_cipher: int = MIN_CIPHER_NONE
    """Lowest transfer cipher this server accepts."""
    sandbox_dir: Path | None = None
    """System sandbox root (the same as setSandboxMapping("", {"": dir}))."""
    trigger_dir: Path | None = None
    """Directory of trigger executables named after events."""
    idle_timeout: float = 300.0
    """Seconds an authenticated connection may stay silent before it is closed."""
    login_grace: float = 30.0
    """Seconds a connection may stay unauthenticated (and silent) before it is closed."""
    handshake_timeout: float = 10.0
    """Seconds allowed for the TLS handshake."""
    max_connections: int = 10_000
    """Open API connections, all states."""
    max_unauthenticated: int = 512
    """Connections not yet authenticated, all sources."""
    max_unauthenticated_per_address: int = 64
    """Connections not yet authenticated from one source address."""
    max_requests_per_connection: int = 64
    """Requests of one connection being processed at once."""
    max_unauthenticated_frame: int = 64 * 1024
    """Largest frame (bytes) accepted before the session has logged in; after login the
    wire limit (16 MiB) applies.  Logging in takes a few hundred bytes."""
    frame_timeout: float = 60.0
    """Seconds a frame may take to arrive once its first byte is in (slow senders)."""
    max_ls_entries: int = 2_000_000
    """Entries one ls result may hold; a bigger directory is refused with a CommandError."""
    scrypt_log_n: int = 17
    """scrypt cost (log2 N) for passwords this server hashes."""
    embedded_secret: str | None = None
    """Password of the embedded owner account (``jettui`` with no arguments)."""
    embedded_user: str | None = None
    """Name of the embedded owner account."""
