"""Hostile and broken clients close their own connection only; everyone else keeps being served."""

from __future__ import annotations

import socket
import ssl
import struct
import time
from concurrent.futures import ThreadPoolExecutor

import msgpack
import pytest

from jettui.api import CommandError
from jettui.errors import ConnectionLost, TrustError
from jettui.wire.framing import encode_frame
from tests.helpers import ServerThread, running_server


def raw_tls(port: int) -> ssl.SSLSocket:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return ctx.wrap_socket(sock)


def closed_by_server(sock: ssl.SSLSocket, timeout: float = 5.0) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(1024) == b""
    except (ConnectionError, ssl.SSLError):
        return True


def assert_still_serving(server: ServerThread) -> None:
    with server.api() as api:
        api.server.auth("alice", "alice-pw")
        assert api.server.echo("ok") == "ok"


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", id="garbage"),
        pytest.param(b"\xff\xff\xff\xff" + b"A" * 100, id="claims-4GiB"),
        pytest.param(struct.pack(">I", 5) + b"\xc1\xc1\xc1\xc1\xc1", id="invalid-msgpack"),
        pytest.param(encode_frame([1, 2, 3]), id="not-a-map"),
        pytest.param(encode_frame({"id": 1, "result": 1}), id="reply-to-server"),
    ],
)
def test_malformed_frames_close_that_connection_only(server: ServerThread, payload: bytes) -> None:
    with server.api() as bystander:
        bystander.server.auth("bob", "bob-pw")
        sock = raw_tls(server.port)
        sock.sendall(payload)
        assert closed_by_server(sock)
        sock.close()
        assert bystander.server.echo("unaffected") == "unaffected"
    assert_still_serving(server)


def test_truncated_frame_then_close(server: ServerThread) -> None:
    sock = raw_tls(server.port)
    frame = encode_frame({"id": 1, "method": "server.getServerInfo", "params": {}})
    sock.sendall(frame[:-4])
    sock.close()
    assert_still_serving(server)


def test_valid_raw_request_gets_answer(server: ServerThread) -> None:
    sock = raw_tls(server.port)
    sock.sendall(encode_frame({"id": 7, "method": "server.echo", "params": {"text": "x"}}))
    header = sock.recv(4)
    (length,) = struct.unpack(">I", header)
    body = b""
    while len(body) < length:
        body += sock.recv(length - len(body))
    reply = msgpack.unpackb(body)
    assert reply["id"] == 7 and "authentication required" in reply["error"]["message"]
    sock.close()


def test_silent_client_is_closed_after_login_grace() -> None:
    with running_server(login_grace=0.5) as st:
        sock = raw_tls(st.port)
        start = time.monotonic()
        assert closed_by_server(sock, timeout=5)
        assert 0.4 < time.monotonic() - start < 3
        sock.close()


def test_plain_tcp_without_tls_handshake_is_dropped() -> None:
    with running_server(handshake_timeout=0.5) as st:
        sock = socket.create_connection(("127.0.0.1", st.port), timeout=5)
        start = time.monotonic()
        assert sock.recv(10) == b""
        assert time.monotonic() - start < 3
        sock.close()


def test_two_hundred_connections_at_once(server: ServerThread) -> None:
    def one(i: int) -> str:
        with server.api() as api:
            api.server.auth("bob", "bob-pw")
            return api.server.echo(f"n{i}")

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(one, range(200)))
    assert results == [f"n{i}" for i in range(200)]
    assert_still_serving(server)


def test_unauthenticated_cap_per_address() -> None:
    with running_server(max_unauthenticated_per_address=5) as st:
        st.add_user("op", "op-pw")
        idle = [raw_tls(st.port) for _ in range(5)]
        try:
            # A 6th unauthenticated connection from the same address is refused...
            with pytest.raises((ConnectionLost, CommandError)), st.api() as api:
                api.server.auth("op", "op-pw")
        finally:
            for sock in idle:
                sock.close()
        time.sleep(0.2)
        # ...and once they go, the operator gets in.
        with st.api() as api:
            api.server.auth("op", "op-pw")
            assert api.server.echo("in") == "in"


def test_certificate_is_pinned_on_first_use_and_change_refused(server: ServerThread) -> None:
    api = server.api(fingerprint=None)  # use the known_servers file
    with api:
        assert api.first_contact
    with server.api(fingerprint=None) as again:
        assert not again.first_contact
    # A different server on the same endpoint: forge a stale pin and expect refusal.
    from jettui.api.trust import TrustStore

    store = TrustStore()
    store.pin(f"127.0.0.1:{server.port}", "00" * 32)
    with pytest.raises(TrustError, match="jettui trust --forget"):
        server.api(fingerprint=None).connect()
    assert store.forget(f"127.0.0.1:{server.port}")
    with server.api(fingerprint=None) as api:
        assert api.server.getServerInfo()["apiControlPort"] == server.port


def test_wrong_explicit_fingerprint_refused(server: ServerThread) -> None:
    with pytest.raises(TrustError, match="expected"):
        server.api(fingerprint="ab" * 32).connect()
