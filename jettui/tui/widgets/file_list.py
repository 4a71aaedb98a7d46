"""FileList: one pane's directory listing, drawn with Textual's Line API.

Strategy: the listing can hold 100,000+ entries, so nothing here is per-row widgets or
per-row work at load time (shared/notes/textual-and-testing.md §6: DataTable needs 12 s
for 100k rows).  ``set_entries`` sorts once and builds a plain list of the visible rows;
``render_line`` formats only the rows on screen, and keeps the formatted text of recently
drawn rows in a small LRU cache keyed by the entry object, so scrolling back is free and
a cursor move only re-styles two lines.  Styling (cursor, selection, type colours) is
applied at paint time from component classes, so the cache never holds colours and a
focus or theme change needs no re-formatting.

Names come from a remote server and are untrusted: ``escape_name`` turns every
non-printable code point (C0, DEL, C1, bidi overrides, surrogate-escaped bytes, ...) and
any ``/`` into a visible escape, rendered in the ``file-list--escaped`` style, so no
terminal escape sequence ever reaches the screen raw.
"""

from __future__ import annotations

import fnmatch
import operator
import re
import time
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import compress, repeat
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Final, Literal

import humanize
from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.cache import LRUCache
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive, var
from textual.scroll_view import ScrollView
from textual.strip import Strip

from jettui.constants import LS_TYPE_DIRECTORY, LS_TYPE_REGULAR, LS_TYPE_SYMLINK

__all__ = [
    "PARENT_ENTRY",
    "STYLESHEET",
    "SORT_KEYS",
    "TIME_FORMAT_LONG",
    "TIME_FORMAT_SHORT",
    "Entry",
    "FileList",
    "SortKey",
    "escape_name",
    "fit_runs",
    "format_size",
]

#: The stylesheet for FileList, PathBar and PaneStatus; add it to the app's ``CSS_PATH``.
STYLESHEET: Final = Path(__file__).with_name("file_list.tcss")

#: One ls entry as returned by lsAsync / lsRootsAsync: name, type, size, mtime, mtimeus, access.
Entry = Mapping[str, Any]

SortKey = Literal["name", "size", "mtime"]
SORT_KEYS: Final[tuple[SortKey, ...]] = ("name", "size", "mtime")
#: Listings at least this long get their size and time orders sorted ahead (warm_orders).
WARM_ORDERS_FROM: Final = 20_000

#: The synthetic ``..`` row.  Read-only and shared, so callers can test ``entry is PARENT_ENTRY``.
PARENT_ENTRY: Final[Entry] = MappingProxyType(
    {"name": "..", "type": LS_TYPE_DIRECTORY, "size": 0, "mtime": 0, "mtimeus": 0, "access": 0}
)

#: Fixed (never "now"-relative) time formats, so snapshots are stable.  The short one is used
#: only when the pane is too narrow for the long one and a useful name column (~80x24).
TIME_FORMAT_LONG: Final = "%Y-%m-%d %H:%M"
TIME_FORMAT_SHORT: Final = "%m-%d %H:%M"

#: ``access`` bits from the seed's lsAsync documentation: read 1<<2, write 1<<1, execute 1<<0.
ACCESS_EXECUTE: Final = 1 << 0

_ELLIPSIS: Final = "…"
#: Seconds within which a second ``g`` completes ``gg`` (vim's default timeoutlen is 1 s).
_G_PREFIX_TIMEOUT: Final = 1.0

# -- names -------------------------------------------------------------------------------


def _escape_char(ch: str) -> str:
    """The visible escape for one hostile code point (Python repr style)."""
    cp = ord(ch)
    if ch == "/":
        return "\\/"
    if 0xDC80 <= cp <= 0xDCFF:
        # A surrogate-escaped undecodable byte (os.fsdecode): show the original byte.
        return f"\\x{cp - 0xDC00:02x}"
    if cp < 0x100:
        return f"\\x{cp:02x}"
    if cp < 0x10000:
        return f"\\u{cp:04x}"
    return f"\\U{cp:08x}"


def escape_name(name: object, *, allow_slash: bool = False) -> list[tuple[str, bool]]:
    """Split a (possibly hostile) name into display runs.

    Every code point for which ``str.isprintable()`` is false (C0, DEL, C1, format
    characters such as bidi overrides, line separators, surrogates, unassigned) becomes a
    visible escape, so terminal control sequences can never reach the screen raw.

    Args:
        name: The name as received; non-``str`` values (a malformed server reply) are shown
            through ``repr`` rather than trusted.
        allow_slash: Keep ``/`` as is (paths); in a file name a ``/`` is impossible on POSIX
            and would mislead, so by default it is escaped too.

    Returns:
        ``(text, escaped)`` runs; ``escaped`` runs are drawn in a distinct style.  An empty
        name is the escaped run ``""`` so that it is visible at all.
    """
    if isinstance(name, bytes):
        name = name.decode("utf-8", "surrogateescape")
    elif not isinstance(name, str):
        return [(repr(name), True)]
    if name == "":
        return [('""', True)]
    # Fast path: almost every real name is printable.
    if name.isprintable() and (allow_slash or "/" not in name):
        return [(name, False)]
    runs: list[tuple[str, bool]] = []
    plain: list[str] = []
    escaped: list[str] = []
    for ch in name:
        if ch.isprintable() and (allow_slash or ch != "/"):
            if escaped:
                runs.append(("".join(escaped), True))
                escaped.clear()
            plain.append(ch)
        else:
            if plain:
                runs.append(("".join(plain), False))
                plain.clear()
            escaped.append(_escape_char(ch))
    if plain:
        runs.append(("".join(plain), False))
    if escaped:
        runs.append(("".join(escaped), True))
    return runs


