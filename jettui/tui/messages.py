"""App-level messages: what the protocol worker (backend.py) reports to the UI.

The backend posts these to the app; the app forwards them down to the widgets that care
(messages up, attributes down).  Progress messages are ``bubble=False`` with
``can_replace`` so a flood of notifications collapses to the latest value per transfer
(toolong's rule) instead of backing up the queue.
"""

from __future__ import annotations

from typing import Any

from textual.message import Message

__all__ = [
    "ConnectionChanged",
    "ServerEvent",
    "TransferUpdated",
    "TransfersListed",
]


class ConnectionChanged(Message, bubble=False):
    """A connection's state changed (``connected``, ``reconnecting``, ``failed``, ``closed``)."""

    def __init__(self, site_key: str, state: str, error: str = "") -> None:
        super().__init__()
        self.site_key = site_key
        self.state = state
        self.error = error


class ServerEvent(Message, bubble=False):
    """One event-log entry pushed by a server (``events.event`` notification)."""

    def __init__(self, site_key: str, event: dict[str, Any]) -> None:
        super().__init__()
        self.site_key = site_key
        self.event = event


class TransferUpdated(Message, bubble=False):
    """A Transfer Structure from a server (``transfers.progress`` or a refresh)."""

    def __init__(self, site_key: str, transfer: dict[str, Any]) -> None:
        super().__init__()
        self.site_key = site_key
        self.transfer = transfer

    @property
    def transfer_key(self) -> tuple[str, Any]:
        return (self.site_key, self.transfer.get("transferId"))

    def can_replace(self, message: Message) -> bool:
        # Only the newest figures of one transfer matter; a status change is carried by
        # the newer structure too, so nothing is lost by dropping the older one.
        return isinstance(message, TransferUpdated) and message.transfer_key == self.transfer_key


class TransfersListed(Message, bubble=False):
    """The full list of a server's transfers (getTransfers), for the queue's refresh."""

    def __init__(self, site_key: str, transfers: list[dict[str, Any]], *, supported: bool = True) -> None:
        super().__init__()
        self.site_key = site_key
        self.transfers = transfers
        self.supported = supported
        """False when the server answered "unknown method" (no transfer engine yet)."""
