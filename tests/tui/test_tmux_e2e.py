"""End to end: ``python -m jettui`` (embedded server) in a real terminal, tmux at 80x24.

The app runs exactly as a user starts it: no arguments, inside a fixture directory, so
both panes open there on a freshly started embedded server.  Keys go in with
``tmux send-keys``; the screen is read back with ``capture-pane``; what the server did is
checked on disk.
"""

from __future__ import annotations

import itertools
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.tui.commander import make_tree

pytestmark = [
    pytest.mark.tmux,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]

_sessions = itertools.count()
REPO = Path(__file__).resolve().parents[2]


class Terminal:
    """One detached tmux session running one command."""

    def __init__(self, command: str, env: dict[str, str], size: tuple[int, int] = (80, 24)) -> None:
        self.name = f"jettui-e2e-{os.getpid()}-{next(_sessions)}"
        args = ["new-session", "-d", "-s", self.name, "-x", str(size[0]), "-y", str(size[1])]
        for key, value in env.items():
            args += ["-e", f"{key}={value}"]
        self.tmux(*args, command)
        self.tmux("set-option", "-t", self.name, "remain-on-exit", "on")

    def tmux(self, *args: str) -> str:
        done = subprocess.run(["tmux", *args], capture_output=True, text=True, timeout=10)
        if done.returncode != 0:
            raise RuntimeError(f"tmux {args[0]} failed: {done.stderr.strip()}")
        return done.stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-t", self.name, "-p")

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", self.name, *keys)

    def type(self, text: str) -> None:
        self.tmux("send-keys", "-t", self.name, "-l", text)

    def wait(self, predicate: Callable[[str], bool], what: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if predicate(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; screen:\n{screen}")
            time.sleep(0.05)

    def wait_text(self, text: str, timeout: float = 15.0) -> str:
        return self.wait(lambda s: text in s, repr(text), timeout)

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True, timeout=10)


@pytest.fixture
def commander(tmp_path: Path) -> Iterator[tuple[Terminal, Path, Path]]:
    """``jettui`` started in a fixture directory; yields (terminal, directory, exit file)."""
    work = make_tree(tmp_path / "work")
    exit_file = tmp_path / "exit"
    config = tmp_path / "config"
    env = {
        "TERM": "xterm-256color",
        "COLORTERM": "truecolor",
        "TZ": "UTC",
        "JETTUI_CONFIG_DIR": str(config),
        "PYTHONPATH": str(REPO),
        "TEXTUAL_ANIMATIONS": "none",
    }
    command = (
        f"cd {shlex.quote(str(work))} && {shlex.quote(sys.executable)} -m jettui; "
        f"echo EXIT=$? > {shlex.quote(str(exit_file))}"
    )
    term = Terminal(f"sh -c {shlex.quote(command)}", env)
    try:
        term.wait_text("Quit", timeout=30)  # the footer is drawn last
        term.wait(lambda s: s.count("data.bin") == 2, "both panes listed", timeout=15)
        yield term, work, exit_file
    finally:
        term.close()


def wait_file(path: Path, predicate: Callable[[Path], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and predicate(path)):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_browse_mkdir_and_quit(commander: tuple[Terminal, Path, Path]) -> None:
    term, work, exit_file = commander
    screen = term.screen()
    assert work.name in screen  # both panes opened in the current directory
    term.keys("Down", "Enter")  # ".." -> docs
    term.wait_text("guide.md")
    assert "docs" in term.screen().splitlines()[0]
    term.keys("BSpace")
    term.wait(lambda s: "guide.md" not in s and "notes.txt" in s, "back in the start directory")
    term.keys("F7")
    term.wait_text("Make directory")
    term.type("made-in-tmux")
    term.keys("Enter")
    wait_file(work / "made-in-tmux", Path.is_dir, "the new directory on disk")
    term.wait_text("made-in-tmux")
    term.keys("F10")
    wait_file(exit_file, lambda p: "EXIT=" in p.read_text(), "the app to exit", timeout=15)
    assert exit_file.read_text().strip() == "EXIT=0"


def test_copy_a_file_to_the_other_pane(commander: tuple[Terminal, Path, Path]) -> None:
    term, work, exit_file = commander
    payload = os.urandom(2_000_000)
    (work / "payload.bin").write_bytes(payload)
    term.keys("C-r")  # reread: the new file appears
    term.wait_text("payload.bin")
    # Right pane into "empty" (directories first: docs, empty, src).
    term.keys("Tab", "Down", "Down", "Enter")
    term.wait(lambda s: "/empty" in s.splitlines()[0], "right pane in empty")
    # Left pane: ".." docs empty src data.bin notes.txt payload.bin run.sh -> 6 down.
    term.keys("Tab", *["Down"] * 6, "F5")
    term.wait_text("Copy payload.bin to:")
    term.keys("Enter")
    target = work / "empty" / "payload.bin"
    wait_file(target, lambda p: p.stat().st_size == len(payload), "the copy to arrive")
    assert target.read_bytes() == payload
    term.wait(lambda s: s.count("payload.bin") == 2, "both panes show the file")
    term.keys("F10")
    wait_file(exit_file, lambda p: "EXIT=" in p.read_text(), "the app to exit", timeout=15)
