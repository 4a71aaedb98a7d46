"""Loopback transfer throughput: jettui at each cipher level beside cp and rsync, same run.

Two real ``jettui server`` processes on 127.0.0.1 (sender and receiver), a 1 GiB file and a
tree of 10,000 x 4 KiB files in a temporary directory (tmpfs when /dev/shm has room).
Prints MB/s (1 MB = 10^6 B) and files/s; asserts nothing.  Targets on the 2-core machine:
unencrypted >= 500 MB/s, ENCRYPTED_256 >= 400 MB/s, small files >= rsync's files/s.

rsync runs three ways: as a local copy (sender and receiver processes joined by pipes: no
network, no encryption), to an rsync daemon on 127.0.0.1 (between servers over TCP, no
encryption: beside jettui's NONE tree run) and over ssh to an sshd on 127.0.0.1 (between
servers, encrypted: beside the ENCRYPTED_256 tree run).  Times include the connection:
jettui's manifest and handshake, ssh's key exchange.  The tree is copied in ``--tree-runs``
rounds of every tool once (see tree_rounds): each tool's figure is its median (range in
brackets), and jettui's ratio to each rsync is taken per round, as this VM's speed drifts by
+-15 % over minutes.
"""

from __future__ import annotations

import argparse
import os
import pwd
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from jettui.api import APIInterface, connect
from jettui.constants import CIPHER_NAMES

try:
    import peers
except ModuleNotFoundError:  # imported as the bench package
    from bench import peers

CIPHERS = {name: value for value, name in CIPHER_NAMES.items()}
END_STATUSES = ("complete", "error", "cancelled")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(state: Path, user: str) -> tuple[subprocess.Popen[str], int, int, str]:
    env = {**os.environ, "JETTUI_PASSWORD": "bench"}
    subprocess.run([sys.executable, "-m", "jettui", "user", "add", user, "--persistent-state-dir", str(state)],
                   env=env, check=True, capture_output=True)  # fmt: skip
    api_port, recv_port = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "jettui", "server", "--api-port", str(api_port), "--recv-port", str(recv_port),
         "--recv-host", "127.0.0.1", "--persistent-state-dir", str(state), "--log-level", "WARNING"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    match = re.search(r"SHA-256 ([0-9a-f]{64})", proc.stdout.readline())
    assert match, "server did not start"
    return proc, api_port, recv_port, match.group(1)


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and all its threads so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class TransferEnds:
    """The ends of transfers as the sending server announces them ("transfers" notifications).

    A wait ends when the server's notification arrives, as rsync's time ends when it exits:
    no poll interval added to the figure, and no poll requests for the sending server's loop
    to answer beside the data (at a 10 ms poll they took ~25 % of that loop, py-spy)."""

    def __init__(self, api: APIInterface) -> None:
        self._api = api
        self._ended: dict[object, dict] = {}
        self._changed = threading.Condition()
        api.add_notification_handler(self._on_notification)
        api.server.subscribe(["transfers"])

    def _on_notification(self, method: str, params: dict) -> None:
        if method == "transfers.progress" and params.get("status") in END_STATUSES:
            with self._changed:
                self._ended[params.get("transferId")] = params
                self._changed.notify_all()

    def wait(self, transfer_id: object) -> None:
        while True:
            with self._changed:
                if self._changed.wait_for(lambda: transfer_id in self._ended, timeout=1.0):
                    del self._ended[transfer_id]
                    return
            # A second without news: ask (a lost connection would otherwise hang the bench).
            if self._api.send.getTransfer(transfer_id)["status"] in END_STATUSES:
                return


