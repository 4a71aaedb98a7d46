"""The jettui runner for the WAN bench (``bench/wan.py``): two real jettui servers, one per namespace.

What ``run_jettui`` must do once the transfer engine is available
==================================================================

Signature: ``run_jettui(link, src_path, dst_dir, *, cipher="NONE", max_seconds=120.0, **_) -> dict``.

``link`` is a live ``netlink.Link``: namespace A holds ``link.addr_a`` (10.200.0.1), namespace B holds
``link.addr_b`` (10.200.0.2), joined by the emulated link. ``src_path`` is a file or a directory tree
(``bench/wan.py`` uses a 200 MB file and a 2,000-file tree; ``--quick`` a 50 MB file);
``dst_dir`` is an existing empty directory (tmpfs), writable from both namespaces. ``cipher`` is
"NONE" or "ENCRYPTED_256".

1. Start two ``jettui server`` processes, one per namespace, each bound to its own 10.200 address
   only (never 0.0.0.0, never any other address), with a throwaway state/config directory under a
   ``tempfile.TemporaryDirectory``:
   ``pa = link.popen_a([sys.executable, "-m", "jettui", "server", ...])`` and
   ``pb = link.popen_b([...])``. Wait until both listen (``link.wait_listen("a", port)``,
   ``link.wait_listen("b", port)``; TCP control port, and the UDP data port with ``proto="udp"``).
2. Order the transfer of ``src_path`` from the server in A to ``dst_dir`` on the server in B through
   ``jettui.api`` (the client connects to the server in A over its control port; create that
   client socket inside namespace A with ``link.socket("a", socket.AF_INET, socket.SOCK_STREAM)``
   or run the client as ``link.popen_a([...])``), with the requested ``cipher``.
3. Wrap only the transfer in ``peers.Meter(link)`` (``with Meter(link) as meter: ...``) and time it
   with ``time.monotonic()`` from the order to the verified close reported by the receiver
   (``seconds``). Bound it by ``max_seconds``: on expiry cancel the transfer and report
   ``status="timeout"``, ``ok=False`` and the partial goodput (``peers.tree_bytes(dst_dir)``).
4. Stop both servers with ``netlink.stop(p)`` (SIGTERM to the process group, then SIGKILL; it reaps
   with wait4 and returns ``(returncode, cpu_seconds)``): those CPU seconds are ``cpu_a_s`` and
   ``cpu_b_s``. Stop them in a ``finally`` so nothing survives a failure (``Link.close`` kills
   leftovers too, but do not rely on it).
5. Verify: ``ok = peers.same_content(src_path, dst_dir / src_path.name)``.
6. Return ``peers._result(...)``, i.e. a dict with at least:

   - ``goodput_mbit``: ``payload_size(src_path) * 8 / seconds / 1e6``;
   - ``seconds``: transfer time, file open to verified close;
   - ``retrans_bytes``: payload bytes the sender sent more than once, from the engine's own counters
     (the issue's goal: <= loss rate + 0.5 % of the file);
   - ``reverse_bytes``: ``meter.delta("ba", "rx_bytes")`` (IP bytes B->A: ACKs and control;
     goal <= 1 % of ``forward_bytes``); ``forward_bytes``: ``meter.delta("ab", "rx_bytes")``;
   - ``cpu_a`` / ``cpu_b``: % of one core over ``seconds`` (goal <= 25 % each);
     ``cpu_a_s`` / ``cpu_b_s``: CPU seconds; ``cpu_emu``: ``meter.cpu_emu()``;
   - ``ok`` (bool), ``status`` ("ok", "timeout" or "failed: <reason>"), ``payload_bytes``, ``note``
     (e.g. block size, target rate, cipher actually negotiated).

   ``peers._result`` computes all of these from its arguments (pass ``goodput_mbit`` only to
   override the payload / seconds figure).

The copy lands in ``dst_dir/<name>`` (destinationPath ``dst_dir``, manifest entry ``/<name>``).
The CPU columns follow item 4 (whole server lifetime: start-up, the scrypt logins and the transfer);
the note adds the CPU of each server during the transfer alone, from /proc, which is what the
issue's "<= 25 % of a core at 100 Mbit/s" is about.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

try:
    from netlink import ADDR_A, ADDR_B, Link, stop
    from peers import Meter, _result, payload_size, same_content, tree_bytes
except ModuleNotFoundError:
    from bench.netlink import ADDR_A, ADDR_B, Link, stop
    from bench.peers import Meter, _result, payload_size, same_content, tree_bytes

REPO = Path(__file__).resolve().parents[1]
API_PORT = 8886
RECV_PORT = 8887
PASSWORD = "wan-bench"
CIPHERS = {"NONE": 0, "UNENCRYPTED": 1, "ENCRYPTED_128": 2, "ENCRYPTED_256": 3}
#: How often the client polls the transfer (each poll is a TLS round trip to the server in A).
POLL_SECONDS = 0.02


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "JETTUI_PASSWORD": PASSWORD}


def _start_server(link: Link, side: str, addr: str, state: Path, user: str) -> tuple[subprocess.Popen[str], str]:
    subprocess.run(
        [sys.executable, "-m", "jettui", "user", "add", user, "--persistent-state-dir", str(state)],
        env=_env(), check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    argv = [
        sys.executable, "-m", "jettui", "server", "--api-host", addr, "--api-allow-remote-control",
        "--api-port", str(API_PORT), "--recv-host", addr, "--recv-port", str(RECV_PORT),
        "--persistent-state-dir", str(state), "--log-level", "WARNING",
    ]  # fmt: skip
    proc = link.popen(side, argv, stdout=subprocess.PIPE, text=True, env=_env())
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"SHA-256 ([0-9a-f]{64})", line)
    if not match:
        raise RuntimeError(f"jettui server in {side} did not start: {line!r}")
    link.wait_listen(side, API_PORT)
    link.wait_listen(side, RECV_PORT, proto="udp")
    return proc, match.group(1)


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a live process (all its threads) from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_jettui(
    link: Link, src_path: Path, dst_dir: Path, *, cipher: str = "NONE", max_seconds: float = 120.0, **_: Any
) -> dict[str, Any]:
    """Transfer ``src_path`` A->B with two jettui servers; see the module docstring."""
    dst_dir.mkdir(parents=True, exist_ok=True)
    payload = payload_size(src_path)
    with tempfile.TemporaryDirectory(prefix="jt-jettui-") as td:
        pa = pb = client = None
        cpu_a = cpu_b = 0.0
        try:
            pa, fp_a = _start_server(link, "a", ADDR_A, Path(td) / "a", "tx")
            pb, fp_b = _start_server(link, "b", ADDR_B, Path(td) / "b", "rx")
            argv = [sys.executable, __file__, "client", fp_a, fp_b, str(src_path), str(dst_dir), cipher]
            argv.append(str(max_seconds))
            client = link.popen_a(
                argv,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_env(),
            )  # fmt: skip
            assert client.stdin is not None and client.stdout is not None
            ready = client.stdout.readline().strip()
            if ready != "READY":
                raise RuntimeError(f"client did not get ready: {ready!r}")
            with Meter(link) as meter:
                cpu0 = (_cpu_seconds(pa.pid), _cpu_seconds(pb.pid))
                client.stdin.write("GO\n")
                client.stdin.flush()
                line = client.stdout.readline()
                cpu1 = (_cpu_seconds(pa.pid), _cpu_seconds(pb.pid))
            report = json.loads(line) if line.strip() else {"status": "failed", "errorMessage": "client died"}
            client.wait(timeout=30)
        finally:
            if client is not None and client.poll() is None:
                stop(client, grace=1.0)
            if pa is not None:
                _, cpu_a = stop(pa, grace=5.0)
            if pb is not None:
                _, cpu_b = stop(pb, grace=5.0)
    seconds = float(report.get("seconds", max_seconds))
    block = int(report.get("blockSize") or 0)
    retrans = int(report.get("blocksRetransmitted") or 0) * block
    during = (cpu1[0] - cpu0[0], cpu1[1] - cpu0[1])
    note = (
        f"block {block} B, cipher {report.get('cipher')}, final rate {float(report.get('sendRate') or 0) / 1e6:.1f} "
        f"Mbit/s, srtt {float(report.get('roundTripTimeMs') or 0):.0f} ms; CPU during the transfer A "
        f"{100 * during[0] / max(seconds, 1e-9):.1f} % B {100 * during[1] / max(seconds, 1e-9):.1f} % "
        f"(cpu columns: whole server lifetime incl. start-up and scrypt logins); destination auth: API token"
    )
    if phases := report.get("phases"):
        note += "; seconds " + ", ".join(f"{k} {v:.3f}" for k, v in phases.items())
    if report.get("status") == "complete":
        ok = same_content(src_path, dst_dir / src_path.name)
        status = "ok" if ok else "failed: copy differs from the source"
        return _result(
            payload=payload, seconds=seconds, meter=meter, cpu_a_s=cpu_a, cpu_b_s=cpu_b, ok=ok, status=status,
            retrans=retrans, note=note,
        )  # fmt: skip
    timeout = report.get("status") == "timeout"
    return _result(
        payload=tree_bytes(dst_dir), seconds=seconds, meter=meter, cpu_a_s=cpu_a, cpu_b_s=cpu_b, ok=False,
        status="timeout" if timeout else f"failed: {report.get('status')} {report.get('errorMessage', '')}".strip(),
        retrans=retrans, note=note,
    )  # fmt: skip


def _client(fp_a: str, fp_b: str, src: str, dst_dir: str, cipher: str, max_seconds: float) -> None:
    """Runs in namespace A: order the transfer from the server in A once told to, report as JSON.

    The destination authenticates with an API token of the receiving user, made beforehand on
    the server in B (the ssh peers use keys likewise): a password would cost the receiver one
    scrypt check (~1 s of CPU) per server start, i.e. in every run of this bench."""
    from jettui.api import connect

    with connect(ADDR_B, API_PORT, fingerprint=fp_b) as rx_api:
        rx_api.server.auth("rx", PASSWORD)
        token = rx_api.server.createAPIToken(description="WAN bench")["token"]
    with connect(ADDR_A, API_PORT, fingerprint=fp_a) as api:
        api.server.auth("tx", PASSWORD)
        dest = api.send.createDestination(ADDR_B, RECV_PORT, token=token)
        print("READY", flush=True)
        sys.stdin.readline()
        start, wall = time.monotonic(), time.time()
        manifest = api.send.waitForManifest(api.send.createManifest({f"/{Path(src).name}": src}))
        ordered = time.monotonic() - start
        t = api.send.createTransfer(dest, manifest, destinationPath=dst_dir, minCipher=CIPHERS[cipher.upper()])
        status = "timeout"
        while time.monotonic() - start < max_seconds:
            t = api.send.getTransfer(t)
            if t["status"] in ("complete", "error", "cancelled"):
                status = t["status"]
                break
            time.sleep(POLL_SECONDS)
        seconds = time.monotonic() - start
        # Where the time outside the data phase goes: the manifest, the order to the session's
        # start (handshake), and the last poll after the server's end.
        phases = {"manifest": ordered}
        if t.get("startTime") and t.get("endTime"):
            phases["to_start"] = t["startTime"] / 1e6 - wall - ordered
            phases["data"] = (t["endTime"] - t["startTime"]) / 1e6
            phases["seen"] = wall + seconds - t["endTime"] / 1e6
        if status == "timeout":
            api.send.cancelTransfer(t)
        keys = ("blockSize", "blocksRetransmitted", "blocksSent", "totalBlocks", "bytesSent", "sendRate",
                "roundTripTimeMs", "cipher", "errorMessage")  # fmt: skip
        print(json.dumps({"status": status, "seconds": seconds, "phases": phases, **{k: t.get(k) for k in keys}}),
              flush=True)  # fmt: skip


if __name__ == "__main__" and len(sys.argv) == 8 and sys.argv[1] == "client":
    _client(*sys.argv[2:7], float(sys.argv[7]))
