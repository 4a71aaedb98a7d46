"""Peer baselines for the WAN bench, each run across a ``netlink.Link`` from namespace A to B.

Every runner has the signature ``run_X(link, src_path, dst_dir, **opts) -> dict`` and returns at least:

- ``goodput_mbit``: payload bits / ``seconds`` (for iperf3, the receiver's rate over its test);
- ``seconds``: wall time from starting the client to its exit (handshakes included, verification not);
- ``retrans_bytes``: bytes sent again by the sender (TCP: counted by the emulator from sequence
  numbers; None where the tool does not say);
- ``reverse_bytes``: IP bytes B->A through the emulator during the run (ACKs, NAKs, control);
- ``cpu_a`` / ``cpu_b``: CPU of each side in % of one core over ``seconds`` (rusage of the processes
  and their reaped children; the ``_s`` keys are CPU seconds);
- ``ok``: True if the copy at ``dst_dir/<basename of src>`` is byte-identical to the source, False if
  not or if it timed out, None where there is nothing to verify (iperf3 memory-to-memory);
plus ``status`` ("ok", "timeout", "failed: ...", "n/a"), ``payload_bytes``, ``forward_bytes``
(IP bytes A->B entering the emulator), ``cpu_emu`` (% of a core used by the forwarder) and ``note``.

Runs are bounded by ``max_seconds``; a run that hits it is killed and its partial goodput reported
(bytes that reached ``dst_dir`` / elapsed) with ``status="timeout"`` and ``ok=False``.
"""

from __future__ import annotations

import contextlib
import filecmp
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:  # run from bench/ (wan.py puts it on sys.path)
    from netlink import ADDR_A, ADDR_B, Link, LinkError, reap, stop
except ModuleNotFoundError:  # imported as the bench package
    from bench.netlink import ADDR_A, ADDR_B, Link, LinkError, reap, stop

SSH_PORT = 22
IPERF_PORT = 5201
UFTP_PORT = 1044
UFTP_BLOCK = 1300  # uftp -b: data bytes per packet (NAKs count blocks)
APT_PACKAGES = {
    "iperf3": "iperf3",
    "rsync": "rsync",
    "ssh": "openssh-client",
    "scp": "openssh-client",
    "ssh-keygen": "openssh-client",
    "/usr/sbin/sshd": "openssh-server",
    "uftp": "uftp",
    "uftpd": "uftp",
    "ping": "iputils-ping",
    "ss": "iproute2",
}


# ---- installation ------------------------------------------------------------------------------
def _have(tool: str) -> bool:
    return os.path.exists(tool) if tool.startswith("/") else shutil.which(tool) is not None


def ensure_tools(tools: list[str] | None = None) -> None:
    """Install the Debian packages providing ``tools`` (default: all peers) if any is missing.

    The openssh-server and iperf3 packages are installed with a policy-rc.d in place for the
    duration, so apt does not start their system daemons.
    """
    missing = sorted({APT_PACKAGES[t] for t in (tools or list(APT_PACKAGES)) if not _have(t)})
    if not missing:
        return
    print(f"installing {' '.join(missing)} with apt-get ...", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    policy = Path("/usr/sbin/policy-rc.d")
    made_policy = not policy.exists()
    if made_policy:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        subprocess.run(["apt-get", "update", "-q"], env=env, check=False, timeout=600, capture_output=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
            env=env,
            check=True,
            timeout=900,
            capture_output=True,
        )
    finally:
        if made_policy:
            policy.unlink(missing_ok=True)


# ---- data sets and verification --------------------------------------------------------------
def payload_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def tree_bytes(path: Path) -> int:
    """Bytes present under ``path`` (files only, partial and temporary files included)."""
    if not path.exists():
        return 0
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def same_content(src: Path, dst: Path) -> bool:
    """True if ``dst`` is a byte-identical copy of ``src`` (a file, or a tree of files)."""
    if src.is_file():
        return dst.is_file() and filecmp.cmp(src, dst, shallow=False)
    if not dst.is_dir():
        return False

    def listing(root: Path) -> set[str]:
        return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}

    names = listing(src)
    if names != listing(dst):
        return False
    return all(filecmp.cmp(src / n, dst / n, shallow=False) for n in names)


def make_file(path: Path, size: int, seed: int = 1) -> Path:
    """A file of ``size`` incompressible bytes (cached: reused if the size matches)."""
    if path.is_file() and path.stat().st_size == size:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        left = size
        while left:
            n = min(left, 8 << 20)
            f.write(os.urandom(n))
            left -= n
    os.replace(tmp, path)
    return path