#: One display character: (char, escaped, cells).
_Cell = tuple[str, bool, int]


def _run_chars(runs: Iterable[tuple[str, bool]]) -> list[_Cell]:
    """Flatten runs into ``(char, escaped, cells)``, for cell-exact truncation."""
    return [(ch, esc, cell_len(ch)) for text, esc in runs for ch in text]


def _merge_chars(chars: Iterable[_Cell]) -> list[tuple[str, bool]]:
    runs: list[tuple[str, bool]] = []
    for ch, esc, _ in chars:
        if runs and runs[-1][1] == esc:
            runs[-1] = (runs[-1][0] + ch, esc)
        else:
            runs.append((ch, esc))
    return runs


def _take_cells(chars: Sequence[_Cell], budget: int) -> tuple[list[_Cell], int]:
    """The longest prefix of ``chars`` that fits ``budget`` cells, and its width."""
    out: list[_Cell] = []
    used = 0
    for item in chars:
        if used + item[2] > budget:
            break
        out.append(item)
        used += item[2]
    return out, used


def fit_runs(
    runs: list[tuple[str, bool]], width: int, *, keep: Literal["head", "tail"] = "head"
) -> tuple[list[tuple[str, bool]], int]:
    """Truncate display runs to ``width`` cells with ``…``.

    ``keep="head"`` (file names) keeps the start and, when short, the extension
    (``a_very_lo….tar.gz``) because the extension says what a file is; ``keep="tail"``
    (paths) keeps the end, the part of a path that differs between panes.

    Returns:
        The runs and their width in cells (at most ``width``; less when a wide character
        did not fit, so the caller pads).
    """
    if width <= 0:
        return [], 0
    total = sum(cell_len(text) for text, _ in runs)
    if total <= width:
        return runs, total
    if width == 1:
        return [(_ELLIPSIS, False)], 1
    chars = _run_chars(runs)
    if keep == "tail":
        tail, used = _take_cells(chars[::-1], width - 1)
        return [(_ELLIPSIS, False), *_merge_chars(tail[::-1])], used + 1
    suffix: list[_Cell] = []
    dot = max((i for i, (ch, esc, _) in enumerate(chars) if ch == "." and not esc), default=-1)
    if dot > 0:
        candidate = chars[dot:]
        cells = sum(c for _, _, c in candidate)
        # Keep the extension only if it is short and leaves most of the room for the stem.
        if len(candidate) <= 8 and cells <= (width - 1) // 2:
            suffix = candidate
    suffix_cells = sum(c for _, _, c in suffix)
    head, used = _take_cells(chars, width - 1 - suffix_cells)
    return [*_merge_chars(head), (_ELLIPSIS, False), *_merge_chars(suffix)], used + 1 + suffix_cells


# -- columns -------------------------------------------------------------------------------


def format_size(entry: Entry, *, compact: bool = False) -> str:
    """The size column: ``<DIR>``, ``<LINK>``, or a binary human size.

    ``compact`` uses humanize's GNU style (``12.3M``, at most 7 cells) for narrow panes.
    """
    kind = entry.get("type")
    if entry is PARENT_ENTRY:
        return "UP--DIR"
    if isinstance(kind, int) and kind & LS_TYPE_DIRECTORY and kind != LS_TYPE_SYMLINK:
        return "<DIR>"
    if kind == LS_TYPE_SYMLINK:
        return "<LINK>"
    size = entry.get("size")
    if not isinstance(size, int) or size < 0:
        return "?"
    if compact:
        return humanize.naturalsize(size, gnu=True)
    # "123 Bytes" -> "123 B": keeps the column at 10 cells ("1023.9 KiB").
    text = humanize.naturalsize(size, binary=True)
    return text.replace(" Bytes", " B").replace(" Byte", " B")


def _format_time(entry: Entry, fmt: str) -> str:
    if entry is PARENT_ENTRY:
        return ""
    mtime = entry.get("mtime")
    if not isinstance(mtime, int | float) or isinstance(mtime, bool):
        return "?"
    try:
        return time.strftime(fmt, time.localtime(mtime))
    except (OverflowError, OSError, ValueError):
        # A hostile or corrupt mtime (far outside time_t) must not break the paint.
        return "?"


def _kind(entry: Entry) -> str:
    """The entry's style class suffix: parent, directory, symlink, executable or file."""
    if entry is PARENT_ENTRY:
        return "directory"
    kind = entry.get("type")
    if kind == LS_TYPE_SYMLINK:
        return "symlink"
    if isinstance(kind, int) and kind & LS_TYPE_DIRECTORY:
        return "directory"
    access = entry.get("access")
    if kind == LS_TYPE_REGULAR and isinstance(access, int) and access & ACCESS_EXECUTE:
        return "executable"
    return "file"


_MARKERS: Final = {"directory": "/", "symlink": "@", "executable": "*", "file": " "}


def _is_dir_type(kind: int) -> bool:
    # A root is drive|directory (10); a symlink (5) has the directory bit's neighbour set
    # but is never listed as a directory (its target is unknown).
    return kind != LS_TYPE_SYMLINK and bool(kind & LS_TYPE_DIRECTORY)


# C-level accessors for the 100k-entry paths (map() over these avoids Python frames).
_GET_NAME: Final = operator.itemgetter("name")
_GET_TYPE: Final = operator.itemgetter("type")
_GET_SIZE: Final = operator.itemgetter("size")
_GET_MTIME: Final = operator.itemgetter("mtime")
_GET_MTIMEUS: Final = operator.itemgetter("mtimeus")