def jettui_copy(
    api: APIInterface,
    ends: TransferEnds,
    recv_port: int,
    token: str,
    src: Path,
    dest_dir: str,
    cipher: int,
    rate_kbit: int | None = None,
) -> tuple[float, dict]:
    """Seconds from the manifest's creation to the transfer's completion, and the final Transfer."""
    dest = api.send.createDestination("127.0.0.1", recv_port, token=token, sendRateMax=rate_kbit)
    start = time.perf_counter()
    manifest = api.send.waitForManifest(api.send.createManifest({f"/{src.name}": str(src)}))
    t = api.send.createTransfer(dest, manifest, destinationPath=dest_dir, minCipher=cipher)
    ends.wait(t["transferId"])
    elapsed = time.perf_counter() - start
    t = api.send.getTransfer(t)
    if t["status"] != "complete":
        raise RuntimeError(f"transfer {t['status']}: {t['errorMessage']}")
    return elapsed, t


def resent(transfer: dict) -> str:
    """The share of blocks sent again: loss in the sockets' buffers shows here on loopback."""
    return f"{transfer['blocksRetransmitted'] / max(transfer['totalBlocks'], 1):.2%} resent"


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - start


def make_tree(root: Path, files: int, size: int) -> None:
    for i in range(files):
        d = root / f"d{i // 500:03d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:05d}").write_bytes(os.urandom(size))


