"""The commander's main screen: browsing and the F-key operations, against a real embedded server.

Each test asserts on the app's state *and* on what the server did on disk.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from textual.message import Message
from textual.widgets import Input

from jettui.server.embedded import EmbeddedInfo, EmbeddedServer
from jettui.tui.messages import ConnectionChanged
from jettui.tui.screens.modals import ConfirmModal, CopyDialog, DetailsModal, ErrorModal, InputModal
from tests.tui.commander import app_for, cursor_to, names, ready, run_in_server, wait_for

Local = tuple[EmbeddedServer, EmbeddedInfo]
#: Empty an Input: go to the end, delete everything left of the cursor.
CLEAR = ("end", "ctrl+u")


async def test_start_lists_both_panes_and_navigates(local: Local) -> None:
    app = app_for(local[1])
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        assert app.left.path == app.right.path == "/"
        assert names(app) == ["..", "docs", "empty", "src", "data.bin", "notes.txt", "run.sh"]
        assert app.left.path_bar.active and not app.right.path_bar.active
        await cursor_to(pilot, app, "docs")
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.left.path == "/docs", "enter docs")
        assert names(app) == ["..", "api.md", "guide.md"]
        await pilot.press("backspace")
        await wait_for(pilot, lambda: app.left.path == "/", "back up")
        assert app.left.file_list.cursor_entry["name"] == "docs"  # the directory just left
        # Up from the top directory: the root listing (lsRootsAsync), no ".." row.
        await pilot.press("backspace")
        await wait_for(pilot, lambda: app.left.path == "", "roots")
        assert names(app) == ["/"] and app.left.file_list.at_root


async def test_tab_swap_and_same_path(local: Local) -> None:
    app = app_for(local[1])
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("tab")
        assert app.right.file_list.has_focus and app.right.path_bar.active and not app.left.path_bar.active
        await cursor_to(pilot, app, "src", "right")
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.right.path == "/src", "right into src")
        await pilot.press("ctrl+u")
        assert (app.left.path, app.right.path) == ("/src", "/")
        assert names(app) == ["..", "main.py"]
        await pilot.press("tab")  # focus the left pane, which now shows /src
        assert app.left.file_list.has_focus
        await pilot.press("alt+i")
        await wait_for(pilot, lambda: app.right.path == "/src" and app.right.loaded, "same path")
        assert names(app, "right") == ["..", "main.py"]


async def test_hidden_sort_and_quick_filter(local: Local) -> None:
    app = app_for(local[1])
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("full_stop")
        assert ".hidden" in names(app)
        await pilot.press("full_stop", "slash", *"not")
        assert isinstance(app.focused, Input)
        assert names(app) == ["..", "notes.txt"]
        assert "filter: not" in str(app.left.status.render())
        await pilot.press("enter")
        assert app.left.file_list.has_focus and app.left.file_list.filter == "not"
        await pilot.press("escape")
        assert app.left.file_list.filter == "" and len(names(app)) == 7


async def test_pattern_select_unselect_and_reread(local: Local, tree: Path) -> None:
    app = app_for(local[1])
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("plus")
        assert isinstance(app.screen, InputModal)
        await pilot.press(*CLEAR, *"*.txt", "enter")  # replace the default "*"
        assert app.left.file_list.selected == {"notes.txt"}
        await pilot.press("plus")
        await pilot.press(*CLEAR, *"*", "enter")
        assert app.left.file_list.selected == {"docs", "empty", "src", "data.bin", "notes.txt", "run.sh"}
        await pilot.press("minus")
        await pilot.press(*CLEAR, *"*s*", "enter")
        assert app.left.file_list.selected == {"empty", "data.bin"}
        (tree / "fresh.txt").write_text("new")
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: "fresh.txt" in names(app), "reread shows the new file")
        assert app.left.file_list.selected == {"empty", "data.bin"}  # kept over a reread


async def test_f7_mkdir_and_f8_delete(local: Local, tree: Path) -> None:
    app = app_for(local[1])
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("f7")
        assert isinstance(app.screen, InputModal)
        await pilot.press(*"newdir", "enter")
        await wait_for(pilot, lambda: "newdir" in names(app), "new directory listed")
        assert (tree / "newdir").is_dir()
        assert app.left.file_list.cursor_entry["name"] == "newdir"
        # Both panes show "/", and both reread.
        await wait_for(pilot, lambda: "newdir" in names(app, "right"), "other pane sees it")

        (tree / "newdir" / "inner.bin").write_bytes(b"x" * 3000)
        await pilot.press("f8")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), "delete confirmation")
        question = str(app.screen.question)
        assert "newdir" in question and "1 directory" in question and "3,000 bytes" in question
        await pilot.press("n")
        assert (tree / "newdir").exists()
        await pilot.press("f8")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), "delete confirmation")
        await pilot.press("y")
        await wait_for(pilot, lambda: "newdir" not in names(app), "directory gone from the list")
        assert not (tree / "newdir").exists()


async def test_f8_counts_selection(local: Local, tree: Path) -> None:
    app = app_for(local[1])
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await cursor_to(pilot, app, "data.bin")
        await pilot.press("insert", "insert")  # data.bin and notes.txt
        await pilot.press("f8")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), "delete confirmation")
        total = len((tree / "data.bin").read_bytes()) + len((tree / "notes.txt").read_bytes())
        assert "2 entries, " in str(app.screen.question) and f"{total:,} bytes" in str(app.screen.question)
        await pilot.press("y")
        await wait_for(pilot, lambda: "data.bin" not in names(app), "deleted")
        assert not (tree / "data.bin").exists() and not (tree / "notes.txt").exists()
        assert (tree / "run.sh").exists()


async def test_f6_rename_and_move_on_one_server(local: Local, tree: Path) -> None:
    app = app_for(local[1])
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await cursor_to(pilot, app, "notes.txt")
        await pilot.press("f6")
        assert isinstance(app.screen, CopyDialog) and not app.screen.transfer
        await pilot.press(*CLEAR, *"renamed.txt", "enter")  # a name, not a directory: rename
        await wait_for(pilot, lambda: "renamed.txt" in names(app), "renamed")
        assert (tree / "renamed.txt").read_bytes() == b"some notes\n" * 12
        assert not (tree / "notes.txt").exists()
        # Move into the other pane's directory (the dialog's default).
        await pilot.press("tab")
        await cursor_to(pilot, app, "docs", "right")
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.right.path == "/docs", "right into docs")
        await pilot.press("tab")
        await cursor_to(pilot, app, "renamed.txt")
        await pilot.press("f6")
        assert app.screen.query_one("#destination", Input).value == "/docs"
        await pilot.press("enter")
        await wait_for(pilot, lambda: "renamed.txt" in names(app, "right"), "moved")
        assert (tree / "docs" / "renamed.txt").exists() and not (tree / "renamed.txt").exists()


async def test_errors_show_the_server_message(local: Local, tree: Path) -> None:
    app = app_for(local[1])
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await cursor_to(pilot, app, "src")
        await pilot.press("f6", *CLEAR, *"docs", "enter")  # rename onto an existing directory
        await wait_for(pilot, lambda: isinstance(app.screen, ErrorModal), "error dialog")
        title, message = app.errors[-1]
        assert title == "Command failed" and "docs" in message
        await pilot.press("enter")
        assert not isinstance(app.screen, ErrorModal)
        assert (tree / "src" / "main.py").exists()
        # Entering a directory removed behind our back: the server's error, list unchanged.
        (tree / "empty").rmdir()
        await cursor_to(pilot, app, "empty")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ErrorModal), "error dialog")
        assert "empty" in app.errors[-1][1] and app.left.path == "/"


async def test_f3_details_du_and_md5(local: Local, tree: Path) -> None:
    app = app_for(local[1])
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await cursor_to(pilot, app, "data.bin")
        await pilot.press("f3")
        assert isinstance(app.screen, DetailsModal)
        await pilot.press("m")
        digest = hashlib.md5((tree / "data.bin").read_bytes()).hexdigest()
        await wait_for(pilot, lambda: digest in app.screen.values.get("MD5", "").plain, "md5 shown")
        assert "10,240 B" in str(app.screen.query_one("#details").render())
        await pilot.press("escape")
        await cursor_to(pilot, app, "docs")
        await pilot.press("f3")
        size = sum(len(p.read_bytes()) for p in (tree / "docs").iterdir())
        await wait_for(pilot, lambda: f"{size:,} B" in app.screen.values.get("Disk usage", "").plain, "du shown")


async def test_f5_copies_through_a_transfer(local: Local, tree: Path) -> None:
    app = app_for(local[1])
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("tab")
        await cursor_to(pilot, app, "empty", "right")
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.right.path == "/empty", "right into empty")
        await pilot.press("tab")
        await cursor_to(pilot, app, "data.bin")
        await pilot.press("f5")
        assert isinstance(app.screen, CopyDialog) and app.screen.transfer
        await pilot.press("enter")
        await wait_for(
            pilot,
            lambda: any(t.get("status") == "complete" for _, t in app.queue.transfers.values()),
            "transfer complete in the queue",
            timeout=30,
        )
        assert (tree / "empty" / "data.bin").read_bytes() == (tree / "data.bin").read_bytes()
        await wait_for(pilot, lambda: "data.bin" in names(app, "right"), "destination pane reread")
        assert app.errors == []


async def test_dropped_connection_reconnects(local: Local) -> None:
    server, info = local
    app = app_for(info)
    states: list[str] = []

    def hook(message: Message) -> None:
        if isinstance(message, ConnectionChanged):
            states.append(message.state)

    async with app.run_test(size=(80, 24), message_hook=hook) as pilot:
        await ready(pilot)

        async def drop() -> None:
            assert server.server is not None
            for conn in list(server.server.connections):
                await conn.aclose()

        run_in_server(server, drop())
        await wait_for(pilot, lambda: "reconnecting" in states, "reconnecting state")
        await wait_for(pilot, lambda: states[-1] == "connected", "connected again", timeout=15)
        await wait_for(pilot, lambda: app.left.loading_path is None and not app.left.notice.display, "reread")
        assert states[-2:] == ["reconnecting", "connected"]
        # The pane said so while it lasted (the notice is set when the state message arrives).
        app.left.connection_changed("reconnecting", "test")
        assert "disconnected — reconnecting" in str(app.left.notice.render())
        app.left.connection_changed("connected", "")
        # The connection works again: browsing goes on.
        await cursor_to(pilot, app, "docs")
        await pilot.press("enter")
        await wait_for(
            pilot,
            lambda: app.left.path == "/docs",
            lambda: f"browse after reconnect: {app.errors} {app.left.loading_path} {app.left.path}",
        )


async def test_hostile_names_are_escaped(local: Local, tree: Path) -> None:
    (tree / "\x1b[31mred").write_text("x")
    app = app_for(local[1])
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        rows = [str(e["name"]) for e in app.left.file_list.rows]
        index = rows.index("\x1b[31mred")
        line = "".join(seg.text for seg in app.left.file_list.render_line(index))
        assert "\\x1b[31mred" in line and "\x1b" not in line
        await cursor_to(pilot, app, "\x1b[31mred")
        await pilot.press("f3")
        title = app.screen.query_one(".dialog-title").render()
        assert "\x1b" not in str(title) and "\\x1b" in str(title)


async def test_quit_keys(local: Local) -> None:
    for key in ("f10", "q"):
        app = app_for(local[1])
        async with app.run_test(size=(80, 24)) as pilot:
            await ready(pilot)
            await pilot.press(key)
            await pilot.pause()
        assert app.return_code == 0
        assert all(not conn.api.connected for conn in app.backend.connections.values())
