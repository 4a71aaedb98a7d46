"""The spine's ServerInterface methods, called through jettui.api exactly as a script would."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import pytest

from jettui.api import APIInterface, CommandError, JetStream
from jettui.constants import API_VERSION, LS_TYPE_DIRECTORY, LS_TYPE_REGULAR, LS_TYPE_ROOT
from jettui.errors import AuthenticationError, TimeoutError_
from tests.helpers import ServerThread

SERVER_INFO_KEYS = {
    "allowRemoteControl", "apiControlPort", "APITokensAvailable", "apiVersion", "authRequired",
    "bandwidthLimits", "certificateValidation", "encryptionAvailable", "eventLogAvailable", "hostName",
    "license", "minCipher", "multiplexAvailable", "publicKey", "receiver", "revision",
    "serverExternalAddress", "serverId", "serverName", "serverPlatform", "serverTime", "serverUid",
    "sharedTokensAvailable", "user", "version",
}  # fmt: skip
RECEIVER_KEYS = {
    "authRequired", "encryptionEnabled", "onlyAuthorizedClientsAllowed", "receiverIP", "receiverPort",
    "relayIP", "relayPort", "socketRecvBufferSize", "socketSendBufferSize",
}  # fmt: skip
BANDWIDTH_KEYS = {
    "borrowIncoming", "borrowOutgoing", "incomingLimitActive", "incomingMaxConnections",
    "incomingRateLimit", "outgoingLimitActive", "outgoingRateLimit",
}  # fmt: skip
USER_KEYS = {"authed", "permissions", "sandboxed", "superuser", "token", "tokenSession", "userName"}


@pytest.fixture
def api(server: ServerThread):
    with server.api() as api:
        api.server.auth("alice", "alice-pw")
        yield api


def result(api: APIInterface, request: dict) -> object:
    return api.server.getRequestResult(request)


# -- seed examples ------------------------------------------------------------------------------
def test_seed_auth_example(server: ServerThread) -> None:
    api = JetStream().api("127.0.0.1", server.port, fingerprint=server.server.fingerprint)
    api.connect()
    try:
        assert api.server.auth("alice", "alice-pw") is None
        request = api.server.authAsync("bob", "bob-pw")
        assert set(request) >= {"requestId"} and isinstance(request["requestId"], int)
        assert api.server.getRequestResult(request) is None
        status = api.server.getRequestStatus(request["requestId"])
        assert status["status"] == "success" and status["processing"] is False
        assert api.server.getServerInfo()["user"]["userName"] == "bob"
    finally:
        api.disconnect()


def test_server_info_unauthenticated_has_every_key(server: ServerThread) -> None:
    with server.api() as api:
        info = api.server.getServerInfo()
    assert set(info) >= SERVER_INFO_KEYS
    assert set(info["receiver"]) >= RECEIVER_KEYS
    assert set(info["bandwidthLimits"]) >= BANDWIDTH_KEYS
    assert set(info["user"]) >= USER_KEYS
    assert set(info["license"]) >= {"valid", "expiry", "errorMessage"}
    assert info["apiVersion"] == API_VERSION
    assert info["user"]["authed"] is False and info["user"]["sandboxed"] is None
    assert "configuration" not in info
    assert info["certificateValidation"] > 3000
    assert abs(info["serverTime"] - time.time() * 1e6) < 60e6  # microseconds
    assert len(bytes.fromhex(info["publicKey"])) == 32


def test_server_info_configuration_only_for_superuser(api: APIInterface) -> None:
    assert "configuration" not in api.server.getServerInfo()
    api.server.superuser()
    info = api.server.getServerInfo()
    assert info["user"]["superuser"] is True
    assert set(info["configuration"]) >= {
        "cloudFileCache",
        "garbageCollect",
        "persistentStateDir",
        "triggersAvailable",
    }


def test_everything_but_info_and_auth_needs_authentication(server: ServerThread) -> None:
    with server.api() as api:
        for call in (
            lambda: api.server.echo("x"),
            lambda: api.server.lsRootsAsync(),
            lambda: api.server.lsAsync("/"),
            lambda: api.server.sleep(1),
            lambda: api.server.superuser(),
            lambda: api.server.getThirdPartyLicenses(),
            lambda: api.server.terminate(),
        ):
            with pytest.raises(AuthenticationError, match="authentication required"):
                call()


def test_wrong_password_and_unknown_user(server: ServerThread) -> None:
    with server.api() as api:
        with pytest.raises(CommandError, match="wrong user name or password"):
            api.server.auth("alice", "nope")
        with pytest.raises(CommandError, match="wrong user name or password"):
            api.server.auth("mallory", "nope")
        api.server.auth("alice", "alice-pw")
        assert api.server.echo("in") == "in"


def test_repeated_failures_are_slowed_down(server: ServerThread) -> None:
    with server.api() as api:
        durations = []
        for _ in range(6):
            start = time.perf_counter()
            with pytest.raises(CommandError):
                api.server.auth("alice", "wrong")
            durations.append(time.perf_counter() - start)
    # base 50 ms doubling: the 6th failure waits 0.05 * 2**4 = 0.8 s before checking.
    assert durations[-1] > durations[0] + 0.5


def test_echo_and_sleep(api: APIInterface) -> None:
    assert api.server.echo() is None
    assert api.server.echo("héllo") == "héllo"
    start = time.perf_counter()
    assert api.server.sleep(150) is None
    assert time.perf_counter() - start >= 0.15
    with pytest.raises(CommandError, match="must not be negative"):
        api.server.sleep(-1)


def test_superuser_and_terminate_need_eligibility(server: ServerThread) -> None:
    with server.api() as api:
        api.server.auth("bob", "bob-pw")
        with pytest.raises(CommandError, match="not eligible"):
            api.server.superuser()
        with pytest.raises(CommandError, match="requires superuser"):
            api.server.terminate()


def test_third_party_licenses(api: APIInterface) -> None:
    licenses = api.server.getThirdPartyLicenses()
    assert any(name.startswith("cryptography ") for name in licenses)
    assert any(name.startswith("msgpack ") for name in licenses)
    assert all(isinstance(text, str) for text in licenses.values())


# -- requests ------------------------------------------------------------------------------------
def test_request_status_and_result_accept_int_or_dict(api: APIInterface, tmp_path: Path) -> None:
    tmp_path = tmp_path / "empty"
    tmp_path.mkdir()
    request = api.server.duAsync(str(tmp_path))
    assert request["status"] in ("pending", "success")
    assert api.server.getRequestResult(request["requestId"]) == {"du": 0}
    assert api.server.getRequestResult(request) == {"du": 0}
    assert api.server.getRequestStatus(request)["status"] == "success"


def test_unknown_request(api: APIInterface) -> None:
    with pytest.raises(CommandError, match="not found"):
        api.server.getRequestStatus(987654)
    with pytest.raises(CommandError, match="requestId must be"):
        api.server.getRequestResult({"nope": 1})


def test_failed_request_reports_error(api: APIInterface, tmp_path: Path) -> None:
    request = api.server.lsAsync(str(tmp_path / "missing"))
    with pytest.raises(CommandError, match="missing"):
        api.server.getRequestResult(request)
    status = api.server.getRequestStatus(request)
    assert status["status"] == "error" and "missing" in status["errorMessage"]


def test_requests_belong_to_their_owner(server: ServerThread, tmp_path: Path) -> None:
    tmp_path = tmp_path / "empty"
    tmp_path.mkdir()
    with server.api() as a, server.api() as b:
        a.server.auth("alice", "alice-pw")
        b.server.auth("bob", "bob-pw")
        request = a.server.duAsync(str(tmp_path))
        with pytest.raises(CommandError, match="not found"):
            b.server.getRequestStatus(request)
        assert a.server.getRequestResult(request) == {"du": 0}


def test_long_request_delays_nothing(server: ServerThread) -> None:
    with server.api() as a, server.api() as b:
        a.server.auth("alice", "alice-pw")
        b.server.auth("bob", "bob-pw")
        sleeper = threading.Thread(target=a.server.sleep, args=(1500,))
        sleeper.start()
        time.sleep(0.1)
        start = time.perf_counter()
        assert a.server.echo("same connection") == "same connection"
        assert b.server.echo("other connection") == "other connection"
        assert time.perf_counter() - start < 0.5
        sleeper.join()


# -- files ---------------------------------------------------------------------------------------
def test_ls_roots_and_ls(api: APIInterface, tmp_path: Path) -> None:
    roots = result(api, api.server.lsRootsAsync())
    assert roots["path"] == ""
    assert [f["type"] for f in roots["files"]] == [LS_TYPE_ROOT]
    (tmp_path / "dir").mkdir()
    (tmp_path / "file.bin").write_bytes(b"x" * 1000)
    listing = result(api, api.server.lsAsync(str(tmp_path)))
    assert listing["path"] == str(tmp_path)
    by_name = {f["name"]: f for f in listing["files"]}
    assert by_name["dir"]["type"] == LS_TYPE_DIRECTORY and by_name["dir"]["size"] == 0
    entry = by_name["file.bin"]
    assert entry["type"] == LS_TYPE_REGULAR and entry["size"] == 1000
    assert entry["mtimeus"] // 1_000_000 == entry["mtime"]
    assert set(entry) >= {"name", "type", "size", "mtime", "mtimeus", "access", "hash"}


def test_ls_with_hashes_and_stat(api: APIInterface, tmp_path: Path) -> None:
    data = os.urandom(70_000)
    (tmp_path / "f").write_bytes(data)
    listing = result(api, api.server.lsAsync(str(tmp_path), calculateHashType="MD5"))
    assert listing["files"][0]["hash"] == hashlib.md5(data).hexdigest()
    stat = result(api, api.server.lsAsync(str(tmp_path / "f"), directory=True))
    assert stat["files"][0]["size"] == 70_000
    with pytest.raises(CommandError, match="calculateHashType must be one of"):
        api.server.lsAsync(str(tmp_path), calculateHashType="SHA1")
    lists = result(api, api.server.lsListAsync([str(tmp_path), str(tmp_path / "f")], statOnly=True))
    assert len(lists) == 2


def test_mkdir_mkfile_mv_rm_du(api: APIInterface, tmp_path: Path) -> None:
    base = tmp_path / "a"
    result(api, api.server.mkdirAsync(str(base / "b" / "c")))
    assert (base / "b" / "c").is_dir()
    result(api, api.server.mkdirAsync(str(base / "b" / "c")))  # existing directory is fine
    result(api, api.server.mkFileAsync(str(base / "f.bin"), 4096, fillRandom=True))
    assert (base / "f.bin").stat().st_size == 4096
    assert result(api, api.server.duAsync(str(base))) == {"du": 4096}
    result(api, api.server.mvAsync(str(base / "f.bin"), str(base / "b" / "g.bin")))
    assert (base / "b" / "g.bin").exists() and not (base / "f.bin").exists()
    result(api, api.server.rmAsync(str(base / "b")))
    assert not (base / "b").exists()


def test_file_operation_errors(api: APIInterface, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    (tmp_path / "other").write_text("y")
    with pytest.raises(CommandError, match="(?i)no such|not exist|not found"):
        result(api, api.server.lsAsync(str(tmp_path / "nope")))
    with pytest.raises(CommandError):
        result(api, api.server.mkdirAsync(str(tmp_path / "file")))
    with pytest.raises(CommandError):
        result(api, api.server.mvAsync(str(tmp_path / "file"), str(tmp_path / "other")))
    assert (tmp_path / "other").read_text() == "y"
    with pytest.raises(CommandError):
        result(api, api.server.rmAsync("/"))
    with pytest.raises(CommandError, match="must not be negative"):
        api.server.mkFileAsync(str(tmp_path / "neg"), -1)


# -- argument checking -------------------------------------------------------------------------------
def test_wrong_types_and_missing_parameters_client_side(api: APIInterface) -> None:
    with pytest.raises(CommandError, match="'path' must be str"):
        api.server.lsAsync(42)
    with pytest.raises(CommandError, match="missing required parameter 'path'"):
        api.server.lsAsync()
    with pytest.raises(CommandError, match="unknown parameter 'bogus'"):
        api.server.echo(bogus=1)


def test_wrong_types_unknown_method_server_side(api: APIInterface) -> None:
    request = api.client.request
    with pytest.raises(CommandError, match="unknown method 'server.nope'"):
        request("server.nope", {})
    with pytest.raises(CommandError, match="'path' must be str"):
        request("server.lsAsync", {"path": 1})
    with pytest.raises(CommandError, match="missing required parameter 'milliseconds'"):
        request("server.sleep", {})
    with pytest.raises(CommandError, match="unknown parameter"):
        request("server.echo", {"text": "a", "extra": True})
    assert api.server.echo("still serving") == "still serving"


def test_async_errors_keep_their_class(server: ServerThread) -> None:
    with server.api() as api, pytest.raises(AuthenticationError, match="wrong user name or password"):
        api.server.auth("alice", "wrong")


# -- the synchronous client's own driver -------------------------------------------------------
def test_a_late_reply_after_a_timeout_is_dropped_and_the_connection_goes_on(api: APIInterface) -> None:
    with pytest.raises(TimeoutError_, match="no answer"):
        api.client.request("server.sleep", {"milliseconds": 400}, timeout=0.1)
    time.sleep(0.5)  # the late reply arrives while nobody waits for it
    assert api.server.echo("next") == "next"
    assert api.client._replies == {} and api.client._abandoned == set()


def test_threads_share_one_synchronous_connection(api: APIInterface) -> None:
    """Calls from several threads interleave on one connection: each gets its own answer,
    whichever thread happens to read it."""
    failures: list[str] = []

    def worker(n: int) -> None:
        for i in range(50):
            text = f"{n}-{i}"
            if api.server.echo(text) != text:
                failures.append(text)
            if i % 10 == 0:
                api.server.sleep(5)  # a slower call keeps others waiting on this one's reader

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not failures and not any(t.is_alive() for t in threads)
