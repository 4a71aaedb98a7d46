"""Wranglers: users and groups allowed to see and modify every user's objects.

They are stored by user id or group id, not by name (the seed: names can alias one id).
Superusers are always wranglers and cannot be removed.
"""

from __future__ import annotations

from typing import Any

from jettui.errors import CommandError
from jettui.server.auth import UserStore
from jettui.server.state import StateStore


class WranglerStore:
    def __init__(self, state: StateStore, users: UserStore) -> None:
        self.state = state
        self.users = users

    def add(self, name: str, is_group: bool) -> None:
        if is_group:
            gid = self.users.group_id(name)
            if gid is None:
                raise CommandError(f"no such group {name!r}")
            kind, ident = "group", gid
        else:
            user = self.users.get(name)
            if user is None:
                raise CommandError(f"no such user {name!r}")
            kind, ident = "user", user.uid
        self.state.execute("INSERT OR REPLACE INTO wranglers(kind, ident, name) VALUES(?, ?, ?)", (kind, ident, name))

    def delete(self, identifier: int, is_group: bool) -> None:
        kind = "group" if is_group else "user"
        if self.state.execute("DELETE FROM wranglers WHERE kind = ? AND ident = ?", (kind, identifier)) == 0:
            raise CommandError(f"{kind} id {identifier} is not a wrangler")

    def list(self) -> dict[str, list[dict[str, Any]]]:
        rows = self.state.query("SELECT kind, ident, name FROM wranglers ORDER BY kind, ident")
        return {
            "users": [{"id": r["ident"], "name": r["name"]} for r in rows if r["kind"] == "user"],
            "groups": [{"id": r["ident"], "name": r["name"]} for r in rows if r["kind"] == "group"],
        }

    def is_wrangler(self, uid: int, group: str) -> bool:
        if self.state.query("SELECT 1 FROM wranglers WHERE kind = 'user' AND ident = ?", (uid,)):
            return True
        gid = self.users.group_id(group) if group else None
        return gid is not None and bool(
            self.state.query("SELECT 1 FROM wranglers WHERE kind = 'group' AND ident = ?", (gid,))
        )
