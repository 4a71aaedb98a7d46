"""Faults with real server processes: kill -9 of the sender, a source file that changes while
it is sent, and a receiver whose disk fills up."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jettui.api import APIInterface, connect
from jettui.constants import OVERWRITE_VERSIONED
from jettui.transfer.faults import FAULT_POINTS
from tests.helpers import ServerThread, running_server
from tests.integration.test_transfers import wait


class Daemon:
    """A `jettui server` process with a persistent state directory and one user."""

    def __init__(self, state: Path, user: str, *extra: str, wrap: list[str] | None = None) -> None:
        self.state, self.user, self.extra, self.wrap = state, user, extra, wrap or []
        self.env: dict[str, str] = {}
        env = {**os.environ, "JETTUI_PASSWORD": f"{user}-pw"}
        subprocess.run([sys.executable, "-m", "jettui", "user", "add", user, "--persistent-state-dir", str(state)],
                       env=env, check=True, capture_output=True, timeout=60)  # fmt: skip
        self.proc: subprocess.Popen[str] | None = None

    def start(self, recv_port: int = 0) -> Daemon:
        # Port 0 and the ports the daemon prints: a TCP probe cannot see a UDP socket already
        # on a number (the in-process receiver's, say).  A restart asks for its old UDP port.
        cmd = [sys.executable, "-m", "jettui", "server", "--api-port", "0", "--recv-host", "127.0.0.1",
               "--recv-port", str(recv_port), "--persistent-state-dir", str(self.state), *self.extra]  # fmt: skip
        self.proc = subprocess.Popen(
            [*self.wrap, *cmd],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **self.env},
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = re.search(r"API \S+:(\d+) .*data UDP (\d+), certificate SHA-256 ([0-9a-f]{64})", line)
        assert match, (line, self.proc.stderr.read() if self.proc.poll() is not None else "")  # type: ignore[union-attr]
        self.api_port, self.recv_port = int(match.group(1)), int(match.group(2))
        self.fingerprint = match.group(3)
        return self

    def api(self) -> APIInterface:
        api = connect("127.0.0.1", self.api_port, fingerprint=self.fingerprint)
        api.server.auth(self.user, f"{self.user}-pw")
        return api

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.communicate(timeout=15)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.communicate()


def wait_status(api: APIInterface, tid: int, timeout: float = 90) -> dict:
    return wait(api, tid, timeout)


@pytest.fixture
def receiver(tmp_path: Path) -> tuple[ServerThread, Path]:
    dst = tmp_path / "dst"
    dst.mkdir()
    with running_server() as rx:
        rx.add_user("rx", "rx-pw")
        rx.server.sandboxes.set("rx", {"": str(dst)})
        yield rx, dst


def order(api: APIInterface, rx: ServerThread, src: Path, **kw: object) -> int:
    dest = api.send.createDestination("127.0.0.1", rx.server.recv_port, userName="rx", password="rx-pw",
                                      sendRateMax=kw.pop("sendRateMax", 40_000))  # fmt: skip
    manifest = api.send.waitForManifest(api.send.createManifest({f"/{src.name}": str(src)}))
    return int(api.send.createTransfer(dest, manifest, **kw)["transferId"])


@contextlib.contextmanager
def sender() -> Iterator[APIInterface]:
    """An in-process sending server and a client logged in to it."""
    with running_server() as tx:
        tx.add_user("tx", "tx-pw")
        with tx.api() as api:
            api.server.auth("tx", "tx-pw")
            yield api


def order_to(api: APIInterface, receiver: Daemon, src: Path, rate: int | None = None, **kw: object) -> int:
    """Send ``src`` to a receiving Daemon (at ``rate`` kbit/s at most) as ``/<its name>``."""
    dest = api.send.createDestination("127.0.0.1", receiver.recv_port, userName=receiver.user,
                                      password=f"{receiver.user}-pw", sendRateMax=rate)  # fmt: skip
    manifest = api.send.waitForManifest(api.send.createManifest({f"/{src.name}": str(src)}))
    return int(api.send.createTransfer(dest, manifest, **kw)["transferId"])


def test_kill_9_of_the_sender_resumes_byte_identical(tmp_path: Path, receiver) -> None:
    rx, dst = receiver
    src = tmp_path / "big.bin"
    data = os.urandom(24_000_000)
    src.write_bytes(data)
    sender = Daemon(tmp_path / "tx-state", "tx").start()
    try:
        with sender.api() as api:
            tid = order(api, rx, src, checkpointFrequencySeconds=0.5)
            time.sleep(2.5)
            assert api.send.getTransfer(tid)["status"] == "sending"
        sender.kill9()
        assert not (dst / "big.bin").exists()  # never a truncated file under the final name
        sender.start()
        with sender.api() as api:
            done = wait_status(api, tid)
        assert done["status"] == "complete", done
        assert done["blocksSent"] < done["totalBlocks"]  # resumed, not restarted
    finally:
        sender.stop()
    assert (dst / "big.bin").read_bytes() == data
    assert not [p for p in dst.iterdir() if p.name != "big.bin"]  # no leftovers once complete


def test_kill_9_of_the_receiver_resumes_byte_identical(tmp_path: Path) -> None:
    dst = tmp_path / "dst"
    dst.mkdir()
    src = tmp_path / "big.bin"
    data = os.urandom(20_000_000)
    src.write_bytes(data)
    receiver = Daemon(tmp_path / "rx-state", "rx", "--sandbox-dir", str(dst)).start()
    try:
        with sender() as api:
            tid = order_to(api, receiver, src, 30_000, checkpointFrequencySeconds=0.5)
            time.sleep(2.5)
            receiver.kill9()
            assert not (dst / "big.bin").exists()
            time.sleep(0.5)
            receiver.start(recv_port=receiver.recv_port)  # same address, same keys
            done = wait_status(api, tid, timeout=120)
        assert done["status"] == "complete", done
        assert done["retries"] >= 1
        assert done["blocksSent"] < done["totalBlocks"]  # only what the receiver lacked
    finally:
        receiver.stop()
    assert (dst / "big.bin").read_bytes() == data


def test_source_changed_during_transfer_is_sent_again(tmp_path: Path, receiver) -> None:
    rx, dst = receiver
    src = tmp_path / "moving.bin"
    src.write_bytes(os.urandom(12_000_000))
    with sender() as api:
        tid = order(api, rx, src, sendRateMax=20_000)
        time.sleep(0.8)
        new = os.urandom(12_000_000)
        src.write_bytes(new)
        done = wait_status(api, tid)
    assert done["status"] == "complete", done
    assert done["restarts"] >= 1 and "changed" in done["errorMessage"]
    assert (dst / "moving.bin").read_bytes() == new


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare for a tmpfs")
@pytest.mark.parametrize("shape", ["one big file", "many small files"])
def test_receiver_disk_full_is_a_clear_error_and_the_server_stays_up(tmp_path: Path, shape: str) -> None:
    """One 8 MB file fails while its blocks are written; 1,000 small files (held in memory
    and written when they are finished) fail one by one, and the transfer's error names
    the first of them."""
    small = tmp_path / "small"
    small.mkdir()
    wrap = ["unshare", "-m", "sh", "-c", f'mount -t tmpfs -o size=3m none "{small}" && exec "$@"', "sh"]
    receiver = Daemon(tmp_path / "rx-state", "rx", "--sandbox-dir", str(small), wrap=wrap).start()
    src = tmp_path / "too-big.bin"
    if shape == "one big file":
        src.write_bytes(os.urandom(8_000_000))
    else:
        for i in range(1000):
            (src / f"d{i % 4}").mkdir(parents=True, exist_ok=True)
            (src / f"d{i % 4}" / f"f{i}").write_bytes(os.urandom(4096))
    try:
        with sender() as api:
            done = wait_status(api, order_to(api, receiver, src))
            assert done["status"] == "error" and "disk full" in done["errorMessage"], done
            if shape == "many small files":
                assert "file(s) failed on the receiver; the first: receiver disk full" in done["errorMessage"]
        with receiver.api() as rx_api:
            assert rx_api.server.echo("still up") == "still up"
            names = {f["name"] for f in rx_api.server.getRequestResult(rx_api.server.lsAsync("/"))["files"]}
            if shape == "many small files":
                sizes = {
                    f["name"]: f["size"]
                    for d in range(4)
                    for f in rx_api.server.getRequestResult(rx_api.server.lsAsync(f"/too-big.bin/d{d}"))["files"]
                }
                # Nothing truncated under a final name: what is there is whole.
                assert sizes and set(sizes.values()) == {4096}, sizes
        assert "too-big.bin" not in names or shape == "many small files"
    finally:
        receiver.stop()


LEFTOVERS = (".jetpart", ".jetpart.ckpt", ".jetpart.ckpt.tmp", ".jetbak")


@pytest.mark.parametrize(
    "point",
    [pytest.param(p, marks=[] if p == "before-rename" else [pytest.mark.slow]) for p in FAULT_POINTS],
)
def test_receiver_killed_at_each_fault_point(tmp_path: Path, point: str) -> None:
    """The receiving server dies (SIGKILL) at a named point of the writer; after a restart the
    transfer resumes: the final name holds the complete old or the complete new file, never a
    mix, and only recognisable leftovers remain."""
    dst = tmp_path / "dst"
    dst.mkdir()
    old = os.urandom(3_000_000)
    (dst / "f.bin").write_bytes(old)
    new = os.urandom(3_000_000)
    (tmp_path / "f.bin").write_bytes(new)
    receiver = Daemon(tmp_path / "rx-state", "rx", "--sandbox-dir", str(dst))
    receiver.env = {"JETTUI_FAULT": point}
    receiver.start()
    try:
        with sender() as api:
            # ~1.2 s of data at 20 Mbit/s: long enough for checkpoints every 0.2 s to happen.
            tid = order_to(api, receiver, tmp_path / "f.bin", 20_000, overwrite=OVERWRITE_VERSIONED,
                           checkpointFrequencySeconds=0.2)  # fmt: skip
            assert receiver.proc is not None
            receiver.proc.wait(timeout=60)  # killed by its fault point
            assert receiver.proc.returncode == -signal.SIGKILL
            receiver.proc.communicate()
            assert (dst / "f.bin").read_bytes() in (old, new)  # whole old or whole new
            for p in dst.iterdir():
                assert p.name == "f.bin" or p.name.startswith("f.bin") and p.name[5:] in LEFTOVERS, p.name
            receiver.env = {}
            receiver.start(recv_port=receiver.recv_port)
            done = wait_status(api, tid, timeout=120)
        assert done["status"] == "complete", done
    finally:
        receiver.stop()
    assert (dst / "f.bin").read_bytes() == new
    assert sorted(p.name for p in dst.iterdir()) in (["f.bin"], ["f.bin", "f.bin.jetbak"])


def test_a_tree_into_a_new_directory_survives_a_kill_and_appears_whole(tmp_path: Path) -> None:
    """A tree into a directory the transfer creates is built in a stage (writer docstring).
    The receiver dies (SIGKILL) with a small file half written in it; nothing is under the
    final name then.  The resume adopts the stage, sends only what it lacks, and the tree
    appears whole and byte-identical, with no staging or part-file names left."""
    dst = tmp_path / "dst"
    dst.mkdir()
    src = tmp_path / "tree"
    for i in range(300):
        (src / f"d{i % 3}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i % 3}" / f"f{i}").write_bytes(os.urandom(6000))
    (src / "big.bin").write_bytes(os.urandom(3_000_000))
    receiver = Daemon(tmp_path / "rx-state", "rx", "--sandbox-dir", str(dst))
    receiver.env = {"JETTUI_FAULT": "block-write:150"}
    receiver.start()
    try:
        with sender() as api:
            tid = order_to(api, receiver, src, 20_000, checkpointFrequencySeconds=0.2)
            assert receiver.proc is not None
            receiver.proc.wait(timeout=60)  # killed by its fault point
            receiver.proc.communicate()
            stage, journal = sorted(p.name for p in dst.iterdir())
            assert stage.startswith("tree.") and stage.endswith(".jetpart") and journal == f"{stage}.ckpt"
            receiver.env = {}
            receiver.start(recv_port=receiver.recv_port)
            done = wait_status(api, tid, timeout=120)
        assert done["status"] == "complete", done
        assert done["retries"] >= 1
        # Resumed: the files the stage's journal vouches for were kept, and only those of the
        # batch being written at the kill were sent again (10 of 347 blocks when written;
        # 175 without the journal).  blocksSent cannot say so: the first session had sent
        # every block before the receiver, finishing behind the data, died.
        assert done["blocksRetransmitted"] < 100, done
        assert done["filesComplete"] == done["totalFiles"] == 301, done
    finally:
        receiver.stop()
    assert [p.name for p in dst.iterdir()] == ["tree"]
    copied = {str(p.relative_to(dst / "tree")): p.read_bytes() for p in (dst / "tree").rglob("*") if p.is_file()}
    assert copied == {str(p.relative_to(src)): p.read_bytes() for p in src.rglob("*") if p.is_file()}


def test_an_empty_source_written_after_the_manifest_is_sent_again(tmp_path: Path, receiver) -> None:
    """Nothing reads an empty file, so the check a read makes is made at the end: a source
    the manifest saw empty (caught while it was being rewritten) and that has content now is
    sent again, not left empty on the receiver as if the transfer had seen it whole."""
    rx, dst = receiver
    src = tmp_path / "late.bin"
    src.write_bytes(b"")
    with sender() as api:
        dest = api.send.createDestination("127.0.0.1", rx.server.recv_port, userName="rx", password="rx-pw")
        manifest = api.send.waitForManifest(api.send.createManifest({f"/{src.name}": str(src)}))
        assert manifest["totalSize"] == 0
        data = os.urandom(300_000)
        src.write_bytes(data)
        tid = int(api.send.createTransfer(dest, manifest)["transferId"])
        done = wait_status(api, tid)
    assert done["status"] == "complete", done
    assert done["restarts"] == 1 and "changed" in done["errorMessage"]
    assert (dst / "late.bin").read_bytes() == data
