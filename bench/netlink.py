"""An emulated WAN link between two network namespaces, for the bench.

    netns A (10.200.0.1 on TUN "jta") <-> C forwarder (root netns) <-> netns B (10.200.0.2 on TUN "jtb")

``Link`` creates two namespaces with unique names (``jt-<pid>-<n>-a`` / ``-b``), builds and starts
``linkemu/forwarder.c`` (one-way delay, random loss per direction, optional reordering and duplication,
a rate cap and a tail-drop queue), addresses the TUNs point-to-point (nothing else is addressed or
routed) and tears everything down on exit, also on an exception or Ctrl-C: processes started through
the link are killed, every process left inside the namespaces is killed, the forwarder is stopped and
the namespaces are deleted. The forwarder also ends by itself after ``seconds`` or when this process
dies (its stdin closes), so nothing outlives a crash for long.

Usage::

    with Link(rate_mbit=100, rtt_ms=100, loss_ab=0.01, seconds=120) as link:
        link.verify()
        link.run_b(["iperf3", "-s", "-1", "-D"])
        p = link.popen_a(["iperf3", "-c", link.addr_b, "-t", "5"])

CLI: ``python3 bench/netlink.py --selftest`` (100 Mbit/s, 100 ms RTT, 1 % loss; needs root,
``ip netns``, ``/dev/net/tun``, gcc and iperf3).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import json
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
BUILD_DIR = BENCH_DIR / ".build"
FORWARDER_SRC = BENCH_DIR / "linkemu" / "forwarder.c"
NS_PREFIX = "jt-"
ADDR_A = "10.200.0.1"
ADDR_B = "10.200.0.2"
TUN_A = "jta"
TUN_B = "jtb"
CLONE_NEWNET = 0x40000000
_NS_RE = re.compile(r"^jt-(\d+)-(\d+)-[ab]$")
_counter = 0
_counter_lock = threading.Lock()


class LinkError(RuntimeError):
    """The link could not be set up (missing root, tools or kernel features)."""


def check_environment() -> None:
    """Raise LinkError unless this process can build and run the emulator."""
    if os.geteuid() != 0:
        raise LinkError("needs root (network namespaces and TUN devices)")
    if not os.path.exists("/dev/net/tun"):
        raise LinkError("/dev/net/tun is missing")
    for tool in ("ip", "gcc"):
        if shutil.which(tool) is None:
            raise LinkError(f"{tool} not found")


def build_forwarder() -> Path:
    """Compile linkemu/forwarder.c into bench/.build/ (cached by the source hash)."""
    src = FORWARDER_SRC.read_bytes()
    digest = hashlib.sha256(src).hexdigest()[:12]
    exe = BUILD_DIR / f"forwarder-{digest}"
    if exe.exists():
        return exe
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    tmp = BUILD_DIR / f".forwarder-{digest}.{os.getpid()}"
    proc = subprocess.run(
        ["gcc", "-O2", "-Wall", "-o", str(tmp), str(FORWARDER_SRC)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0:
        raise LinkError(f"building the forwarder failed:\n{proc.stderr}")
    os.replace(tmp, exe)
    return exe


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=15, check=check)


def list_namespaces() -> list[str]:
    out = _ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _kill_ns_processes(ns: str) -> None:
    for _ in range(3):
        pids = [int(p) for p in _ip("netns", "pids", ns, check=False).stdout.split() if p.isdigit()]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def _delete_namespace(ns: str) -> None:
    _kill_ns_processes(ns)
    _ip("netns", "del", ns, check=False)


def cleanup_stale() -> list[str]:
    """Delete jt-<pid>-* namespaces left behind by a bench process that no longer exists."""
    removed = []
    for ns in list_namespaces():
        m = _NS_RE.match(ns)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            _delete_namespace(ns)
            removed.append(ns)
    return removed


_libc = ctypes.CDLL("libc.so.6", use_errno=True)


def socket_in_namespace(ns: str, family: int = socket.AF_INET, type_: int = socket.SOCK_DGRAM) -> socket.socket:
    """Create a socket that lives in namespace ``ns`` (setns in a throwaway thread).

    setns(CLONE_NEWNET) changes only the calling thread; the socket keeps its namespace for life.
    """
    box: dict[str, Any] = {}

    def worker() -> None:
        try:
            fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns failed")
            finally:
                os.close(fd)
            box["sock"] = socket.socket(family, type_)
        except BaseException as exc:  # reported to the caller below
            box["err"] = exc

    t = threading.Thread(target=worker, daemon=True)
    t.start()
    t.join()
    if "err" in box:
        raise box["err"]
    return box["sock"]


def reap(proc: subprocess.Popen[Any], timeout: float | None = None) -> tuple[int | None, float]:
    """Wait for ``proc`` with wait4 and return (exit code, CPU seconds of it and its reaped children).

    Returns (None, 0.0) if it did not end within ``timeout``. Processes started through
    ``ip netns exec`` keep their pid (ip execs the command), so the rusage is the command's own.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        if proc.returncode is not None:
            return proc.returncode, getattr(proc, "cpu_s", 0.0)
        try:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        except ChildProcessError:
            proc.returncode = proc.returncode if proc.returncode is not None else -1
            return proc.returncode, 0.0
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            cpu = ru.ru_utime + ru.ru_stime
            proc.cpu_s = cpu  # type: ignore[attr-defined]
            return proc.returncode, cpu
        if deadline is not None and time.monotonic() >= deadline:
            return None, 0.0
        time.sleep(0.02)


