"""Fixtures of the FileWriter tests (test_transfer_writer*.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from jettui.server.fsview import FileSystemView

SECRET = b"canary outside the sandbox"


@pytest.fixture
def dst(tmp_path: Path) -> Path:
    """The receiver's sandbox root, with ``/in`` in it and a canary outside it."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_bytes(SECRET)
    root = tmp_path / "dst"
    (root / "in").mkdir(parents=True)
    return root


@pytest.fixture
def fs(dst: Path) -> Iterator[FileSystemView]:
    view = FileSystemView({"": str(dst)})
    yield view
    view.close()
