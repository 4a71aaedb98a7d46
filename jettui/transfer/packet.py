"""Datagram codec of the data plane.  Pure: bytes in, values out, values in, bytes out.

Every datagram starts with an 18-byte header that is also the AEAD associated data::

    0      1      2                 10                18
    +------+------+-----------------+-----------------+---------------------+-----+
    | 0xA5 | type | session id (8)  | packet num (8)  | payload ...         | tag |
    +------+------+-----------------+-----------------+---------------------+-----+

``0xA5`` is a magic nibble (0xA) and the protocol version (5: whole-file digests are
BLAKE3, see digest.py; 4: early digests may come before the accept; 3: ACKs carry the
index below which every file is complete; 2: manifests may carry no digest and ``eof``
brings each file's digest).  An older peer's datagrams are dropped as unknown.  The tag
is 16 bytes for every cipher level except NONE (and HELLO / HELLO_REPLY carry their own
handshake tag).
The payloads, all big-endian:

* HELLO (sender -> receiver, plaintext): sender static key (32), sender ephemeral key
  (32), sender min cipher (1), sender max cipher (1), block size (4), then a 16-byte
  HMAC tag (see crypto.py).
* HELLO_REPLY: receiver ephemeral key (32), status (1: 0 accept, 1 refuse), cipher level
  (1), message length (2), UTF-8 message, 16-byte HMAC tag.
* DATA: send time (f64, sender clock) then one or more blocks, each
  ``file index (u32) | block number (u64) | length (u16) | bytes``.
* ACK: largest packet number seen (u64), echoed send time (f64), ACK delay (f64),
  receiver time (f64), packets received (u64), block bytes received (u64), interval
  minimum and mean one-way delay (f64, f64; NaN when no DATA arrived), complete-below
  (u32: every block of every file before this index is in), group count (u16), then the
  count (u16) and varint ranges of further file indices whose every block is in (files
  reported complete have no group), then per group ``file index (u32) | range count
  (u16) | varint ranges`` of blocks.
* CONTROL: stream offset (u64) then a chunk of the reliable control byte stream.
* CONTROL_ACK: the next control-stream offset the sender of the ACK expects (u64).
* PING: send time (f64).  PONG: echoed send time (f64), delay at the peer (f64).
* PARITY (sent before the blocks it covers, in the last round trip of a lossy transfer):
  file index (u32), first block (u64), block count (u8, at least 2), then the XOR of
  those consecutive blocks of that file, each zero-padded to the longest.  With it the
  receiver rebuilds any one of them that does not arrive.

Decoders check every length and raise :class:`PacketError` (and nothing else) on
malformed input; the hypothesis tests hold them to that.
"""

from __future__ import annotations

import enum
import math
import struct
import sys
from dataclasses import dataclass

from .ranges import decode_varint_ranges, encode_varint_ranges

__all__ = [
    "HEADER",
    "HEADER_SIZE",
    "MAGIC_VERSION",
    "PARITY_HEADER_SIZE",
    "TAG_SIZE",
    "Ack",
    "Hello",
    "HelloReply",
    "PacketError",
    "PacketType",
    "block_overhead",
    "decode_ack",
    "decode_control",
    "decode_control_ack",
    "decode_data",
    "decode_header",
    "decode_hello",
    "decode_hello_reply",
    "decode_packet",
    "decode_ping",
    "decode_parity",
    "decode_pong",
    "encode_ack",
    "encode_ack_prefix",
    "encode_control",
    "encode_control_ack",
    "data_parts",
    "encode_data",
    "encode_header",
    "encode_hello",
    "encode_hello_reply",
    "encode_parity",
    "encode_ping",
    "encode_pong",
]


class PacketError(ValueError):
    """A datagram is malformed (too short, bad magic, bad lengths, trailing bytes...)."""


class PacketType(enum.IntEnum):
    HELLO = 1
    HELLO_REPLY = 2
    DATA = 3
    ACK = 4
    CONTROL = 5
    CONTROL_ACK = 6
    PING = 7
    PONG = 8
    PARITY = 9


_TYPES = frozenset(int(t) for t in PacketType)

MAGIC_VERSION = 0xA5
HEADER = struct.Struct("!BBQQ")
HEADER_SIZE = HEADER.size
#: AEAD / handshake tag length.
TAG_SIZE = 16
KEY_SIZE = 32

_HELLO = struct.Struct("!32s32sBBI")
_HELLO_REPLY = struct.Struct("!32sBBH")
_F64 = struct.Struct("!d")
_U64 = struct.Struct("!Q")
_PONG = struct.Struct("!dd")
BLOCK_HEADER = struct.Struct("!IQH")
_ACK_FIXED = struct.Struct("!QdddQQddIH")
_ACK_GROUP = struct.Struct("!IH")
_ACK_COUNT = struct.Struct("!H")
_PARITY = struct.Struct("!IQB")
#: Bytes a PARITY payload spends besides the parity itself (it fits wherever a block does).
PARITY_HEADER_SIZE = _PARITY.size