def make_tree(path: Path, files: int, total: int, seed: int = 7) -> Path:
    """``files`` incompressible files totalling ``total`` bytes in 20 subdirectories (cached)."""
    import random

    stamp = path / ".complete"
    if stamp.exists() and stamp.read_text() == f"{files} {total}":
        return path
    shutil.rmtree(path, ignore_errors=True)
    rng = random.Random(seed)
    weights = [rng.uniform(0.1, 1.9) for _ in range(files)]
    scale = total / sum(weights)
    sizes = [max(1, int(w * scale)) for w in weights]
    sizes[-1] += total - sum(sizes)
    for i, size in enumerate(sizes):
        d = path / f"d{i % 20:02d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:05d}.bin").write_bytes(os.urandom(size))
    stamp.write_text(f"{files} {total}")
    return path


def _verify_target(src: Path, dst_dir: Path) -> Path:
    return dst_dir / src.name


# ---- measurement helpers ---------------------------------------------------------------------
@dataclass
class Meter:
    """Forwarder counter deltas across a run."""

    link: Link
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)

    def __enter__(self) -> Meter:
        self.link.settle()
        self.before = self.link.counters()
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(LinkError):
            self.link.settle(timeout=2 * self.link.rtt_ms / 1000 + 0.5)
            self.after = self.link.counters()

    def delta(self, direction: str, key: str) -> int:
        if not self.after:
            return 0
        return int(self.after[direction][key] - self.before[direction][key])

    def cpu_emu(self) -> float:
        if not self.after:
            return 0.0
        dt = self.after["elapsed_s"] - self.before["elapsed_s"]
        return 100.0 * (self.after["cpu_s"] - self.before["cpu_s"]) / max(dt, 1e-9)


def _result(
    *,
    payload: int,
    seconds: float,
    meter: Meter,
    cpu_a_s: float,
    cpu_b_s: float,
    ok: bool | None,
    status: str,
    retrans: int | None,
    goodput_mbit: float | None = None,
    note: str = "",
) -> dict[str, Any]:
    seconds = max(seconds, 1e-9)
    return {
        "goodput_mbit": goodput_mbit if goodput_mbit is not None else payload * 8 / seconds / 1e6,
        "seconds": seconds,
        "payload_bytes": payload,
        "retrans_bytes": retrans,
        "forward_bytes": meter.delta("ab", "rx_bytes"),
        "reverse_bytes": meter.delta("ba", "rx_bytes"),
        "cpu_a": 100.0 * cpu_a_s / seconds,
        "cpu_b": 100.0 * cpu_b_s / seconds,
        "cpu_a_s": cpu_a_s,
        "cpu_b_s": cpu_b_s,
        "cpu_emu": meter.cpu_emu(),
        "ok": ok,
        "status": status,
        "note": note,
    }


def _tail(data: bytes | str | None, n: int = 300) -> str:
    if not data:
        return ""
    s = data.decode(errors="replace") if isinstance(data, bytes) else data
    return " ".join(s.strip().split())[-n:]


@dataclass
class ClientRun:
    rc: int | None  # None: killed at max_seconds
    seconds: float
    cpu_s: float
    output: str
    partial_bytes: int = 0  # bytes under dst_dir when it was killed


