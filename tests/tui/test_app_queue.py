"""The transfer queue and transfers between servers: real embedded servers, real transfers.

A slow transfer is made with the server's own outgoing bandwidth limit (set through the
API), so pause, resume and cancel act on a transfer that is really in flight.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jettui.api import connect
from jettui.server.embedded import EmbeddedInfo, EmbeddedServer
from jettui.tui import embedded_site, make_app
from jettui.tui.app import JettuiApp
from jettui.tui.screens.modals import ConfirmModal, CopyDialog
from tests.tui.commander import app_for, cursor_to, embedded_server, make_tree, names, ready, wait_for

Local = tuple[EmbeddedServer, EmbeddedInfo]


def limit_outgoing(info: EmbeddedInfo, kbits: float) -> None:
    """Throttle the server's sending (kbit/s), through the API like any admin would."""
    with connect(info.host, info.port, fingerprint=info.fingerprint, trust=False) as api:
        api.server.auth(info.user, info.secret)
        api.server.superuser()
        api.server.updateBandwidthLimits(outgoingLimitActive=True, outgoingRateLimit=kbits)


def transfers_of(info: EmbeddedInfo) -> list[dict[str, Any]]:
    with connect(info.host, info.port, fingerprint=info.fingerprint, trust=False) as api:
        api.server.auth(info.user, info.secret)
        return list(api.send.getTransfers())


def status(app: JettuiApp) -> str | None:
    rows = list(app.queue.transfers.values())
    return str(rows[-1][1].get("status")) if rows else None


async def order_copy(pilot: Any, app: JettuiApp, name: str, into: str) -> None:
    """Right pane into ``into``, left cursor on ``name``, F5, Enter."""
    await pilot.press("tab")
    await cursor_to(pilot, app, into, "right")
    await pilot.press("enter")
    await wait_for(pilot, lambda: app.right.path == f"/{into}", f"right pane into {into}")
    await pilot.press("tab")
    await cursor_to(pilot, app, name)
    await pilot.press("f5")
    assert isinstance(app.screen, CopyDialog)
    await pilot.press("enter")


async def test_queue_pause_resume_cancel_retry_delete(local: Local, tree: Path) -> None:
    server, info = local
    (tree / "big.bin").write_bytes(os.urandom(3_000_000))
    limit_outgoing(info, 2_000)  # 250 kB/s: about 12 s for 3 MB
    app = app_for(info)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await order_copy(pilot, app, "big.bin", "empty")
        await wait_for(pilot, lambda: status(app) in ("pending", "sending"), "transfer in the queue")
        assert not app.queue.has_class("-empty")
        await pilot.press("ctrl+t")
        assert app.queue.table.has_focus
        await pilot.press("p")
        await wait_for(pilot, lambda: status(app) == "suspended", "suspended")
        assert transfers_of(info)[-1]["status"] == "suspended"  # the server says so too
        await pilot.press("u")
        await wait_for(pilot, lambda: status(app) in ("pending", "sending"), "resumed")
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), "cancel confirmation")
        await pilot.press("y")
        await wait_for(pilot, lambda: status(app) == "cancelled", "cancelled")
        assert transfers_of(info)[-1]["status"] == "cancelled"
        assert "cancelled" in str(app.queue.title.render())  # the focused row's state, in full
        count = len(app.queue.transfers)
        await pilot.press("t")  # retry: a new transfer of the same manifest
        await wait_for(pilot, lambda: len(app.queue.transfers) == count + 1, "retried")
        await wait_for(pilot, lambda: status(app) in ("pending", "sending"), "retry running")
        # Delete the cancelled record: the cursor is on the first row.
        app.queue.table.move_cursor(row=0)
        await pilot.press("x")
        await wait_for(pilot, lambda: len(app.queue.transfers) == count, "record deleted")
        assert len(transfers_of(info)) == count
        await pilot.press("ctrl+t")
        assert app.left.file_list.has_focus


async def test_queue_survives_the_commander(local: Local, tree: Path) -> None:
    _, info = local
    app = app_for(info)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await order_copy(pilot, app, "notes.txt", "docs")
        await wait_for(pilot, lambda: status(app) == "complete", "complete", timeout=30)
        assert (tree / "docs" / "notes.txt").read_bytes() == (tree / "notes.txt").read_bytes()
    # A new commander on the same server lists the transfer it did not order.
    again = app_for(info)
    async with again.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await wait_for(pilot, lambda: status(again) == "complete", "transfer listed again", timeout=10)
        (_, transfer), *_ = again.queue.transfers.values()
        assert transfer["destinationPath"] == "/docs"


@pytest.fixture
def second(tmp_path: Path) -> Iterator[tuple[Path, EmbeddedInfo]]:
    root = make_tree(tmp_path / "second", {"inbox": None})
    with embedded_server(root) as (_, info):
        yield root, info


async def test_f5_and_f6_across_two_servers(local: Local, tree: Path, second: tuple[Path, EmbeddedInfo]) -> None:
    root_b, info_b = second
    app = make_app(
        embedded_site(local[1], "alpha"),
        embedded_site(info_b, "beta"),
        left_path="/",
        right_path="/inbox",
    )
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        assert app.left.site_key != app.right.site_key
        assert app.right.path_bar.label == "beta"
        await cursor_to(pilot, app, "data.bin")
        await pilot.press("f5", "enter")
        await wait_for(pilot, lambda: "data.bin" in names(app, "right"), "copied to the other server", timeout=30)
        assert (root_b / "inbox" / "data.bin").read_bytes() == (tree / "data.bin").read_bytes()
        assert (tree / "data.bin").exists()
        # F6 across servers: a transfer, then the source is deleted.
        await cursor_to(pilot, app, "run.sh")
        await pilot.press("f6")
        assert isinstance(app.screen, CopyDialog) and app.screen.transfer
        await pilot.press("enter")
        await wait_for(pilot, lambda: not (tree / "run.sh").exists(), "source deleted after the move", timeout=30)
        assert (root_b / "inbox" / "run.sh").read_bytes() == b"#!/bin/sh\necho hi\n"
        await wait_for(pilot, lambda: "run.sh" not in names(app), "source pane reread")
        assert app.errors == []
