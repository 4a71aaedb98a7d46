"""Administration through jettui.api against real servers: tokens, sandboxes, wranglers,
event log, garbage collection, bandwidth, license, address, discovery, triggers, persistence."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import pytest

from jettui.api import APIInterface, CommandError
from jettui.constants import PERMISSION_BROWSE
from jettui.errors import ConnectionLost
from jettui.server.config import BandwidthOptions
from tests.helpers import ServerThread, running_server


def su(server: ServerThread) -> APIInterface:
    api = server.api().connect()
    api.server.auth("alice", "alice-pw")
    api.server.superuser()
    return api


def ls(api: APIInterface, path: str) -> list[str]:
    return sorted(f["name"] for f in api.server.getRequestResult(api.server.lsAsync(path))["files"])


# -- API tokens -----------------------------------------------------------
def test_token_acts_as_owner_confined_to_path(server: ServerThread, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "inside.txt").write_text("in")
    (tmp_path / "outside.txt").write_text("out")
    with server.api() as bob:
        bob.server.auth("bob", "bob-pw")
        created = bob.server.createAPIToken(path=str(shared), description="share", timeLimitSeconds=60)
    assert created["path"] == str(shared) and created["owner"] == "bob" and "." in created["token"]
    with server.api() as tok:
        tok.server.authToken(created["token"])
        info = tok.server.getServerInfo()["user"]
        assert info["token"] == created["tokenId"] and info["userName"] is None and info["sandboxed"] is True
        assert ls(tok, "/") == ["inside.txt"]
        with pytest.raises(CommandError):
            tok.server.getRequestResult(tok.server.lsAsync("/../outside.txt"))


def test_token_whose_directory_is_gone_says_so_at_login(server: ServerThread, tmp_path: Path) -> None:
    shared = tmp_path / "gone"
    shared.mkdir()
    with server.api() as bob:
        bob.server.auth("bob", "bob-pw")
        token = bob.server.createAPIToken(path=str(shared))["token"]
    shared.rmdir()
    with server.api() as tok, pytest.raises(CommandError, match=f"confined to {shared}, which cannot be opened"):
        tok.server.authToken(token)
    shared.mkdir()  # a directory of that name again: the token works again
    with server.api() as tok:
        tok.server.authToken(token)
        assert ls(tok, "/") == []


def test_token_permissions_restrict_methods(server: ServerThread, tmp_path: Path) -> None:
    with server.api() as bob:
        bob.server.auth("bob", "bob-pw")
        browse_only = bob.server.createAPIToken(permissions=int(PERMISSION_BROWSE))
    with server.api() as tok:
        tok.server.authToken(browse_only["token"])
        assert ls(tok, str(tmp_path)) is not None
        with pytest.raises(CommandError, match="WRITE permission"):
            tok.server.mkdirAsync(str(tmp_path / "new"))
        with pytest.raises(CommandError, match="MANAGE_TOKENS"):
            tok.server.createAPIToken()
    assert not (tmp_path / "new").exists()


def test_token_password_expiry_and_bad_strings(server: ServerThread) -> None:
    with server.api() as bob:
        bob.server.auth("bob", "bob-pw")
        with_pw = bob.server.createAPIToken(password="tokpw")
        short = bob.server.createAPIToken(timeLimitSeconds=0.3)
        with pytest.raises(CommandError, match="timeLimitSeconds must be positive"):
            bob.server.createAPIToken(timeLimitSeconds=-5)
        with pytest.raises(CommandError, match="unknown bits"):
            bob.server.createAPIToken(permissions=1 << 20)
    with server.api() as tok:
        with pytest.raises(CommandError):
            tok.server.authToken(with_pw["token"], password="wrong")
        tok.server.authToken(with_pw["token"], password="tokpw")
    time.sleep(0.4)
    with server.api() as tok:
        with pytest.raises(CommandError, match="expired"):
            tok.server.authToken(short["token"])
        for bad in ("", "x" * 50_000, "nodot", with_pw["tokenId"], with_pw["token"] + "x", "\x00.\x00"):
            with pytest.raises(CommandError):
                tok.server.authToken(bad, password="tokpw")
    with server.api() as tok, pytest.raises(ConnectionLost):
        tok.server.authToken("x" * 100_000)  # a frame over the pre-login limit closes the connection


def test_token_listing_update_delete_and_visibility(server: ServerThread) -> None:
    with server.api() as bob, su(server) as alice:
        bob.server.auth("bob", "bob-pw")
        t1 = bob.server.createAPIToken(description="one")
        mine = bob.server.getAPITokens()
        assert [t["tokenId"] for t in mine] == [t1["tokenId"]]
        assert all("." not in t["token"] for t in mine)  # the secret is never shown again
        bob.server.updateAPIToken(t1, description="renamed", timeLimitSeconds=100)
        got = bob.server.getAPIToken(t1["token"])
        assert got["description"] == "renamed" and got["expiryTime"] is not None
        assert len(alice.server.getAPITokens(limit=10)) >= 1  # a superuser is a wrangler: sees all
        alice_token = alice.server.createAPIToken()
        with pytest.raises(CommandError, match="not found"):
            bob.server.getAPIToken(alice_token["tokenId"])
        bob.server.deleteAPIToken(t1["tokenId"])
        with pytest.raises(CommandError, match="not found"):
            bob.server.getAPIToken(t1)


def test_deleted_token_session_keeps_running(server: ServerThread, tmp_path: Path) -> None:
    with server.api() as bob:
        bob.server.auth("bob", "bob-pw")
        token = bob.server.createAPIToken()
        with server.api() as tok:
            tok.server.authToken(token["token"])
            bob.server.deleteAPIToken(token)
            assert tok.server.echo("still here") == "still here"
            with server.api() as again, pytest.raises(CommandError):
                again.server.authToken(token["token"])


# -- sandboxes ------------------------------------------------------------
def test_sandbox_mappings_apply_to_new_sessions(server: ServerThread, tmp_path: Path) -> None:
    data, scratch = tmp_path / "data", tmp_path / "scratch"
    data.mkdir()
    scratch.mkdir()
    (data / "d.txt").write_text("d")
    (scratch / "s.txt").write_text("s")
    with su(server) as alice, server.api() as old_bob:
        old_bob.server.auth("bob", "bob-pw")
        alice.server.setSandboxMapping("bob", {"": str(data), "scratch": {"type": "File", "path": str(scratch)}})
        assert alice.server.getSandboxMappings()["bob"]["scratch"] == str(scratch)
        assert old_bob.server.getServerInfo()["user"]["sandboxed"] is False  # existing session unchanged
        with server.api() as bob:
            bob.server.auth("bob", "bob-pw")
            roots = bob.server.getRequestResult(bob.server.lsRootsAsync())
            assert sorted(f["name"] for f in roots["files"]) == ["/", "scratch"]
            assert ls(bob, "/") == ["d.txt"]
            assert ls(bob, "scratch:/") == ["s.txt"]
            with pytest.raises(CommandError, match="/etc"):  # re-rooted: /etc means data/etc
                ls(bob, "/etc")
        alice.server.deleteSandboxMapping("bob")
        with pytest.raises(CommandError, match="no sandbox mapping"):
            alice.server.deleteSandboxMapping("bob")


def test_system_sandbox_placeholders_and_false(server: ServerThread, tmp_path: Path) -> None:
    homes = tmp_path / "homes"
    with su(server) as alice:
        alice.server.setSandboxMapping("", {"": str(homes) + "/%u"})
        alice.server.setSandboxMapping("alice", False)
        with server.api() as bob:
            bob.server.auth("bob", "bob-pw")
            bob.server.getRequestResult(bob.server.mkdirAsync("/mine"))
        assert (homes / "bob" / "mine").is_dir()
        with server.api() as alice2:
            alice2.server.auth("alice", "alice-pw")
            assert alice2.server.getServerInfo()["user"]["sandboxed"] is False


@pytest.mark.parametrize(
    "user, roots, match",
    [
        ("bob", {"a:b": "/tmp"}, "contains ':'"),
        ("bob", {"a/b": "/tmp"}, "contains '/'"),
        ("bob", {"a\x00": "/tmp"}, "contains"),
        ("bob", {"": "/tmp/%u"}, "only allowed in the system sandbox"),
        ("", {"": "/tmp/%x"}, "unknown placeholder"),
        ("bob", {"": ""}, "non-empty"),
        ("bob", {"": "relative/path"}, "absolute"),
        ("bob", {}, "empty"),
        ("bob", {"": {"type": "S3", "path": "/x"}}, "not supported"),
        ("bo/b", {"": "/tmp"}, "not allowed"),
    ],
)
def test_bad_sandbox_mappings(server: ServerThread, user: str, roots: dict, match: str) -> None:
    with su(server) as alice, pytest.raises(CommandError, match=match):
        alice.server.setSandboxMapping(user, roots)


# -- wranglers ------------------------------------------------------------
def test_wranglers(server: ServerThread) -> None:
    with su(server) as alice, server.api() as bob:
        bob.server.auth("bob", "bob-pw")
        with pytest.raises(CommandError, match="has not been given wrangler"):
            bob.server.wrangler()
        alice.server.getRequestResult(alice.server.addWranglerAsync("staff", isGroup=True))
        wranglers = alice.server.getWranglers()
        assert [g["name"] for g in wranglers["groups"]] == ["staff"]
        bob.server.wrangler()
        with pytest.raises(CommandError, match="requires superuser"):
            bob.server.getWranglers()
        gid = wranglers["groups"][0]["id"]
        alice.server.deleteWrangler(str(gid), isGroup=True)
        with pytest.raises(CommandError, match="is not a wrangler"):
            alice.server.deleteWrangler(gid, isGroup=True)
        with pytest.raises(CommandError, match="no such user"):
            alice.server.getRequestResult(alice.server.addWranglerAsync("nobody"))
        alice_uid = next(u.uid for u in server.server.users.list() if u.name == "alice")
        with pytest.raises(CommandError, match="superuser and cannot be removed"):
            alice.server.deleteWrangler(alice_uid)


# -- event log ------------------------------------------------------------
def test_event_log_and_live_notifications(server: ServerThread) -> None:
    received: list[dict] = []
    arrived = threading.Event()
    with su(server) as alice:
        alice.add_notification_handler(lambda m, p: (received.append(p), arrived.set()))
        assert alice.server.subscribe(["events"]) == ["events"]
        start = time.time_ns() // 1000
        with server.api() as bob:
            bob.server.auth("bob", "bob-pw")
            bob.server.createAPIToken()
            own = bob.server.getEventLog()["eventLog"]
            assert {e["_event"] for e in own} <= {"authSucceeded", "tokenCreated"}
        assert arrived.wait(5)
        log = alice.server.getEventLog(after=start)["eventLog"]
        names = [e["_event"] for e in log]
        assert "authSucceeded" in names and "tokenCreated" in names
        assert all(isinstance(e["_timestamp"], int) for e in log)
        assert [e["_timestamp"] for e in log] == sorted(e["_timestamp"] for e in log)
        assert alice.server.getEventLog(eventName="serverStarted")["eventLog"][0]["_event"] == "serverStarted"
        assert len(alice.server.getEventLog(limit=1)["eventLog"]) == 1
        assert alice.server.getEventLog(before=0)["eventLog"] == []
        assert any(e["_event"] == "tokenCreated" for e in received)
        with pytest.raises(CommandError, match="unknown topic"):
            alice.server.subscribe(["nope"])


def test_auth_failures_are_logged(server: ServerThread) -> None:
    with server.api() as api, pytest.raises(CommandError):
        api.server.auth("alice", "bad")
    with su(server) as alice:
        failed = alice.server.getEventLog(eventName="authFailed")["eventLog"]
        assert failed and failed[-1]["userName"] == "alice"


# -- garbage collection, bandwidth, license, address ----------------------
def test_garbage_collection_settings(server: ServerThread) -> None:
    with su(server) as alice:
        assert alice.server.getGarbageCollectSettings() == {"intervalSeconds": 3600, "timeLimitSeconds": 172800}
        assert alice.server.updateGarbageCollectSettings(intervalSeconds=60)["intervalSeconds"] == 60
        for bad in ({"intervalSeconds": 59}, {"intervalSeconds": 2**31}, {"timeLimitSeconds": -1}):
            with pytest.raises(CommandError, match="must be between"):
                alice.server.updateGarbageCollectSettings(**bad)
        done = alice.server.duAsync("/nonexistent-for-gc")
        time.sleep(0.2)
        alice.server.garbageCollect(force=True)
        with pytest.raises(CommandError, match="not found"):
            alice.server.getRequestStatus(done)
        assert alice.server.getServerInfo()["configuration"]["garbageCollect"]["intervalSeconds"] == 60


def test_bandwidth_limits_update_and_lock(tmp_path: Path) -> None:
    with running_server(bandwidth=BandwidthOptions(outgoing_rate_limit=5000)) as st:
        st.add_user("op", "pw")
        st.server.config.superusers.append("op")
        with st.api() as api:
            api.server.auth("op", "pw")
            api.server.superuser()
            api.server.updateBandwidthLimits(incomingLimitActive=True, incomingRateLimit=2000, borrowIncoming=True)
            limits = api.server.getServerInfo()["bandwidthLimits"]
            assert limits["incomingRateLimit"] == 2000 and limits["outgoingRateLimit"] == 5000
            with pytest.raises(CommandError, match="locked"):
                api.server.updateBandwidthLimits(outgoingRateLimit=1)
            with pytest.raises(CommandError, match="must not be negative"):
                api.server.updateBandwidthLimits(incomingRateLimit=-1)


def test_license_and_external_address(server: ServerThread) -> None:
    with su(server) as alice:
        with pytest.raises(CommandError, match="no license server is reachable"):
            alice.server.setLicenseKeyAsync("KEY-1", validate=True)
        alice.server.getRequestResult(alice.server.setLicenseKeyAsync("KEY-1", validate=False))
        lic = alice.server.getServerInfo()["license"]
        assert lic["valid"] is True and lic["expiry"] is None
        alice.server.setExternalAddress("files.example.org:8886")
        assert alice.server.getServerInfo()["serverExternalAddress"] == "files.example.org:8886"
        with pytest.raises(CommandError):
            alice.server.setExternalAddress("bad host/name")
    with server.api() as bob:
        bob.server.auth("bob", "bob-pw")
        with pytest.raises(CommandError, match="requires superuser"):
            bob.server.setExternalAddress("x")


# -- discovery: the seed's two-server example -----------------------------
def test_discovery_between_two_servers(server: ServerThread) -> None:
    with running_server() as other:
        other.add_user("bee", "pw")
        with server.api() as A, other.api() as B:
            A.server.auth("alice", "alice-pw")
            B.server.auth("bee", "pw")
            recv_request = A.server.recvDiscoverPacketAsync(timeoutSeconds=10)
            discover_id = recv_request["discoverId"]
            send_request = B.server.sendDiscoverPacketAsync(discover_id, "127.0.0.1", server.server.recv_port)
            assert B.server.getRequestResult(send_request) == {"discoverPacketSent": True}
            assert A.server.getRequestResult(recv_request) == {"address": "127.0.0.1", "port": other.server.recv_port}
            table = server.server.discovery
            assert table.replayed + table.rejected >= 1  # the extra copies were ignored


def test_discovery_refuses_forged_and_times_out(server: ServerThread) -> None:
    import socket

    from jettui.server import discovery

    with server.api() as A:
        A.server.auth("alice", "alice-pw")
        request = A.server.recvDiscoverPacketAsync(timeoutSeconds=0.5)
        wrong = discovery.make_packet("not-the-id")
        forged = bytearray(discovery.make_packet(request["discoverId"]))
        forged[-1] ^= 1
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for pkt in (wrong, bytes(forged), b"\xd1JTD" + b"\x00" * 100):
                s.sendto(pkt, ("127.0.0.1", server.server.recv_port))
                s.settimeout(0.2)
                with pytest.raises(TimeoutError):
                    s.recvfrom(100)  # never answered, whatever is sent
        with pytest.raises(CommandError, match="no discover packet arrived"):
            A.server.getRequestResult(request)
        assert server.server.discovery.rejected >= 3
        with pytest.raises(CommandError, match="timeoutSeconds"):
            A.server.recvDiscoverPacketAsync(timeoutSeconds=-1)


# -- triggers -------------------------------------------------------------
def test_triggers_run_with_arguments_and_failures_are_logged(tmp_path: Path) -> None:
    triggers, out = tmp_path / "triggers", tmp_path / "out.txt"
    triggers.mkdir()
    launch = triggers / "launch"
    launch.write_text(f'#!/bin/sh\necho "launch $1" > {out}\n')
    launch.chmod(launch.stat().st_mode | stat.S_IEXEC)
    failing = triggers / "authSucceeded"
    failing.write_text("#!/bin/sh\necho boom >&2\nexit 3\n")
    failing.chmod(0o755)
    with running_server(trigger_dir=triggers, superusers=["op"]) as st:
        st.add_user("op", "pw")
        deadline = time.time() + 5
        while not out.exists() and time.time() < deadline:
            time.sleep(0.05)
        assert out.read_text().strip() == f"launch {st.port}"
        with st.api() as api:
            api.server.auth("op", "pw")
            api.server.superuser()
            deadline = time.time() + 5
            while time.time() < deadline:
                failed = api.server.getEventLog(eventName="triggerFailed")["eventLog"]
                if failed:
                    break
                time.sleep(0.05)
            assert failed and "exit status 3" in failed[0]["errorMessage"] and "boom" in failed[0]["errorMessage"]
            assert api.server.getServerInfo()["configuration"]["triggersAvailable"] is True


# -- persistence ----------------------------------------------------------
def test_admin_state_survives_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"
    data = tmp_path / "data"
    data.mkdir()
    with running_server(persistent_state_dir=state, superusers=["op"]) as st:
        st.add_user("op", "pw")
        st.add_user("u", "pw", group="g")
        with st.api() as api:
            api.server.auth("op", "pw")
            api.server.superuser()
            token = api.server.createAPIToken(description="kept")
            api.server.setSandboxMapping("u", {"": str(data)})
            api.server.getRequestResult(api.server.addWranglerAsync("g", isGroup=True))
            api.server.updateGarbageCollectSettings(intervalSeconds=120)
            api.server.updateBandwidthLimits(incomingRateLimit=777)
            api.server.setExternalAddress("ext.example:1")
    with running_server(persistent_state_dir=state, superusers=["op"]) as st:
        with st.api() as api:
            api.server.auth("op", "pw")
            api.server.superuser()
            assert api.server.getAPIToken(token)["description"] == "kept"
            assert api.server.getSandboxMappings()["u"] == {"": str(data)}
            assert api.server.getWranglers()["groups"][0]["name"] == "g"
            assert api.server.getGarbageCollectSettings()["intervalSeconds"] == 120
            info = api.server.getServerInfo()
            assert info["bandwidthLimits"]["incomingRateLimit"] == 777
            assert info["serverExternalAddress"] == "ext.example:1"
            names = [e["_event"] for e in api.server.getEventLog()["eventLog"]]
            assert names.count("serverStarted") == 2 and "serverStopping" in names
        with st.api() as tok:
            tok.server.authToken(token["token"])
    assert os.path.exists(state / "state.sqlite3")