#: Largest block length the u16 length field can carry.
MAX_BLOCK_SIZE = 0xFFFF
DATA_PREFIX_SIZE = _F64.size
BLOCK_HEADER_SIZE = BLOCK_HEADER.size
_DATA_MIN = DATA_PREFIX_SIZE + BLOCK_HEADER_SIZE
_BLOCK_UNPACK = BLOCK_HEADER.unpack_from


def block_overhead() -> int:
    """Bytes a DATA datagram spends besides one block's data (header, time, block header)."""
    return HEADER_SIZE + DATA_PREFIX_SIZE + BLOCK_HEADER_SIZE


@dataclass(frozen=True, slots=True)
class Hello:
    static_key: bytes
    ephemeral_key: bytes
    min_cipher: int
    max_cipher: int
    block_size: int


@dataclass(frozen=True, slots=True)
class HelloReply:
    ephemeral_key: bytes
    accepted: bool
    cipher: int
    message: str


@dataclass(frozen=True, slots=True)
class Ack:
    largest_pn: int
    echo_time: float
    ack_delay: float
    recv_time: float
    packets_received: int
    bytes_received: int
    owd_min: float
    owd_mean: float
    #: ``(file_index, [(start, end), ...])`` per group.
    groups: tuple[tuple[int, list[tuple[int, int]]], ...]
    #: Every block of every file below this index is in: those files need no group, so
    #: 10,000 small files are not reported one by one.  A declined file stops it.
    complete_below: int = 0
    #: Further runs ``[first, end)`` of file indices whose every block is in.  Cumulative
    #: like the watermark, so a lost ACK loses nothing of it: per-file groups were repeated
    #: in two more ACKs only, and when those overflowed (a burst of early data accepted)
    #: a lost ACK made the sender resend whole files the receiver had.
    complete_ranges: tuple[tuple[int, int], ...] = ()


# -- header --------------------------------------------------------------------------------
def encode_header(ptype: int, session_id: int, pn: int) -> bytes:
    return HEADER.pack(MAGIC_VERSION, ptype, session_id, pn)


def decode_header(data: bytes | memoryview) -> tuple[int, int, int]:
    """Return ``(type, session_id, packet_number)`` of a datagram."""
    if len(data) < HEADER_SIZE:
        raise PacketError(f"datagram of {len(data)} bytes is shorter than the header")
    magic, ptype, sid, pn = HEADER.unpack_from(data)
    if magic != MAGIC_VERSION:
        raise PacketError(f"bad magic/version byte 0x{magic:02x}")
    if ptype not in _TYPES:
        raise PacketError(f"unknown packet type {ptype}")
    return ptype, sid, pn


# -- handshake -----------------------------------------------------------------------------
def encode_hello(hello: Hello) -> bytes:
    """HELLO payload without its tag."""
    return _HELLO.pack(hello.static_key, hello.ephemeral_key, hello.min_cipher, hello.max_cipher, hello.block_size)


def decode_hello(payload: bytes | memoryview) -> Hello:
    """Decode a HELLO payload (tag already removed)."""
    if len(payload) != _HELLO.size:
        raise PacketError(f"HELLO payload is {len(payload)} bytes, expected {_HELLO.size}")
    s, e, lo, hi, bs = _HELLO.unpack_from(payload)
    if lo > hi:
        raise PacketError(f"HELLO min cipher {lo} above max cipher {hi}")
    if not 1 <= bs <= MAX_BLOCK_SIZE:
        raise PacketError(f"HELLO block size {bs} out of range")
    return Hello(s, e, lo, hi, bs)


def encode_hello_reply(reply: HelloReply) -> bytes:
    message = reply.message.encode("utf-8")[:1024]
    return _HELLO_REPLY.pack(reply.ephemeral_key, 0 if reply.accepted else 1, reply.cipher, len(message)) + message


def decode_hello_reply(payload: bytes | memoryview) -> HelloReply:
    if len(payload) < _HELLO_REPLY.size:
        raise PacketError("HELLO_REPLY payload too short")
    e, status, cipher, mlen = _HELLO_REPLY.unpack_from(payload)
    if status > 1:
        raise PacketError(f"HELLO_REPLY status {status} unknown")
    if len(payload) != _HELLO_REPLY.size + mlen:
        raise PacketError("HELLO_REPLY message length mismatch")
    try:
        message = bytes(payload[_HELLO_REPLY.size :]).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PacketError("HELLO_REPLY message is not UTF-8") from exc
    return HelloReply(e, status == 0, cipher, message)