def _name(entry: Entry) -> str:
    name = entry.get("name")
    return name if isinstance(name, str) else ""


def _size(entry: Entry) -> int:
    size = entry.get("size")
    return size if isinstance(size, int) else 0


def _mtime(entry: Entry) -> float:
    mtime = entry.get("mtime")
    mtimeus = entry.get("mtimeus")
    seconds = mtime if isinstance(mtime, int | float) else 0
    return seconds + (mtimeus / 1e6 if isinstance(mtimeus, int) and 0 <= mtimeus < 1_000_000 else 0)


def _columns(entries: Iterable[Entry]) -> tuple[list[Entry], list[str], list[str], list[bool]]:
    """Entries, names, case-folded names and directory flags, built with C-level map()
    so that 100k entries take milliseconds; malformed entries are dropped or defused."""
    entries = list(entries)
    try:
        names: list[Any] = list(map(_GET_NAME, entries))
        types: list[Any] = list(map(_GET_TYPE, entries))
    except (KeyError, TypeError):  # a malformed reply: take the careful path
        entries = [e for e in entries if isinstance(e, Mapping)]
        names = [e.get("name") for e in entries]
        types = [e.get("type") for e in entries]
    if not set(map(type, names)) <= {str}:
        names = [n if isinstance(n, str) else "" for n in names]
    try:
        dir_types = {t for t in set(types) if isinstance(t, int) and _is_dir_type(t)}
        isdir = list(map(dir_types.__contains__, types))
    except TypeError:  # an unhashable "type" value: take the slow, careful way
        isdir = [isinstance(t, int) and _is_dir_type(t) for t in types]
    return entries, names, list(map(str.casefold, names)), isdir


def _not_hidden(names: Iterable[str]) -> list[bool]:
    return list(map(operator.not_, map(str.startswith, names, repeat("."))))


def _size_keys(entries: list[Entry]) -> list[int]:
    """The size sort keys; C-level when every size is a plain int (the usual case)."""
    try:
        sizes = list(map(_GET_SIZE, entries))
    except KeyError:
        return list(map(_size, entries))
    return sizes if set(map(type, sizes)) <= {int} else list(map(_size, entries))


def _mtime_keys(entries: list[Entry]) -> list[int] | list[float]:
    """The time sort keys, as :func:`_mtime` gives them; C-level in the usual cases."""
    try:
        mtimes = list(map(_GET_MTIME, entries))
        micros = list(map(_GET_MTIMEUS, entries))
    except KeyError:
        return list(map(_mtime, entries))
    if not (set(map(type, mtimes)) <= {int} and set(map(type, micros)) <= {int}):
        return list(map(_mtime, entries))
    if not micros or min(micros) >= 1_000_000 or (min(micros) == 0 and max(micros) == 0):
        # Microseconds since the epoch (jettui servers), ignored by _mtime, or none at all:
        # the seconds alone.  Keys made relative to the oldest fit one 30-bit digit, which
        # CPython's sort compares about a third faster than epoch seconds (> 2**30).
        oldest = min(mtimes, default=0)
        if max(mtimes, default=0) - oldest < 1 << 30:
            return list(map(operator.sub, mtimes, repeat(oldest)))
        return mtimes
    if max(micros) < 1_000_000 and min(micros) >= 0:
        return list(map(operator.add, mtimes, map(operator.truediv, micros, repeat(1e6))))
    return list(map(_mtime, entries))


@dataclass(frozen=True, slots=True)
class _Layout:
    """Column widths for one content width.  Row = marker, name, ' ', size, ' ', time."""

    width: int
    name: int
    size: int
    time: int
    compact_size: bool
    time_format: str

    @classmethod
    def for_width(cls, width: int) -> _Layout:
        # Narrower tiers give the name column back space first, because the name is what
        # a user scans for; the tiers' minimum name widths keep 80x24 (39-cell panes) legible.
        tiers = (
            (10, 16, False, TIME_FORMAT_LONG, 20),
            (7, 16, True, TIME_FORMAT_LONG, 16),
            (7, 11, True, TIME_FORMAT_SHORT, 12),
            (7, 0, True, TIME_FORMAT_SHORT, 8),
        )
        for size_w, time_w, compact, fmt, min_name in tiers:
            name_w = width - 1 - (size_w + 1) - (time_w + 1 if time_w else 0)
            if name_w >= min_name:
                return cls(width, name_w, size_w, time_w, compact, fmt)
        return cls(width, max(0, width - 1), 0, 0, True, TIME_FORMAT_SHORT)


@dataclass(frozen=True, slots=True)
class _Row:
    """The style-free text of one row for one layout (what the line cache holds)."""

    kind: str
    marker: str
    name: list[tuple[str, bool]]
    pad: int
    tail: str


