"""Data plane: sans-IO sender and receiver machines for the UDP block protocol.

Datagrams and ``now`` go in; datagrams, timers and events come out.  Nothing here opens
a socket, reads a clock or touches a file: the asyncio driver does, through
:class:`BlockSource` / :class:`BlockSink` and the methods below.
"""

from __future__ import annotations

from .config import TransferConfig
from .crypto import (
    CIPHER_SUITES,
    CipherSuite,
    CryptoError,
    NegotiationError,
    ReplayWindow,
    StaticKey,
    negotiate_cipher,
    register_cipher,
)
from .events import (
    Event,
    FileReceived,
    FileVerified,
    HandshakeCompleted,
    TransferAccepted,
    TransferCompleted,
    TransferFailed,
    TransferRequested,
)
from .manifest import Checkpoint, FileEntry, block_count
from .packet import PacketError, PacketType, decode_header
from .ranges import RangeSet
from .receiver import BlockSink, Receiver, ReceiverState
from .sender import BlockSource, Sender, SenderState
from .session import DropCounters, TransferStats

__all__ = [
    "CIPHER_SUITES",
    "BlockSink",
    "BlockSource",
    "Checkpoint",
    "CipherSuite",
    "CryptoError",
    "DropCounters",
    "Event",
    "FileEntry",
    "FileReceived",
    "FileVerified",
    "HandshakeCompleted",
    "NegotiationError",
    "PacketError",
    "PacketType",
    "RangeSet",
    "Receiver",
    "ReceiverState",
    "ReplayWindow",
    "Sender",
    "SenderState",
    "StaticKey",
    "TransferAccepted",
    "TransferCompleted",
    "TransferConfig",
    "TransferFailed",
    "TransferRequested",
    "TransferStats",
    "block_count",
    "decode_header",
    "negotiate_cipher",
    "register_cipher",
]