# -- data ----------------------------------------------------------------------------------
def encode_data(send_time: float, blocks: list[tuple[int, int, bytes | memoryview]]) -> bytes:
    """DATA payload from ``(file_index, block_number, data)`` triples."""
    return b"".join(data_parts(send_time, blocks))


def data_parts(send_time: float, blocks: list[tuple[int, int, bytes | memoryview]]) -> list[bytes | memoryview]:
    """:func:`encode_data` as the list of pieces to concatenate (the caller seals them in one copy)."""
    parts: list[bytes | memoryview] = [_F64.pack(send_time)]
    pack = BLOCK_HEADER.pack
    for f, b, d in blocks:
        parts.append(pack(f, b, len(d)))
        parts.append(d)
    return parts


def decode_data(payload: bytes | memoryview) -> tuple[float, list[tuple[int, int, memoryview]]]:
    """Return the send time and ``(file_index, block_number, data view)`` triples."""
    n = len(payload)
    if n < _DATA_MIN:
        raise PacketError("DATA payload too short")
    view = memoryview(payload)
    send_time = _F64.unpack_from(view)[0]
    if send_time - send_time != 0.0:  # NaN or infinite
        raise PacketError("DATA send time not finite")
    f, b, length = _BLOCK_UNPACK(view, DATA_PREFIX_SIZE)
    pos = _DATA_MIN
    end = pos + length
    if end == n and length:
        return send_time, [(f, b, view[pos:end])]  # the common case: one block
    blocks: list[tuple[int, int, memoryview]] = []
    while True:
        if length == 0 or end > n:
            raise PacketError("block length out of bounds")
        blocks.append((f, b, view[pos:end]))
        pos = end
        if pos == n:
            return send_time, blocks
        if n - pos < BLOCK_HEADER_SIZE:
            raise PacketError("truncated block header")
        f, b, length = _BLOCK_UNPACK(view, pos)
        pos += BLOCK_HEADER_SIZE
        end = pos + length


# -- acknowledgements --------------------------------------------------------------------------
def encode_ack(ack: Ack) -> bytes:
    return encode_ack_prefix(ack, sys.maxsize)[0]


def encode_ack_prefix(ack: Ack, limit: int) -> tuple[bytes, int]:
    """Encode ``ack`` with as many of its groups, in order, as fit in ``limit`` bytes;
    returns the payload and how many groups it carries (the rest go in a later ACK)."""
    out = bytearray(
        _ACK_FIXED.pack(
            ack.largest_pn,
            ack.echo_time,
            ack.ack_delay,
            ack.recv_time,
            ack.packets_received,
            ack.bytes_received,
            ack.owd_min,
            ack.owd_mean,
            ack.complete_below,
            0,
        )
    )
    out += _ACK_COUNT.pack(len(ack.complete_ranges))
    encode_varint_ranges(ack.complete_ranges, out)
    pack_group = _ACK_GROUP.pack
    fitted = 0
    for f, ranges in ack.groups:
        mark = len(out)
        out += pack_group(f, len(ranges))
        if len(ranges) == 1 and (s := ranges[0][0]) < 0x80 and 0 < (length := ranges[0][1] - s) < 0x80:
            out.append(s)  # a small file's group: two one-byte varints
            out.append(length)
        else:
            encode_varint_ranges(ranges, out)
        if len(out) > limit or fitted == 0xFFFF:
            del out[mark:]
            break
        fitted += 1
    _ACK_COUNT.pack_into(out, _ACK_FIXED.size - _ACK_COUNT.size, fitted)
    return bytes(out), fitted


def decode_ack(payload: bytes | memoryview) -> Ack:
    n = len(payload)
    if n < _ACK_FIXED.size:
        raise PacketError("ACK payload too short")
    pn, echo, delay, rtime, pkts, nbytes, omin, omean, below, ngroups = _ACK_FIXED.unpack_from(payload)
    for value in (echo, delay, rtime):
        if not math.isfinite(value):
            raise PacketError("ACK time not finite")
    if delay < 0:
        raise PacketError("negative ACK delay")
    pos = _ACK_FIXED.size
    if n - pos < _ACK_COUNT.size:
        raise PacketError("ACK payload too short")
    (ncomplete,) = _ACK_COUNT.unpack_from(payload, pos)
    try:
        complete, pos = decode_varint_ranges(payload, pos + _ACK_COUNT.size, ncomplete)
    except ValueError as exc:
        raise PacketError(f"bad ACK file ranges: {exc}") from exc
    groups: list[tuple[int, list[tuple[int, int]]]] = []
    for _ in range(ngroups):
        if n - pos < _ACK_GROUP.size:
            raise PacketError("truncated ACK group")
        f, count = _ACK_GROUP.unpack_from(payload, pos)
        pos += _ACK_GROUP.size
        if count == 1 and pos + 2 <= n:
            gap, length = payload[pos], payload[pos + 1]
            if gap < 0x80 and 0 < length < 0x80:  # the two-byte form encode_ack writes for small files
                groups.append((f, [(gap, gap + length)]))
                pos += 2
                continue
        try:
            ranges, pos = decode_varint_ranges(payload, pos, count)
        except ValueError as exc:
            raise PacketError(f"bad ACK ranges: {exc}") from exc
        groups.append((f, ranges))
    if pos != n:
        raise PacketError("trailing bytes after ACK")
    return Ack(pn, echo, delay, rtime, pkts, nbytes, omin, omean, tuple(groups), below, tuple(complete))


