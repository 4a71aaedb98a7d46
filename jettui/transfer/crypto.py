"""Session keys, cipher levels, packet protection and the replay window.

Strategy (all primitives from ``cryptography``; nothing hand-rolled):

* Every server owns a long-term X25519 key (:class:`StaticKey`).  The sender knows the
  receiver's public key before it starts (it is the destination's ``publicKey``); the
  receiver learns the sender's from HELLO and may check it against an allowlist.
* HELLO carries the sender's static and ephemeral public keys and its cipher range,
  authenticated with an HMAC whose key comes from ``DH(e_s, s_r) || DH(s_s, s_r)``:
  only the holder of ``s_s`` who also knows ``s_r`` can produce it, so a receiver never
  answers (or allocates keys for) a forged HELLO beyond one X25519 exchange.
* Session keys come from ``DH(e_s, e_r) || DH(s_s, e_r) || DH(e_s, s_r)`` through
  HKDF-SHA256, salted with a transcript hash over the protocol name, both static keys,
  the HELLO payload and the receiver's ephemeral key (Noise-KK-like: both long-term keys
  are bound, and ephemerals give forward secrecy).  HKDF yields a sender->receiver key,
  a receiver->sender key and a key that authenticates HELLO_REPLY (key confirmation:
  a sender that expected another receiver key rejects the reply).
* Cipher levels live in one table, :data:`CIPHER_SUITES`, registered through
  :func:`register_cipher`.  NONE adds nothing; UNENCRYPTED is GMAC, i.e. AES-128-GCM with
  an empty plaintext and header + payload as associated data.  We take GMAC rather than
  HMAC-SHA256 because it is the same hardware-accelerated primitive (AES-NI + PCLMUL) as
  the encrypted levels, one C call per datagram with a 16-byte tag, and its per-nonce
  security is exactly what packet-number nonces give; HMAC would add a second code path
  and SHA-256 per byte for no gain.  ENCRYPTED_128/256 are AES-128/256-GCM.
* The nonce is 4 zero bytes + the 8-byte packet number.  Keys differ per direction and
  packet numbers only grow, so a nonce is never reused under a key.
* :class:`ReplayWindow` remembers the last 2048 packet numbers; a datagram is checked
  before it is opened and committed only after it authenticated, so forgeries cannot
  move the window.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..constants import (
    CIPHER_NAMES,
    MIN_CIPHER_ENCRYPTED_128,
    MIN_CIPHER_ENCRYPTED_256,
    MIN_CIPHER_NONE,
    MIN_CIPHER_UNENCRYPTED,
)
from .packet import (
    HEADER_SIZE,
    TAG_SIZE,
    Hello,
    HelloReply,
    PacketError,
    PacketType,
    decode_header,
    decode_hello,
    decode_hello_reply,
    encode_header,
    encode_hello,
    encode_hello_reply,
)

__all__ = [
    "CIPHER_SUITES",
    "CipherSuite",
    "CryptoError",
    "InitiatorHandshake",
    "NegotiationError",
    "PacketProtection",
    "ReplayWindow",
    "ResponderHandshake",
    "SessionKeys",
    "StaticKey",
    "cipher_name",
    "negotiate_cipher",
    "register_cipher",
]

PROTOCOL_NAME = b"jettui-transfer/1 X25519 HKDF-SHA256 AES-GCM"
_NONCE = struct.Struct("!4xQ")


class CryptoError(Exception):
    """A datagram or handshake message failed authentication (callers drop and count it)."""


class NegotiationError(Exception):
    """The two sides' cipher ranges do not overlap; the message names both levels."""


def cipher_name(level: int) -> str:
    return CIPHER_NAMES.get(level, f"level {level}")