class _Rows(Sequence[Entry]):
    """The shown rows as a read-only view: ``..`` (unless at a root) then entries by index.

    A view rather than a list, because building a 100k-element list of dicts in sorted
    order costs 20-40 ms of pointer chasing and only ~30 rows are ever looked at.
    """

    __slots__ = ("_entries", "_idx", "_offset")

    def __init__(self, entries: list[Entry], idx: list[int], with_parent: bool) -> None:
        self._entries = entries
        self._idx = idx
        self._offset = 1 if with_parent else 0

    def __len__(self) -> int:
        return len(self._idx) + self._offset

    def __getitem__(self, index: int) -> Entry:  # type: ignore[override]  # no slices needed
        if index < 0:
            index += len(self)
        if index < self._offset:
            if index < 0:
                raise IndexError(index)
            return PARENT_ENTRY
        return self._entries[self._idx[index - self._offset]]

    def index(self, value: Any, start: int = 0, stop: int | None = None) -> int:
        """Row of ``value`` by identity (C-level scans of the entry list and the index list)."""
        if value is PARENT_ENTRY and self._offset:
            return 0
        # map(is_) keeps the scan in C and never calls dict.__eq__ on look-alike entries.
        position = list(map(operator.is_, self._entries, repeat(value))).index(True)
        return self._idx.index(position) + self._offset


# -- the widget ------------------------------------------------------------------------------


