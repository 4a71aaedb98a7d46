"""Echo round trips per second: sync client, TLS, loopback, against a real server process.

Prints numbers; asserts nothing.  Target on the 2-core machine: >= 5,000 echo/s.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

from jettui.api import connect


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(state: str) -> tuple[subprocess.Popen[str], int, str]:
    env = {**os.environ, "JETTUI_PASSWORD": "bench"}
    subprocess.run([sys.executable, "-m", "jettui", "user", "add", "bench", "--persistent-state-dir", state],
                   env=env, check=True, capture_output=True)  # fmt: skip
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "jettui", "server", "--api-port", str(port), "--recv-port", "0",
         "--persistent-state-dir", state, "--log-level", "WARNING"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    fingerprint = re.search(r"SHA-256 ([0-9a-f]{64})", proc.stdout.readline())
    assert fingerprint
    return proc, port, fingerprint.group(1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seconds", type=float, default=5.0)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as state:
        proc, port, fingerprint = start_server(state)
        try:
            with connect("127.0.0.1", port, fingerprint=fingerprint) as api:
                api.server.auth("bench", "bench")
                for _ in range(200):  # warm up
                    api.server.echo("x")
                count, start = 0, time.perf_counter()
                while (elapsed := time.perf_counter() - start) < args.seconds:
                    for _ in range(100):
                        api.server.echo("ping")
                    count += 100
                print(f"echo round trips: {count} in {elapsed:.2f} s = {count / elapsed:,.0f} /s "
                      f"({elapsed / count * 1e6:.0f} us each)")  # fmt: skip
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=15)


if __name__ == "__main__":
    main()
