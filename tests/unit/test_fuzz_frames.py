"""Hypothesis variant of fuzz/fuzz_frames.py: the frame decoder on random and structured
input, in random chunks, in both roles.  Bounded for CI; the atheris target runs longer."""

from __future__ import annotations

import struct

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz.targets import FUZZ_MAX_FRAME, frames_one_input

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
keys = st.sampled_from(["id", "method", "params", "result", "error", "part", "more", "code", "message"])
messages = st.dictionaries(keys | st.text(max_size=6), values | st.integers(0, 4), max_size=6)


@st.composite
def frame_streams(draw: st.DrawFn) -> bytes:
    """Frames of plausible messages, some with a lying length or a broken body."""
    out = b""
    for message in draw(st.lists(messages, max_size=5)):
        body = msgpack.packb(message, use_bin_type=True)
        lie = draw(st.sampled_from([None, None, None, 0, len(body) + 1, FUZZ_MAX_FRAME + 1, 2**32 - 1]))
        out += struct.pack(">I", len(body) if lie is None else lie) + body
    return out + draw(st.binary(max_size=16))


@SETTINGS
@given(st.binary(max_size=512), st.booleans(), st.lists(st.integers(1, 64), max_size=4))
def test_random_bytes(data: bytes, server_role: bool, sizes: list[int]) -> None:
    frames_one_input(data, server_role, sizes)


@SETTINGS
@given(frame_streams(), st.booleans(), st.lists(st.integers(1, 64), max_size=4))
def test_structured_frames(data: bytes, server_role: bool, sizes: list[int]) -> None:
    frames_one_input(data, server_role, sizes)
