"""The commander's screens: server info, event log, admin, help, palette, connect, NO_COLOR."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.widgets import Button, DataTable, Input, Static

from jettui.api import connect
from jettui.api.trust import TrustStore
from jettui.server.embedded import EmbeddedInfo, EmbeddedServer
from jettui.tui import make_app
from jettui.tui.app import JettuiApp
from jettui.tui.screens.admin import AdminScreen
from jettui.tui.screens.connect import ConnectScreen, format_fingerprint
from jettui.tui.screens.event_log import EventLogScreen, parse_time
from jettui.tui.screens.help import HelpScreen, key_label
from jettui.tui.screens.server_info import ServerInfoScreen
from jettui.tui.sites import Site, SiteStore, parse_target
from jettui.tui.widgets.file_list import FileList
from jettui.tui.widgets.pane import RemotePane
from jettui.tui.widgets.queue import TransferQueue
from tests.helpers import ServerThread, running_server
from tests.tui.commander import SERVER_NAME, app_for, ready, wait_for

Local = tuple[EmbeddedServer, EmbeddedInfo]


def text_of(screen: object, selector: str) -> str:
    return str(screen.query_one(selector, Static).render())  # type: ignore[attr-defined]


async def test_server_info_screen(local: Local) -> None:
    app = app_for(local[1])
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("i")
        screen = app.screen
        assert isinstance(screen, ServerInfoScreen)
        await wait_for(pilot, lambda: screen.info is not None, "server info loaded")
        assert screen.info is not None and screen.info["serverName"] == SERVER_NAME
        assert screen.info["apiControlPort"] == local[1].port
        # Every group is there, and the name is painted.
        rendered = app.export_screenshot()
        for group in ("Identity", "API"):
            assert group in rendered
        assert SERVER_NAME in rendered
        await pilot.press("escape")
        assert not isinstance(app.screen, ServerInfoScreen)


async def test_event_log_filter_and_live_tail(local: Local) -> None:
    _, info = local
    app = app_for(info)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("e")
        screen = app.screen
        assert isinstance(screen, EventLogScreen)
        await wait_for(pilot, lambda: any(e["_event"] == "authSucceeded" for e in screen.events), "events listed")
        table = screen.query_one("#events", DataTable)
        assert table.row_count == len(screen.events)
        # Filter by name (on the server).
        await pilot.press("ctrl+n", *"authSucceeded", "enter")
        await wait_for(pilot, lambda: screen.name_filter == "authSucceeded", "filter applied")
        await wait_for(pilot, lambda: {e["_event"] for e in screen.events} == {"authSucceeded"}, "filtered")
        # Live tail: a token made by another client of the same user arrives as a notification.
        screen.query_one("#filter-name", Input).value = ""
        screen.query_one("#filter-after", Input).value = "1h"
        screen.query_one("#filter-name", Input).focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.name_filter == "" and screen.after is not None, "time filter")
        before = len(screen.events)
        with connect(info.host, info.port, fingerprint=info.fingerprint, trust=False) as api:
            api.server.auth(info.user, info.secret)
            api.server.createAPIToken(description="live")
        await wait_for(pilot, lambda: any(e["_event"] == "tokenCreated" for e in screen.events), "live event")
        assert len(screen.events) > before and table.cursor_row == table.row_count - 1
        # A time filter in the future hides everything.
        screen.query_one("#filter-after", Input).value = "2999-01-01"
        screen.query_one("#filter-after", Input).focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.events == [], "future filter")


def test_parse_time() -> None:
    assert parse_time("") is None
    assert parse_time("2024-01-31 12:00") == 1_706_702_400_000_000
    assert parse_time("10m", now=1000.0) == 400_000_000
    with pytest.raises(ValueError, match="not a time"):
        parse_time("yesterday")


async def test_admin_creates_and_deletes_a_token(local: Local) -> None:
    _, info = local
    app = app_for(info)
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await pilot.press("a")
        screen = app.screen
        assert isinstance(screen, AdminScreen)
        await wait_for(pilot, lambda: "superuser" in text_of(screen, "#admin-status"), "elevated")
        screen.query_one("#token-description", Input).value = "from the admin screen"
        screen.query_one("#token-create", Button).press()
        await wait_for(pilot, lambda: screen.created_token is not None, "token created")
        with connect(info.host, info.port, fingerprint=info.fingerprint, trust=False) as api:
            api.server.auth(info.user, info.secret)
            tokens = api.server.getAPITokens()
        assert [t["description"] for t in tokens] == ["from the admin screen"]
        assert screen.query_one("#tokens", DataTable).row_count == 1
        screen.query_one("#tokens", DataTable).focus()
        screen.query_one("#token-delete", Button).press()
        await wait_for(pilot, lambda: "deleted" in text_of(screen, "#admin-status"), "token deleted")
        with connect(info.host, info.port, fingerprint=info.fingerprint, trust=False) as api:
            api.server.auth(info.user, info.secret)
            assert api.server.getAPITokens() == []
        # A refused setting shows the server's message (GC interval below its minimum).
        screen.query_one("#gc-interval", Input).value = "5"
        screen.query_one("#gc-apply", Button).press()
        await wait_for(pilot, lambda: bool(app.errors), "error shown")
        assert "intervalSeconds" in app.errors[-1][1]
        await pilot.press("escape")
        # Sandbox tab: a mapping set here is what getSandboxMappings returns.
        assert isinstance(app.screen, AdminScreen)
        screen.query_one("#sandbox-user", Input).value = "nobody"
        screen.query_one("#sandbox-roots", Input).value = "/srv/nobody"
        screen.query_one("#sandbox-set", Button).press()
        await wait_for(pilot, lambda: "sandbox of nobody set" in text_of(screen, "#admin-status"), "sandbox set")
        assert screen.query_one("#sandboxes", DataTable).row_count >= 2  # system (fixture) + nobody


async def test_help_lists_every_declared_binding(local: Local) -> None:
    app = app_for(local[1])
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        text = str(app.screen.query_one("#help-text", Static).render())
        for owner in (JettuiApp, RemotePane, FileList, TransferQueue, EventLogScreen, AdminScreen, ConnectScreen):
            for binding in owner.BINDINGS:
                if binding.action == "noop":
                    continue
                assert binding.description in text, f"{owner.__name__}: {binding.description}"
                assert key_label(binding.key.split(",")[0]) in text
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


def test_key_labels() -> None:
    assert key_label("ctrl+r") == "Ctrl+R"
    assert key_label("f5") == "F5"
    assert key_label("full_stop") == "."
    assert key_label("G") == "G"


async def test_palette_opens_screens_by_name(local: Local) -> None:
    app = app_for(local[1])
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("f2")
        await pilot.pause(0.2)
        await pilot.press(*"server info")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ServerInfoScreen), "server info from the palette")
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, ServerInfoScreen), "info closed")
        await pilot.press("ctrl+p")
        await pilot.pause(0.3)
        await pilot.press(*"dotfiles")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.left.file_list.show_hidden, "hidden files from the palette")


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[ServerThread]:
    with running_server(persistent_state_dir=tmp_path / "state", server_name="remote") as st:
        st.add_user("alice", "alice-pw")
        yield st


async def test_connect_screen_trust_prompt_and_login(local: Local, remote: ServerThread) -> None:
    app = app_for(local[1])
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("tab", "f9")
        screen = app.screen
        assert isinstance(screen, ConnectScreen)
        screen.query_one("#host", Input).value = "127.0.0.1"
        screen.query_one("#port", Input).value = str(remote.port)
        screen.query_one("#user", Input).value = "alice"
        screen.query_one("#password", Input).value = "wrong"
        screen.query_one("#connect", Button).press()
        # First contact: the fingerprint is shown and nothing is pinned or sent yet.
        await wait_for(pilot, lambda: "First contact" in text_of(screen, "#connect-status"), "trust prompt")
        assert remote.server is not None
        fingerprint = remote.server.fingerprint
        assert format_fingerprint(fingerprint).split("\n")[0] in text_of(screen, "#connect-status")
        assert TrustStore().get(f"127.0.0.1:{remote.port}") is None
        await pilot.press("ctrl+y")
        await wait_for(pilot, lambda: "authentication failed" in text_of(screen, "#connect-status"), "wrong password")
        assert TrustStore().get(f"127.0.0.1:{remote.port}") == fingerprint
        screen.query_one("#password", Input).value = "alice-pw"
        screen.query_one("#connect", Button).press()
        key = f"alice@127.0.0.1:{remote.port}"
        await wait_for(pilot, lambda: app.right.loaded and app.right.site_key == key, "bound")
        assert app.right.file_list.at_root and app.left.site_key != app.right.site_key


async def test_saved_sites_never_store_passwords(remote: ServerThread, _isolated_config: Path) -> None:
    store = SiteStore()
    store.save(Site(name="ops", host="127.0.0.1", port=remote.port, user="alice", password="alice-pw"))
    data = json.loads(store.path.read_text())
    assert data == [{"name": "ops", "host": "127.0.0.1", "port": remote.port, "user": "alice", "token": ""}]
    assert oct(store.path.stat().st_mode & 0o777) == "0o600"
    store.save(Site(name="kept", host="h", user="u", password="pw", remember_password=True))
    assert {s.name: s.password for s in store.load()} == {"kept": "pw", "ops": ""}
    assert store.delete("kept") and not store.delete("kept")


def test_parse_target() -> None:
    assert parse_target("jet://ops@backup:9000").endpoint == "backup:9000"
    assert parse_target("jet://ops@backup:9000").user == "ops"
    assert parse_target("backup").port == 8886
    assert parse_target("[::1]:7000").host == "::1"
    with pytest.raises(Exception, match="not a server address"):
        parse_target("jet://a b")


async def test_cli_target_opens_the_connect_screen(remote: ServerThread) -> None:
    """``jettui jet://alice@HOST:PORT``: no password yet, so the connect screen asks."""
    app = make_app(f"jet://alice@127.0.0.1:{remote.port}", f"jet://alice@127.0.0.1:{remote.port}")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ConnectScreen), "connect screen")
        screen = app.screen
        assert screen.query_one("#user", Input).value == "alice"
        assert screen.query_one("#port", Input).value == str(remote.port)
        assert screen.query_one("#password", Input).has_focus
        await pilot.press(*"alice-pw", "enter")
        await wait_for(pilot, lambda: "First contact" in text_of(screen, "#connect-status"), "trust prompt")
        await pilot.press("ctrl+y")
        await wait_for(pilot, lambda: app.left.loaded and app.right.loaded, "both panes on the remote")
        assert app.left.site_key == app.right.site_key and len(app.backend.connections) == 1


async def test_no_color(local: Local, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    app = app_for(local[1])
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        assert app.no_color
        svg = app.export_screenshot()
        # Only the default foreground/background survive: no theme colours in the output.
        assert "#0178d4" not in svg.lower()
