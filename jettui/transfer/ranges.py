"""Sets of non-negative integers kept as sorted, disjoint, half-open ranges.

Strategy: two parallel Python lists of starts and ends, searched with :mod:`bisect`.
Block numbers arrive mostly in order, so :meth:`RangeSet.add` has a fast path that
extends or appends to the last range without a search; everything else is
O(log n) to find plus a list splice, which is a memmove in C and fine for the
hundreds of thousands of ranges a very lossy multi-GiB transfer can produce.
Adjacent ranges are always merged, so ``[0, 5) + [5, 9)`` is stored as ``[0, 9)``
and equal sets have equal representations.

The compact serialisation (:meth:`RangeSet.to_bytes`) is a LEB128 varint stream of
(gap, length) pairs: it is what acknowledgements and checkpoints carry.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Sequence

__all__ = ["NO_RANGES", "RangeSet", "decode_varint_ranges", "encode_varint_ranges", "varint_ranges_fitting"]


class RangeSet:
    """A set of ints stored as merged half-open ranges ``[start, end)``."""

    __slots__ = ("_starts", "_ends", "_count")

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._count = 0
        if ranges:  # most are made empty, several per file of a transfer
            for start, end in ranges:
                self.add(start, end)

    @classmethod
    def span(cls, start: int, end: int) -> RangeSet:
        """The set of ``[start, end)`` (empty when ``end <= start``), made directly: one per
        file on both ends of a transfer of many small files."""
        rs = cls()
        if start < end:
            rs._starts.append(start)
            rs._ends.append(end)
            rs._count = end - start
        return rs

    # -- queries ---------------------------------------------------------------------------
    @property
    def count(self) -> int:
        """How many integers the set holds (maintained incrementally, O(1))."""
        return self._count

    @property
    def range_count(self) -> int:
        """How many disjoint ranges the set is made of."""
        return len(self._starts)

    def __bool__(self) -> bool:
        return self._count > 0

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return zip(self._starts, self._ends, strict=True)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RangeSet):
            return NotImplemented
        return self._starts == other._starts and self._ends == other._ends

    def __repr__(self) -> str:
        body = ", ".join(f"[{s}, {e})" for s, e in self)
        return f"RangeSet({body})"

    def __contains__(self, value: int) -> bool:
        i = bisect_right(self._starts, value) - 1
        return i >= 0 and value < self._ends[i]

    def covers(self, start: int, end: int) -> bool:
        """True when every integer of ``[start, end)`` is in the set (an empty range is covered)."""
        if start >= end:
            return True
        i = bisect_right(self._starts, start) - 1
        return i >= 0 and end <= self._ends[i]

    def first(self) -> tuple[int, int] | None:
        """The lowest range, or None when empty."""
        return (self._starts[0], self._ends[0]) if self._starts else None

    def pop_first(self) -> tuple[int, int] | None:
        """Remove and return the lowest range, or None when empty."""
        if not self._starts:
            return None
        start, end = self._starts.pop(0), self._ends.pop(0)
        self._count -= end - start
        return start, end

    def missing(self, start: int, end: int) -> list[tuple[int, int]]:
        """The gaps of the set inside ``[start, end)``, in order."""
        gaps: list[tuple[int, int]] = []
        if start >= end:
            return gaps
        starts, ends = self._starts, self._ends
        i = bisect_right(starts, start) - 1
        pos = start
        if i >= 0 and ends[i] > pos:
            pos = ends[i]
        i += 1
        n = len(starts)
        while pos < end:
            if i >= n or starts[i] >= end:
                gaps.append((pos, end))
                break
            if starts[i] > pos:
                gaps.append((pos, starts[i]))
            pos = ends[i]
            i += 1
        return gaps

    def count_within(self, start: int, end: int) -> int:
        """How many integers of ``[start, end)`` are in the set."""
        if start >= end:
            return 0
        return (end - start) - sum(e - s for s, e in self.missing(start, end))

    # -- updates ---------------------------------------------------------------------------
    def add(self, start: int, end: int) -> int:
        """Add ``[start, end)``; return how many integers were not already present."""
        if start >= end:
            return 0
        if start < 0:
            raise ValueError(f"negative range start {start}")
        starts, ends = self._starts, self._ends
        # Fast path: blocks mostly arrive in order, extending or following the last range.
        if not starts or start > ends[-1]:
            starts.append(start)
            ends.append(end)
            self._count += end - start
            return end - start
        if start == ends[-1]:
            ends[-1] = end
            self._count += end - start
            return end - start
        # General case: every range touching [start, end) (adjacency included) merges into one.
        lo = bisect_left(ends, start)
        hi = bisect_right(starts, end)
        if lo == hi:
            starts.insert(lo, start)
            ends.insert(lo, end)
            self._count += end - start
            return end - start
        new_start = min(start, starts[lo])
        new_end = max(end, ends[hi - 1])
        old_total = sum(ends[i] - starts[i] for i in range(lo, hi))
        starts[lo:hi] = [new_start]
        ends[lo:hi] = [new_end]
        added = (new_end - new_start) - old_total
        self._count += added
        return added

    def subtract(self, start: int, end: int) -> int:
        """Remove ``[start, end)``; return how many integers were removed."""
        if start >= end or not self._starts:
            return 0
        starts, ends = self._starts, self._ends
        lo = bisect_right(ends, start)
        hi = bisect_left(starts, end)
        if lo >= hi:
            return 0
        removed = 0
        keep_s: list[int] = []
        keep_e: list[int] = []
        for i in range(lo, hi):
            s, e = starts[i], ends[i]
            removed += min(e, end) - max(s, start)
            if s < start:
                keep_s.append(s)
                keep_e.append(start)
            if e > end:
                keep_s.append(end)
                keep_e.append(e)
        starts[lo:hi] = keep_s
        ends[lo:hi] = keep_e
        self._count -= removed
        return removed

    def update(self, other: RangeSet) -> int:
        """Add every range of ``other``; return how many integers were new."""
        return sum(self.add(s, e) for s, e in other)

    def difference_update(self, other: RangeSet) -> int:
        """Remove every range of ``other``; return how many integers were removed."""
        return sum(self.subtract(s, e) for s, e in other)

    def clear(self) -> None:
        self._starts.clear()
        self._ends.clear()
        self._count = 0

    def copy(self) -> RangeSet:
        clone = RangeSet()
        clone._starts = self._starts.copy()
        clone._ends = self._ends.copy()
        clone._count = self._count
        return clone

    # -- serialisation ---------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """Compact form: varint (gap, length) pairs, gap measured from the previous end."""
        return encode_varint_ranges(self)

    @classmethod
    def from_bytes(cls, data: bytes, limit: int | None = None) -> RangeSet:
        """Inverse of :meth:`to_bytes`; ``limit`` bounds every end (raises ValueError past it)."""
        ranges, pos = decode_varint_ranges(data, 0, None, limit)
        if pos != len(data):
            raise ValueError("trailing bytes after ranges")
        rs = cls()
        for s, e in ranges:
            rs._starts.append(s)
            rs._ends.append(e)
            rs._count += e - s
        return rs


class _NoRanges(RangeSet):
    """An empty set that stays empty (see NO_RANGES)."""

    __slots__ = ()

    # The only way in: subtract, pop_first and clear of an empty set change nothing.
    def add(self, start: int, end: int) -> int:
        if start >= end:
            return 0
        raise TypeError("NO_RANGES is shared and stays empty: give the owner a RangeSet of its own")


#: One shared empty set, for per-file state that most files of a big transfer never fill:
#: made once instead of a RangeSet per file (10,000 files: ~1.5 ms each time, on the path
#: from the manifest to the first data).  Adding to it raises.
NO_RANGES: RangeSet = _NoRanges()


def _put_varint(out: bytearray, value: int) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _get_varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    value = 0
    shift = 0
    n = len(data)
    while True:
        if pos >= n:
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 64 bits")


def encode_varint_ranges(ranges: Iterable[tuple[int, int]], out: bytearray | None = None) -> bytes:
    """Encode sorted, disjoint ranges as varint (gap, length) pairs (no count prefix)."""
    buf = bytearray() if out is None else out
    prev = 0
    for s, e in ranges:
        _put_varint(buf, s - prev)
        _put_varint(buf, e - s)
        prev = e
    return bytes(buf)


def varint_ranges_fitting(ranges: Sequence[tuple[int, int]], budget: int) -> int:
    """How many of ``ranges``, from the first, :func:`encode_varint_ranges` writes in at
    most ``budget`` bytes."""
    used = prev = 0
    for count, (s, e) in enumerate(ranges):
        used += max(1, ((s - prev).bit_length() + 6) // 7) + max(1, ((e - s).bit_length() + 6) // 7)
        if used > budget:
            return count
        prev = e
    return len(ranges)


def decode_varint_ranges(
    data: bytes | memoryview, pos: int, count: int | None, limit: int | None = None
) -> tuple[list[tuple[int, int]], int]:
    """Decode ``count`` (gap, length) pairs from ``data[pos:]`` (all of it when None).

    Returns the ranges and the position after them.  Rejects empty ranges (a valid
    encoder never writes them), ranges that touch or overlap the previous one after the
    first, and ends beyond ``limit``; every rejection is a ValueError.
    """
    ranges: list[tuple[int, int]] = []
    prev = 0
    n = len(data)
    while (count is None and pos < n) or (count is not None and len(ranges) < count):
        gap, pos = _get_varint(data, pos)
        length, pos = _get_varint(data, pos)
        if length == 0:
            raise ValueError("empty range")
        if ranges and gap == 0:
            raise ValueError("ranges not merged")
        start = prev + gap
        end = start + length
        if limit is not None and end > limit:
            raise ValueError(f"range end {end} beyond limit {limit}")
        ranges.append((start, end))
        prev = end
    return ranges, pos
