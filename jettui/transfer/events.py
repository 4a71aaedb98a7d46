"""Events the sender and receiver machines report through ``next_event()``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .manifest import FileEntry

__all__ = [
    "Event",
    "FileReceived",
    "FileVerified",
    "HandshakeCompleted",
    "TransferAccepted",
    "TransferCompleted",
    "TransferFailed",
    "TransferRequested",
]


@dataclass(frozen=True, slots=True)
class Event:
    """Base class of every transfer event."""


@dataclass(frozen=True, slots=True)
class HandshakeCompleted(Event):
    """Both sides: keys are agreed.  ``peer_public_key`` is the peer's long-term key."""

    session_id: int
    cipher: int
    peer_public_key: bytes


@dataclass(frozen=True, slots=True)
class TransferRequested(Event):
    """Receiver: the sender's request and whole manifest arrived.

    The driver answers with ``Receiver.accept(present=..., skip=...)`` or
    ``Receiver.reject(message)``.  ``params`` is the sender's opaque map (credentials,
    destination path, overwrite mode, flags...) for the server to check.
    """

    transfer_id: str
    params: dict[str, Any]
    files: tuple[FileEntry, ...]
    block_size: int


@dataclass(frozen=True, slots=True)
class TransferAccepted(Event):
    """Sender: the receiver accepted; data starts.  ``skipped`` are files it declined."""

    skipped: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class FileReceived(Event):
    """Receiver: every block of a file is in the sink (or it has no blocks).

    The driver verifies the file (whole-file hash against ``digest``: the manifest's, or
    the one the sender's eof brought) and calls ``Receiver.file_verified``.
    """

    file_index: int
    digest: bytes = b""


@dataclass(frozen=True, slots=True)
class FileVerified(Event):
    """Sender: the receiver's verdict on one file (``skipped`` when it declined it)."""

    file_index: int
    ok: bool
    message: str = ""
    skipped: bool = False


@dataclass(frozen=True, slots=True)
class TransferCompleted(Event):
    """Both sides: the session closed normally.  ``failed`` lists files that did not verify."""

    failed: tuple[int, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class TransferFailed(Event):
    """Both sides: the session ended in error.  ``remote`` when the peer reported it."""

    message: str
    remote: bool = False
