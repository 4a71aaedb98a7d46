"""A two-pane harness for FileList, PathBar and PaneStatus, with fixed fixture listings.

Used by tests/tui/test_file_list.py (Pilot and snapshot tests).  Run it directly to look at
the widgets: ``TZ=UTC python tests/tui/snapshot_apps/file_list_app.py [hostile|big]``.
Times are fixed epoch values, so the listing is the same on every run when TZ=UTC.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from textual import events
from textual.app import App, ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message

from jettui.constants import LS_TYPE_DIRECTORY, LS_TYPE_REGULAR, LS_TYPE_ROOT, LS_TYPE_SYMLINK
from jettui.tui.widgets.file_list import STYLESHEET, Entry, FileList
from jettui.tui.widgets.path_bar import PaneStatus, PathBar

#: 2023-11-14 22:13:20 UTC.
BASE_MTIME = 1_700_000_000


def make_entry(
    name: str,
    kind: int = LS_TYPE_REGULAR,
    size: int = 0,
    mtime: int = BASE_MTIME,
    access: int = 0b110,
) -> dict[str, Any]:
    """An ls entry shaped like lsAsync's (mtime in seconds, mtimeus the microseconds)."""
    return {"name": name, "type": kind, "size": size, "mtime": mtime, "mtimeus": 0, "access": access}


NORMAL_ENTRIES: list[dict[str, Any]] = [
    make_entry("src", LS_TYPE_DIRECTORY, mtime=BASE_MTIME - 86_400),
    make_entry("docs", LS_TYPE_DIRECTORY, mtime=BASE_MTIME - 3 * 86_400),
    make_entry(".git", LS_TYPE_DIRECTORY, mtime=BASE_MTIME - 600),
    make_entry("README.md", size=4_210, mtime=BASE_MTIME - 7_200),
    make_entry("install.sh", size=1_234, mtime=BASE_MTIME - 40 * 86_400, access=0b111),
    make_entry("archive-2023-q4-final-backup.tar.gz", size=1_288_490_188, mtime=BASE_MTIME - 2 * 86_400),
    make_entry(".bashrc", size=3_771, mtime=BASE_MTIME - 400 * 86_400),
    make_entry("latest", LS_TYPE_SYMLINK, mtime=BASE_MTIME - 60),
    make_entry("report.pdf", size=2_621_440, mtime=BASE_MTIME - 5 * 86_400),
    make_entry("data.bin", size=104_857_600, mtime=BASE_MTIME + 60),
    make_entry("empty.txt", size=0, mtime=BASE_MTIME - 9_000),
    make_entry("Zebra.csv", size=98_765, mtime=BASE_MTIME - 20 * 86_400),
]

HOSTILE_ENTRIES: list[dict[str, Any]] = [
    make_entry("\x1b[31mred\x1b[0m", size=10),
    make_entry("\x1b]0;pwned\x07", size=11),
    make_entry("bell\x07", size=12),
    make_entry("tab\there", size=13),
    make_entry("new\nline", size=14),
    make_entry("c1\x9b2J", size=15),
    make_entry("del\x7f", size=16),
    make_entry("evil\u202etxt.exe", size=17),
    make_entry("", size=18),
    make_entry("a/b", LS_TYPE_DIRECTORY),
    make_entry("raw\udcff\udcfe", size=19),
    make_entry("zero\u200bwidth", size=20),
    make_entry("日本語のファイル名です.txt", size=21),
    make_entry("plain.txt", size=22),
]

ROOT_ENTRIES: list[dict[str, Any]] = [
    make_entry("home", LS_TYPE_ROOT, mtime=BASE_MTIME - 86_400, access=0b111),
    make_entry("data", LS_TYPE_ROOT, mtime=BASE_MTIME - 2 * 86_400, access=0b111),
    make_entry("scratch", LS_TYPE_ROOT, mtime=BASE_MTIME - 3 * 86_400, access=0b111),
]


def big_entries(count: int) -> list[dict[str, Any]]:
    """``count`` entries (every 10th a directory) in server order, not sorted."""
    return [
        make_entry(
            f"file-{(i * 7919) % count:06d}.dat" if i % 10 else f"dir-{i:06d}",
            LS_TYPE_REGULAR if i % 10 else LS_TYPE_DIRECTORY,
            size=(i * 104_729) % 10_000_000,
            mtime=BASE_MTIME - i,
        )
        for i in range(count)
    ]


class Pane(Vertical):
    """PathBar + FileList + PaneStatus, wired the way the commander's pane wires them."""

    def __init__(self, label: str, path: str, entries: Sequence[Entry], *, at_root: bool, list_id: str) -> None:
        super().__init__(classes="pane")
        self._bar = PathBar(label, path)
        self._list = FileList(entries, at_root=at_root, id=list_id)
        self._status = PaneStatus()

    def compose(self) -> ComposeResult:
        yield self._bar
        yield self._list
        yield self._status

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        self._bar.active = True

    def on_descendant_blur(self, event: events.DescendantBlur) -> None:
        self._bar.active = False

    def on_file_list_view_changed(self, event: FileList.ViewChanged) -> None:
        self._status.sync(event.file_list)

    def on_file_list_selection_changed(self, event: FileList.SelectionChanged) -> None:
        self._status.sync(event.file_list)


class FileListApp(App[None]):
    """Two panes side by side; records every FileList message it receives in ``messages``."""

    CSS_PATH = [STYLESHEET]
    CSS = """
    Horizontal { height: 1fr; }
    .pane { width: 1fr; }
    #left-pane { border-right: vkey $panel-lighten-2; }
    """

    def __init__(
        self,
        left: Sequence[Entry] = NORMAL_ENTRIES,
        right: Sequence[Entry] = ROOT_ENTRIES,
        *,
        left_root: bool = False,
        right_root: bool = True,
        left_path: str = "home:/projects/jettui",
        right_path: str = "",
    ) -> None:
        super().__init__()
        self._left = (left, left_root, left_path)
        self._right = (right, right_root, right_path)
        self.messages: list[Message] = []

    def compose(self) -> ComposeResult:
        with Horizontal():
            left, left_root, left_path = self._left
            right, right_root, right_path = self._right
            left_pane = Pane("local", left_path, left, at_root=left_root, list_id="left")
            left_pane.id = "left-pane"
            yield left_pane
            yield Pane("jet://ops@backup:8886", right_path, right, at_root=right_root, list_id="right")

    def on_mount(self) -> None:
        self.query_one("#left", FileList).focus()

    def on_file_list_opened(self, event: FileList.Opened) -> None:
        self.messages.append(event)

    def on_file_list_up_requested(self, event: FileList.UpRequested) -> None:
        self.messages.append(event)

    def on_file_list_cursor_moved(self, event: FileList.CursorMoved) -> None:
        self.messages.append(event)

    def on_file_list_selection_changed(self, event: FileList.SelectionChanged) -> None:
        self.messages.append(event)


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == "hostile":
        FileListApp(HOSTILE_ENTRIES).run()
    elif mode == "big":
        FileListApp(big_entries(100_000)).run()
    else:
        FileListApp().run()
