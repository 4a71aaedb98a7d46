"""Snapshots of the commander's main screens at 80x24 and 120x40 (pytest-textual-snapshot).

Determinism: the embedded server is sandboxed on a fixture tree with fixed names, sizes
and mtimes (paths show as ``/docs``, never a temp path), its name is fixed, times are UTC,
animations are off, and the server-info values that differ per run (ids, ports, clock,
host, key, user) are replaced by fixed stand-ins before they are shown.  The Pilot tests
check that the real values are shown; these check the layout.

Update the baselines with ``pytest tests/tui/test_app_snapshots.py --snapshot-update``.
"""

from __future__ import annotations

from typing import Any

import pytest
from textual.pilot import Pilot

from jettui.server.embedded import EmbeddedInfo, EmbeddedServer
from jettui.tui.app import JettuiApp
from jettui.tui.screens.server_info import ServerInfoScreen
from tests.tui.commander import app_for, cursor_to, ready, wait_for

Local = tuple[EmbeddedServer, EmbeddedInfo]
SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")]

#: Stand-ins for the server-info values that change from run to run or machine to machine.
STABLE_INFO: dict[str, Any] = {
    "hostName": "fixture-host",
    "serverId": "0" * 32,
    "serverUid": "1" * 32,
    "serverTime": 1_700_000_000_000_000,
    "publicKey": "ab" * 32,
    "apiControlPort": 8886,
    "platformDetail": "Linux-fixture",
    "version": "0.0.0",
    "certificateValidation": 3650,
}
STABLE_RECEIVER = {"receiverPort": 8886, "socketRecvBufferSize": 212992, "socketSendBufferSize": 212992}


def stable(info: dict[str, Any]) -> dict[str, Any]:
    out = {**info, **{k: v for k, v in STABLE_INFO.items() if k in info}}
    out["receiver"] = {**info.get("receiver", {}), **STABLE_RECEIVER}
    out["user"] = {**info.get("user", {}), "userName": "operator"}
    if "configuration" in out:
        out["configuration"] = {**out["configuration"], "persistentStateDir": None}
    return out


async def _main(pilot: Pilot[Any]) -> None:
    app = await ready(pilot)
    await cursor_to(pilot, app, "data.bin")
    await pilot.press("insert")  # data.bin selected, cursor on notes.txt
    await pilot.press("tab")
    await cursor_to(pilot, app, "docs", "right")
    await pilot.press("enter")
    await wait_for(pilot, lambda: app.right.path == "/docs", "right into docs")
    await pilot.press("tab")
    await pilot.pause()


async def _help(pilot: Pilot[Any]) -> None:
    await ready(pilot)
    await pilot.press("f1")
    await pilot.pause()


async def _server_info(pilot: Pilot[Any]) -> None:
    app = await ready(pilot)
    await pilot.press("i")
    screen = app.screen
    assert isinstance(screen, ServerInfoScreen)
    await wait_for(pilot, lambda: screen.info is not None, "server info")
    assert screen.info is not None
    screen.show_info(stable(screen.info))
    await pilot.pause()


def _app(local: Local) -> JettuiApp:
    return app_for(local[1])


class TestMainScreen:
    @pytest.mark.parametrize("size", SIZES)
    def test_panes(self, snap_compare: Any, local: Local, size: tuple[int, int]) -> None:
        assert snap_compare(_app(local), terminal_size=size, run_before=_main)


class TestHelpScreen:
    @pytest.mark.parametrize("size", SIZES)
    def test_help(self, snap_compare: Any, local: Local, size: tuple[int, int]) -> None:
        assert snap_compare(_app(local), terminal_size=size, run_before=_help)


class TestServerInfoScreen:
    @pytest.mark.parametrize("size", SIZES)
    def test_server_info(self, snap_compare: Any, local: Local, size: tuple[int, int]) -> None:
        assert snap_compare(_app(local), terminal_size=size, run_before=_server_info)
