"""Length-prefixed msgpack frames: a 4-byte big-endian length, then one msgpack map.

Strategy: the length is checked against the limit as soon as its four bytes are in, so a
frame that claims 4 GiB is refused before a single byte of it is buffered.  Unpacking uses
explicit msgpack limits (string, binary, array, map lengths) and refuses ext types, so a
small frame cannot expand into a huge object either.  Nesting is bounded by msgpack's own
fixed parser stack.

msgpack's limits count elements per container, not containers: a 16 MiB frame of empty
arrays (one byte each) would build 16 million lists, about 1 GiB and 20 s of CPU on the
event loop.  So :func:`unpack` also keeps a budget of containers, one per
:data:`BYTES_PER_CONTAINER` bytes of input, which holds any decoded object to roughly 20
times the size of its encoding (an empty list costs 56 bytes, a one-byte msgpack int 8).
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack

from jettui.errors import RemoteProtocolError

#: Default largest frame, in bytes (length prefix excluded).
DEFAULT_MAX_FRAME = 16 * 1024 * 1024

_LENGTH = struct.Struct(">I")
HEADER_SIZE = _LENGTH.size


#: Input bytes per container (array or map) a decoder allows; real messages use far fewer
#: containers (an ls entry, the densest, is one map in about 80 bytes).
BYTES_PER_CONTAINER = 4


def _refuse_ext(code: int, data: bytes) -> Any:
    raise RemoteProtocolError(f"msgpack ext type {code} is not allowed")


def pack(obj: Any) -> bytes:
    """Encode one object as msgpack (bin for bytes, str for text)."""
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes | bytearray | memoryview, max_len: int) -> Any:
    """Decode one msgpack object no larger than ``max_len`` with every limit applied."""
    budget = len(data) // BYTES_PER_CONTAINER + 64
    count = 0

    def container(obj: Any) -> Any:
        nonlocal count
        count += 1
        if count > budget:
            raise RemoteProtocolError(
                f"msgpack of {len(data)} bytes holds more than {budget} arrays and maps (expansion refused)"
            )
        return obj

    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=False,
            ext_hook=_refuse_ext,
            list_hook=container,
            object_hook=container,
            max_str_len=max_len,
            max_bin_len=max_len,
            max_array_len=max_len,
            max_map_len=max_len // 2 or 1,
            max_ext_len=0,
        )
    except RemoteProtocolError:
        raise
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise RemoteProtocolError(f"malformed msgpack: {exc}") from exc


def encode_frame(obj: Any, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """Length-prefix one encoded object; raises ValueError when it exceeds ``max_frame``."""
    body = pack(obj)
    if len(body) > max_frame:
        raise ValueError(f"frame of {len(body)} bytes exceeds the {max_frame}-byte limit")
    return _LENGTH.pack(len(body)) + body


class FrameBuffer:
    """Accumulates bytes and yields complete frame bodies."""

    __slots__ = ("_buf", "max_frame")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._buf = bytearray()
        self.max_frame = max_frame

    def feed(self, data: bytes) -> None:
        self._buf += data
        if len(self._buf) >= HEADER_SIZE:
            # Check the claim before waiting for (and buffering) its body.
            (length,) = _LENGTH.unpack_from(self._buf)
            if length > self.max_frame:
                raise RemoteProtocolError(f"frame of {length} bytes exceeds the {self.max_frame}-byte limit")

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def next_frame(self) -> bytes | None:
        """Return the next complete frame body, or None if more bytes are needed."""
        if len(self._buf) < HEADER_SIZE:
            return None
        (length,) = _LENGTH.unpack_from(self._buf)
        if length > self.max_frame:
            raise RemoteProtocolError(f"frame of {length} bytes exceeds the {self.max_frame}-byte limit")
        end = HEADER_SIZE + length
        if len(self._buf) < end:
            return None
        body = bytes(self._buf[HEADER_SIZE:end])
        del self._buf[:end]
        # A frame boundary may leave the next header complete: validate it now too.
        if len(self._buf) >= HEADER_SIZE:
            (following,) = _LENGTH.unpack_from(self._buf)
            if following > self.max_frame:
                raise RemoteProtocolError(f"frame of {following} bytes exceeds the {self.max_frame}-byte limit")
        return body
