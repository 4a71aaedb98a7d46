"""lsAsync of a 100,000-entry directory, end to end (request, server scan, TLS, client decode).

Prints numbers; asserts nothing.  Target on the 2-core machine: <= 1.5 s.
"""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
import time

from bench.echo import start_server
from jettui.api import connect


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--entries", type=int, default=100_000)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        big = os.path.join(tmp, "big")
        os.mkdir(big)
        t = time.perf_counter()
        for i in range(args.entries):
            os.close(os.open(os.path.join(big, f"file-{i:07d}.dat"), os.O_CREAT | os.O_WRONLY, 0o644))
        print(f"created {args.entries:,} files in {time.perf_counter() - t:.1f} s")
        proc, port, fingerprint = start_server(os.path.join(tmp, "state"))
        try:
            with connect("127.0.0.1", port, fingerprint=fingerprint) as api:
                api.server.auth("bench", "bench")
                for run in range(args.runs):
                    start = time.perf_counter()
                    listing = api.server.getRequestResult(api.server.lsAsync(big))
                    elapsed = time.perf_counter() - start
                    assert len(listing["files"]) == args.entries
                    print(f"run {run + 1}: lsAsync of {args.entries:,} entries end to end in {elapsed:.3f} s")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=15)


if __name__ == "__main__":
    main()
