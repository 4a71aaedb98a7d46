"""Helpers for the commander's tests: a fixture tree with fixed names, sizes and mtimes, an
embedded server sandboxed on it (so paths shown are ``/docs``, never a temp path), and
``wait_for`` to poll app state while real servers answer."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from textual.pilot import Pilot

from jettui.server.config import ServerConfig
from jettui.server.embedded import EmbeddedInfo, EmbeddedServer
from jettui.tui import make_app
from jettui.tui.app import JettuiApp

#: 2023-11-14 22:13:20 UTC: every file and directory of the fixture tree has this mtime.
FIXED_MTIME = 1_700_000_000
SERVER_NAME = "fixture"

#: name -> content (bytes) or None for a directory; order is creation order.
TREE: dict[str, bytes | None] = {
    "docs": None,
    "docs/guide.md": b"# Guide\n" * 40,
    "docs/api.md": b"api\n" * 100,
    "src": None,
    "src/main.py": b"print('hello')\n",
    "empty": None,
    "data.bin": bytes(range(256)) * 40,
    "notes.txt": b"some notes\n" * 12,
    "run.sh": b"#!/bin/sh\necho hi\n",
    ".hidden": b"secret\n",
}


def make_tree(root: Path, tree: dict[str, bytes | None] = TREE) -> Path:
    """Create ``tree`` under ``root`` with fixed mtimes (directories last, since writing
    into a directory changes its mtime)."""
    root.mkdir(parents=True, exist_ok=True)
    for name, content in tree.items():
        path = root / name
        if content is None:
            path.mkdir(exist_ok=True)
        else:
            path.write_bytes(content)
    if (root / "run.sh").exists():
        (root / "run.sh").chmod(0o755)
    for path in sorted(root.rglob("*"), key=lambda p: -len(p.parts)):
        os.utime(path, (FIXED_MTIME, FIXED_MTIME), follow_symlinks=False)
    os.utime(root, (FIXED_MTIME, FIXED_MTIME))
    return root


@contextmanager
def embedded_server(root: Path, **config: Any) -> Iterator[tuple[EmbeddedServer, EmbeddedInfo]]:
    """A real embedded server whose system sandbox is ``root`` (paths show as ``/...``)."""
    cfg = ServerConfig(
        api_port=0, recv_port=0, recv_host="127.0.0.1", sandbox_dir=root, server_name=SERVER_NAME, **config
    )
    server = EmbeddedServer(cfg)
    info = server.start()
    try:
        yield server, info
    finally:
        server.stop()


def app_for(info: EmbeddedInfo, **kwargs: Any) -> JettuiApp:
    kwargs.setdefault("path", "/")
    return make_app(embedded=info, **kwargs)


async def wait_for(
    pilot: Pilot[Any], predicate: Callable[[], object], what: str | Callable[[], str] = "", timeout: float = 10.0
) -> None:
    """Poll ``predicate`` while the app runs (real servers answer in their own time)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            described = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout} s waiting for {described or predicate}")
        await pilot.pause(0.03)


async def ready(pilot: Pilot[Any]) -> JettuiApp:
    """Wait until both panes show their first listing."""
    app = pilot.app
    assert isinstance(app, JettuiApp)
    await wait_for(pilot, lambda: app.left.loaded and app.right.loaded, "both panes listed")
    await pilot.pause()
    return app


def names(app: JettuiApp, side: str = "left") -> list[str]:
    pane = app.left if side == "left" else app.right
    return [str(e["name"]) for e in pane.file_list.rows]


async def cursor_to(pilot: Pilot[Any], app: JettuiApp, name: str, side: str = "left") -> None:
    """Put the cursor of a pane on ``name`` (through the FileList, not by key presses)."""
    pane = app.left if side == "left" else app.right
    rows = [str(e["name"]) for e in pane.file_list.rows]
    pane.file_list.cursor = rows.index(name)
    await pilot.pause()


def run_in_server(server: EmbeddedServer, coro: Any) -> Any:
    """Run a coroutine on the embedded server's loop (to drop connections, for instance)."""
    return asyncio.run_coroutine_threadsafe(coro, server._loop).result(timeout=10)
