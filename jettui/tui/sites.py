"""Saved sites and connection targets.

A *site* is what a pane connects to: host, port, user and, optionally, an API token.
Saved sites live in ``<config dir>/sites.json`` (the same directory as the known-servers
file, see :func:`jettui.api.trust.config_dir`).  Passwords are kept in memory only, unless
the user ticks "remember password" in the connect screen; the file is then written with
mode 0600, as SSH does for its keys.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from jettui.api.trust import config_dir
from jettui.constants import DEFAULT_API_PORT
from jettui.errors import JettuiError

__all__ = ["Site", "SiteStore", "parse_target"]

#: ``jet://USER@HOST:PORT``, ``USER@HOST``, ``HOST:PORT``, ``[v6]:PORT`` or a bare host.
_TARGET_RE = re.compile(
    r"^(?:jet://)?(?:(?P<user>[^@/\s]+)@)?(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:/\s\[\]@]+))(?::(?P<port>\d+))?/?$"
)


@dataclass
class Site:
    """One server to connect to.

    Only ``name``, ``host``, ``port``, ``user`` and ``token`` are saved; ``password`` only
    when ``remember_password`` is set.  ``fingerprint`` pins a certificate explicitly (the
    embedded server hands its own over), and ``embedded`` marks that server.
    """

    name: str
    host: str
    port: int = DEFAULT_API_PORT
    user: str = ""
    token: str = ""
    password: str = field(default="", repr=False)
    """In memory only unless ``remember_password``; never shown."""
    remember_password: bool = False
    fingerprint: str | None = None
    embedded: bool = False

    @property
    def endpoint(self) -> str:
        """``host:port``, the key of the known-servers file."""
        return f"{self.host}:{self.port}"

    @property
    def label(self) -> str:
        """What the path bar shows: the site name, or ``user@host:port``."""
        if self.name:
            return self.name
        return f"{self.user}@{self.endpoint}" if self.user else self.endpoint

    @property
    def has_credentials(self) -> bool:
        return bool(self.token or (self.user and self.password))

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if k in ("name", "host", "port", "user", "token")}
        if self.remember_password and self.password:
            data["password"] = self.password
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Site:
        def text(key: str) -> str:
            value = data.get(key, "")
            return value if isinstance(value, str) else ""

        port = data.get("port", DEFAULT_API_PORT)
        password = text("password")
        return cls(
            name=text("name"),
            host=text("host"),
            port=port if isinstance(port, int) and 0 < port < 65536 else DEFAULT_API_PORT,
            user=text("user"),
            token=text("token"),
            password=password,
            remember_password=bool(password),
        )

    def copy(self, **changes: Any) -> Site:
        return replace(self, **changes)


def parse_target(text: str) -> Site:
    """``HOST[:PORT]`` or ``jet://USER@HOST:PORT`` as a :class:`Site` without credentials.

    Raises:
        JettuiError: the text is not a target.
    """
    match = _TARGET_RE.match(text.strip())
    if not match:
        raise JettuiError(f"not a server address: {text!r} (expected HOST[:PORT] or jet://USER@HOST:PORT)")
    port = int(match["port"]) if match["port"] else DEFAULT_API_PORT
    if not 0 < port < 65536:
        raise JettuiError(f"port {port} is out of range in {text!r}")
    host = match["v6"] or match["host"]
    return Site(name="", host=host, port=port, user=match["user"] or "")


class SiteStore:
    """The saved sites: a JSON list in ``sites.json``, read and written whole."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or config_dir() / "sites.json"

    def load(self) -> list[Site]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise JettuiError(f"cannot read saved sites from {self.path}: {exc}") from exc
        if not isinstance(data, list):
            raise JettuiError(f"{self.path} must hold a JSON list of sites")
        return [Site.from_json(item) for item in data if isinstance(item, dict)]

    def save_all(self, sites: list[Site]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_suffix(".tmp")
        # 0600 from the start: the file may hold tokens (and passwords the user chose to keep).
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump([s.to_json() for s in sites], out, indent=2)
        os.replace(tmp, self.path)

    def save(self, site: Site) -> None:
        """Add ``site`` or replace the saved site of the same name."""
        sites = [s for s in self.load() if s.name != site.name]
        sites.append(site)
        sites.sort(key=lambda s: s.name.casefold())
        self.save_all(sites)

    def delete(self, name: str) -> bool:
        sites = self.load()
        kept = [s for s in sites if s.name != name]
        if len(kept) == len(sites):
            return False
        self.save_all(kept)
        return True
