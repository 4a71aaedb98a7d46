"""Cipher levels, negotiation, the replay window and the handshake's key binding."""

from __future__ import annotations

import pytest

from jettui.constants import (
    MIN_CIPHER_ENCRYPTED_128,
    MIN_CIPHER_ENCRYPTED_256,
    MIN_CIPHER_NONE,
    MIN_CIPHER_UNENCRYPTED,
)
from jettui.transfer.crypto import (
    CIPHER_SUITES,
    CryptoError,
    InitiatorHandshake,
    NegotiationError,
    ReplayWindow,
    ResponderHandshake,
    StaticKey,
    negotiate_cipher,
)
from jettui.transfer.packet import HEADER_SIZE, PacketType, encode_header

LEVELS = sorted(CIPHER_SUITES)
PAYLOAD = b"block data " * 100


def handshake(level: int = MIN_CIPHER_ENCRYPTED_256):
    s, r = StaticKey.generate(), StaticKey.generate()
    init = InitiatorHandshake(s, r.public_bytes, MIN_CIPHER_NONE, level, 1344)
    resp = ResponderHandshake(r, init.hello_datagram(5, 0))
    reply, keys = init.process_reply(resp.reply_datagram(5, 0, True, level, ""))
    return keys, resp.keys, reply


def test_registered_levels_are_the_seed_constants():
    assert LEVELS == [
        MIN_CIPHER_NONE,
        MIN_CIPHER_UNENCRYPTED,
        MIN_CIPHER_ENCRYPTED_128,
        MIN_CIPHER_ENCRYPTED_256,
    ]
    assert [CIPHER_SUITES[level].name for level in LEVELS] == [
        "NONE",
        "UNENCRYPTED",
        "ENCRYPTED_128",
        "ENCRYPTED_256",
    ]


@pytest.mark.parametrize("level", LEVELS, ids=lambda v: CIPHER_SUITES[v].name)
def test_round_trip_every_level(level):
    sender_keys, receiver_keys, reply = handshake()
    assert sender_keys.send_key == receiver_keys.recv_key and sender_keys.recv_key == receiver_keys.send_key
    seal, _ = sender_keys.protections(level)
    _, opener = receiver_keys.protections(level)
    header = encode_header(PacketType.DATA, 5, 77)
    datagram = seal.seal(header, 77, PAYLOAD)
    assert len(datagram) == HEADER_SIZE + len(PAYLOAD) + CIPHER_SUITES[level].tag_size
    assert bytes(opener.open(datagram, 77)) == PAYLOAD
    readable = PAYLOAD in datagram
    assert readable == (level in (MIN_CIPHER_NONE, MIN_CIPHER_UNENCRYPTED))
    if level == MIN_CIPHER_NONE:
        return
    # Authenticated levels: any flipped bit, the wrong nonce, or the other key fails.
    for pos in (0, 1, 9, HEADER_SIZE, len(datagram) - 1):
        forged = bytearray(datagram)
        forged[pos] ^= 0x01
        with pytest.raises(CryptoError):
            opener.open(bytes(forged), 77)
    with pytest.raises(CryptoError):
        opener.open(datagram, 78)
    with pytest.raises(CryptoError):
        opener.open(datagram[:-1], 77)
    _, wrong_direction = sender_keys.protections(level)
    with pytest.raises(CryptoError):
        wrong_direction.open(datagram, 77)


@pytest.mark.parametrize(
    "s_min, s_max, r_min, r_max, expected",
    [
        (0, 3, 0, 3, 3),
        (0, 2, 1, 3, 2),
        (2, 3, 0, 2, 2),
        (1, 1, 1, 1, 1),
        (0, 3, 0, 0, 0),
    ],
)
def test_negotiation_picks_highest_common(s_min, s_max, r_min, r_max, expected):
    assert negotiate_cipher(s_min, s_max, r_min, r_max) == expected


@pytest.mark.parametrize(
    "s_min, s_max, r_min, r_max, message",
    [
        (0, 2, 3, 3, "sender offers at most ENCRYPTED_128 but receiver requires ENCRYPTED_256"),
        (0, 0, 1, 3, "sender offers at most NONE but receiver requires UNENCRYPTED"),
        (3, 3, 0, 1, "receiver offers at most UNENCRYPTED but sender requires ENCRYPTED_256"),
        (0, 9, 0, 3, "sender uses unknown cipher level 9"),
    ],
)
def test_negotiation_refusals_name_both_levels(s_min, s_max, r_min, r_max, message):
    with pytest.raises(NegotiationError) as info:
        negotiate_cipher(s_min, s_max, r_min, r_max)
    assert str(info.value) == message


def test_wrong_receiver_key_fails_both_ways():
    s, r, impostor = StaticKey.generate(), StaticKey.generate(), StaticKey.generate()
    init = InitiatorHandshake(s, impostor.public_bytes, 0, 3, 1000)
    # The real receiver cannot verify a HELLO addressed to another key.
    with pytest.raises(CryptoError):
        ResponderHandshake(r, init.hello_datagram(1, 0))
    # A sender that expects r rejects a reply from anyone else.
    init = InitiatorHandshake(s, r.public_bytes, 0, 3, 1000)
    hello = init.hello_datagram(1, 0)
    resp = ResponderHandshake(r, hello)
    reply = bytearray(resp.reply_datagram(1, 0, True, 3, ""))
    reply[HEADER_SIZE + 33] ^= 1  # tamper with the chosen level
    with pytest.raises(CryptoError):
        init.process_reply(bytes(reply))


def test_claimed_sender_key_must_be_held():
    """A HELLO naming someone else's static key (without its private half) is refused."""
    victim, attacker, r = StaticKey.generate(), StaticKey.generate(), StaticKey.generate()
    init = InitiatorHandshake(attacker, r.public_bytes, 0, 3, 1000)
    init.hello_payload = victim.public_bytes + init.hello_payload[32:]
    with pytest.raises(CryptoError):
        ResponderHandshake(r, init.hello_datagram(1, 0))


def test_keys_are_fresh_per_session():
    a, _, _ = handshake()
    b, _, _ = handshake()
    assert a.send_key != b.send_key


def test_static_key_round_trip():
    key = StaticKey.generate()
    assert StaticKey.from_private_bytes(key.private_bytes()).public_bytes == key.public_bytes
    assert len(key.public_hex) == 64


def test_replay_window():
    w = ReplayWindow(2048)
    assert w.check(0)
    w.commit(0)
    assert not w.check(0)
    w.commit(5000)
    assert not w.check(5000)
    assert not w.check(5000 - 2048)  # slid out: too old
    assert w.check(5000 - 2047)
    w.commit(4999)
    assert not w.check(4999) and w.check(4998)
    w.commit(1_000_000)  # a jump wider than the window clears it
    assert w.check(999_999) and not w.check(1_000_000)