# -- control stream -------------------------------------------------------------------------
def encode_control(offset: int, chunk: bytes) -> bytes:
    return _U64.pack(offset) + chunk


def decode_control(payload: bytes | memoryview) -> tuple[int, bytes]:
    if len(payload) <= _U64.size:
        raise PacketError("CONTROL payload too short")
    (offset,) = _U64.unpack_from(payload)
    if offset + len(payload) - _U64.size > 1 << 62:
        raise PacketError("CONTROL offset out of range")
    return offset, bytes(payload[_U64.size :])


def encode_control_ack(offset: int) -> bytes:
    return _U64.pack(offset)


def decode_control_ack(payload: bytes | memoryview) -> int:
    if len(payload) != _U64.size:
        raise PacketError("CONTROL_ACK payload must be 8 bytes")
    return int(_U64.unpack_from(payload)[0])


# -- liveness ------------------------------------------------------------------------------
def encode_ping(send_time: float) -> bytes:
    return _F64.pack(send_time)


def decode_ping(payload: bytes | memoryview) -> float:
    if len(payload) != _F64.size:
        raise PacketError("PING payload must be 8 bytes")
    (t,) = _F64.unpack_from(payload)
    if not math.isfinite(t):
        raise PacketError("PING time not finite")
    return float(t)


def encode_pong(echo_time: float, delay: float) -> bytes:
    return _PONG.pack(echo_time, delay)


def decode_pong(payload: bytes | memoryview) -> tuple[float, float]:
    if len(payload) != _PONG.size:
        raise PacketError("PONG payload must be 16 bytes")
    echo, delay = _PONG.unpack_from(payload)
    if not (math.isfinite(echo) and math.isfinite(delay)) or delay < 0:
        raise PacketError("PONG times invalid")
    return float(echo), float(delay)


# -- forward error correction -----------------------------------------------------------------
def encode_parity(file_index: int, first_block: int, count: int, parity: bytes) -> bytes:
    return _PARITY.pack(file_index, first_block, count) + parity


def decode_parity(payload: bytes | memoryview) -> tuple[int, int, int, memoryview]:
    """Return ``(file_index, first_block, count, parity view)``."""
    if len(payload) <= _PARITY.size:
        raise PacketError("PARITY payload too short")
    f, first, count = _PARITY.unpack_from(payload)
    if count < 2:
        raise PacketError(f"PARITY over {count} block(s)")
    if first + count > 1 << 63:
        raise PacketError("PARITY block numbers out of range")
    return f, first, count, memoryview(payload)[_PARITY.size :]


_PLAIN_DECODERS = {
    PacketType.DATA: decode_data,
    PacketType.ACK: decode_ack,
    PacketType.CONTROL: decode_control,
    PacketType.CONTROL_ACK: decode_control_ack,
    PacketType.PING: decode_ping,
    PacketType.PONG: decode_pong,
    PacketType.PARITY: decode_parity,
}


def decode_packet(data: bytes | memoryview, tag_size: int = 0) -> tuple[int, int, int, object]:
    """Decode a whole datagram whose payload is plaintext (cipher NONE, or handshake).

    ``tag_size`` bytes at the end are skipped (they belong to the protection layer).
    Returns ``(type, session_id, packet_number, decoded payload)``.  Used by tests,
    debugging tools and fuzzing; the machines decode piecewise after opening.
    """
    ptype, sid, pn = decode_header(data)
    if ptype in (PacketType.HELLO, PacketType.HELLO_REPLY):
        tag_size = TAG_SIZE
    end = len(data) - tag_size
    if end < HEADER_SIZE:
        raise PacketError("datagram shorter than header and tag")
    payload = memoryview(data)[HEADER_SIZE:end]
    if ptype == PacketType.HELLO:
        return ptype, sid, pn, decode_hello(payload)
    if ptype == PacketType.HELLO_REPLY:
        return ptype, sid, pn, decode_hello_reply(payload)
    return ptype, sid, pn, _PLAIN_DECODERS[PacketType(ptype)](payload)
