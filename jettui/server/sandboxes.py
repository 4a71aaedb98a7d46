"""Sandbox mappings: which roots each user sees (the seed's setSandboxMapping).

A mapping is ``{sandboxName: root}``; a blank name is the root addressed as ``/path``,
other names are addressed ``name:/path``.  The blank *user* name is the system sandbox,
inherited by every user without a mapping of their own; only its paths may carry the
placeholders ``%u`` (user name), ``%d`` (domain: always empty here), ``%f`` (full user
name) and ``%%``.  ``False`` means "not sandboxed".  Mappings are resolved when a session
authenticates, so a change applies to new sessions only.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from jettui.errors import CommandError
from jettui.server.state import StateStore

MAX_SANDBOX_NAME = 64
MAX_ROOT_PATH = 4096
_PLACEHOLDER = re.compile(r"%(.)")


def validate_sandbox_name(name: object) -> str:
    if not isinstance(name, str):
        raise CommandError("sandbox names must be strings")
    if len(name) > MAX_SANDBOX_NAME:
        raise CommandError(f"sandbox name {name[:20]!r}... is longer than {MAX_SANDBOX_NAME} characters")
    for ch in name:
        if ch in ":/\\\x00" or ord(ch) < 32 or ord(ch) == 127:
            raise CommandError(f"sandbox name {name!r} contains {ch!r}, which is not allowed")
    if name in (".", ".."):
        raise CommandError(f"sandbox name {name!r} is not allowed")
    return name


def _root_path(value: object, name: str) -> str:
    if isinstance(value, dict):
        kind = value.get("type", "File")
        if kind != "File":
            raise CommandError(f"sandbox {name!r}: type {kind!r} is not supported (only 'File')")
        value = value.get("path")
    if not isinstance(value, str) or not value:
        raise CommandError(f"sandbox {name!r}: the root path must be a non-empty string")
    if "\x00" in value or len(value) > MAX_ROOT_PATH:
        raise CommandError(f"sandbox {name!r}: invalid root path")
    if not value.startswith("/"):
        raise CommandError(f"sandbox {name!r}: the root path {value!r} must be absolute")
    return value


def _expand(path: str, user: str) -> str:
    def sub(match: re.Match[str]) -> str:
        code = match.group(1)
        values = {"u": user, "d": "", "f": user, "%": "%"}
        if code not in values:
            raise CommandError(f"unknown placeholder %{code} in sandbox path {path!r} (use %u, %d, %f or %%)")
        return values[code]

    return os.path.normpath(_PLACEHOLDER.sub(sub, path))


class SandboxStore:
    def __init__(self, state: StateStore, sandbox_dir: str | None = None) -> None:
        self.state = state
        if sandbox_dir is not None and self.get_all().get("") is None:
            self.set("", {"": sandbox_dir})

    def set(self, user_name: str, roots: dict[str, Any] | bool) -> None:
        if roots is True:
            raise CommandError("sandboxRoots must be a dictionary of names to paths, or False")
        if roots is False:
            normal: dict[str, str] | bool = False
        else:
            if not roots:
                raise CommandError("sandboxRoots is empty: give at least one root, or False for no sandbox")
            normal = {}
            for name, value in roots.items():
                validate_sandbox_name(name)
                path = _root_path(value, name)
                if user_name and "%" in path:
                    raise CommandError(
                        f"sandbox {name!r}: placeholders such as %u are only allowed in the system sandbox"
                    )
                if not user_name:
                    _expand(path, "x")  # reject unknown placeholders now, not at login
                normal[name] = path
        self.state.execute(
            "INSERT INTO sandbox_mappings(user_name, roots) VALUES(?, ?) "
            "ON CONFLICT(user_name) DO UPDATE SET roots = excluded.roots",
            (user_name, json.dumps(normal)),
        )

    def delete(self, user_name: str) -> None:
        if self.state.execute("DELETE FROM sandbox_mappings WHERE user_name = ?", (user_name,)) == 0:
            raise CommandError(f"no sandbox mapping for user {user_name!r}")

    def get_all(self) -> dict[str, Any]:
        return {r["user_name"]: json.loads(r["roots"]) for r in self.state.query("SELECT * FROM sandbox_mappings")}

    def resolve(self, user_name: str) -> dict[str, str] | None:
        """The roots of a new session of ``user_name``; None = not sandboxed."""
        mappings = self.get_all()
        own = mappings.get(user_name)
        if own is not None:
            return None if own is False else dict(own)
        system = mappings.get("")
        if not system:
            return None
        roots = {name: _expand(path, user_name) for name, path in system.items()}
        for name, path in roots.items():
            if "%" in system[name]:
                # A per-user directory from a placeholder is made on first login.
                os.makedirs(path, mode=0o700, exist_ok=True)
        return roots
