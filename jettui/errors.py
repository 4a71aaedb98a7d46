"""The exceptions jettui raises.

::

    JettuiError
    ├── CommandError            the server refused or failed a command (carries its message)
    │   └── AuthenticationError    bad credentials, or a call before authentication
    ├── ProtocolError           the control protocol was broken
    │   ├── LocalProtocolError     we were asked to send something invalid
    │   └── RemoteProtocolError    the peer sent something invalid (closes that connection)
    ├── ConnectionLost          the connection dropped or timed out
    │   └── TimeoutError_          no answer within the timeout
    └── TrustError              the server's certificate does not match the pinned one

Every class has a ``title`` for the commander's error dialog.  Codes travel over the wire
in error replies; :func:`construct_error` turns a code and message back into the class.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterator


class JettuiError(Exception):
    """Base of every jettui exception."""

    code = "error"
    title = "Error"

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class CommandError(JettuiError):
    """A command was refused or failed; ``message`` is the server's explanation."""

    code = "command"
    title = "Command failed"


class AuthenticationError(CommandError):
    """Authentication failed or is required."""

    code = "auth"
    title = "Authentication"


class ProtocolError(JettuiError):
    code = "protocol"
    title = "Protocol error"


class LocalProtocolError(ProtocolError):
    code = "local-protocol"


class RemoteProtocolError(ProtocolError):
    code = "remote-protocol"


class ConnectionLost(JettuiError):
    code = "connection"
    title = "Connection lost"


class TimeoutError_(ConnectionLost):  # noqa: N801 - avoid shadowing the builtin
    code = "timeout"
    title = "Timed out"


class TrustError(JettuiError):
    code = "trust"
    title = "Server identity changed"


ERROR_CLASSES: dict[str, type[JettuiError]] = {
    cls.code: cls for cls in (CommandError, AuthenticationError, ProtocolError, RemoteProtocolError, TimeoutError_)
}


def construct_error(code: object, message: object) -> JettuiError:
    """Build the exception for an error reply; unknown codes become CommandError."""
    cls = ERROR_CLASSES.get(code if isinstance(code, str) else "", CommandError)
    return cls(message if isinstance(message, str) else repr(message))


@contextlib.contextmanager
def map_exceptions(context: str = "") -> Iterator[None]:
    """Translate socket and TLS failures into :class:`ConnectionLost` at a boundary."""
    prefix = f"{context}: " if context else ""
    try:
        yield
    except JettuiError:
        raise
    except TimeoutError as exc:
        raise TimeoutError_(f"{prefix}no answer in time") from exc
    except (ssl.SSLError, ConnectionError, EOFError, OSError) as exc:
        raise ConnectionLost(f"{prefix}{exc.__class__.__name__}: {exc}") from exc
