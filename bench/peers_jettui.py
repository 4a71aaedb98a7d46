"""The jettui runner for the WAN bench (``bench/wan.py``): a placeholder until the engine exists.

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

Until then it raises ``NotImplementedError``; ``bench/wan.py`` catches it and shows the row as skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

try:
    from netlink import Link
except ModuleNotFoundError:
    from bench.netlink import Link


def run_jettui(
    link: Link, src_path: Path, dst_dir: Path, *, cipher: str = "NONE", max_seconds: float = 120.0, **_: Any
) -> dict[str, Any]:
    """Transfer ``src_path`` A->B with two jettui servers; see the module docstring."""
    raise NotImplementedError("transfer engine not yet available")
