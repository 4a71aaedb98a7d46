"""Sans-IO control protocol: framing, events and the connection state machine. No sockets."""

from jettui.wire.connection import ACCEPTS, CLIENT, NEED_DATA, SERVER, Connection, Role
from jettui.wire.events import ConnectionClosed, ErrorReply, Event, Notification, Reply, Request
from jettui.wire.framing import DEFAULT_MAX_FRAME, FrameBuffer, encode_frame

__all__ = [
    "ACCEPTS",
    "CLIENT",
    "DEFAULT_MAX_FRAME",
    "NEED_DATA",
    "SERVER",
    "Connection",
    "ConnectionClosed",
    "ErrorReply",
    "Event",
    "FrameBuffer",
    "Notification",
    "Reply",
    "Request",
    "Role",
    "encode_frame",
]
