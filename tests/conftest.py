from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ServerThread, running_server

os.environ.setdefault("TZ", "UTC")


@pytest.fixture(autouse=True)
def _isolated_config(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Never touch the user's real known_servers or saved sites."""
    path = tmp_path_factory.mktemp("config")
    monkeypatch.setenv("JETTUI_CONFIG_DIR", str(path))
    return path


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    """A running server with users alice (superuser-eligible) and bob."""
    with running_server(persistent_state_dir=tmp_path / "state", superusers=["alice"]) as st:
        st.add_user("alice", "alice-pw")
        st.add_user("bob", "bob-pw", group="staff")
        yield st
