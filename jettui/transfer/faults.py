"""Named fault points for the crash matrix (issue 6 §5).

The receiver's file writer calls :func:`fault_point` at the moments where a crash is most
interesting (see :data:`FAULT_POINTS`).  When the environment variable ``JETTUI_FAULT``
names that point when the process starts, the process kills itself with SIGKILL there,
exactly as ``kill -9`` from outside would, with no chance to run ``finally`` clauses, flush
buffers or close files.  ``JETTUI_FAULT=name:N`` dies on the N-th hit of that point
(1-based), so a test can aim at a random block or checkpoint.

Unset (production), the cost is one global load and a comparison with None per call, and
the writer checks :data:`FAULT` itself before calling in its hot path.
"""

from __future__ import annotations

import os
import signal

__all__ = ["FAULT", "FAULT_POINTS", "fault_point", "parse_fault"]

#: Every point the writer has, in the order a file goes through them.
FAULT_POINTS = (
    "block-write",  # half of a block written with pwrite, the other half not yet
    "before-fsync",  # the whole part-file written and verified, not yet fsynced
    "before-rename",  # part-file fsynced, not yet renamed into place
    "before-dir-fsync",  # renamed into place, the directory not yet fsynced
    "backup-rename",  # VERSIONED: during the .jetbak steps (old backup removed / new one linked)
    "checkpoint-write",  # half of a new sidecar written to its temporary name
)


def parse_fault(value: str | None) -> tuple[str, int] | None:
    """``"name"`` or ``"name:N"`` → (name, N); None when unset or empty."""
    if not value:
        return None
    name, _, count = value.partition(":")
    if name not in FAULT_POINTS:
        raise ValueError(f"JETTUI_FAULT names an unknown fault point {name!r}; known: {', '.join(FAULT_POINTS)}")
    n = int(count) if count else 1
    if n < 1:
        raise ValueError("JETTUI_FAULT hit count must be at least 1")
    return name, n


#: The armed fault point, read once at import: ``(name, hit number)`` or None.
FAULT: tuple[str, int] | None = parse_fault(os.environ.get("JETTUI_FAULT"))
_hits = 0


def fault_point(name: str) -> None:
    """Die by SIGKILL here if ``JETTUI_FAULT`` arms this point (and this is the N-th hit)."""
    global _hits
    armed = FAULT
    if armed is None or armed[0] != name:
        return
    _hits += 1
    if _hits >= armed[1]:
        os.kill(os.getpid(), signal.SIGKILL)