# -- packet protection ------------------------------------------------------------------------
class PacketProtection:
    """Seals and opens datagrams of one direction under one key (base: cipher NONE)."""

    tag_size = 0

    def seal(self, header: bytes, pn: int, payload: bytes) -> bytes:
        """Return the whole datagram: header, protected payload, tag."""
        return header + payload

    def open(self, datagram: bytes | memoryview, pn: int) -> bytes | memoryview:
        """Return the payload of an authentic datagram; raise :class:`CryptoError` otherwise."""
        return memoryview(datagram)[HEADER_SIZE:]

    def seal_parts(self, header: bytes, pn: int, parts: list[bytes | memoryview]) -> bytes:
        """:meth:`seal` of the concatenation of ``parts`` (DATA: block views straight from
        the read buffer), copying each byte of a 64 KiB block once instead of three times."""
        return b"".join([header, *parts])


class _GmacProtection(PacketProtection):
    """Authenticated, readable: the tag is AES-GCM over an empty plaintext."""

    tag_size = TAG_SIZE

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, header: bytes, pn: int, payload: bytes) -> bytes:
        body = header + payload
        return body + self._aead.encrypt(_NONCE.pack(pn), b"", body)

    def seal_parts(self, header: bytes, pn: int, parts: list[bytes | memoryview]) -> bytes:
        body = b"".join([header, *parts])
        return b"".join((body, self._aead.encrypt(_NONCE.pack(pn), b"", body)))

    def open(self, datagram: bytes | memoryview, pn: int) -> bytes | memoryview:
        view = memoryview(datagram)
        if len(view) < HEADER_SIZE + TAG_SIZE:
            raise CryptoError("datagram shorter than header and tag")
        try:
            self._aead.decrypt(_NONCE.pack(pn), view[-TAG_SIZE:], view[:-TAG_SIZE])
        except InvalidTag:
            raise CryptoError("authentication failed") from None
        return view[HEADER_SIZE:-TAG_SIZE]


class _AeadProtection(PacketProtection):
    """Encrypted and authenticated with AES-GCM; the header is the associated data."""

    tag_size = TAG_SIZE

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, header: bytes, pn: int, payload: bytes) -> bytes:
        return header + self._aead.encrypt(_NONCE.pack(pn), payload, header)

    def seal_parts(self, header: bytes, pn: int, parts: list[bytes | memoryview]) -> bytes:
        payload = b"".join(parts)
        out = bytearray(len(header) + len(payload) + TAG_SIZE)
        out[: len(header)] = header
        self._aead.encrypt_into(_NONCE.pack(pn), payload, header, memoryview(out)[len(header) :])
        return out  # type: ignore[return-value]  # bytes-like; saves copying it into bytes

    def open(self, datagram: bytes | memoryview, pn: int) -> bytes | memoryview:
        view = memoryview(datagram)
        if len(view) < HEADER_SIZE + TAG_SIZE:
            raise CryptoError("datagram shorter than header and tag")
        try:
            return self._aead.decrypt(_NONCE.pack(pn), view[HEADER_SIZE:], view[:HEADER_SIZE])
        except InvalidTag:
            raise CryptoError("authentication failed") from None


@dataclass(frozen=True, slots=True)
class CipherSuite:
    level: int
    name: str
    key_size: int
    tag_size: int
    factory: Callable[[bytes], PacketProtection]

    def protection(self, key: bytes) -> PacketProtection:
        return self.factory(key[: self.key_size])


#: Every cipher level, by its MIN_CIPHER_* value.
CIPHER_SUITES: dict[int, CipherSuite] = {}


def register_cipher(suite: CipherSuite) -> None:
    """Add a cipher level to :data:`CIPHER_SUITES` (levels are ordered by their number)."""
    CIPHER_SUITES[suite.level] = suite


register_cipher(CipherSuite(MIN_CIPHER_NONE, "NONE", 0, 0, lambda key: PacketProtection()))
register_cipher(CipherSuite(MIN_CIPHER_UNENCRYPTED, "UNENCRYPTED", 16, TAG_SIZE, _GmacProtection))
register_cipher(CipherSuite(MIN_CIPHER_ENCRYPTED_128, "ENCRYPTED_128", 16, TAG_SIZE, _AeadProtection))
register_cipher(CipherSuite(MIN_CIPHER_ENCRYPTED_256, "ENCRYPTED_256", 32, TAG_SIZE, _AeadProtection))


