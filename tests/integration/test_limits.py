"""Resource limits of the control plane, each exercised and each named in its error or log:
unauthenticated caps (global and per address), login grace, frame size before login,
requests in flight per connection, idle and slow-sender timeouts, huge directories, symbolic
link loops, and an operator getting in while thousands of hostile connections are open.
"""

from __future__ import annotations

import logging
import os
import resource
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from jettui.api import CommandError
from jettui.errors import ConnectionLost
from jettui.server import fsview
from jettui.server.fsview import FileSystemView
from jettui.wire.framing import encode_frame
from tests.helpers import ServerThread, running_server
from tests.integration.test_bad_input import closed_by_server, raw_tls


def _closed_within(sock: socket.socket, seconds: float) -> float:
    """Seconds until the server closed ``sock`` (fails after ``seconds``)."""
    start = time.monotonic()
    assert closed_by_server(sock, timeout=seconds)  # type: ignore[arg-type]
    return time.monotonic() - start


def _log_names(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return any(text in record.getMessage() for record in caplog.records)


# -- unauthenticated connections ------------------------------------------------------


def test_global_unauthenticated_cap_is_named_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="jettui.server")
    with running_server(max_unauthenticated=3) as st:
        st.add_user("op", "op-pw")
        idle = [raw_tls(st.port) for _ in range(3)]
        time.sleep(0.2)
        try:
            fourth = raw_tls(st.port)
            assert _closed_within(fourth, 5) < 5
            fourth.close()
            assert _log_names(caplog, "max_unauthenticated=3")
        finally:
            for sock in idle:
                sock.close()
        time.sleep(0.3)
        with st.api() as api:
            api.server.auth("op", "op-pw")
            # Logged-in connections do not count against the cap.
            more = [raw_tls(st.port) for _ in range(3)]
            try:
                assert api.server.echo("in") == "in"
            finally:
                for sock in more:
                    sock.close()


def test_per_address_cap_is_named_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="jettui.server")
    with running_server(max_unauthenticated_per_address=2) as st:
        idle = [raw_tls(st.port) for _ in range(2)]
        time.sleep(0.2)
        try:
            third = raw_tls(st.port)
            _closed_within(third, 5)
            third.close()
        finally:
            for sock in idle:
                sock.close()
        assert _log_names(caplog, "max_unauthenticated_per_address=2")


def test_login_grace_is_absolute_even_for_a_chatty_client(caplog: pytest.LogCaptureFixture) -> None:
    """Requests that do not log in (getServerInfo every 0.2 s) do not extend the grace."""
    caplog.set_level(logging.INFO, logger="jettui.server")
    with running_server(login_grace=1.0) as st:
        sock = raw_tls(st.port)
        sock.settimeout(0.5)
        start = time.monotonic()
        closed = False
        for i in range(40):
            try:
                sock.sendall(encode_frame({"id": i + 1, "method": "server.getServerInfo", "params": {}}))
                while sock.recv(65536):
                    pass
            except (TimeoutError, ssl.SSLError, ConnectionError):
                pass
            else:
                closed = True  # recv returned b"": the server closed
                break
            time.sleep(0.2)
        elapsed = time.monotonic() - start
        sock.close()
        assert closed and 0.9 < elapsed < 3.0, elapsed
        assert _log_names(caplog, "login_grace=1s")


def test_login_grace_then_idle_timeout_after_login(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="jettui.server")
    with running_server(login_grace=0.6, idle_timeout=1.5) as st:
        st.add_user("op", "op-pw")
        with st.api() as api:
            api.server.auth("op", "op-pw")
            time.sleep(1.0)  # past the grace, within the idle timeout: still open
            assert api.server.echo("alive") == "alive"
            time.sleep(2.2)  # silent past the idle timeout: closed
            with pytest.raises(ConnectionLost):
                api.server.echo("gone")
        assert _log_names(caplog, "idle_timeout=1.5s")


def test_frame_larger_than_the_unauthenticated_limit_closes(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="jettui.server")
    with running_server(max_unauthenticated_frame=4096) as st:
        st.add_user("op", "op-pw")
        sock = raw_tls(st.port)
        sock.sendall((8192).to_bytes(4, "big"))  # only the claim: refused before the body
        _closed_within(sock, 5)
        sock.close()
        assert _log_names(caplog, "exceeds the 4096-byte limit")
        # After login the full limit applies: a 100 KB request is fine.
        with st.api() as api:
            api.server.auth("op", "op-pw")
            assert api.server.echo("y" * 100_000) == "y" * 100_000


