"""Pure rules for virtual paths: how a client's path string names a sandbox root and a
list of components below it.  No I/O happens here; :mod:`jettui.server.fsview` does the
confined opening.

A virtual path is ``name:/sub/path`` for a named sandbox root and ``/sub/path`` (or
``sub/path``) for the root with the blank name (the whole filesystem when the user is not
sandboxed).  The rules, all enforced by :func:`parse_path`:

* The argument must be a ``str`` without NUL bytes, at most :data:`MAX_PATH_BYTES` bytes
  once encoded with the filesystem encoding, and every component at most
  :data:`MAX_NAME_BYTES` bytes.
* Anything before the first ``:`` that comes before the first ``/`` is a sandbox name; an
  unknown name is refused.  So ``/a:b`` is the file ``a:b`` in the blank root, while
  ``a:b`` asks for sandbox ``a``.  Sandbox names can therefore never contain ``:`` or
  ``/`` (:func:`check_sandbox_name`).
* Absolute paths are re-rooted: ``/etc/passwd`` in a sandbox on ``/srv/data`` means
  ``/srv/data/etc/passwd`` (jetstream-api.md §5.3).
* ``.`` and empty components are dropped.  ``..`` is applied *lexically* inside the root
  (``a/../b`` is ``b``), and a ``..`` that would climb above the root is refused rather than
  clamped, so a hostile path fails loudly instead of silently landing somewhere else.
  Lexical ``..`` means ``link/../x`` is ``x`` even if ``link`` is a symbolic link; the
  kernel never sees a ``..`` from the client at all.
* ``\\`` is an ordinary file-name character on POSIX and is kept as such.
"""

from __future__ import annotations

import os
from collections.abc import Container
from typing import NamedTuple

from jettui.errors import CommandError

#: Linux PATH_MAX: the longest path the kernel accepts in one call, terminating NUL included.
MAX_PATH_BYTES = 4096
#: Linux NAME_MAX: the longest single file name.
MAX_NAME_BYTES = 255
#: How much of a refused raw argument an error message quotes.
_SHOW_LIMIT = 120


class VirtualPath(NamedTuple):
    """A parsed, normalised virtual path: a sandbox name and the components below it."""

    root: str
    parts: tuple[str, ...]

    def display(self) -> str:
        """The canonical form shown to people: ``name:/a/b`` or ``/a/b``."""
        prefix = f"{self.root}:" if self.root else ""
        return f"{prefix}/{'/'.join(self.parts)}"

    def child(self, name: str) -> VirtualPath:
        return VirtualPath(self.root, (*self.parts, name))


def show(value: object) -> str:
    """Quote a raw client argument for an error message: escaped, and cut short, because it
    may be hostile (control characters, megabytes of text)."""
    text = repr(value)
    if len(text) > _SHOW_LIMIT:
        text = text[: _SHOW_LIMIT - 3] + "..."
    return text


def _encode(text: str, what: str) -> bytes:
    try:
        return os.fsencode(text)
    except UnicodeEncodeError:
        # Lone surrogates other than surrogateescape's U+DC80..U+DCFF name no file at all.
        raise CommandError(f"{what} {show(text)} cannot be encoded as a file name")


def check_sandbox_name(name: object) -> str:
    """Validate a sandbox name (a key of a sandbox mapping) and return it.

    Names end at the first ``:`` of a virtual path, so ``:`` and ``/`` cannot appear in
    them; NUL and control characters are refused because names are shown in listings.
    """
    if not isinstance(name, str):
        raise CommandError(f"sandbox name must be a string, not {type(name).__name__}")
    if ":" in name or "/" in name:
        raise CommandError(f"sandbox name {show(name)} must not contain ':' or '/'")
    if not name.isprintable():
        raise CommandError(f"sandbox name {show(name)} must not contain control characters")
    if len(_encode(name, "sandbox name")) > MAX_NAME_BYTES:
        raise CommandError(f"sandbox name {show(name)} is longer than {MAX_NAME_BYTES} bytes")
    return name


def parse_path(path: object, roots: Container[str]) -> VirtualPath:
    """Turn a client's path into a :class:`VirtualPath`, or raise :class:`CommandError`
    saying what is wrong with it.  ``roots`` holds the sandbox names the user has."""
    if not isinstance(path, str):
        raise CommandError(f"a path must be a string, not {type(path).__name__}")
    if "\x00" in path:
        raise CommandError(f"path {show(path)} contains a NUL byte")
    if len(_encode(path, "path")) >= MAX_PATH_BYTES:
        raise CommandError(f"path {show(path)} is longer than {MAX_PATH_BYTES - 1} bytes")

    colon = path.find(":")
    slash = path.find("/")
    if colon >= 0 and (slash < 0 or colon < slash):
        root, rest = path[:colon], path[colon + 1 :]
    else:
        root, rest = "", path
    if root not in roots:
        if root:
            raise CommandError(f"path {show(path)} names an unknown sandbox {show(root)}")
        raise CommandError(f"path {show(path)} needs a sandbox name, as in 'name:/path'")

    parts: list[str] = []
    for part in rest.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise CommandError(f"path {show(path)} leaves the sandbox with '..'")
            parts.pop()
            continue
        if len(os.fsencode(part)) > MAX_NAME_BYTES:
            raise CommandError(f"path {show(path)} has a component longer than {MAX_NAME_BYTES} bytes")
        parts.append(part)
    return VirtualPath(root, tuple(parts))