def negotiate_cipher(sender_min: int, sender_max: int, receiver_min: int, receiver_max: int) -> int:
    """The highest level both sides allow, never below either minimum.

    Raises :class:`NegotiationError` naming both levels when the ranges do not meet.
    """
    for who, level in (
        ("sender", sender_min),
        ("sender", sender_max),
        ("receiver", receiver_min),
        ("receiver", receiver_max),
    ):
        if level not in CIPHER_SUITES:
            raise NegotiationError(f"{who} uses unknown cipher level {level}")
    if sender_max < receiver_min:
        raise NegotiationError(
            f"sender offers at most {cipher_name(sender_max)} but receiver requires {cipher_name(receiver_min)}"
        )
    if receiver_max < sender_min:
        raise NegotiationError(
            f"receiver offers at most {cipher_name(receiver_max)} but sender requires {cipher_name(sender_min)}"
        )
    return min(sender_max, receiver_max)


# -- replay window ---------------------------------------------------------------------------
class ReplayWindow:
    """Sliding window over received packet numbers (a bit mask held in one Python int)."""

    __slots__ = ("size", "largest", "_mask", "_full")

    def __init__(self, size: int = 2048) -> None:
        self.size = size
        self.largest = -1
        self._mask = 0
        self._full = (1 << size) - 1

    def check(self, pn: int) -> bool:
        """True when ``pn`` is new and not older than the window."""
        largest = self.largest
        if pn > largest:
            return True
        d = largest - pn
        return d < self.size and not (self._mask >> d) & 1

    def commit(self, pn: int) -> None:
        """Record ``pn`` as seen (call only after the datagram authenticated)."""
        largest = self.largest
        if pn > largest:
            shift = pn - largest
            self._mask = ((self._mask << shift) | 1) & self._full if shift < self.size else 1
            self.largest = pn
        else:
            self._mask |= 1 << (largest - pn)


# -- keys and handshake -------------------------------------------------------------------------
class StaticKey:
    """A server's long-term X25519 key pair."""

    __slots__ = ("private", "public_bytes")

    def __init__(self, private: X25519PrivateKey) -> None:
        self.private = private
        self.public_bytes = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @classmethod
    def generate(cls) -> StaticKey:
        return cls(X25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, data: bytes) -> StaticKey:
        return cls(X25519PrivateKey.from_private_bytes(data))

    def private_bytes(self) -> bytes:
        return self.private.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )

    @property
    def public_hex(self) -> str:
        return self.public_bytes.hex()


