"""The `jettui server` and `jettui user` commands as an operator runs them."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from jettui.api import CommandError, connect
from jettui.server import Server, ServerConfig
from tests.helpers import free_port


def jettui(*args: str, env: dict[str, str] | None = None, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jettui", *args], capture_output=True, text=True, timeout=60,
        env={**os.environ, **(env or {})}, **kw,
    )  # fmt: skip


def start_daemon(state: Path, *extra: str) -> tuple[subprocess.Popen[str], int, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "jettui", "server", "--api-port", str(port), "--recv-port", "0",
         "--persistent-state-dir", str(state), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"SHA-256 ([0-9a-f]{64})", line)
    assert match, (line, proc.stderr.read() if proc.poll() is not None else "")  # type: ignore[union-attr]
    return proc, port, match.group(1)


def stop_daemon(proc: subprocess.Popen[str], sig: int | None = signal.SIGTERM) -> int:
    if sig is not None and proc.poll() is None:
        proc.send_signal(sig)
    proc.communicate(timeout=15)  # waits and closes the pipes
    return proc.returncode


def test_user_commands_and_daemon_lifecycle(tmp_path: Path) -> None:
    state = tmp_path / "state"
    pw = {"JETTUI_PASSWORD": "s3cret-pass"}
    assert (
        jettui("user", "add", "carol", "--group", "ops", "--persistent-state-dir", str(state), env=pw).returncode == 0
    )
    dup = jettui("user", "add", "carol", "--persistent-state-dir", str(state), env=pw)
    assert dup.returncode == 1 and "already exists" in dup.stderr
    bad = jettui("user", "add", "a/b", "--persistent-state-dir", str(state), env=pw)
    assert bad.returncode == 1 and "not allowed" in bad.stderr
    listing = jettui("user", "list", "--persistent-state-dir", str(state))
    assert "carol\tops" in listing.stdout

    proc, port, fingerprint = start_daemon(state, "--server-name", "alpha", "--superuser", "carol",
                                           "--incoming-rate-limit", "1000")  # fmt: skip
    try:
        with connect("127.0.0.1", port, fingerprint=fingerprint) as api:
            first = api.server.getServerInfo()
            assert first["serverName"] == "alpha"
            assert first["bandwidthLimits"]["incomingLimitActive"] is True
            assert first["bandwidthLimits"]["incomingRateLimit"] == 1000
            api.server.auth("carol", "s3cret-pass")
            api.server.superuser()
            assert api.server.getServerInfo()["configuration"]["persistentStateDir"] == str(state)
    finally:
        assert stop_daemon(proc) == 0  # SIGTERM stops it cleanly

    # Change the password and restart: identity persists, instance id does not.
    assert jettui("user", "passwd", "carol", "--persistent-state-dir", str(state),
                  env={"JETTUI_PASSWORD": "new-pass"}).returncode == 0  # fmt: skip
    proc, port, fingerprint2 = start_daemon(state)
    try:
        assert fingerprint2 == fingerprint
        with connect("127.0.0.1", port, fingerprint=fingerprint) as api:
            second = api.server.getServerInfo()
            with pytest.raises(CommandError):
                api.server.auth("carol", "s3cret-pass")
            api.server.auth("carol", "new-pass")
            with pytest.raises(CommandError, match="--superuser"):
                api.server.superuser()  # eligibility is a start option, not persisted
    finally:
        assert stop_daemon(proc) == 0
    assert second["serverUid"] == first["serverUid"]
    assert second["publicKey"] == first["publicKey"]
    assert second["serverId"] != first["serverId"]
    assert jettui("user", "del", "carol", "--persistent-state-dir", str(state)).returncode == 0


def test_terminate_stops_daemon(tmp_path: Path) -> None:
    state = tmp_path / "state"
    jettui("user", "add", "root-op", "--persistent-state-dir", str(state), env={"JETTUI_PASSWORD": "pw"})
    proc, port, fingerprint = start_daemon(state, "--superuser", "root-op")
    try:
        with connect("127.0.0.1", port, fingerprint=fingerprint) as api:
            api.server.auth("root-op", "pw")
            api.server.superuser()
            api.server.terminate()
        assert stop_daemon(proc, sig=None) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            stop_daemon(proc, sig=None)


def test_remote_api_host_needs_explicit_permission() -> None:
    with pytest.raises(CommandError, match="--api-allow-remote-control"):
        Server(ServerConfig(api_host="0.0.0.0", api_port=0))
    result = jettui("server", "--api-host", "0.0.0.0", "--api-port", "0")
    assert result.returncode == 1 and "--api-allow-remote-control" in result.stderr


def test_embedded_server_serves_its_owner() -> None:
    from jettui.server.embedded import EmbeddedServer

    with EmbeddedServer() as info, connect(info.host, info.port, fingerprint=info.fingerprint, trust=False) as api:
        api.server.auth(info.user, info.secret)
        assert api.server.getServerInfo()["user"]["sandboxed"] is False
        roots = api.server.getRequestResult(api.server.lsRootsAsync())
        assert [f["name"] for f in roots["files"]] == ["/"]
        with pytest.raises(CommandError):
            api.server.auth(info.user, "not-the-secret")


def test_state_schema_is_versioned(tmp_path: Path) -> None:
    from jettui.server.state import MIGRATIONS, StateStore

    store = StateStore(tmp_path)
    assert store.schema_version == len(MIGRATIONS)
    store.close()
    again = StateStore(tmp_path)  # reopening applies nothing twice
    assert again.schema_version == len(MIGRATIONS)
    again.close()
