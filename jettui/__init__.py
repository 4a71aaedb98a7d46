"""jettui: accelerated server-to-server file transfer with a terminal commander."""

from __future__ import annotations

__version__ = "0.1.0"