def pre_touch(directory: Path, size: int) -> None:
    """Write and delete ``size`` bytes in ``directory``: called right before every timed copy.

    In this VM the first touch of a page of memory costs ~3.4 us (tmpfs fills at ~290 MB/s
    with fresh pages, ~1.5-2.5 GB/s with reused ones, measured), and freed pages do not stay
    fresh: the guest reports them to the host within seconds (free page reporting,
    /sys/module/page_reporting/parameters/reported_kib), after which they cost the first
    touch again.  Five `cp` of 1 GiB in a row, alternately 3 s apart and back to back:
    322, 447, 1,947, 297, 1,865 MB/s, fast exactly when the pages freed by the copy before
    were not yet reported.  Pages just freed here are what the copy timed next writes into,
    whichever tool it is.
    """
    chunk = bytes(1024 * 1024)
    scratch = directory / "pre-touch"
    with open(scratch, "wb") as fh:
        for _ in range(0, size, len(chunk)):
            fh.write(chunk)
    scratch.unlink()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--mib", type=int, default=1024, help="size of the big file in MiB (default 1024)")
    p.add_argument("--files", type=int, default=10_000, help="number of 4 KiB files (default 10,000)")
    p.add_argument("--ciphers", default="NONE,UNENCRYPTED,ENCRYPTED_128,ENCRYPTED_256")
    p.add_argument("--tree-runs", type=int, default=3, help="rounds of tree copies, every tool once a round")
    p.add_argument(
        "--rate-mbit",
        type=float,
        default=None,
        help="cap the transfers at this rate (sendRateMax) and report each server's CPU, "
        "e.g. 100 to see the per-side cost of a 100 Mbit/s transfer without the WAN emulator",
    )
    args = p.parse_args()
    rate_kbit = round(args.rate_mbit * 1000) if args.rate_mbit else None
    shm = Path("/dev/shm")
    need = args.mib * 2 * 1024 * 1024 + args.files * 4096 * 4
    base = shm if shm.is_dir() and shutil.disk_usage(shm).free > need * 1.2 else None
    with tempfile.TemporaryDirectory(dir=base) as tmp_name:
        tmp = Path(tmp_name)
        src, dst = tmp / "src", tmp / "dst"
        src.mkdir()
        dst.mkdir()
        big = src / "big.bin"
        with open(big, "wb") as fh:
            for _ in range(args.mib):
                fh.write(os.urandom(1024 * 1024))
        make_tree(src / "tree", args.files, 4096)
        touch = args.mib * 1024 * 1024 + (64 << 20)
        size = big.stat().st_size
        print(f"data in {'tmpfs' if base else 'the default temp dir'}: {size / 1e6:,.0f} MB file, "
              f"{args.files:,} x 4 KiB files")  # fmt: skip
        tx, api_port, _, tx_fp = start_server(tmp / "tx-state", "tx")
        rx, rx_api_port, rx_recv, rx_fp = start_server(tmp / "rx-state", "rx")
        try:
            # The destination authenticates with an API token of the receiving user (rsync/scp
            # would use ssh keys): with a password the receiver runs scrypt (~1 s of CPU) on the
            # first transfer request (later ones hit its credential cache).
            with connect("127.0.0.1", rx_api_port, fingerprint=rx_fp) as rx_api:
                rx_api.server.auth("rx", "bench")
                token = rx_api.server.createAPIToken(description="loopback bench")["token"]
            with connect("127.0.0.1", api_port, fingerprint=tx_fp) as api:
                api.server.auth("tx", "bench")
                ends = TransferEnds(api)
                for name in args.ciphers.split(","):
                    out = f"{dst}/jettui-{name}"
                    pre_touch(tmp, touch)
                    cpu = cpu_seconds(tx.pid), cpu_seconds(rx.pid)
                    elapsed, t = jettui_copy(api, ends, rx_recv, token, big, out, CIPHERS[name], rate_kbit)
                    tx_cpu, rx_cpu = cpu_seconds(tx.pid) - cpu[0], cpu_seconds(rx.pid) - cpu[1]
                    print(
                        f"jettui {name:<14} 1 file : {size / elapsed / 1e6:8.1f} MB/s ({elapsed:.2f} s)"
                        f"; CPU sender {tx_cpu / elapsed:.0%}, receiver {rx_cpu / elapsed:.0%} of a core"
                        f"; {resent(t)}"
                    )
                    shutil.rmtree(out, ignore_errors=True)
                tree = src / "tree"
                copies: dict[str, Callable[[str], float]] = {}
                notes: dict[str, list[str]] = {}
                for name in ("NONE", "ENCRYPTED_256"):
                    seen = notes[f"jettui {name}"] = []

                    def copy(out: str, cipher: int = CIPHERS[name], seen: list[str] = seen) -> float:
                        elapsed, t = jettui_copy(api, ends, rx_recv, token, tree, out, cipher, rate_kbit)
                        seen.append(resent(t))
                        return elapsed

                    copies[f"jettui {name}"] = copy
                copies["cp"] = lambda out: timed(["cp", "-r", str(tree), out])
                if shutil.which("rsync"):
                    copies["rsync (local copy)"] = lambda out: timed(["rsync", "-a", f"{tree}/", out])
                    copies["rsync daemon (TCP)"] = lambda out: rsync_daemon(tree, Path(out))
                    if all(shutil.which(tool) for tool in ("ssh", "ssh-keygen", "/usr/sbin/sshd")):
                        copies["rsync over ssh"] = lambda out: rsync_over_ssh(tree, Path(out))
                times = tree_rounds(args, copies, dst)
        finally:
            stop(tx)
            stop(rx)
        pre_touch(tmp, touch)
        elapsed = timed(["cp", str(big), str(dst / "cp.bin")])
        print(f"cp                    1 file : {size / elapsed / 1e6:8.1f} MB/s ({elapsed:.2f} s)")
        if shutil.which("rsync"):
            pre_touch(tmp, touch)
            elapsed = timed(["rsync", "-a", "--whole-file", str(big), str(dst / "rsync.bin")])
            print(f"rsync                 1 file : {size / elapsed / 1e6:8.1f} MB/s ({elapsed:.2f} s)")
        else:
            print("rsync not installed (apt-get install rsync) - skipped")
        if "rsync over ssh" not in copies:
            print("rsync over ssh: ssh or sshd missing (apt-get install openssh-server) - skipped")
        print(f"tree of {args.files:,} x 4 KiB files, {args.tree_runs} rounds (every tool once a round):")
        for name, taken in times.items():
            extra = f"; {', '.join(sorted(set(notes[name])))}" if name in notes else ""  # each different one
            print(f"{name:<22}tree   : {rates(args.files, taken)}{extra}")
        for ours, peer in (
            ("jettui NONE", "rsync (local copy)"),
            ("jettui NONE", "rsync daemon (TCP)"),
            ("jettui ENCRYPTED_256", "rsync over ssh"),
        ):
            if peer in times:
                print(f"{ours} / {peer}, same round: {ratios(times[peer], times[ours])}")