def stop(proc: subprocess.Popen[Any], grace: float = 2.0, sig: int = signal.SIGTERM) -> tuple[int | None, float]:
    """Signal the process group of ``proc`` (started with start_new_session), then SIGKILL; reap."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        rc, cpu = reap(proc, grace)
        if rc is not None:
            return rc, cpu
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        return reap(proc, 5.0)
    return reap(proc, 0)


class Link:
    """Two namespaces joined by the emulated link; see the module docstring.

    Loss, reordering and duplication are fractions (0.01 = 1 %). ``rtt_ms`` is split evenly into the
    two one-way delays. ``queue_ms`` (default: one RTT, at least 20 ms) or ``queue_pkts`` bounds the
    tail-drop queue in front of the rate cap. ``seconds`` bounds the forwarder's life.
    """

    def __init__(
        self,
        rate_mbit: float = 100.0,
        rtt_ms: float = 100.0,
        loss_ab: float = 0.0,
        loss_ba: float = 0.0,
        reorder: float = 0.0,
        duplicate: float = 0.0,
        queue_ms: float | None = None,
        seconds: float = 300.0,
        *,
        queue_pkts: int | None = None,
        reorder_ms: float = 2.0,
        mtu: int = 1500,
        tcp_buf_mb: int = 32,
        seed: int | None = None,
        quiet: bool = False,
    ) -> None:
        global _counter
        self.rate_mbit = rate_mbit
        self.rtt_ms = rtt_ms
        self.loss_ab = loss_ab
        self.loss_ba = loss_ba
        self.reorder = reorder
        self.duplicate = duplicate
        self.queue_pkts = queue_pkts
        self.queue_ms = None if queue_pkts else (queue_ms if queue_ms is not None else max(rtt_ms, 20.0))
        self.seconds = seconds
        self.reorder_ms = reorder_ms
        self.mtu = mtu
        self.tcp_buf_mb = tcp_buf_mb
        self.seed = seed
        self.quiet = quiet
        with _counter_lock:
            _counter += 1
            n = _counter
        base = f"{NS_PREFIX}{os.getpid()}-{n}"
        self.ns_a = f"{base}-a"
        self.ns_b = f"{base}-b"
        self.addr_a = ADDR_A
        self.addr_b = ADDR_B
        self._created: list[str] = []
        self._procs: list[subprocess.Popen[Any]] = []
        self._fwd: subprocess.Popen[bytes] | None = None
        self._fwd_lock = threading.Lock()
        self._fwd_stdout_buf = b""
        self.final_stats: dict[str, Any] | None = None
        self.fwd_stderr = ""
        self._closed = False
        self.congestion_control: str | None = None

    # ---- life cycle -------------------------------------------------------------------------
    def __enter__(self) -> Link:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        check_environment()
        cleanup_stale()
        exe = build_forwarder()
        for ns in (self.ns_a, self.ns_b):
            _ip("netns", "add", ns)
            self._created.append(ns)
        args = [
            str(exe),
            "--ns-a",
            f"/var/run/netns/{self.ns_a}",
            "--ns-b",
            f"/var/run/netns/{self.ns_b}",
            "--tun-a",
            TUN_A,
            "--tun-b",
            TUN_B,
            "--seconds",
            str(self.seconds),
            "--rate-mbit",
            str(self.rate_mbit),
            "--delay-ms",
            str(self.rtt_ms / 2.0),
            "--loss-ab",
            str(self.loss_ab),
            "--loss-ba",
            str(self.loss_ba),
            "--reorder-ab",
            str(self.reorder),
            "--reorder-ba",
            str(self.reorder),
            "--reorder-ms",
            str(self.reorder_ms),
            "--dup-ab",
            str(self.duplicate),
            "--dup-ba",
            str(self.duplicate),
        ]
        if self.queue_pkts:
            args += ["--queue-pkts", str(self.queue_pkts)]
        elif self.queue_ms:
            args += ["--queue-ms", str(self.queue_ms)]
        if self.seed is not None:
            args += ["--seed", str(self.seed)]
        self._fwd = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        line = self._fwd_readline(10.0)
        if not line.startswith("READY"):
            raise LinkError(f"forwarder did not start: {line!r} {self._fwd_stderr_text()}")
        sysctls = [
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
            f"net.ipv4.tcp_rmem=4096 131072 {self.tcp_buf_mb << 20}",
            f"net.ipv4.tcp_wmem=4096 16384 {self.tcp_buf_mb << 20}",
        ]
        for ns, tun, local, peer in ((self.ns_a, TUN_A, ADDR_A, ADDR_B), (self.ns_b, TUN_B, ADDR_B, ADDR_A)):
            subprocess.run(
                ["ip", "netns", "exec", ns, "sysctl", "-q", "-w", *sysctls],
                check=True,
                capture_output=True,
                timeout=15,
            )
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", local, "peer", f"{peer}/32", "dev", tun)
            _ip("-n", ns, "link", "set", tun, "mtu", str(self.mtu), "up")
        # net.core.rmem_max/wmem_max are not per-namespace: UDP peers raise their buffers themselves
        if not self.quiet:
            print(f"link up: {self.describe()} ({self.ns_a} <-> {self.ns_b})", flush=True)

    def describe(self) -> str:
        q = f"{self.queue_pkts} pkts" if self.queue_pkts else f"{self.queue_ms:g} ms"
        s = (
            f"{self.rate_mbit:g} Mbit/s, RTT {self.rtt_ms:g} ms, loss A->B {self.loss_ab * 100:g} % "
            f"B->A {self.loss_ba * 100:g} %, queue {q}"
        )
        if self.reorder:
            s += f", reorder {self.reorder * 100:g} % (+{self.reorder_ms:g} ms)"
        if self.duplicate:
            s += f", duplicate {self.duplicate * 100:g} %"
        return s

    def close(self) -> None:
        """Tear everything down (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for p in reversed(self._procs):
            with contextlib.suppress(Exception):
                stop(p, grace=1.0)
        for ns in self._created:
            with contextlib.suppress(Exception):
                _kill_ns_processes(ns)
        if self._fwd is not None:
            fwd = self._fwd
            with contextlib.suppress(Exception):
                assert fwd.stdin is not None
                fwd.stdin.close()
            try:
                fwd.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(fwd.pid, signal.SIGKILL)
                with contextlib.suppress(Exception):
                    fwd.wait(timeout=5)
            with contextlib.suppress(Exception):
                rest = self._fwd_stdout_buf + (fwd.stdout.read() if fwd.stdout else b"")
                for line in rest.decode(errors="replace").splitlines():
                    if line.startswith("FINAL "):
                        self.final_stats = json.loads(line[6:])
                self.fwd_stderr = self._fwd_stderr_text()
        for ns in self._created:
            with contextlib.suppress(Exception):
                _delete_namespace(ns)
        left = [ns for ns in list_namespaces() if ns in self._created]
        if left:
            print(f"warning: namespaces still present: {left}", file=sys.stderr)
        elif not self.quiet:
            print(f"link down: namespaces {self.ns_a}, {self.ns_b} deleted", flush=True)

    # ---- forwarder control --------------------------------------------------------------------
    def _fwd_stderr_text(self) -> str:
        if self._fwd is None or self._fwd.stderr is None or self._fwd.poll() is None:
            return ""
        return self._fwd.stderr.read().decode(errors="replace")

    def _fwd_readline(self, timeout: float) -> str:
        assert self._fwd is not None and self._fwd.stdout is not None
        fd = self._fwd.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._fwd_stdout_buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return ""
            r, _, _ = select.select([fd], [], [], left)
            if r:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                self._fwd_stdout_buf += chunk
        line, _, self._fwd_stdout_buf = self._fwd_stdout_buf.partition(b"\n")
        return line.decode(errors="replace")

    def counters(self) -> dict[str, Any]:
        """Forwarder counters so far: {"elapsed_s", "cpu_s", "ab": {...}, "ba": {...}}."""
        with self._fwd_lock:
            if self._fwd is None or self._fwd.poll() is not None:
                raise LinkError("the forwarder is not running (its --seconds may have run out)")
            assert self._fwd.stdin is not None
            self._fwd.stdin.write(b"s")
            self._fwd.stdin.flush()
            while True:
                line = self._fwd_readline(5.0)
                if not line:
                    raise LinkError("no counters from the forwarder")
                if line.startswith("STATS "):
                    return json.loads(line[6:])

    def alive(self) -> bool:
        return self._fwd is not None and self._fwd.poll() is None

    def settle(self, timeout: float | None = None) -> None:
        """Wait until the emulator holds no packets (the previous run's tail has drained)."""
        deadline = time.monotonic() + (timeout if timeout is not None else 2.0 + 3 * self.rtt_ms / 1000)
        while time.monotonic() < deadline:
            c = self.counters()
            if c["ab"]["queued_pkts"] == 0 and c["ba"]["queued_pkts"] == 0:
                return
            time.sleep(0.05)

    # ---- running things in the namespaces -----------------------------------------------------
    def ns(self, side: str) -> str:
        if side not in ("a", "b"):
            raise ValueError("side must be 'a' or 'b'")
        return self.ns_a if side == "a" else self.ns_b

    def exec_argv(self, side: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns(side), *argv]

    def run(
        self, side: str, argv: Sequence[str], timeout: float = 60.0, check: bool = True, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(self.exec_argv(side, argv), timeout=timeout, check=check, **kw)

    def run_a(self, argv: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.run("a", argv, **kw)

    def run_b(self, argv: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.run("b", argv, **kw)

    def popen(self, side: str, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` in the namespace, in its own process group; killed at close() if still alive."""
        kw.setdefault("start_new_session", True)
        kw.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen(self.exec_argv(side, argv), **kw)
        p.started_at = time.monotonic()  # type: ignore[attr-defined]
        self._procs.append(p)
        return p

    def popen_a(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        return self.popen("a", argv, **kw)

    def popen_b(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        return self.popen("b", argv, **kw)

    def socket(self, side: str, family: int = socket.AF_INET, type_: int = socket.SOCK_DGRAM) -> socket.socket:
        return socket_in_namespace(self.ns(side), family, type_)

    def wait_listen(self, side: str, port: int, proto: str = "tcp", timeout: float = 10.0) -> None:
        """Wait until something listens on ``port`` (tcp) or is bound to it (udp) in the namespace."""
        flag = "-Hltn" if proto == "tcp" else "-Hlun"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.run(side, ["ss", flag, f"sport = :{port}"], check=False, timeout=5).stdout
            if out.strip():
                return
            time.sleep(0.05)
        raise LinkError(f"nothing listening on {proto} port {port} in {self.ns(side)}")

    def set_congestion_control(self, algo: str) -> None:
        """Pin the TCP congestion control of every connection over the link to ``algo``, in both
        namespaces, with a per-route ``congctl`` (the box default is bbr; a namespace may not set
        net.ipv4.tcp_congestion_control to an algorithm outside the host's allowed list, a route may).
        """
        for side, tun, local, peer in (("a", TUN_A, ADDR_A, ADDR_B), ("b", TUN_B, ADDR_B, ADDR_A)):
            _ip("-n", self.ns(side), "route", "replace", peer, "dev", tun, "src", local, "congctl", algo)
            routes = _ip("-n", self.ns(side), "route", "show", peer).stdout
            if f"congctl {algo}" not in routes:
                raise LinkError(f"could not pin congestion control {algo} in {self.ns(side)}: {routes!r}")
        self.congestion_control = algo

    # ---- self-check ---------------------------------------------------------------------------
    def measure_rtt(self, count: int = 20) -> dict[str, float]:
        out = self.run_a(
            ["ping", "-n", "-q", "-c", str(count), "-i", "0.05", "-W", "2", ADDR_B],
            check=False,
            timeout=count * 0.05 + 10,
        ).stdout
        m = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms", out)
        if not m:
            raise LinkError(f"ping gave no RTT: {out!r}")
        return {"min": float(m.group(1)), "avg": float(m.group(2)), "max": float(m.group(3))}

    def measure_loss(self, direction: str = "ab", count: int = 5000, size: int = 500, mbit: float = 20.0) -> float:
        """Send ``count`` numbered UDP datagrams paced at ``mbit`` and return the fraction not received."""
        src_side, dst_side = ("a", "b") if direction == "ab" else ("b", "a")
        dst_addr = ADDR_B if direction == "ab" else ADDR_A
        rx = self.socket(dst_side)
        tx = self.socket(src_side)
        try:
            rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
            rx.bind((dst_addr, 0))
            port = rx.getsockname()[1]
            rx.setblocking(False)
            seen: set[int] = set()
            buf = bytearray(2048)

            def drain() -> None:
                while True:
                    try:
                        n = rx.recv_into(buf)
                    except BlockingIOError:
                        return
                    if n >= 4:
                        seen.add(struct.unpack_from("!I", buf)[0])

            payload = bytearray(size)
            per_ms = max(1, int(mbit * 1e6 / 8 / size / 1000))
            t0 = time.monotonic()
            sent = 0
            while sent < count:
                for _ in range(min(per_ms, count - sent)):
                    struct.pack_into("!I", payload, 0, sent)
                    tx.sendto(payload, (dst_addr, port))
                    sent += 1
                drain()
                delay = t0 + sent / (per_ms * 1000) - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            end = time.monotonic() + self.rtt_ms / 1000 + 0.5
            while time.monotonic() < end:
                drain()
                time.sleep(0.01)
            return 1.0 - len(seen) / count
        finally:
            rx.close()
            tx.close()

    def measure_rate(self, seconds: float = 4.0, port: int = 5299) -> dict[str, float]:
        """iperf3 UDP A->B at 1.5x the cap; the receiver's steady-state payload rate in Mbit/s
        (the server's per-second intervals, the first one left out)."""
        offer = self.rate_mbit * 1.5 if self.rate_mbit else 1000.0
        srv = self.popen_b(
            ["iperf3", "-s", "-1", "-B", ADDR_B, "-p", str(port), "-J"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        try:
            self.wait_listen("b", port)
            self.run_a(
                [
                    "iperf3",
                    "-c",
                    ADDR_B,
                    "-B",
                    ADDR_A,
                    "-p",
                    str(port),
                    "-u",
                    "-b",
                    f"{offer}M",
                    "-l",
                    "1400",
                    "-t",
                    str(seconds),
                    "-J",
                ],
                timeout=seconds + 30,
                check=False,
            )
            out, _ = srv.communicate(timeout=15)
            data = json.loads(out)
            if not data.get("intervals"):
                # iperf3's server saw no test (its client failed to connect in time): say so,
                # rather than an IndexError that ends the whole matrix.
                raise RuntimeError(f"link self-check: iperf3 measured nothing ({data.get('error', 'no intervals')})")
            rates = [iv["sum"]["bits_per_second"] for iv in data["intervals"][1:]] or [
                data["intervals"][0]["sum"]["bits_per_second"]
            ]
            s = data["end"]["sum"]
            return {
                "offered_mbit": offer,
                "received_mbit": sum(rates) / len(rates) / 1e6,
                "lost_percent": s.get("lost_percent", 0.0),
            }
        finally:
            stop(srv, grace=1.0)

    def verify(self, rate_seconds: float = 4.0) -> dict[str, Any]:
        """Measure RTT (ping), loss (counted UDP probe, both directions) and rate (iperf3 UDP above the
        cap); print them next to the settings and return them."""
        before = self.counters()
        rtt = self.measure_rtt()
        loss_ab = self.measure_loss("ab")
        loss_ba = self.measure_loss("ba")
        rate = self.measure_rate(rate_seconds)
        after = self.counters()
        udp_frac = 1400 / (1400 + 28)
        expect_payload = self.rate_mbit * udp_frac * (1 - self.loss_ab)
        ab = {k: after["ab"][k] - before["ab"][k] for k in ("rx_pkts", "drop_loss_pkts", "drop_queue_pkts")}
        ratio_loss = ab["drop_loss_pkts"] / max(1, ab["rx_pkts"] - ab["drop_queue_pkts"])
        res = {
            "rtt_ms": rtt,
            "loss_ab": loss_ab,
            "loss_ba": loss_ba,
            "rate": rate,
            "expected_payload_mbit": expect_payload,
            "emulator_loss_ab": ratio_loss,
            "emulator_cpu_s": after["cpu_s"] - before["cpu_s"],
        }
        print(f"link self-check: {self.describe()}")
        print(f"  {'quantity':<28}{'setting':>14}{'measured':>14}")
        print(f"  {'RTT (ping min/avg) ms':<28}{self.rtt_ms:>14.2f}{rtt['min']:>8.2f}/{rtt['avg']:<6.2f}")
        print(f"  {'loss A->B % (UDP probe)':<28}{self.loss_ab * 100:>14.3f}{loss_ab * 100:>14.3f}")
        print(f"  {'loss B->A % (UDP probe)':<28}{self.loss_ba * 100:>14.3f}{loss_ba * 100:>14.3f}")
        print(f"  {'loss A->B % (emulator)':<28}{self.loss_ab * 100:>14.3f}{ratio_loss * 100:>14.3f}")
        print(
            f"  {'rate Mbit/s (UDP payload)':<28}{expect_payload:>14.2f}{rate['received_mbit']:>14.2f}"
            f"   (cap {self.rate_mbit:g} wire; offered {rate['offered_mbit']:g})"
        )
        return res


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into KeyboardInterrupt so `with Link(...)` cleans up on them too."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="jettui bench link emulator self-check")
    ap.add_argument("--selftest", action="store_true", help="check a 100 Mbit/s, 100 ms, 1 %% link")
    ap.add_argument("--rate", type=float, default=100.0, help="Mbit/s")
    ap.add_argument("--rtt", type=float, default=100.0, help="ms")
    ap.add_argument("--loss", type=float, default=1.0, help="percent, A->B")
    ap.add_argument("--loss-ba", type=float, default=None, help="percent, B->A (default: same as --loss)")
    ap.add_argument("--queue-ms", type=float, default=None)
    ap.add_argument("--cleanup", action="store_true", help="delete stale jt-* namespaces and exit")
    args = ap.parse_args(argv)
    if args.cleanup:
        print("removed:", cleanup_stale())
        return 0
    if not args.selftest:
        ap.print_help()
        return 2
    loss_ba = args.loss if args.loss_ba is None else args.loss_ba
    link = Link(args.rate, args.rtt, args.loss / 100, loss_ba / 100, queue_ms=args.queue_ms, seconds=60)
    try:
        with sigterm_as_interrupt(), link:
            link.verify()
    except KeyboardInterrupt:
        print("interrupted; link torn down", file=sys.stderr)
        return 130
    if link.final_stats:
        f = link.final_stats
        print(f"forwarder: ran {f['elapsed_s']:.1f} s, used {f['cpu_s']:.2f} s CPU")
        for d in ("ab", "ba"):
            c = f[d]
            print(
                f"  {d}: in {c['rx_pkts']} pkts, out {c['tx_pkts']}, dropped loss {c['drop_loss_pkts']} "
                f"queue {c['drop_queue_pkts']} write {c['drop_write_pkts']}, "
                f"max backlog {c['max_backlog_ms']:.1f} ms"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