def _public(private: X25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _dh(private: X25519PrivateKey, public: bytes) -> bytes:
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError as exc:  # low-order point: all-zero shared secret
        raise CryptoError(f"bad public key: {exc}") from None


def _hkdf(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def _tag(key: bytes, data: bytes | memoryview) -> bytes:
    return hmac.digest(key, data, "sha256")[:TAG_SIZE]


def _hello_key(sender_static: bytes, receiver_static: bytes, es: bytes, ss: bytes) -> tuple[bytes, bytes]:
    h0 = hashlib.sha256(PROTOCOL_NAME + sender_static + receiver_static).digest()
    return h0, _hkdf(h0, es + ss, b"jettui hello", 32)


@dataclass(frozen=True, slots=True)
class SessionKeys:
    """Keys of one session from one side's point of view."""

    send_key: bytes
    recv_key: bytes
    confirm_key: bytes

    def protections(self, level: int) -> tuple[PacketProtection, PacketProtection]:
        """``(send, receive)`` packet protection at ``level``."""
        suite = CIPHER_SUITES[level]
        return suite.protection(self.send_key), suite.protection(self.recv_key)


def _session_keys(h0: bytes, hello_payload: bytes, e_r: bytes, ee: bytes, se: bytes, es: bytes) -> bytes:
    transcript = hashlib.sha256(h0 + hello_payload + e_r).digest()
    return _hkdf(transcript, ee + se + es, b"jettui session keys", 96)


class InitiatorHandshake:
    """The sender's half: builds HELLO, checks HELLO_REPLY, yields :class:`SessionKeys`."""

    def __init__(
        self,
        static: StaticKey,
        peer_static: bytes,
        min_cipher: int,
        max_cipher: int,
        block_size: int,
        ephemeral: X25519PrivateKey | None = None,
    ) -> None:
        self.static = static
        self.peer_static = peer_static
        self.ephemeral = ephemeral or X25519PrivateKey.generate()
        hello = Hello(static.public_bytes, _public(self.ephemeral), min_cipher, max_cipher, block_size)
        self.hello = hello
        self.hello_payload = encode_hello(hello)
        self._es = _dh(self.ephemeral, peer_static)
        self._h0, self._hello_key = _hello_key(
            static.public_bytes, peer_static, self._es, _dh(static.private, peer_static)
        )

    def hello_datagram(self, session_id: int, pn: int) -> bytes:
        body = encode_header(PacketType.HELLO, session_id, pn) + self.hello_payload
        return body + _tag(self._hello_key, body)

    def process_reply(self, datagram: bytes | memoryview) -> tuple[HelloReply, SessionKeys]:
        """Check a HELLO_REPLY; raise PacketError (malformed) or CryptoError (not authentic)."""
        decode_header(datagram)
        if len(datagram) < HEADER_SIZE + TAG_SIZE:
            raise PacketError("HELLO_REPLY too short")
        view = memoryview(datagram)
        reply = decode_hello_reply(view[HEADER_SIZE:-TAG_SIZE])
        ee = _dh(self.ephemeral, reply.ephemeral_key)
        se = _dh(self.static.private, reply.ephemeral_key)
        okm = _session_keys(self._h0, self.hello_payload, reply.ephemeral_key, ee, se, self._es)
        if not hmac.compare_digest(_tag(okm[64:], view[:-TAG_SIZE]), bytes(view[-TAG_SIZE:])):
            raise CryptoError("HELLO_REPLY not authentic (wrong receiver key?)")
        return reply, SessionKeys(okm[:32], okm[32:64], okm[64:])


class ResponderHandshake:
    """The receiver's half, built from an authentic HELLO datagram."""

    def __init__(
        self,
        static: StaticKey,
        datagram: bytes | memoryview,
        ephemeral: X25519PrivateKey | None = None,
    ) -> None:
        """Raise PacketError (malformed) or CryptoError (not authentic) for a bad HELLO."""
        decode_header(datagram)
        if len(datagram) < HEADER_SIZE + TAG_SIZE:
            raise PacketError("HELLO too short")
        view = memoryview(datagram)
        self.hello_payload = bytes(view[HEADER_SIZE:-TAG_SIZE])
        self.hello: Hello = decode_hello(self.hello_payload)
        s_s, e_s = self.hello.static_key, self.hello.ephemeral_key
        es = _dh(static.private, e_s)
        h0, key = _hello_key(s_s, static.public_bytes, es, _dh(static.private, s_s))
        if not hmac.compare_digest(_tag(key, view[:-TAG_SIZE]), bytes(view[-TAG_SIZE:])):
            raise CryptoError("HELLO not authentic")
        self.peer_static = s_s
        self.ephemeral = ephemeral or X25519PrivateKey.generate()
        e_r = _public(self.ephemeral)
        self._e_r = e_r
        ee = _dh(self.ephemeral, e_s)
        se = _dh(self.ephemeral, s_s)
        okm = _session_keys(h0, self.hello_payload, e_r, ee, se, es)
        # Receiver's send key is the sender's receive key and vice versa.
        self.keys = SessionKeys(okm[32:64], okm[:32], okm[64:])

    def reply_datagram(self, session_id: int, pn: int, accepted: bool, cipher: int, message: str) -> bytes:
        payload = encode_hello_reply(HelloReply(self._e_r, accepted, cipher, message))
        body = encode_header(PacketType.HELLO_REPLY, session_id, pn) + payload
        return body + _tag(self.keys.confirm_key, body)