def test_slow_sender_one_byte_a_second_is_cut_off(caplog: pytest.LogCaptureFixture) -> None:
    """A logged-in client that trickles a frame one byte at a time (each byte well within the
    idle timeout) is closed once the frame has taken frame_timeout."""
    caplog.set_level(logging.INFO, logger="jettui.server")
    with running_server(frame_timeout=2.0, idle_timeout=30) as st:
        st.add_user("op", "op-pw")
        with st.api() as api:
            api.server.auth("op", "op-pw")
            frame = encode_frame({"id": 99, "method": "server.echo", "params": {"text": "x" * 50}})
            api.add_notification_handler(lambda method, params: None)  # a listener notices the close
            start = time.monotonic()
            sent = 0
            while api.connected and sent < len(frame) and time.monotonic() - start < 10:
                api.client.send_data(frame[sent : sent + 1])
                sent += 1
                time.sleep(0.25)
            elapsed = time.monotonic() - start
            assert not api.connected and sent < len(frame)
            assert 1.5 < elapsed < 4.0, elapsed
        assert _log_names(caplog, "frame_timeout=2s")


def test_slow_sender_before_login_is_cut_off_by_the_grace() -> None:
    with running_server(login_grace=1.5) as st:
        sock = raw_tls(st.port)
        frame = encode_frame({"id": 1, "method": "server.authAsync", "params": {"userName": "u" * 200}})
        start = time.monotonic()
        sock.settimeout(0.01)
        for byte in frame:
            try:
                sock.sendall(bytes([byte]))
                if sock.recv(1) == b"":
                    break
            except TimeoutError:
                pass
            except (ssl.SSLError, ConnectionError):
                break
            time.sleep(0.2)
        elapsed = time.monotonic() - start
        sock.close()
        assert elapsed < 3.0, elapsed