def _client_run(
    link: Link, argv: list[str], max_seconds: float, dst: Path, env: dict[str, str] | None = None
) -> ClientRun:
    """Run a client in namespace A, bounded by ``max_seconds`` (then killed)."""
    with tempfile.TemporaryFile() as out:
        t0 = time.monotonic()
        p = link.popen_a(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        rc, cpu = reap(p, max_seconds)
        seconds = time.monotonic() - t0
        partial = 0
        if rc is None:
            partial = tree_bytes(dst)  # before the kill: rsync deletes its temporary file
            _, cpu = stop(p, grace=1.0)
        out.seek(0)
        return ClientRun(rc, seconds, cpu, out.read().decode(errors="replace"), partial)


def _finish(
    link: Link,
    meter: Meter,
    src: Path,
    dst_dir: Path,
    run: ClientRun,
    cpu_b: float,
    retrans: int | None,
    note: str = "",
) -> dict[str, Any]:
    payload = payload_size(src)
    target = _verify_target(src, dst_dir)
    common = dict(seconds=run.seconds, meter=meter, cpu_a_s=run.cpu_s, cpu_b_s=cpu_b, retrans=retrans)
    if run.rc is None:
        note = f"partial: {run.partial_bytes} of {payload} B in {run.seconds:.0f} s; {note}".strip("; ")
        return _result(payload=run.partial_bytes, ok=False, status="timeout", note=note, **common)
    ok = run.rc == 0 and same_content(src, target)
    status = "ok" if ok else f"failed: rc={run.rc} {_tail(run.output, 200)}".strip()
    return _result(payload=payload if ok else tree_bytes(dst_dir), ok=ok, status=status, note=note, **common)


# ---- iperf3 (raw references, memory to memory) -----------------------------------------------
def run_iperf3_tcp(
    link: Link,
    src_path: Path,
    dst_dir: Path,
    *,
    cc: str = "cubic",
    iperf_seconds: float = 10.0,
    max_seconds: float = 120.0,
    **_: Any,
) -> dict[str, Any]:
    """One iperf3 TCP stream A->B for ``iperf_seconds`` with congestion control ``cc`` (namespace
    sysctl and ``-C``). Nothing is written: ``ok`` is None."""
    link.set_congestion_control(cc)
    srv = link.popen_b(
        ["iperf3", "-s", "-1", "-B", ADDR_B, "-p", str(IPERF_PORT)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        link.wait_listen("b", IPERF_PORT)
        with Meter(link) as meter:
            argv = [
                "iperf3",
                "-c",
                ADDR_B,
                "-B",
                ADDR_A,
                "-p",
                str(IPERF_PORT),
                "-C",
                cc,
                "-t",
                str(iperf_seconds),
                "-J",
            ]
            run = _client_run(link, argv, min(max_seconds, iperf_seconds + 30), dst_dir)
        _, cpu_b = reap(srv, 3.0)
    finally:
        stop(srv, grace=0.5)
    try:
        data = json.loads(run.output)
        end = data["end"]
        recv = end["sum_received"]
        goodput = recv["bits_per_second"] / 1e6
        dur = recv["seconds"]
        payload = int(recv["bytes"])
        cc_used = end.get("sender_tcp_congestion", cc)
    except (ValueError, KeyError) as exc:
        return _result(
            payload=0,
            seconds=run.seconds,
            meter=meter,
            cpu_a_s=run.cpu_s,
            cpu_b_s=cpu_b,
            ok=False,
            status=f"failed: {exc!r} {_tail(run.output)}",
            retrans=None,
        )
    if cc_used != cc:
        return _result(
            payload=0,
            seconds=run.seconds,
            meter=meter,
            cpu_a_s=run.cpu_s,
            cpu_b_s=cpu_b,
            ok=False,
            status=f"failed: sender used {cc_used}, wanted {cc}",
            retrans=None,
        )
    res = _result(
        payload=payload,
        seconds=dur,
        meter=meter,
        cpu_a_s=run.cpu_s,
        cpu_b_s=cpu_b,
        ok=None,
        status="n/a",
        retrans=meter.delta("ab", "tcp_retrans_bytes"),
        goodput_mbit=goodput,
        note=f"memory to memory, {iperf_seconds:g} s, cc={cc_used}",
    )
    return res


def run_iperf3_udp(
    link: Link,
    src_path: Path,
    dst_dir: Path,
    *,
    iperf_seconds: float = 10.0,
    max_seconds: float = 120.0,
    **_: Any,
) -> dict[str, Any]:
    """iperf3 UDP A->B offered at the link's cap (wire rate, 1400-byte datagrams): the raw payload
    ceiling of the link. Unreliable, so ``ok`` is None; goodput is the receiver's rate."""
    srv = link.popen_b(
        ["iperf3", "-s", "-1", "-B", ADDR_B, "-p", str(IPERF_PORT), "-J"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        link.wait_listen("b", IPERF_PORT)
        offer = link.rate_mbit * 1400 / 1428 if link.rate_mbit else 1000.0
        with Meter(link) as meter:
            argv = [
                "iperf3",
                "-c",
                ADDR_B,
                "-B",
                ADDR_A,
                "-p",
                str(IPERF_PORT),
                "-u",
                "-b",
                f"{offer:.3f}M",
                "-l",
                "1400",
                "-t",
                str(iperf_seconds),
                "-J",
            ]
            run = _client_run(link, argv, min(max_seconds, iperf_seconds + 30), dst_dir)
        _, cpu_b = reap(srv, 10)  # the JSON report (a few kB) fits in the pipe buffer
        srv_out = srv.stdout.read() if srv.stdout else b""
    finally:
        stop(srv, grace=0.5)
    try:
        data = json.loads(srv_out)
        s = data["end"]["sum"]
        received = (s["packets"] - s["lost_packets"]) * 1400
        goodput = received * 8 / s["seconds"] / 1e6
    except (ValueError, KeyError, TypeError) as exc:
        return _result(
            payload=0,
            seconds=run.seconds,
            meter=meter,
            cpu_a_s=run.cpu_s,
            cpu_b_s=cpu_b,
            ok=False,
            status=f"failed: {exc!r} {_tail(run.output)}",
            retrans=None,
        )
    return _result(
        payload=received,
        seconds=s["seconds"],
        meter=meter,
        cpu_a_s=run.cpu_s,
        cpu_b_s=cpu_b,
        ok=None,
        status="n/a",
        retrans=0,
        goodput_mbit=goodput,
        note=f"offered {offer:.1f} Mbit/s payload, receiver lost {s['lost_percent']:.2f} %",
    )


# ---- ssh-based peers -------------------------------------------------------------------------
SSHD_CONFIG = """\
Port {port}
ListenAddress {addr}
HostKey {dir}/host_ed25519
PidFile {dir}/sshd.pid
AuthorizedKeysFile {dir}/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
MaxStartups 50
Subsystem sftp internal-sftp
"""


@contextlib.contextmanager
def ssh_keys(addr: str = ADDR_B, port: int = SSH_PORT) -> Iterator[Path]:
    """A throwaway directory with a host key, a client key, authorized_keys and an
    sshd_config listening on ``addr``:``port``."""
    with tempfile.TemporaryDirectory(prefix="jt-ssh-") as d:
        kd = Path(d)
        for name in ("host_ed25519", "client_ed25519"):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "jettui-bench", "-f", str(kd / name)],
                check=True,
                timeout=30,
            )
        (kd / "authorized_keys").write_text((kd / "client_ed25519.pub").read_text())
        (kd / "sshd_config").write_text(SSHD_CONFIG.format(port=port, addr=addr, dir=kd))
        yield kd


@contextlib.contextmanager
def sshd(link: Link, kd: Path) -> Iterator[subprocess.Popen[Any]]:
    """sshd in namespace B on ADDR_B, in the foreground (-D); yields the process (reap it for CPU)."""
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    p = link.popen_b(
        ["/usr/sbin/sshd", "-D", "-e", "-f", str(kd / "sshd_config")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        link.wait_listen("b", SSH_PORT)
        yield p
    finally:
        stop(p, grace=1.0)


def ssh_options(kd: Path) -> list[str]:
    return [
        "-F",
        "/dev/null",
        "-i",
        str(kd / "client_ed25519"),
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "ConnectTimeout=20",
    ]


def _ssh_transfer(
    link: Link, src: Path, dst_dir: Path, cc: str, max_seconds: float, make_argv: Callable[[Path], list[str]]
) -> dict[str, Any]:
    link.set_congestion_control(cc)
    dst_dir.mkdir(parents=True, exist_ok=True)
    with ssh_keys() as kd, sshd(link, kd) as server:
        with Meter(link) as meter:
            run = _client_run(link, make_argv(kd), max_seconds, dst_dir)
        time.sleep(0.2)  # let sshd reap its session children so their CPU is in its rusage
        _, cpu_b = stop(server, grace=2.0)
    retrans = meter.delta("ab", "tcp_retrans_bytes")
    return _finish(link, meter, src, dst_dir, run, cpu_b, retrans=retrans, note=f"cc={cc}")


def run_rsync(
    link: Link, src_path: Path, dst_dir: Path, *, cc: str = "cubic", max_seconds: float = 120.0, **_: Any
) -> dict[str, Any]:
    """rsync -a over ssh (push from A to sshd in B), TCP congestion control pinned to ``cc``."""

    def argv(kd: Path) -> list[str]:
        ssh = " ".join(["ssh", *ssh_options(kd)])
        return ["rsync", "-a", "--whole-file", "-e", ssh, str(src_path), f"root@{ADDR_B}:{dst_dir}/"]

    return _ssh_transfer(link, src_path, dst_dir, cc, max_seconds, argv)


def run_scp(
    link: Link, src_path: Path, dst_dir: Path, *, cc: str = "cubic", max_seconds: float = 120.0, **_: Any
) -> dict[str, Any]:
    """scp (OpenSSH's default SFTP mode; -r for trees) from A to sshd in B, congestion control ``cc``."""

    def argv(kd: Path) -> list[str]:
        return ["scp", "-q", "-r", *ssh_options(kd), str(src_path), f"root@{ADDR_B}:{dst_dir}/"]

    return _ssh_transfer(link, src_path, dst_dir, cc, max_seconds, argv)


# ---- uftp ------------------------------------------------------------------------------------
def uftp_client_id(addr: str) -> str:
    """uftpd's default UID: its IPv4 address as 0xNNNNNNNN."""
    return "0x" + "".join(f"{int(x):02X}" for x in addr.split("."))


def run_uftp(
    link: Link,
    src_path: Path,
    dst_dir: Path,
    *,
    cipher: str = "NONE",
    rate_fraction: float = 0.95,
    max_seconds: float = 120.0,
    **_: Any,
) -> dict[str, Any]:
    """uftp (unicast to uftpd in B) at a fixed rate of ``rate_fraction`` x the link cap, no congestion
    control; cipher NONE -> ``-Y none``, anything else -> ``-Y aes256-gcm -h sha256`` (RSA key
    exchange). The client is named with ``-H`` (closed group) so the announce phase ends as soon as
    uftpd registers."""
    dst_dir.mkdir(parents=True, exist_ok=True)
    rate_kbps = int(link.rate_mbit * 1000 * rate_fraction) if link.rate_mbit else -1
    crypto = ["-Y", "none"] if cipher.upper() == "NONE" else ["-Y", "aes256-gcm", "-h", "sha256"]
    with tempfile.TemporaryDirectory(prefix="jt-uftp-") as td:
        status_file = Path(td) / "status"
        srv = link.popen_b(
            ["uftpd", "-d", "-D", str(dst_dir), "-I", ADDR_B, "-p", str(UFTP_PORT), "-B", str(8 << 20)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            link.wait_listen("b", UFTP_PORT, proto="udp")
            argv = [
                "uftp",
                "-M",
                ADDR_B,
                "-I",
                ADDR_A,
                "-p",
                str(UFTP_PORT),
                "-R",
                str(rate_kbps),
                "-C",
                "none",
                "-b",
                str(UFTP_BLOCK),
                "-B",
                str(8 << 20),
                "-H",
                uftp_client_id(ADDR_B),
                "-S",
                str(status_file),
                *crypto,
                str(src_path),
            ]
            with Meter(link) as meter:
                run = _client_run(link, argv, max_seconds, dst_dir)
            time.sleep(0.2)
            _, cpu_b = stop(srv, grace=2.0)
        finally:
            stop(srv, grace=0.5)
        status = status_file.read_text(errors="replace") if status_file.exists() else ""
    note = f"-R {rate_kbps} kbit/s, {' '.join(crypto)}"
    m = re.search(r"^STATS;[^;]*;\d+;\d+;\d+;[^;]*;([\d.]+);", status, re.M)
    if m:
        note += f"; uftp file time {float(m.group(1)):.2f} s"
    naks = sum(int(n) for n in re.findall(r"Got (\d+) NAKs", run.output))
    return _finish(link, meter, src_path, dst_dir, run, cpu_b, retrans=naks * UFTP_BLOCK, note=note)


# ---- registry --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Peer:
    name: str
    func: Callable[..., dict[str, Any]]
    opts: dict[str, Any]
    uses_cipher: bool = False  # runs once per cipher (NONE / ENCRYPTED_256)
    trees: bool = True  # can send a directory tree
    fixed_cipher: str = "-"  # what to show in the cipher column when uses_cipher is False
    tools: tuple[str, ...] = ()


RSYNC_TOOLS = ("rsync", "ssh", "ssh-keygen", "/usr/sbin/sshd")
SCP_TOOLS = ("scp", "ssh-keygen", "/usr/sbin/sshd")


def registry() -> dict[str, Peer]:
    try:
        from peers_jettui import run_jettui
    except ModuleNotFoundError:
        from bench.peers_jettui import run_jettui

    return {
        p.name: p
        for p in [
            Peer("jettui", run_jettui, {}, uses_cipher=True),
            Peer("iperf3-cubic", run_iperf3_tcp, {"cc": "cubic"}, trees=False, tools=("iperf3",)),
            Peer("iperf3-bbr", run_iperf3_tcp, {"cc": "bbr"}, trees=False, tools=("iperf3",)),
            Peer("iperf3-udp", run_iperf3_udp, {}, trees=False, tools=("iperf3",)),
            Peer("rsync-cubic", run_rsync, {"cc": "cubic"}, fixed_cipher="ssh", tools=RSYNC_TOOLS),
            Peer("rsync-bbr", run_rsync, {"cc": "bbr"}, fixed_cipher="ssh", tools=RSYNC_TOOLS),
            Peer("scp-cubic", run_scp, {"cc": "cubic"}, fixed_cipher="ssh", tools=SCP_TOOLS),
            Peer("scp-bbr", run_scp, {"cc": "bbr"}, fixed_cipher="ssh", tools=SCP_TOOLS),
            Peer("uftp", run_uftp, {}, uses_cipher=True, tools=("uftp", "uftpd")),
        ]
    }
