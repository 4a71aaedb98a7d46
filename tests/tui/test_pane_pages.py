"""A pane on a large directory: the first page is shown at once, the rest is added as it
arrives (lsAsync with pageSize + getRequestPage), against a real embedded server.

Pages are made small (20 entries first, then 300) so that a few thousand entries take
several pages; a gate in the server's stat loop holds the rest back while the test acts
on the first page, so nothing depends on timing.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jettui.server import fsview
from jettui.server.embedded import EmbeddedInfo, EmbeddedServer
from jettui.tui import backend
from jettui.tui.widgets.file_list import PARENT_ENTRY
from tests.tui.commander import app_for, cursor_to, embedded_server, make_tree, names, ready, wait_for

Local = tuple[EmbeddedServer, EmbeddedInfo]
FILES = 2_000
DIRS = 60
TOTAL = FILES + DIRS


@pytest.fixture
def big_tree(tmp_path: Path) -> Path:
    root = make_tree(tmp_path / "tree")
    big = root / "big"
    big.mkdir()
    for i in range(DIRS):
        (big / f"d-{i:04d}").mkdir()
    for i in range(FILES):
        path = big / f"{'fF'[i % 2]}-{(i * 7919) % FILES:05d}.dat"
        path.write_bytes(b"x" * ((i * 37) % 500))
        os.utime(path, (1_700_000_000 + (i * 13) % 1000, 1_700_000_000 + (i * 13) % 1000))
    return root


class Gate:
    """Holds the server's stat loop after the first page until opened."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.held = threading.Event()


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[Gate]:
    gate = Gate()
    add_entries = fsview.FileSystemView._add_entries

    def gated(self: Any, fd: int, items: Any, stat_of: Any, name_of: Any, vpath: Any, files: list[Any]) -> None:
        if files:  # a later page of a progressive listing (the first starts with no entries)
            gate.held.set()
            gate.open.wait(timeout=30)
        add_entries(self, fd, items, stat_of, name_of, vpath, files)

    monkeypatch.setattr(fsview.FileSystemView, "_add_entries", gated)
    monkeypatch.setattr(fsview, "LATER_PAGES", 300)
    monkeypatch.setattr(backend, "LS_FIRST_PAGE", 20)
    monkeypatch.setattr(backend, "LS_PAGE_MAX", 500)
    yield gate
    gate.open.set()


@pytest.fixture
def big(big_tree: Path) -> Iterator[Local]:
    with embedded_server(big_tree) as started:
        yield started


