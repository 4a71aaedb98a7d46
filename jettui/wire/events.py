"""Control-protocol events: what a :class:`~jettui.wire.connection.Connection` yields and sends.

On the wire each is one msgpack map:

=============  ==============================================  ===============
event          map                                              direction
=============  ==============================================  ===============
Request        ``{id, method, params}``                         client → server
Reply          ``{id, result}``                                 server → client
ErrorReply     ``{id, error: {code, message}}``                 server → client
Notification   ``{method, params}`` (no id)                     server → client
(part)         ``{id, part: bin, more: bool}``                  server → client
=============  ==============================================  ===============

A reply whose encoding does not fit in one frame is sent as parts (the msgpack encoding of
the result cut into pieces) and reassembled into one :class:`Reply`; nothing is ever cut.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from jettui.errors import LocalProtocolError

#: ``server.lsAsync``, ``send.createTransfer``, ``recv.getSourcesAsync``, ``events.subscribe``...
METHOD_RE = re.compile(r"^[a-z]{1,16}\.[A-Za-z][A-Za-z0-9_]{0,63}$")
MAX_REQUEST_ID = 2**63 - 1


def _check_id(request_id: object) -> None:
    if type(request_id) is not int or not 0 <= request_id <= MAX_REQUEST_ID:
        raise LocalProtocolError(f"request id must be an int in [0, 2**63), not {request_id!r}")


def _check_method(method: object) -> None:
    if not isinstance(method, str) or not METHOD_RE.match(method):
        raise LocalProtocolError(f"invalid method name {method!r}")


def _check_params(params: object) -> None:
    if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
        raise LocalProtocolError("params must be a map with string keys")


@dataclass(frozen=True, slots=True)
class Request:
    id: int
    method: str
    params: dict[str, Any]

    def __post_init__(self) -> None:
        _check_id(self.id)
        _check_method(self.method)
        _check_params(self.params)


@dataclass(frozen=True, slots=True)
class Reply:
    id: int
    result: Any

    def __post_init__(self) -> None:
        _check_id(self.id)


@dataclass(frozen=True, slots=True)
class ErrorReply:
    id: int
    code: str
    message: str

    def __post_init__(self) -> None:
        _check_id(self.id)
        if not isinstance(self.code, str) or not isinstance(self.message, str):
            raise LocalProtocolError("error code and message must be strings")


@dataclass(frozen=True, slots=True)
class Notification:
    method: str
    params: dict[str, Any]

    def __post_init__(self) -> None:
        _check_method(self.method)
        _check_params(self.params)


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed the connection (``receive_data(b"")``)."""


Event = Request | Reply | ErrorReply | Notification | ConnectionClosed