def test_requests_in_flight_per_connection(server: ServerThread) -> None:
    assert server.server is not None
    server.server.config.max_requests_per_connection = 4
    with server.api() as api:
        api.server.auth("bob", "bob-pw")
        results: list[object] = []

        def sleep() -> None:
            try:
                results.append(api.server.sleep(300))
            except CommandError as exc:
                results.append(exc)

        threads = [threading.Thread(target=sleep) for _ in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        refused = [r for r in results if isinstance(r, CommandError)]
        assert len(refused) == 6 and all("max_requests_per_connection=4" in r.message for r in refused)
        assert results.count(None) == 4
        assert api.server.echo("after") == "after"


# -- huge directories and symbolic link loops -------------------------------------------------


def _fill(directory: Path, count: int) -> None:
    directory.mkdir()
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in range(count):
            os.close(os.open(f"f{i:07d}", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
    finally:
        os.close(fd)


def _scratch(tmp_path: Path) -> Path:
    if os.access("/dev/shm", os.W_OK):
        import tempfile

        return Path(tempfile.mkdtemp(prefix="jettui-limits-", dir="/dev/shm"))
    return tmp_path


def _big_directory(tmp_path: Path, count: int) -> None:
    import shutil

    base = _scratch(tmp_path)
    try:
        _fill(base / "big", count)
        with running_server(sandbox_dir=base) as st:
            st.add_user("op", "op-pw")
            with st.api(timeout=600) as api:
                api.server.auth("op", "op-pw")
                start = time.monotonic()
                listing = api.server.getRequestResult(api.server.lsAsync("/big"))
                elapsed = time.monotonic() - start
                assert len(listing["files"]) == count
                assert api.server.duAsync  # the connection is still good
                print(f"\nls of {count} entries: {elapsed:.1f} s")
            # Over the limit: refused with the limit named, before the memory is spent.
            assert st.server is not None
            st.server.config.max_ls_entries = count - 1  # the --max-ls-entries option; new sessions see it
            with st.api() as api:
                api.server.auth("op", "op-pw")
                with pytest.raises(CommandError, match=f"max_ls_entries={count - 1}"):
                    api.server.getRequestResult(api.server.lsAsync("/big"))
    finally:
        if base != tmp_path:
            shutil.rmtree(base, ignore_errors=True)


def test_directory_of_50_000_entries(tmp_path: Path) -> None:
    _big_directory(tmp_path, 50_000)


@pytest.mark.slow
def test_directory_of_1_000_000_entries(tmp_path: Path) -> None:
    _big_directory(tmp_path, 1_000_000)


def test_ls_entry_limit_is_an_option_of_the_view(tmp_path: Path) -> None:
    _fill(tmp_path / "d", 20)
    with FileSystemView({"": str(tmp_path)}, max_entries=10) as view:
        with pytest.raises(CommandError, match="more than 10 entries .*max_ls_entries=10"):
            view.ls("/d")
        assert len(view.ls("/")["files"]) == 1
    with FileSystemView({"": str(tmp_path)}) as view:
        assert view.max_entries == fsview.MAX_LS_ENTRIES == 2_000_000
        assert len(view.ls("/d")["files"]) == 20


def test_symlink_loops_under_du_and_rm(tmp_path: Path) -> None:
    root = tmp_path / "box"
    (root / "tree" / "a" / "b").mkdir(parents=True)
    (root / "tree" / "a" / "b" / "data").write_bytes(b"x" * 1000)
    (root / "tree" / "a" / "b" / "loop").symlink_to("../..")  # a loop through the tree
    (root / "tree" / "self").symlink_to("self")  # a link to itself
    (root / "tree" / "up").symlink_to("..")
    (root / "tree" / "abs").symlink_to(str(root))
    canary = tmp_path / "canary"
    canary.write_bytes(b"keep")
    with running_server(sandbox_dir=root) as st:
        st.add_user("op", "op-pw")
        with st.api() as api:
            api.server.auth("op", "op-pw")
            assert api.server.getRequestResult(api.server.duAsync("/tree")) == {"du": 1000}
            with pytest.raises(CommandError, match="symbolic link"):
                api.server.getRequestResult(api.server.lsAsync("/tree/self"))
            api.server.getRequestResult(api.server.rmAsync("/tree"))
            assert not (root / "tree").exists()
    assert canary.read_bytes() == b"keep" and root.is_dir()


# -- the operator gets in while thousands of hostile connections are open ----------------------

HOSTILE = textwrap.dedent(
    """
    import resource, socket, sys, time
    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    port, count = int(sys.argv[1]), int(sys.argv[2])
    # The first bytes of a TLS ClientHello: a handshake started and never finished.
    hello = bytes.fromhex("16030100c8010000c40303") + bytes(32)
    socks = []
    for i in range(count):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00")
        s.bind(("127.0.0.2", 0))  # hostile traffic from its own address
        s.connect(("127.0.0.1", port))
        if i % 2:
            s.send(hello)
        socks.append(s)
    print("open", len(socks), flush=True)
    sys.stdin.read()  # hold them until told to go
    """
)


def _operator_under_siege(tmp_path: Path, count: int) -> float:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < count + 1000:
        pytest.skip(f"the fd limit ({hard}) is below {count + 1000}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        (tmp_path / "box").mkdir()
        (tmp_path / "box" / "file").write_bytes(b"x")
        with running_server(sandbox_dir=tmp_path / "box", handshake_timeout=120, login_grace=120) as st:
            st.add_user("op", "op-pw")
            hostile = subprocess.Popen(
                [sys.executable, "-c", HOSTILE, str(st.port), str(count)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                assert hostile.stdout is not None
                assert hostile.stdout.readline().split() == ["open", str(count)]
                deadline = time.monotonic() + 15  # a loaded machine accepts the backlog slowly
                while (held := len(os.listdir("/proc/self/fd"))) <= count and time.monotonic() < deadline:
                    time.sleep(0.1)
                assert held > count, f"the server holds only {held} descriptors"
                start = time.monotonic()
                with st.api(timeout=60) as api:
                    api.server.auth("op", "op-pw")
                    listing = api.server.getRequestResult(api.server.lsAsync("/"))
                elapsed = time.monotonic() - start
                assert [f["name"] for f in listing["files"]] == ["file"]
            finally:
                assert hostile.stdin is not None
                hostile.stdin.close()
                hostile.wait(timeout=60)
                if hostile.stdout is not None:
                    hostile.stdout.close()
        print(f"\noperator connect+auth+ls with {count} hostile connections open: {elapsed:.2f} s")
        return elapsed
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_operator_gets_in_past_1000_hostile_connections(tmp_path: Path) -> None:
    assert _operator_under_siege(tmp_path, 1000) < 10


@pytest.mark.slow
def test_operator_gets_in_past_10000_hostile_connections(tmp_path: Path) -> None:
    assert _operator_under_siege(tmp_path, 10_000) < 20