class FileList(ScrollView, can_focus=True):
    """A keyboard-driven list of ls entries (Midnight Commander keys, vim keys as well).

    The list shows, per row, a type marker (``/`` directory, ``@`` symlink, ``*``
    executable), the name, the size and the modification time.  ``..`` is the first row
    unless the listing is a root listing.

    Invariant: ``selected`` only ever holds names of rows currently shown, so an operation
    on the selection never touches a file the user cannot see (hidden, filtered out).
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "cursor_up", "Up", show=False),
        Binding("down,j", "cursor_down", "Down", show=False),
        Binding("home", "cursor_home", "First entry", show=False),
        Binding("end,G", "cursor_end", "Last entry", show=False),
        Binding("g", "g_prefix", "First entry (gg)", show=False),
        Binding("pageup,ctrl+b", "page_up", "Page up", show=False),
        Binding("pagedown,ctrl+f", "page_down", "Page down", show=False),
        Binding("insert,space", "toggle_select", "Select / unselect", show=False),
        Binding("asterisk", "invert_selection", "Invert selection", show=False),
        Binding("enter,l", "open", "Open", show=False),
        Binding("backspace,h", "up_dir", "Parent directory", show=False),
        Binding("full_stop", "toggle_hidden", "Show / hide dotfiles", show=False),
        Binding("s", "cycle_sort", "Sort: name / size / time", show=False),
        Binding("r", "reverse_sort", "Reverse sort", show=False),
        # Horizontal scrolling is meaningless here (the row always fits the width).
        Binding("left,right", "noop", show=False),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "file-list--cursor",
        "file-list--selected",
        "file-list--directory",
        "file-list--symlink",
        "file-list--executable",
        "file-list--escaped",
        "file-list--meta",
    }

    # Only what keeps the widget usable (cursor and selection visible, also under NO_COLOR)
    # if an app forgets file_list.tcss; the real styling lives there.
    DEFAULT_CSS = """
    FileList { overflow-x: hidden; }
    FileList > .file-list--cursor { text-style: reverse; }
    FileList > .file-list--selected { text-style: bold underline; }
    FileList > .file-list--escaped { text-style: reverse; }
    """

    class Opened(Message):
        """Enter on an entry (not ``..``, which posts ``UpRequested``)."""

        def __init__(self, file_list: FileList, entry: Entry) -> None:
            super().__init__()
            self.file_list = file_list
            self.entry = entry

        @property
        def control(self) -> FileList:
            return self.file_list

    class UpRequested(Message):
        """Backspace / ``h``, or Enter on ``..``: the pane should list the parent directory."""

        def __init__(self, file_list: FileList) -> None:
            super().__init__()
            self.file_list = file_list

        @property
        def control(self) -> FileList:
            return self.file_list

    class CursorMoved(Message):
        """The entry under the cursor changed (``PARENT_ENTRY`` for ``..``, None if empty)."""

        def __init__(self, file_list: FileList, entry: Entry | None) -> None:
            super().__init__()
            self.file_list = file_list
            self.entry = entry

        @property
        def control(self) -> FileList:
            return self.file_list

    class SelectionChanged(Message):
        """The selection changed: how many entries, and the sum of their sizes in bytes."""

        def __init__(self, file_list: FileList, count: int, total_size: int) -> None:
            super().__init__()
            self.file_list = file_list
            self.count = count
            self.total_size = total_size

        @property
        def control(self) -> FileList:
            return self.file_list

    class ViewChanged(Message):
        """The shown rows changed (new listing, sort, filter, hidden): refresh status lines."""

        def __init__(self, file_list: FileList) -> None:
            super().__init__()
            self.file_list = file_list

        @property
        def control(self) -> FileList:
            return self.file_list

    cursor: reactive[int] = reactive(0, init=False, repaint=False)
    """Index of the highlighted row (row 0 is ``..`` when shown); clamped to the rows."""
    sort_key: var[SortKey] = var("name", init=False)
    """Sort column; directories always come first and ``..`` stays on top."""
    sort_reverse: var[bool] = var(False, init=False)
    """Reverse the order within the directory and file groups."""
    show_hidden: var[bool] = var(False, init=False)
    """Show dotfiles."""
    filter: var[str] = var("", init=False)
    """Quick filter: case-insensitive substring of the name; ``..`` is always shown."""

    def __init__(
        self,
        entries: Iterable[Entry] = (),
        *,
        at_root: bool = False,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
        disabled: bool = False,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes, disabled=disabled)
        # Per-entry columns in server order, built with C-level map()/compress() so that a
        # 100k listing loads in tens of milliseconds; sort and filter work on indices.
        self._entries: list[Entry] = []
        self._names: list[str] = []
        self._folded: list[str] = []
        self._isdir: list[bool] = []
        self._dirs_by_name: list[int] = []
        self._files_by_name: list[int] = []
        # The listing the two name orders above were computed for (by identity): a sort-key
        # change re-uses them, so only set_entries pays for sorting names.
        self._sorted_by_name: list[Entry] | None = None
        # Computed on first use only (most listings are never sorted by size or time).
        self._visible_cache: list[bool] | None = None
        self._all_visible = False
        """No entry is hidden (valid while ``_visible_cache`` is set)."""
        self._size_keys: list[int] | None = None
        self._mtime_keys: list[float] | None = None
        self._by_name_cache: dict[str, Entry] | None = None
        # Orders by size and time already computed for this listing, by (key, reverse), so
        # cycling the sort back costs no sort.
        self._orders: dict[tuple[SortKey, bool], list[int]] = {}
        self._order: list[int] = []
        self._row_idx: list[int] = []
        self._rows = _Rows([], [], with_parent=not at_root)
        self._selected: set[str] = set()
        self._at_root = at_root
        self._last_cursor_entry: Entry | None = None
        self._layout = _Layout.for_width(0)
        # Formatted rows by id(entry); cleared whenever the entry objects or the layout change,
        # so a recycled id can never return a stale row.
        self._row_cache: LRUCache[int, _Row] = LRUCache(4096)
        self._g_pending_since: float | None = None
        self.set_entries(list(entries), at_root=at_root, keep_cursor_on=None)

    # -- public state ---------------------------------------------------------------------

    @property
    def entries(self) -> list[Entry]:
        """All entries of the listing, in server order (hidden and filtered ones included)."""
        return self._entries

    @property
    def rows(self) -> Sequence[Entry]:
        """The shown rows in display order (``PARENT_ENTRY`` first when not at a root)."""
        return self._rows

    @property
    def at_root(self) -> bool:
        """True for a root listing (lsRootsAsync), which has no ``..`` row."""
        return self._at_root

    @property
    def selected(self) -> frozenset[str]:
        """Names of the selected entries."""
        return frozenset(self._selected)

    @property
    def selected_entries(self) -> list[Entry]:
        """The selected entries, in display order."""
        selected, names, entries = self._selected, self._names, self._entries
        return [entries[i] for i in self._row_idx if names[i] in selected]

    @property
    def selected_size(self) -> int:
        """Sum of the sizes of the selected entries, in bytes."""
        if not self._selected:
            return 0
        by_name = self._by_name()
        return sum(_size(by_name[n]) for n in self._selected if n in by_name)

    @property
    def cursor_entry(self) -> Entry | None:
        """The entry under the cursor (``PARENT_ENTRY`` for ``..``), or None if empty."""
        if 0 <= self.cursor < len(self._rows):
            return self._rows[self.cursor]
        return None

    @property
    def shown_count(self) -> int:
        """Number of entries shown, not counting ``..``."""
        return len(self._row_idx)

    def _by_name(self) -> dict[str, Entry]:
        # Built on first use only: hashing 100k names costs ~20 ms, and most listings are
        # browsed without ever selecting anything.
        if self._by_name_cache is None:
            self._by_name_cache = dict(zip(self._names, self._entries, strict=True))
        return self._by_name_cache

    def _shown_names(self) -> set[str]:
        names = self._names
        return {names[i] for i in self._row_idx}

    # -- loading ---------------------------------------------------------------------------

    def set_entries(
        self,
        entries: Sequence[Entry],
        at_root: bool,
        keep_cursor_on: str | None = None,
        *,
        keep_selection: bool = False,
    ) -> None:
        """Replace the listing.

        Args:
            entries: ls entries (the dicts are kept by reference, not copied).
            at_root: A root listing: no ``..`` row.
            keep_cursor_on: Put the cursor on the entry with this name if present (the
                directory just left, or the current entry on a reread); else on row 0.
            keep_selection: Keep selected names that still exist and are shown (a reread,
                Ctrl+R); by default a new listing starts with an empty selection.
        """
        self._at_root = at_root
        self._entries, self._names, self._folded, self._isdir = _columns(entries)
        self._invalidate_keys()
        self._row_cache.clear()
        self._sort()
        entries, names = self._entries, self._names
        old_selection = self._selected
        self._selected = set()
        keep_entry: Entry | None = None
        if keep_cursor_on is not None and keep_cursor_on in names:
            keep_entry = entries[names.index(keep_cursor_on)]
        self._rebuild_rows(keep_entry=keep_entry)
        if keep_selection and old_selection:
            self._selected = old_selection & self._shown_names()
        self._cursor_maybe_moved()
        if old_selection or self._selected:
            self._post_selection_changed()
        self.refresh()

    def extend_entries(self, entries: Sequence[Entry], keep_cursor_on: str | None = None) -> None:
        """Add entries to the listing: the rest of a listing that arrives in pages.

        The cursor stays on its entry and on its line of the screen, and the selection is
        kept.  Entries that come in the list's name order (as the pages of lsAsync with
        ``pageSize`` do) cost a merge, not a sort.

        Args:
            entries: More ls entries of the same directory.
            keep_cursor_on: Move the cursor to the entry with this name if it is among the
                new entries (the directory just left, when it was not on the first page).
        """
        new, new_names, new_folded, new_isdir = _columns(entries)
        if not new:
            return
        keep = self.cursor_entry
        screen_line = self.cursor - round(self.scroll_y)
        old = self._entries
        base = len(old)
        # New lists, not in-place appends: snapshots and _Rows views keep the old ones.
        self._entries = self._entries + new
        self._names = self._names + new_names
        self._folded = self._folded + new_folded
        self._isdir = self._isdir + new_isdir
        added = range(base, base + len(new))
        key = self._folded.__getitem__
        # Two sorted runs: timsort merges them in linear time (galloping when, as usual,
        # every new name sorts after the old ones).
        if self._sorted_by_name is old:
            new_dirs = sorted(compress(added, new_isdir), key=key)
            new_files = sorted(compress(added, map(operator.not_, new_isdir)), key=key)
            self._dirs_by_name = sorted(self._dirs_by_name + new_dirs, key=key)
            self._files_by_name = sorted(self._files_by_name + new_files, key=key)
            self._sorted_by_name = self._entries
        if self._visible_cache is not None:
            more = _not_hidden(new_names)
            self._visible_cache = self._visible_cache + more
            self._all_visible = self._all_visible and False not in more
        if self._by_name_cache is not None:
            self._by_name_cache.update(zip(new_names, new, strict=True))
        self._size_keys = self._mtime_keys = None
        self._orders.clear()
        self._sort()
        if keep_cursor_on is not None and keep_cursor_on in new_names:
            keep = new[new_names.index(keep_cursor_on)]
            screen_line = -1
        self._rebuild_rows(keep_entry=keep, center=False, prune=False)
        if screen_line >= 0:
            # Rows may have come in above the cursor: keep it on the same line of the screen
            # (force: the scroll bar a short list just outgrew is not laid out yet).
            self.scroll_to(y=max(0, self.cursor - screen_line), animate=False, immediate=True, force=True)
        self._scroll_cursor_into_view(center=screen_line < 0)
        self._cursor_maybe_moved()
        self.refresh()

    # -- selection -------------------------------------------------------------------------

    def select_pattern(self, pattern: str, *, case_sensitive: bool = True) -> int:
        """Select shown entries whose name matches the glob (the ``+`` dialog).

        Returns:
            How many entries became selected.
        """
        return self._mark_pattern(pattern, case_sensitive, select=True)

    def unselect_pattern(self, pattern: str, *, case_sensitive: bool = True) -> int:
        """Unselect shown entries whose name matches the glob (the ``-`` dialog).

        Returns:
            How many entries became unselected.
        """
        return self._mark_pattern(pattern, case_sensitive, select=False)

    def clear_selection(self) -> None:
        """Unselect everything (e.g. after a copy was ordered)."""
        if self._selected:
            self._selected.clear()
            self._post_selection_changed()
            self.refresh()

    def _mark_pattern(self, pattern: str, case_sensitive: bool, *, select: bool) -> int:
        flags = 0 if case_sensitive else re.IGNORECASE
        match = re.compile(fnmatch.translate(pattern), flags).match
        names = self._names
        matching = {name for name in map(names.__getitem__, self._row_idx) if match(name)}
        before = len(self._selected)
        if select:
            self._selected |= matching
        else:
            self._selected -= matching
        changed = abs(len(self._selected) - before)
        if changed:
            self._post_selection_changed()
            self.refresh()
        return changed

    def _post_selection_changed(self) -> None:
        self.post_message(self.SelectionChanged(self, len(self._selected), self.selected_size))

    # -- view building ---------------------------------------------------------------------

    def _sort(self) -> None:
        """Order all entries once; hidden and filter changes re-filter this order, not re-sort."""
        if self._sorted_by_name is not self._entries:
            # Split first (sequential scans), then sort each group: measured faster than one
            # sort on "dir flag + name" keys or a partition after sorting.
            everything = range(len(self._entries))
            key = self._folded.__getitem__
            self._dirs_by_name = sorted(compress(everything, self._isdir), key=key)
            self._files_by_name = sorted(compress(everything, map(operator.not_, self._isdir)), key=key)
            self._sorted_by_name = self._entries
        dirs, files = self._dirs_by_name, self._files_by_name
        reverse = self.sort_reverse
        if self.sort_key == "name":
            self._order = dirs[::-1] + files[::-1] if reverse else dirs + files
            return
        cached = self._orders.get((self.sort_key, reverse))
        if cached is not None:
            self._order = cached
            return
        if self.sort_key == "size":
            if self._size_keys is None:
                self._size_keys = _size_keys(self._entries)
            keys: list[int] | list[float] = self._size_keys
        else:
            if self._mtime_keys is None:
                self._mtime_keys = _mtime_keys(self._entries)
            keys = self._mtime_keys
        # Stable sorts: name order is the tie-break (also with reverse=True).
        self._order = sorted(dirs, key=keys.__getitem__, reverse=reverse) + sorted(
            files, key=keys.__getitem__, reverse=reverse
        )
        self._orders[(self.sort_key, reverse)] = self._order

    def warm_orders(self) -> None:
        """Sort a big, complete listing by size and by time ahead, off the UI thread, so the
        first press of ``s`` is a cached lookup (a 100,000-entry sort took 50-80 ms of the key's
        repaint).  The result is installed only if the listing is still the same one."""
        if len(self._entries) < WARM_ORDERS_FROM or self._sorted_by_name is not self._entries:
            return
        entries, dirs, files = self._entries, self._dirs_by_name, self._files_by_name
        Orders = dict[tuple[SortKey, bool], list[int]]

        def work() -> None:
            sizes, mtimes = _size_keys(entries), _mtime_keys(entries)
            orders: Orders = {}
            for name, keys in (("size", sizes), ("mtime", mtimes)):
                key = keys.__getitem__  # type: ignore[attr-defined]
                orders[(name, False)] = sorted(dirs, key=key) + sorted(files, key=key)  # type: ignore[index]
            self.app.call_from_thread(install, sizes, mtimes, orders)

        def install(sizes: list[int], mtimes: list[int] | list[float], orders: Orders) -> None:
            if self._entries is entries:
                self._size_keys = self._size_keys or sizes
                self._mtime_keys = self._mtime_keys or mtimes
                for k, order in orders.items():
                    self._orders.setdefault(k, order)

        self.run_worker(work, thread=True, exclusive=True, group="warm-orders", exit_on_error=False)

    def _invalidate_keys(self) -> None:
        """Forget everything computed from the previous listing's entries."""
        self._size_keys = self._mtime_keys = self._by_name_cache = self._visible_cache = None
        self._orders.clear()

    def _without_hidden(self, order: list[int]) -> list[int]:
        if self.sort_key == "name" and not self.sort_reverse:
            # Fast path for the default view: in name order the dotfiles of each group form
            # one run (folded names from "." up to "/"), so four bisections replace 100k tests.
            key = self._folded.__getitem__
            split = len(self._dirs_by_name)
            dirs_from = bisect_left(order, ".", 0, split, key=key)
            dirs_to = bisect_left(order, "/", dirs_from, split, key=key)
            files_from = bisect_left(order, ".", split, key=key)
            files_to = bisect_left(order, "/", files_from, key=key)
            return order[:dirs_from] + order[dirs_to:files_from] + order[files_to:]
        visible = self._visible()
        if self._all_visible:
            return order  # no dotfiles at all (common in big directories): nothing to drop
        return list(compress(order, map(visible.__getitem__, order)))

    def _visible(self) -> list[bool]:
        if self._visible_cache is None:
            self._visible_cache = _not_hidden(self._names)
            self._all_visible = False not in self._visible_cache
        return self._visible_cache

    def _rebuild_rows(
        self,
        keep_entry: Entry | None,
        *,
        center: bool = True,
        keep_position: int | None = None,
        prune: bool = True,
    ) -> None:
        """Recompute the shown rows from the sorted order; keep the cursor on ``keep_entry``
        (or on the entry at ``keep_position`` in :attr:`entries`, which is found faster).
        ``prune=False`` when no shown row can have gone (a re-sort, more entries), which
        saves checking the selection against every shown name."""
        idx = self._order
        if not self.show_hidden:
            idx = self._without_hidden(idx)
        needle = self.filter.casefold()
        if needle:
            folded = map(self._folded.__getitem__, idx)
            idx = list(compress(idx, map(operator.contains, folded, repeat(needle))))
        self._row_idx = idx
        self._rows = rows = _Rows(self._entries, idx, with_parent=not self._at_root)
        self.virtual_size = Size(0, len(rows))
        if prune and self._selected:
            shown = self._shown_names()
            if not self._selected <= shown:
                self._selected &= shown
                self._post_selection_changed()
        index = 0
        try:
            if keep_position is not None:
                index = idx.index(keep_position) + (len(rows) - len(idx))
            elif keep_entry is not None:
                index = rows.index(keep_entry)
        except ValueError:
            index = 0
        self._move_cursor(index, center=center)
        self.post_message(self.ViewChanged(self))

    def _refilter(self) -> None:
        self._rebuild_rows(keep_entry=self.cursor_entry)
        self._cursor_maybe_moved()
        self.refresh()

    def watch_sort_key(self) -> None:
        keep = self.cursor_entry
        row = self.cursor - (len(self._rows) - len(self._row_idx))
        position = self._row_idx[row] if 0 <= row < len(self._row_idx) else None
        self._sort()
        self._rebuild_rows(keep_entry=keep, keep_position=position, prune=False)
        self._cursor_maybe_moved()
        self.refresh()

    def watch_sort_reverse(self) -> None:
        self.watch_sort_key()

    def watch_show_hidden(self) -> None:
        self._refilter()

    def watch_filter(self) -> None:
        self._refilter()

    def validate_sort_key(self, value: str) -> SortKey:
        if value not in SORT_KEYS:
            raise ValueError(f"sort key must be one of {SORT_KEYS}, not {value!r}")
        return value  # narrowed to SortKey by the membership test

    # -- cursor ----------------------------------------------------------------------------

    def validate_cursor(self, value: int) -> int:
        return max(0, min(value, len(self._rows) - 1))

    def watch_cursor(self, old: int, new: int) -> None:
        self.refresh_line(old)
        self.refresh_line(new)
        self._scroll_cursor_into_view()
        self._cursor_maybe_moved()

    def _move_cursor(self, index: int, *, center: bool = False) -> None:
        """Set the cursor without relying on the watcher (which skips unchanged values)."""
        self.set_reactive(FileList.cursor, self.validate_cursor(index))
        self._scroll_cursor_into_view(center=center)

    def _cursor_maybe_moved(self) -> None:
        entry = self.cursor_entry
        if entry is not self._last_cursor_entry:
            self._last_cursor_entry = entry
            self.post_message(self.CursorMoved(self, entry))

    def _page_height(self) -> int:
        return max(1, self.scrollable_content_region.height)

    def _scroll_cursor_into_view(self, *, center: bool = False) -> None:
        height = self.scrollable_content_region.height
        if height <= 0:
            return  # not laid out yet; on_resize scrolls once the size is known
        top = round(self.scroll_y)
        cursor = self.cursor
        if top <= cursor < top + height:
            return
        if center:
            target = cursor - height // 2
        elif cursor < top:
            target = cursor
        else:
            target = cursor - height + 1
        self.scroll_to(y=max(0, target), animate=False, immediate=True)

    def on_resize(self, event: events.Resize) -> None:
        self._row_cache.clear()
        self._scroll_cursor_into_view()

    # -- actions ---------------------------------------------------------------------------

    def on_key(self, event: events.Key) -> None:
        # Runs before the bindings: any key other than "g" cancels a pending "gg".
        if event.key != "g":
            self._g_pending_since = None

    def action_noop(self) -> None:
        """Swallow a key (left/right would scroll horizontally otherwise)."""

    def action_cursor_up(self) -> None:
        self.cursor -= 1

    def action_cursor_down(self) -> None:
        self.cursor += 1

    def action_cursor_home(self) -> None:
        self.cursor = 0

    def action_cursor_end(self) -> None:
        self.cursor = len(self._rows) - 1

    def action_g_prefix(self) -> None:
        now = time.monotonic()
        pending = self._g_pending_since
        if pending is not None and now - pending <= _G_PREFIX_TIMEOUT:
            self._g_pending_since = None
            self.cursor = 0
        else:
            self._g_pending_since = now

    def action_page_up(self) -> None:
        self._page(-1)

    def action_page_down(self) -> None:
        self._page(+1)

    def _page(self, direction: int) -> None:
        # Move the view and the cursor by the same amount, so the cursor keeps its place on
        # screen (Midnight Commander's behaviour); clamping handles both ends.
        step = max(1, self._page_height() - 1) * direction
        self.scroll_to(y=max(0, round(self.scroll_y) + step), animate=False, immediate=True)
        self.cursor += step

    def action_toggle_select(self) -> None:
        entry = self.cursor_entry
        if entry is not None and entry is not PARENT_ENTRY:
            name = _name(entry)
            if name in self._selected:
                self._selected.discard(name)
            else:
                self._selected.add(name)
            self.refresh_line(self.cursor)
            self._post_selection_changed()
        self.cursor += 1

    def action_invert_selection(self) -> None:
        self._selected = self._shown_names() - self._selected
        self._post_selection_changed()
        self.refresh()

    def action_open(self) -> None:
        entry = self.cursor_entry
        if entry is PARENT_ENTRY:
            self.post_message(self.UpRequested(self))
        elif entry is not None:
            self.post_message(self.Opened(self, entry))

    def action_up_dir(self) -> None:
        if not self._at_root:
            self.post_message(self.UpRequested(self))

    def action_toggle_hidden(self) -> None:
        self.show_hidden = not self.show_hidden

    def action_cycle_sort(self) -> None:
        self.sort_key = SORT_KEYS[(SORT_KEYS.index(self.sort_key) + 1) % len(SORT_KEYS)]

    def action_reverse_sort(self) -> None:
        self.sort_reverse = not self.sort_reverse

    # -- mouse -----------------------------------------------------------------------------

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        row = round(self.scroll_y) + offset.y
        if row < len(self._rows):
            self.cursor = row
            if event.chain == 2:
                self.action_open()

    # -- painting --------------------------------------------------------------------------

    def on_focus(self) -> None:
        self.refresh_line(self.cursor)

    def on_blur(self) -> None:
        self.refresh_line(self.cursor)

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self.refresh()

    def _format_row(self, entry: Entry, layout: _Layout) -> _Row:
        cached = self._row_cache.get(id(entry))
        if cached is not None:
            return cached
        kind = _kind(entry)
        name_runs, name_cells = fit_runs(
            [("..", False)] if entry is PARENT_ENTRY else escape_name(entry.get("name")), layout.name
        )
        tail = ""
        if layout.size:
            tail += " " + format_size(entry, compact=layout.compact_size).rjust(layout.size)[: layout.size]
        if layout.time:
            tail += " " + _format_time(entry, layout.time_format).ljust(layout.time)[: layout.time]
        row = _Row(kind, _MARKERS[kind], name_runs, layout.name - name_cells, tail)
        self._row_cache[id(entry)] = row
        return row

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        if self._layout.width != width:
            self._layout = _Layout.for_width(width)
            self._row_cache.clear()
        index = round(self.scroll_y) + y
        base = self.rich_style
        if not 0 <= index < len(self._rows) or width <= 0:
            return Strip.blank(width, base)
        entry = self._rows[index]
        row = self._format_row(entry, self._layout)
        is_cursor = index == self.cursor
        is_selected = entry is not PARENT_ENTRY and _name(entry) in self._selected

        component = self.get_component_rich_style
        if is_cursor:
            # The cursor row is one uniform bar (readable on any theme); a selected entry
            # under the cursor keeps the selection's text attributes on top.
            line_style = component("file-list--cursor")
            if is_selected:
                line_style += component("file-list--selected", partial=True)
            name_style = line_style
            meta_style = line_style
        elif is_selected:
            line_style = component("file-list--selected")
            name_style = line_style
            meta_style = line_style
        else:
            line_style = base
            kind_class = f"file-list--{row.kind}"
            name_style = base + component(kind_class, partial=True) if row.kind != "file" else base
            meta_style = base + component("file-list--meta", partial=True)
        escaped_style: Style = name_style + component("file-list--escaped", partial=True)

        segments = [Segment(row.marker, name_style)]
        segments.extend(Segment(text, escaped_style if esc else name_style) for text, esc in row.name)
        if row.pad:
            segments.append(Segment(" " * row.pad, line_style))
        if row.tail:
            segments.append(Segment(row.tail, meta_style))
        strip = Strip(segments, 1 + self._layout.name + len(row.tail))
        return strip.extend_cell_length(width, line_style).crop(0, width)
