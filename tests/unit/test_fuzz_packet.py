"""Hypothesis variant of fuzz/fuzz_packet.py: every UDP packet decoder on random bytes and
on valid datagrams with bit flips, truncations and extensions."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fuzz.targets import packet_one_input
from jettui.transfer import packet

SETTINGS = settings(max_examples=400, deadline=None)


@st.composite
def datagrams(draw: st.DrawFn) -> bytes:
    ptype = draw(st.sampled_from(list(packet.PacketType)))
    header = packet.encode_header(ptype, draw(st.integers(0, 2**64 - 1)), draw(st.integers(0, 2**64 - 1)))
    if ptype == packet.PacketType.DATA:
        blocks = draw(
            st.lists(
                st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1), st.binary(min_size=1, max_size=64)),
                min_size=1,
                max_size=3,
            )
        )
        payload = packet.encode_data(draw(st.floats(allow_nan=False, allow_infinity=False)), blocks)
    elif ptype == packet.PacketType.CONTROL:
        payload = packet.encode_control(draw(st.integers(0, 2**40)), draw(st.binary(min_size=1, max_size=64)))
    elif ptype in (packet.PacketType.PING, packet.PacketType.CONTROL_ACK):
        payload = packet.encode_ping(draw(st.floats(allow_nan=False)))
    else:
        payload = draw(st.binary(max_size=120))
    data = bytearray(header + payload + draw(st.sampled_from([b"", b"\x00" * packet.TAG_SIZE])))
    for _ in range(draw(st.integers(0, 3))):  # bit flips at random offsets
        pos = draw(st.integers(0, len(data) - 1))
        data[pos] ^= 1 << draw(st.integers(0, 7))
    cut = draw(st.integers(0, len(data)))
    return bytes(data[:cut] if draw(st.booleans()) else data) + draw(st.binary(max_size=8))


@SETTINGS
@given(st.binary(max_size=256))
def test_random_bytes(data: bytes) -> None:
    packet_one_input(data)


@SETTINGS
@given(datagrams())
def test_damaged_datagrams(data: bytes) -> None:
    packet_one_input(data)
