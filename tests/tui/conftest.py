"""Fixtures of the commander's tests: UTC, no animations, a fixture tree, an embedded server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jettui.server.embedded import EmbeddedInfo, EmbeddedServer
from tests.tui.commander import embedded_server, make_tree


@pytest.fixture(autouse=True)
def _utc_no_animation(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Times are shown in local time: pin UTC; no animations (stable snapshots, quick tests)."""
    monkeypatch.setenv("TZ", "UTC")
    monkeypatch.setenv("TEXTUAL_ANIMATIONS", "none")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "tree")


@pytest.fixture
def local(tree: Path) -> Iterator[tuple[EmbeddedServer, EmbeddedInfo]]:
    """An embedded server sandboxed on the fixture tree: (server, info)."""
    with embedded_server(tree) as started:
        yield started
