"""Datagram codec: round trips, strict length checks, and fuzzing that only PacketError escapes."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jettui.transfer.packet import (
    HEADER_SIZE,
    PARITY_HEADER_SIZE,
    TAG_SIZE,
    Ack,
    Hello,
    HelloReply,
    PacketError,
    PacketType,
    decode_ack,
    decode_control,
    decode_control_ack,
    decode_data,
    decode_header,
    decode_hello,
    decode_hello_reply,
    decode_packet,
    decode_parity,
    decode_ping,
    decode_pong,
    encode_ack,
    encode_ack_prefix,
    encode_control,
    encode_control_ack,
    encode_data,
    encode_header,
    encode_hello,
    encode_hello_reply,
    encode_parity,
    encode_ping,
    encode_pong,
)


def sample_datagrams() -> list[bytes]:
    """One valid plaintext datagram of every type (handshake ones with a dummy tag)."""
    hello = encode_hello(Hello(b"s" * 32, b"e" * 32, 1, 3, 1344))
    reply = encode_hello_reply(HelloReply(b"r" * 32, False, 0, "sender offers at most NONE"))
    ack = encode_ack(
        Ack(
            9,
            1.5,
            0.002,
            7.0,
            10,
            13440,
            0.01,
            0.02,
            ((0, [(0, 5), (7, 9)]), (3, [(1 << 40, (1 << 40) + 2)])),
            2,
            ((5, 9), (12, 300)),
        )
    )
    payloads = {
        PacketType.HELLO: hello + b"t" * TAG_SIZE,
        PacketType.HELLO_REPLY: reply + b"t" * TAG_SIZE,
        PacketType.DATA: encode_data(3.25, [(0, 1, b"abc"), (2, (1 << 33), b"z" * 100)]),
        PacketType.ACK: ack,
        PacketType.CONTROL: encode_control(5, b"\x81\xa4type\xa5close"),
        PacketType.CONTROL_ACK: encode_control_ack(77),
        PacketType.PING: encode_ping(1.0),
        PacketType.PONG: encode_pong(1.0, 0.5),
        PacketType.PARITY: encode_parity(3, 1 << 40, 5, b"p" * 50),
    }
    return [encode_header(t, 0xFEED, 42) + p for t, p in payloads.items()]


def test_header_round_trip():
    data = encode_header(PacketType.DATA, (1 << 64) - 1, (1 << 63) + 5)
    assert len(data) == HEADER_SIZE
    assert decode_header(data) == (PacketType.DATA, (1 << 64) - 1, (1 << 63) + 5)


def test_every_type_round_trips():
    decoded = [decode_packet(d) for d in sample_datagrams()]
    assert [d[0] for d in decoded] == list(PacketType)
    hello = decoded[0][3]
    assert hello == Hello(b"s" * 32, b"e" * 32, 1, 3, 1344)
    assert decoded[1][3].message == "sender offers at most NONE" and not decoded[1][3].accepted
    t, blocks = decoded[2][3]
    assert t == 3.25 and [(f, b, bytes(v)) for f, b, v in blocks] == [
        (0, 1, b"abc"),
        (2, 1 << 33, b"z" * 100),
    ]
    ack = decoded[3][3]
    assert ack.groups == ((0, [(0, 5), (7, 9)]), (3, [(1 << 40, (1 << 40) + 2)]))
    assert (ack.largest_pn, ack.packets_received, ack.bytes_received) == (9, 10, 13440)
    assert decoded[4][3] == (5, b"\x81\xa4type\xa5close")
    assert decoded[5][3] == 77
    assert decoded[6][3] == 1.0 and decoded[7][3] == (1.0, 0.5)
    f, first, count, parity = decoded[8][3]
    assert (f, first, count, bytes(parity)) == (3, 1 << 40, 5, b"p" * 50)


def test_ack_nan_delay_fields_allowed():
    ack = decode_ack(encode_ack(Ack(0, 0.0, 0.0, 0.0, 0, 0, math.nan, math.nan, ())))
    assert math.isnan(ack.owd_min) and ack.groups == ()


_ranges = st.lists(st.integers(0, 1 << 40), min_size=2, max_size=12, unique=True).map(
    lambda xs: (lambda v: [(v[i], v[i + 1]) for i in range(0, len(v) - 1, 2)])(sorted(xs))
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1 << 31), _ranges), max_size=40), st.integers(70, 600))
def test_ack_prefix_carries_the_groups_that_fit(groups, limit):
    """encode_ack_prefix: within the limit, a prefix of the groups, decoded exactly, and
    never one group fewer than would have fit."""
    files = ((len(groups) + 1, len(groups) + 3),)
    ack = Ack(3, 1.0, 0.0, 2.0, 4, 5, 0.1, 0.2, tuple((f, rs) for f, rs in groups), len(groups), files)
    payload, fitted = encode_ack_prefix(ack, limit)
    decoded = decode_ack(payload)
    assert decoded.groups == ack.groups[:fitted]
    assert (decoded.complete_below, decoded.complete_ranges) == (len(groups), files)
    assert len(payload) <= max(limit, len(encode_ack(Ack(3, 1.0, 0.0, 2.0, 4, 5, 0.1, 0.2, (), 0, files))))
    if fitted < len(groups):
        longer = dataclasses.replace(ack, groups=ack.groups[: fitted + 1])
        assert len(encode_ack(longer)) > limit
    else:
        assert payload == encode_ack(ack)


@pytest.mark.parametrize("index", range(9))
def test_every_truncation_raises_packet_error(index):
    datagram = sample_datagrams()[index]
    full = decode_packet(datagram)
    for cut in range(len(datagram)):
        if index == 2:
            # DATA has no block count, so a cut at a block boundary is a valid shorter
            # packet (AEAD catches it on the wire); it must decode to a prefix, though.
            try:
                _, _, _, (t, blocks) = decode_packet(datagram[:cut])
            except PacketError:
                continue
            assert [bytes(v) for _, _, v in blocks] == [bytes(v) for _, _, v in full[3][1][: len(blocks)]]
            assert len(blocks) < len(full[3][1])
            continue
        if index == 4 and cut > HEADER_SIZE + 8:
            # Likewise a CONTROL chunk cut short is a shorter chunk at the same offset.
            assert decode_packet(datagram[:cut])[3] == (5, full[3][1][: cut - HEADER_SIZE - 8])
            continue
        if index == 8 and cut > HEADER_SIZE + PARITY_HEADER_SIZE:
            # And a PARITY cut short is a shorter parity (the receiver checks its length).
            assert len(decode_packet(datagram[:cut])[3][3]) == cut - HEADER_SIZE - PARITY_HEADER_SIZE
            continue
        with pytest.raises(PacketError):
            decode_packet(datagram[:cut])


@pytest.mark.parametrize(
    "decoder, payload",
    [
        (decode_hello, encode_hello(Hello(b"s" * 32, b"e" * 32, 3, 1, 10))),  # min above max
        (decode_hello, encode_hello(Hello(b"s" * 32, b"e" * 32, 1, 3, 0))),  # zero block size
        (decode_hello_reply, encode_hello_reply(HelloReply(b"r" * 32, True, 3, "")) + b"x"),
        (decode_data, encode_data(1.0, [(0, 0, b"")])),  # empty block
        (decode_data, encode_data(math.inf, [(0, 0, b"a")])),
        (decode_data, encode_data(1.0, [(0, 0, b"ab")])[:-1] + b"\x00" * 0 + b"\x01" * 20),
        (decode_ack, encode_ack(Ack(0, 1.0, -1.0, 1.0, 0, 0, 0.0, 0.0, ()))),
        (decode_ack, encode_ack(Ack(0, 1.0, 0.0, 1.0, 0, 0, 0.0, 0.0, ())) + b"\x00"),
        (decode_control, b"\x00" * 8),
        (decode_control_ack, b"\x00" * 9),
        (decode_ping, b"\x00" * 7),
        (decode_pong, encode_pong(1.0, -0.5)),
        (decode_parity, encode_parity(0, 0, 1, b"x")),  # a parity over one block
        (decode_parity, encode_parity(0, 0, 2, b"")),  # no parity bytes
        (decode_parity, encode_parity(0, (1 << 63) - 1, 2, b"x")),  # block numbers overflow
    ],
)
def test_malformed_payloads(decoder, payload):
    with pytest.raises(PacketError):
        decoder(payload)


def test_bad_magic_and_type():
    good = sample_datagrams()[6]
    with pytest.raises(PacketError, match="magic"):
        decode_header(b"\xa1" + good[1:])  # protocol version 1: no longer spoken
    with pytest.raises(PacketError, match="type"):
        decode_header(good[:1] + b"\x63" + good[2:])


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([0, TAG_SIZE]))
def test_fuzz_random_bytes_only_packet_error(data, tag):
    try:
        decode_packet(data, tag)
    except PacketError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 8), st.data())
def test_fuzz_mutated_datagrams_only_packet_error(index, data):
    datagram = bytearray(sample_datagrams()[index])
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(datagram) - 1))
        datagram[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(datagram)))
    try:
        decode_packet(bytes(datagram[:cut]))
    except PacketError:
        pass
