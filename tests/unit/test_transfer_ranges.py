"""RangeSet against a plain-set model, plus its compact serialisation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jettui.transfer.ranges import NO_RANGES, RangeSet, decode_varint_ranges

ops = st.lists(
    st.tuples(st.sampled_from(["add", "sub", "pop", "span"]), st.integers(0, 200), st.integers(0, 40)),
    max_size=60,
)


def model_ranges(model: set[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for v in sorted(model):
        if out and out[-1][1] == v:
            out[-1] = (out[-1][0], v + 1)
        else:
            out.append((v, v + 1))
    return out


@settings(max_examples=150, deadline=None)
@given(ops, st.integers(0, 250), st.integers(0, 250))
def test_rangeset_matches_set_model(operations, qa, qb):
    rs = RangeSet()
    model: set[int] = set()
    for op, start, length in operations:
        span = set(range(start, start + length))
        if op == "add":
            assert rs.add(start, start + length) == len(span - model)
            model |= span
        elif op == "sub":
            assert rs.subtract(start, start + length) == len(span & model)
            model -= span
        elif op == "pop":
            lowest = model_ranges(model)[:1]
            assert rs.pop_first() == (lowest[0] if lowest else None)
            model -= set(range(*lowest[0])) if lowest else set()
        else:  # span replaces the set: a fresh one of [start, start + length)
            rs = RangeSet.span(start, start + length)
            model = span
        assert rs.count == len(model)
        assert list(rs) == model_ranges(model)
    lo, hi = min(qa, qb), max(qa, qb)
    assert rs.covers(lo, hi) == all(v in model for v in range(lo, hi))
    gaps = rs.missing(lo, hi)
    assert {v for s, e in gaps for v in range(s, e)} == set(range(lo, hi)) - model
    assert rs.count_within(lo, hi) == len(model & set(range(lo, hi)))
    assert all(e > s for s, e in gaps)
    for v in range(0, 260, 7):
        assert (v in rs) == (v in model)
    clone = RangeSet.from_bytes(rs.to_bytes())
    assert clone == rs and clone.count == rs.count


def test_in_order_adds_stay_one_range():
    rs = RangeSet()
    for i in range(100_000):
        rs.add(i, i + 1)
    assert list(rs) == [(0, 100_000)] and rs.range_count == 1


def test_many_scattered_ranges():
    rs = RangeSet()
    for i in range(0, 80_000, 2):  # 40k disjoint ranges: a pathological loss pattern
        rs.add(i, i + 1)
    assert rs.range_count == 40_000
    for i in range(1, 80_000, 4):  # filling every other gap merges in the middle
        rs.add(i, i + 1)
    assert rs.range_count == 20_000 and rs.count == 60_000
    assert rs.missing(0, 12) == [(3, 4), (7, 8), (11, 12)]


def test_large_offsets_and_compact_encoding():
    rs = RangeSet([(0, 10), (5 << 32, (5 << 32) + 3)])
    data = rs.to_bytes()
    assert len(data) <= 10
    assert RangeSet.from_bytes(data) == rs


@pytest.mark.parametrize(
    "data",
    [b"\x00\x00", b"\x00\x01\x00\x01", b"\x80", b"\xff" * 11, b"\x00\x05\x01"],
    ids=["empty-range", "unmerged", "truncated", "too-long", "odd"],
)
def test_bad_encodings_rejected(data):
    with pytest.raises(ValueError):
        RangeSet.from_bytes(data)


def test_limit_enforced():
    with pytest.raises(ValueError):
        decode_varint_ranges(RangeSet([(0, 11)]).to_bytes(), 0, None, limit=10)


def test_negative_start_rejected():
    with pytest.raises(ValueError):
        RangeSet().add(-1, 3)


def test_no_ranges_is_empty_and_stays_empty() -> None:
    assert not NO_RANGES and NO_RANGES.count == 0 and list(NO_RANGES) == []
    with pytest.raises(TypeError, match="stays empty"):
        NO_RANGES.add(0, 1)
    assert NO_RANGES.add(5, 5) == 0  # an empty range adds nothing, so it may be asked
    assert NO_RANGES.subtract(0, 10) == 0 and NO_RANGES.difference_update(RangeSet([(0, 3)])) == 0
    assert NO_RANGES.pop_first() is None
    NO_RANGES.clear()
    copy = NO_RANGES.copy()
    assert type(copy) is RangeSet and copy.add(0, 2) == 2  # a copy is an ordinary set
    assert not NO_RANGES and RangeSet() == NO_RANGES
