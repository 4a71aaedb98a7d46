"""Known servers: certificate fingerprints pinned on first use, like SSH's known_hosts.

The file is ``<config dir>/known_servers``, one ``host:port sha256-hex`` per line.  The
config dir is ``$JETTUI_CONFIG_DIR``, else ``$XDG_CONFIG_HOME/jettui``, else
``~/.config/jettui``.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from jettui.errors import TrustError

_lock = threading.Lock()


def config_dir() -> Path:
    env = os.environ.get("JETTUI_CONFIG_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CONFIG_HOME")
    return (Path(xdg) if xdg else Path.home() / ".config") / "jettui"


class TrustStore:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or config_dir() / "known_servers"

    def _read(self) -> dict[str, str]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {}
        pins: dict[str, str] = {}
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2 and not line.startswith("#"):
                pins[parts[0]] = parts[1]
        return pins

    def get(self, endpoint: str) -> str | None:
        return self._read().get(endpoint)

    def pin(self, endpoint: str, fingerprint: str) -> None:
        with _lock:
            pins = self._read()
            pins[endpoint] = fingerprint
            self._write(pins)

    def forget(self, endpoint: str) -> bool:
        with _lock:
            pins = self._read()
            found = pins.pop(endpoint, None) is not None
            self._write(pins)
            return found

    def _write(self, pins: dict[str, str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(f"{k} {v}\n" for k, v in sorted(pins.items())))
        os.replace(tmp, self.path)

    def check(self, endpoint: str, fingerprint: str) -> bool:
        """Pin on first use; return True if this was the first contact.

        Raises TrustError when a different fingerprint is pinned.
        """
        pinned = self.get(endpoint)
        if pinned is None:
            self.pin(endpoint, fingerprint)
            return True
        if pinned != fingerprint:
            raise TrustError(
                f"the certificate of {endpoint} has changed: pinned SHA-256 {pinned}, "
                f"the server now presents {fingerprint}. If you expected this (the server's state "
                f"directory was replaced), run `jettui trust --forget {endpoint}` or delete its line "
                f"from {self.path}, then connect again."
            )
        return False
