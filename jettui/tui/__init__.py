"""The jettui commander: a twin-pane Textual app over :mod:`jettui.api`.

:func:`make_app` builds the app; the CLI (:func:`run_commander`), the tests, the snapshot
apps and ``screenshots/generate.py`` all go through it, so they all run the same app.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from jettui.api.trust import config_dir
from jettui.errors import JettuiError
from jettui.server.embedded import EmbeddedInfo, EmbeddedProcess
from jettui.tui.sites import Site, SiteStore, parse_target

if TYPE_CHECKING:
    from jettui.tui.app import JettuiApp

__all__ = ["embedded_site", "make_app", "run_commander"]


def embedded_site(info: EmbeddedInfo, name: str = "local") -> Site:
    """The site of an embedded server: its certificate pinned explicitly, its secret held
    in memory (it never touches the known-servers or sites files)."""
    return Site(
        name=name,
        host=info.host,
        port=info.port,
        user=info.user,
        password=info.secret,
        fingerprint=info.fingerprint,
        embedded=True,
    )


def _site(value: Site | str | None) -> Site | None:
    if value is None or isinstance(value, Site):
        return value
    return parse_target(value)


def make_app(
    left: Site | str | None = None,
    right: Site | str | None = None,
    *,
    embedded: EmbeddedInfo | None = None,
    path: str | None = None,
    left_path: str | None = None,
    right_path: str | None = None,
    sites: SiteStore | None = None,
) -> JettuiApp:
    """The commander app.

    Args:
        left: The left pane's server: a :class:`Site`, a ``HOST[:PORT]`` /
            ``jet://USER@HOST:PORT`` string, or None for the embedded server (if given).
        right: The same for the right pane.
        embedded: A running embedded server; panes without a server of their own open it.
        path: Where panes on the embedded server start (default: the root listing).
        left_path: Start path of the left pane (overrides ``path``).
        right_path: Start path of the right pane (overrides ``path``).
        sites: The saved-sites store (default: ``<config dir>/sites.json``).
    """
    from jettui.tui.app import JettuiApp, PaneSpec

    local = embedded_site(embedded) if embedded is not None else None
    specs = []
    for value, own_path in ((left, left_path), (right, right_path)):
        site = _site(value)
        if site is None:
            specs.append(PaneSpec(local, own_path if own_path is not None else (path or "")))
        else:
            specs.append(PaneSpec(site, own_path if own_path is not None else ""))
    return JettuiApp(specs[0], specs[1], sites=sites)


def run_commander(target: str | None = None, *, left: str | None = None, right: str | None = None) -> int:
    """``jettui [TARGET] [--left X] [--right Y]``: run the commander until it quits.

    With no server at all, an embedded server is started for the panes (in a child process,
    logging to ``<config dir>/embedded.log``) and stopped on exit; both panes open in the
    current directory.
    """
    try:
        left_site = _site(left or target)
        right_site = _site(right or target)
    except JettuiError as exc:
        raise SystemExit(f"jettui: {exc}") from None
    server: EmbeddedProcess | None = None
    info: EmbeddedInfo | None = None
    if left_site is None or right_site is None:
        log_dir = config_dir()
        log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        server = EmbeddedProcess(log_path=str(log_dir / "embedded.log"))
        info = server.start()
    try:
        app = make_app(left_site, right_site, embedded=info, path=os.getcwd())
        app.run()
        return app.return_code or 0
    finally:
        if server is not None:
            server.stop()
