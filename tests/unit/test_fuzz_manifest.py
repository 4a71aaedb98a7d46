"""Hypothesis variant of fuzz/fuzz_manifest.py: the control stream and manifest entries a
receiver decodes, from random bytes and from damaged ``files`` messages."""

from __future__ import annotations

from typing import Any

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from fuzz.targets import checkpoint_one_input, manifest_one_input

SETTINGS = settings(max_examples=200, deadline=None)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=12)
    | st.binary(max_size=12)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=24,
)
entries = st.lists(
    st.tuples(
        st.text(max_size=20) | st.sampled_from(["../../etc/passwd", "/abs", "a/../../b", "\x00", "x" * 5000]),
        st.integers(-(2**63), 2**64 - 1),
        st.integers(-(2**63), 2**63 - 1),
        st.integers(-5, 5),
        st.binary(max_size=40),
        st.integers(-(2**63), 2**63 - 1),
    ).map(list)
    | values,
    max_size=5,
)


@SETTINGS
@given(st.binary(max_size=600), st.lists(st.integers(0, 1 << 20), max_size=3))
def test_random_control_stream(data: bytes, offsets: list[int]) -> None:
    manifest_one_input(data, offsets)


@SETTINGS
@given(entries, st.integers(-3, 3))
def test_damaged_files_messages(items: list[Any], first: int) -> None:
    data = msgpack.packb({"type": "files", "first": first, "entries": items}, use_bin_type=True)
    manifest_one_input(data, [0])


@settings(max_examples=50, deadline=None)
@given(values)
def test_checkpoint_from_damaged_state(obj: Any) -> None:
    checkpoint_one_input(obj)