def expected_order(root: Path, key: str = "name") -> list[str]:
    """The rows FileList should show for /big when whole: dirs first, then files."""
    entries = [(p.name, p.is_dir(), p.lstat()) for p in (root / "big").iterdir() if not p.name.startswith(".")]

    def order(group: list[tuple[str, bool, os.stat_result]]) -> list[str]:
        group.sort(key=lambda e: e[0].casefold())
        if key == "size":
            group.sort(key=lambda e: 0 if e[1] else e[2].st_size)
        elif key == "mtime":
            group.sort(key=lambda e: e[2].st_mtime_ns // 1_000_000_000)
        return [e[0] for e in group]

    return ["..", *order([e for e in entries if e[1]]), *order([e for e in entries if not e[1]])]


async def test_first_page_then_the_rest(big: Local, big_tree: Path, gate: Gate) -> None:
    app = app_for(big[1])
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        pane = app.left
        await cursor_to(pilot, app, "big")
        await pilot.press("enter")
        await wait_for(pilot, lambda: pane.path == "/big", "the first page")
        await wait_for(pilot, gate.held.is_set, "the server holding the rest")
        # The first page: 20 entries, the first rows of the final order, and a progress line.
        assert len(pane.file_list.entries) == 20
        assert names(app) == expected_order(big_tree)[:21]
        assert pane.loaded and pane.loading_path == "/big"
        assert pane.notice.display and f"of {TOTAL:,} entries" in str(pane.notice.render())
        gate.open.set()
        await wait_for(pilot, lambda: len(pane.file_list.entries) == TOTAL, "the whole listing")
        await wait_for(pilot, lambda: pane.loading_path is None, "the load to end")
        assert names(app) == expected_order(big_tree)
        assert not pane.notice.display
        assert pane.status.total == TOTAL


async def test_cursor_and_selection_survive_the_rest(big: Local, big_tree: Path, gate: Gate) -> None:
    app = app_for(big[1])
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        pane, file_list = app.left, app.left.file_list
        await cursor_to(pilot, app, "big")
        await pilot.press("enter")
        await wait_for(pilot, lambda: pane.path == "/big", "the first page")
        await wait_for(pilot, gate.held.is_set, "the server holding the rest")
        # Select two entries of the first page and leave the cursor on a third.
        await pilot.press("down", "insert", "insert", "down")
        cursor_name = file_list.cursor_entry["name"]
        selected = set(file_list.selected)
        assert len(selected) == 2 and cursor_name not in selected
        screen_line = file_list.cursor - round(file_list.scroll_y)
        gate.open.set()
        await wait_for(pilot, lambda: pane.loading_path is None, "the whole listing")
        assert len(file_list.entries) == TOTAL
        assert file_list.cursor_entry["name"] == cursor_name
        assert file_list.cursor - round(file_list.scroll_y) == screen_line
        assert set(file_list.selected) == selected
        assert pane.status.selected_count == 2


async def test_sorting_while_the_rest_arrives(big: Local, big_tree: Path, gate: Gate) -> None:
    app = app_for(big[1])
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        pane, file_list = app.left, app.left.file_list
        await cursor_to(pilot, app, "big")
        await pilot.press("enter")
        await wait_for(pilot, lambda: pane.path == "/big", "the first page")
        await wait_for(pilot, gate.held.is_set, "the server holding the rest")
        await pilot.press("s")  # by size, with only the first page in
        assert file_list.sort_key == "size"
        gate.open.set()
        await wait_for(pilot, lambda: pane.loading_path is None, "the whole listing")
        assert names(app) == expected_order(big_tree, "size")
        await pilot.press("s")
        assert names(app) == expected_order(big_tree, "mtime")
        await pilot.press("r")
        reverse = expected_order(big_tree, "mtime")
        assert names(app)[0] == ".." and len(names(app)) == len(reverse)
        await pilot.press("s")  # back to names, reversed
        by_name = expected_order(big_tree)
        dirs = [n for n in by_name[1:] if n.startswith("d-")]
        files = [n for n in by_name[1:] if not n.startswith("d-")]
        assert names(app) == ["..", *dirs[::-1], *files[::-1]]


async def test_backspace_finds_the_directory_left_on_a_later_page(big: Local, gate: Gate) -> None:
    gate.open.set()  # first let it list /big and a subdirectory whole
    app = app_for(big[1], path="/big/d-0050")
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        pane = app.left
        gate.open.clear()
        gate.held.clear()
        await pilot.press("backspace")
        await wait_for(pilot, lambda: pane.path == "/big", "the first page of /big")
        await wait_for(pilot, gate.held.is_set, "the server holding the rest")
        # d-0050 is not on the first page (d-0000 .. d-0019): the cursor waits on "..".
        assert pane.file_list.cursor_entry is PARENT_ENTRY
        gate.open.set()
        await wait_for(pilot, lambda: pane.loading_path is None, "the whole listing")
        assert pane.file_list.cursor_entry["name"] == "d-0050"


async def test_reread_keeps_the_old_listing_until_the_new_one_is_whole(big: Local, gate: Gate) -> None:
    gate.open.set()
    app = app_for(big[1], path="/big")
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        pane, file_list = app.left, app.left.file_list
        await wait_for(pilot, lambda: pane.loading_path is None, "the whole listing")
        await cursor_to(pilot, app, "F-00001.dat")
        await pilot.press("insert")
        await cursor_to(pilot, app, "f-01998.dat")
        await pilot.press("insert")
        selected = set(file_list.selected)
        gate.open.clear()
        gate.held.clear()
        await pilot.press("ctrl+r")
        await wait_for(pilot, gate.held.is_set, "the server holding the rest")
        assert len(file_list.entries) == TOTAL  # still the old listing, whole
        gate.open.set()
        await wait_for(pilot, lambda: pane.loading_path is None, "the reread")
        assert set(file_list.selected) == selected == {"F-00001.dat", "f-01998.dat"}


async def test_a_server_without_pages_is_listed_the_seed_way(
    big: Local, big_tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same real server, with lsAsync as the seed declares it (no pageSize): it refuses
    # the parameter, and the commander falls back to lsAsync + getRequestResult.
    from jettui.server import dispatch, methods_server

    async def seed_ls(call: Any, path: str, directory: bool | None = None, calculateHashType: str | None = None) -> Any:
        return await methods_server.lsAsync(call, path, directory, calculateHashType)

    spec = dispatch.METHODS["server.lsAsync"]
    monkeypatch.setitem(dispatch.METHODS, "server.lsAsync", dataclasses.replace(spec, handler=seed_ls))
    app = app_for(big[1])
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await cursor_to(pilot, app, "big")
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.left.path == "/big", "the listing")
        assert len(app.left.file_list.entries) == TOTAL
        assert names(app) == expected_order(big_tree)
        conn = next(iter(app.backend.connections.values()))
        assert conn.paged_ls is False