def tree_rounds(
    args: argparse.Namespace, copies: dict[str, Callable[[str], float]], dst: Path
) -> dict[str, list[float]]:
    """Seconds of each ``copy(destination)``, ``--tree-runs`` rounds of every tool once.

    The copies of one round are minutes apart at most, not the whole run: this VM's speed
    drifts by +-15 % over minutes (shared host, free page reporting), so a ratio taken
    within a round compares like with like.  Each round starts one tool further on, so no
    tool always runs first (on pages freed by nobody) or right after another's cleanup."""
    names = list(copies)
    times: dict[str, list[float]] = {name: [] for name in names}
    for run in range(args.tree_runs):
        shift = run % len(names)
        for name in names[shift:] + names[:shift]:
            out = dst / "tree-copy"
            pre_touch(dst, args.files * 4096 * 2)
            times[name].append(copies[name](str(out)))
            shutil.rmtree(out, ignore_errors=True)
    return times


def rates(files: int, times: list[float]) -> str:
    """The median files/s of ``times``, with the range."""
    per_second = sorted(files / t for t in times)
    middle = statistics.median(times)
    return f"{statistics.median(per_second):8.0f} files/s [{per_second[0]:.0f}-{per_second[-1]:.0f}] ({middle:.2f} s)"


def ratios(peer: list[float], ours: list[float]) -> str:
    """Our files/s over the peer's, per round (the peer's time over ours): median, how many
    rounds we were faster in (a median near 1 with about half the rounds either way is a
    tie, whatever its second digit), and every round's ratio."""
    each = sorted(p / o for p, o in zip(peer, ours, strict=True))
    shown = ", ".join(f"{r:.2f}" for r in each)
    faster = sum(r > 1 for r in each)
    return f"median {statistics.median(each):.2f}x, faster in {faster} of {len(each)} rounds ({shown})"


def wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 10
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.05)


def rsync_daemon(src: Path, dst: Path) -> float:
    """Seconds for ``rsync -a`` of ``src`` to ``dst`` through an rsync daemon on 127.0.0.1
    (rsync's own protocol over TCP, as between servers without ssh)."""
    port = free_port()
    dst.parent.mkdir(parents=True, exist_ok=True)
    user = pwd.getpwuid(os.getuid())
    with tempfile.TemporaryDirectory() as conf_dir:
        conf = Path(conf_dir) / "rsyncd.conf"
        conf.write_text(
            f"use chroot = false\nuid = {user.pw_uid}\ngid = {user.pw_gid}\n"
            f"[bench]\npath = {dst.parent}\nread only = false\n"
        )
        daemon = subprocess.Popen(
            ["rsync", "--daemon", "--no-detach", f"--config={conf}", f"--port={port}", "--address=127.0.0.1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_for_port(port, daemon, "rsync --daemon")
            return timed(["rsync", "-a", f"{src}/", f"rsync://127.0.0.1:{port}/bench/{dst.name}/"])
        finally:
            daemon.terminate()
            daemon.wait(timeout=10)


def rsync_over_ssh(src: Path, dst: Path) -> float:
    """Seconds for ``rsync -a`` of ``src`` to ``dst`` through an sshd on 127.0.0.1."""
    port = free_port()
    with peers.ssh_keys("127.0.0.1", port) as kd:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        sshd = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(kd / "sshd_config")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            wait_for_port(port, sshd, "sshd")
            ssh = " ".join(["ssh", "-p", str(port), *peers.ssh_options(kd)])
            user = pwd.getpwuid(os.getuid()).pw_name
            return timed(["rsync", "-a", "-e", ssh, str(src) + "/", f"{user}@127.0.0.1:{dst}"])
        finally:
            sshd.terminate()
            sshd.wait(timeout=10)


if __name__ == "__main__":
    main()
