"""Per-connection context: who is on the other end and what they may see."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jettui.constants import PERMISSIONS_ALL, Permissions
from jettui.errors import AuthenticationError, CommandError

_conn_ids = itertools.count(1)


@dataclass
class Principal:
    """An authenticated identity."""

    user_name: str
    uid: int
    group: str = ""
    superuser_eligible: bool = False
    superuser: bool = False
    wrangler: bool = False
    token: str | None = None
    token_session: str | None = None
    permissions: Permissions = PERMISSIONS_ALL
    sandbox_roots: dict[str, str] | None = None


@dataclass
class Session:
    peer: str
    """Source address of the connection (no port)."""
    peer_port: int = 0
    conn_id: int = field(default_factory=lambda: next(_conn_ids))
    principal: Principal | None = None
    fs: Any = None
    """The principal's FileSystemView, made at authentication."""
    notify: Callable[[str, dict[str, Any]], None] | None = None
    """Send a notification on this connection."""
    subscriptions: set[str] = field(default_factory=set)

    @property
    def authenticated(self) -> bool:
        return self.principal is not None

    @property
    def conn_key(self) -> str:
        return f"conn:{self.conn_id}"

    @property
    def owner_keys(self) -> frozenset[str]:
        """Keys of the requests this session may read: its connection's and its user's."""
        if self.principal is None:
            return frozenset({self.conn_key})
        return frozenset({self.conn_key, f"user:{self.principal.user_name}"})

    def require_auth(self) -> Principal:
        if self.principal is None:
            raise AuthenticationError("authentication required: call auth() or authAsync() first")
        return self.principal

    def require_superuser(self, method: str) -> Principal:
        p = self.require_auth()
        if not p.superuser:
            raise CommandError(f"{method} requires superuser privileges: call superuser() first")
        return p

    def require_permission(self, method: str, needed: Permissions) -> Principal:
        p = self.require_auth()
        missing = needed & ~p.permissions
        if missing:
            names = ", ".join(flag.name or str(flag.value) for flag in Permissions if flag & missing)
            raise CommandError(f"{method} needs the {names} permission, which this session lacks")
        return p

    def close_fs(self) -> None:
        if self.fs is not None:
            self.fs.close()
            self.fs = None
