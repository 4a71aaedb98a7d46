"""Server-to-server transfers through jettui.api, between two real servers on loopback."""

from __future__ import annotations

import hashlib
import os
import time
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from jettui.api import APIInterface, CommandError
from jettui.constants import (
    BACKUP_SUFFIX,
    MIN_CIPHER_ENCRYPTED_128,
    MIN_CIPHER_ENCRYPTED_256,
    MIN_CIPHER_NONE,
    MIN_CIPHER_UNENCRYPTED,
    OVERWRITE_ALWAYS,
    OVERWRITE_IN_PLACE_SAME_SIZE,
    OVERWRITE_NEVER,
    OVERWRITE_VERSIONED,
    TRANSFER_FLAG_READ,
    TRANSFER_FLAG_READ_WRITE,
    TRANSFER_FLAG_WRITE_MTIME,
    TRANSFER_FLAG_WRITE_ONLY_NEWER,
)
from jettui.server import core as server_core
from tests.helpers import ServerThread, running_server


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[ServerThread, ServerThread, Path, Path]]:
    """Sender A and receiver B; B's user 'rx' is sandboxed to tmp/dst."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    with running_server(server_name="A") as a, running_server(server_name="B") as b:
        a.add_user("tx", "tx-pw")
        b.add_user("rx", "rx-pw")
        b.server.sandboxes.set("rx", {"": str(dst)})
        yield a, b, src, dst


def sender_api(a: ServerThread) -> APIInterface:
    api = a.api().connect()
    api.server.auth("tx", "tx-pw")
    return api


def destination(api: APIInterface, b: ServerThread, **kw: object) -> dict:
    return api.send.createDestination("127.0.0.1", b.server.recv_port, userName="rx", password="rx-pw", **kw)


def transfer(api: APIInterface, b: ServerThread, mappings: dict, timeout: float = 60, **kw: object) -> dict:
    dest = destination(api, b)
    manifest = api.send.createManifest(mappings)
    manifest = api.send.waitForManifest(manifest, timeoutSeconds=30)
    assert manifest["status"] == "complete", manifest
    t = api.send.createTransfer(dest, manifest, **kw)
    return wait(api, t["transferId"], timeout)


def wait(api: APIInterface, transfer_id: int, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        t = api.send.getTransfer(transfer_id)
        if t["status"] in ("complete", "error", "cancelled"):
            return t
        time.sleep(0.05)
    raise AssertionError(f"transfer {transfer_id} still {t['status']} after {timeout} s: {t}")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_one_file(pair) -> None:
    a, b, src, dst = pair
    data = os.urandom(3_000_000)
    (src / "f.bin").write_bytes(data)
    with sender_api(a) as api:
        t = transfer(api, b, {"/f.bin": str(src / "f.bin")})
        assert t["status"] == "complete", t
        assert t["totalBytes"] == len(data) and t["blocksAcked"] == t["totalBlocks"] > 0
        assert t["startTime"] >= t["requestTime"] and t["endTime"] >= t["startTime"]
        assert set(t) >= {"blockSize", "blocksSent", "blocksRetransmitted", "bytesSent", "bytesRecv", "packetsSent",
                          "packetsRecv", "queueTime", "snapshotTime", "priority", "owner", "errorMessage"}  # fmt: skip
    assert (dst / "f.bin").read_bytes() == data
    assert not list(dst.glob("*.jetpart*"))
    with b.api() as rx:
        rx.server.auth("rx", "rx-pw")
        received = rx.recv.getTransfersAsync()
        transfers = rx.server.getRequestResult(received)["transfers"]
        assert transfers[-1]["status"] == "complete" and transfers[-1]["totalSize"] == len(data)


def test_python_gc_runs_once_no_transfer_is_left(pair, monkeypatch) -> None:
    """Each server collects when its last transfer ends, not in the middle of the next one."""
    a, b, src, dst = pair
    calls: list[tuple[int, bool, bool]] = []

    def idle(s: ServerThread) -> bool:
        return not s.server.sending.running and not s.server.receiving.active

    def collect(generation: int = 2) -> int:
        calls.append((generation, idle(a), idle(b)))
        return 0

    monkeypatch.setattr(server_core, "gc", types.SimpleNamespace(collect=collect))
    (src / "f.bin").write_bytes(os.urandom(100_000))
    with sender_api(a) as api:
        assert transfer(api, b, {"/f.bin": str(src / "f.bin")})["status"] == "complete"
    deadline = time.monotonic() + 15
    while len(calls) < 2 and time.monotonic() < deadline:  # the receiver's ends after its drain
        time.sleep(0.05)
    # The sender's, as its transfer ends; the receiver's once its session has drained.
    assert len(calls) == 2 and calls[0][:2] == (1, True) and calls[1] == (1, True, True), calls


def test_tree_of_small_files_and_empty_dirs(pair) -> None:
    a, b, src, dst = pair
    tree = src / "tree"
    for i in range(300):
        d = tree / f"d{i % 7}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"file-{i}.txt").write_bytes(os.urandom(i * 13 % 5000))
    (tree / "empty").mkdir()
    with sender_api(a) as api:
        t = transfer(api, b, {"/tree": str(tree)})
        assert t["status"] == "complete", t
        files = api.send.getManifestFiles(t["manifestId"])["fileMappings"]
        assert sum(1 for f in files if not f["isEmptyDir"]) == 300
    for p in tree.rglob("*"):
        q = dst / "tree" / p.relative_to(tree)
        assert q.exists(), q
        if p.is_file():
            assert q.read_bytes() == p.read_bytes()
    assert (dst / "tree" / "empty").is_dir()


@pytest.mark.parametrize(
    "cipher", [MIN_CIPHER_NONE, MIN_CIPHER_UNENCRYPTED, MIN_CIPHER_ENCRYPTED_128, MIN_CIPHER_ENCRYPTED_256]
)
def test_each_cipher_level(pair, cipher: int) -> None:
    a, b, src, dst = pair
    (src / "c.bin").write_bytes(os.urandom(500_000))
    with sender_api(a) as api:
        t = transfer(api, b, {"/c.bin": str(src / "c.bin")}, minCipher=cipher)
        assert t["status"] == "complete", t
    assert digest(dst / "c.bin") == digest(src / "c.bin")


def test_receiver_minimum_cipher_refuses_weaker_sender(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"x" * 1000)
    with running_server() as a, running_server(min_cipher=MIN_CIPHER_ENCRYPTED_256) as b:
        a.add_user("tx", "tx-pw")
        b.add_user("rx", "rx-pw")
        with sender_api(a) as api:
            t = transfer(api, b, {"/x": str(tmp_path / "x")}, minCipher=MIN_CIPHER_ENCRYPTED_128, timeout=30)
    assert t["status"] == "error"
    assert "ENCRYPTED_128" in t["errorMessage"] and "ENCRYPTED_256" in t["errorMessage"]


def test_wrong_credentials_refused(pair) -> None:
    a, b, src, dst = pair
    (src / "x").write_bytes(b"data")
    with sender_api(a) as api:
        dest = api.send.createDestination("127.0.0.1", b.server.recv_port, userName="rx", password="WRONG")
        m = api.send.waitForManifest(api.send.createManifest({"/x": str(src / "x")}))
        t = wait(api, api.send.createTransfer(dest, m)["transferId"], 30)
    assert t["status"] == "error" and "authentication failed" in t["errorMessage"]
    assert not (dst / "x").exists()


def test_allowlist_of_sender_keys(pair) -> None:
    a, b, src, dst = pair
    (src / "x").write_bytes(b"data")
    b.server.config.superusers.append("rx")
    with b.api() as rx:
        rx.server.auth("rx", "rx-pw")
        rx.server.superuser()
        rx.server.getRequestResult(rx.recv.allowOnlyAuthorizedClientsAsync(True))
        with sender_api(a) as api:
            t = transfer(api, b, {"/x": str(src / "x")}, timeout=30)
            assert t["status"] == "error", t
            rx.server.getRequestResult(rx.recv.addAuthorizedClientAsync(a.server.keys.public_key))
            t = transfer(api, b, {"/y": str(src / "x")}, timeout=30)
            assert t["status"] == "complete", t
        assert rx.server.getServerInfo()["receiver"]["onlyAuthorizedClientsAllowed"] is True
    assert (dst / "y").read_bytes() == b"data"


@pytest.mark.parametrize("mode", [OVERWRITE_ALWAYS, OVERWRITE_NEVER, OVERWRITE_VERSIONED, OVERWRITE_IN_PLACE_SAME_SIZE])
def test_overwrite_modes(pair, mode: int) -> None:
    a, b, src, dst = pair
    (src / "f").write_bytes(b"new content!")
    (dst / "f").write_bytes(b"old content!")  # same size
    (src / "g").write_bytes(b"new, longer content")
    (dst / "g").write_bytes(b"old")
    with sender_api(a) as api:
        t = transfer(api, b, {"/f": str(src / "f"), "/g": str(src / "g")}, overwrite=mode)
    f, g = (dst / "f").read_bytes(), (dst / "g").read_bytes()
    if mode == OVERWRITE_NEVER:
        assert (f, g) == (b"old content!", b"old")
    elif mode == OVERWRITE_IN_PLACE_SAME_SIZE:
        assert (f, g) == (b"new content!", b"old")
    else:
        assert (f, g) == (b"new content!", b"new, longer content")
    if mode == OVERWRITE_VERSIONED:
        assert (dst / ("f" + BACKUP_SUFFIX)).read_bytes() == b"old content!"
    assert t["status"] in ("complete", "error")


def test_transfer_flags(pair) -> None:
    a, b, src, dst = pair
    (src / "m").write_bytes(b"mtime")
    os.utime(src / "m", (1_500_000_000, 1_500_000_000))
    (src / "r").write_bytes(b"read only")
    (src / "n").write_bytes(b"older source")
    os.utime(src / "n", (1_000_000_000, 1_000_000_000))
    (dst / "n").write_bytes(b"newer dest")
    with sender_api(a) as api:
        mtime_flags = TRANSFER_FLAG_READ_WRITE | TRANSFER_FLAG_WRITE_MTIME
        assert transfer(api, b, {"/m": str(src / "m")}, transferFlags=mtime_flags)["status"] == "complete"
        transfer(api, b, {"/r": str(src / "r")}, transferFlags=TRANSFER_FLAG_READ)
        newer_flags = TRANSFER_FLAG_READ_WRITE | TRANSFER_FLAG_WRITE_ONLY_NEWER
        transfer(api, b, {"/n": str(src / "n")}, transferFlags=newer_flags)
    assert int((dst / "m").stat().st_mtime) == 1_500_000_000
    assert not (dst / "r").exists()  # READ only: the receiver does not write
    assert (dst / "n").read_bytes() == b"newer dest"


def test_destination_is_idempotent_and_structures(pair) -> None:
    a, b, src, dst = pair
    with sender_api(a) as api:
        d1 = destination(api, b)
        d2 = destination(api, b)
        assert d1["destinationId"] == d2["destinationId"] == f"127.0.0.1:{b.server.recv_port}"
        assert [d["destinationId"] for d in api.send.getDestinations()] == [d1["destinationId"]]
        assert api.send.getConnection(d1)["connectionId"] == d1["destinationId"]
        with pytest.raises(CommandError, match="destinationPort"):
            api.send.createDestination("127.0.0.1", 70000)
        with pytest.raises(CommandError, match="not found"):
            api.send.getTransfer(999)
        with pytest.raises(CommandError, match="mappings is empty"):
            api.send.createManifest({})
        bad = api.send.waitForManifest(api.send.createManifest({"/x": str(src / "missing")}))
        assert bad["status"] == "error" and bad["errorMessage"]
        with pytest.raises(CommandError, match="wait for it|is error"):
            api.send.createTransfer(d1, bad)
        api.send.deleteDestination(d1)
        assert api.send.getDestinations() == []


def test_suspend_resume_cancel_and_user_data(pair) -> None:
    a, b, src, dst = pair
    (src / "big").write_bytes(os.urandom(40_000_000))
    with sender_api(a) as api:
        dest = api.send.createDestination("127.0.0.1", b.server.recv_port, userName="rx", password="rx-pw",
                                          sendRateMax=40_000)  # kbit/s: ~8 s for 40 MB  # fmt: skip
        m = api.send.waitForManifest(api.send.createManifest({"/big": str(src / "big")}))
        t = api.send.createTransfer(dest, m)
        api.send.updateObjectUserData(t["transferId"], {"tag": "nightly"})
        time.sleep(0.5)
        assert api.send.suspendTransfer(t)["status"] == "suspended"
        sent = api.send.getTransfer(t)["bytesSent"]
        time.sleep(0.5)
        assert api.send.getTransfer(t)["bytesSent"] - sent < 200_000
        assert api.send.resumeTransfer(t)["status"] == "sending"
        api.send.cancelTransfer(t)
        done = wait(api, t["transferId"], 20)
        assert done["status"] == "cancelled" and done["userData"] == {"tag": "nightly"}
        api.send.deleteObjectUserData(t["transferId"], "tag")
        api.send.deleteTransfer(t)
        with pytest.raises(CommandError, match="not found"):
            api.send.getTransfer(t)
    assert not (dst / "big").exists()  # never a truncated file under the final name


def test_events_and_notifications_for_transfers(pair) -> None:
    a, b, src, dst = pair
    (src / "e").write_bytes(b"e" * 10000)
    progress: list[dict] = []
    with sender_api(a) as api:
        api.add_notification_handler(lambda m, p: progress.append(p) if m == "transfers.progress" else None)
        api.server.subscribe(["transfers"])
        t = transfer(api, b, {"/e": str(src / "e")})
        assert t["status"] == "complete"
        names = [e["_event"] for e in api.server.getEventLog()["eventLog"]]
        for name in ("destinationCreated", "transferCreated", "transferUpdated", "transferComplete"):
            assert name in names
    assert any(p["status"] == "complete" for p in progress)


def test_transfers_survive_sender_restart(tmp_path: Path) -> None:
    """A transfer interrupted by a sender restart resumes and ends byte-identical."""
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    src.mkdir()
    dst.mkdir()
    data = os.urandom(30_000_000)
    (src / "r.bin").write_bytes(data)
    with running_server() as b:
        b.add_user("rx", "rx-pw")
        b.server.sandboxes.set("rx", {"": str(dst)})
        with running_server(persistent_state_dir=state) as a:
            a.add_user("tx", "tx-pw")
            with sender_api(a) as api:
                dest = destination(api, b, sendRateMax=60_000)
                m = api.send.waitForManifest(api.send.createManifest({"/r.bin": str(src / "r.bin")}))
                tid = api.send.createTransfer(dest, m, checkpointFrequencySeconds=0.5)["transferId"]
                time.sleep(2.0)
                assert api.send.getTransfer(tid)["status"] == "sending"
        assert not (dst / "r.bin").exists()
        with running_server(persistent_state_dir=state) as a2, sender_api(a2) as api:
            done = wait(api, tid, 60)
            assert done["status"] == "complete", done
            assert done["blocksSent"] < done["totalBlocks"]  # only what was missing was sent again
    assert (dst / "r.bin").read_bytes() == data


def test_two_users_each_name_the_same_destination(pair) -> None:
    a, b, src, dst = pair
    a.add_user("tx2", "tx2-pw")
    with sender_api(a) as one, a.api() as two:
        two.server.auth("tx2", "tx2-pw")
        d1 = destination(one, b)
        d2 = two.send.createDestination("127.0.0.1", b.server.recv_port, userName="rx", password="rx-pw", sendRateMax=1)
        assert d1["destinationId"] == d2["destinationId"] and d1["owner"] == "tx" and d2["owner"] == "tx2"
        assert one.send.getDestination(d1["destinationId"])["sendRateMax"] is None
        assert [d["owner"] for d in two.send.getDestinations()] == ["tx2"]
        two.send.deleteDestination(d2)
        assert one.send.getDestination(d1)["owner"] == "tx"
