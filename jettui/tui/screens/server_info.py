"""Server information: every field of getServerInfo(), grouped.

Groups follow the Server Information Structure: identity, API, receiver, bandwidth,
license, user and configuration.  Keys the groups do not name are shown under "Other", so a
field added by a newer server is never hidden.  Values are escaped (server data).
"""

from __future__ import annotations

import datetime
from typing import Any, ClassVar

from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from jettui.constants import CIPHER_NAMES
from jettui.errors import JettuiError
from jettui.tui.backend import Backend
from jettui.tui.text import safe

__all__ = ["GROUPS", "ServerInfoScreen", "format_info"]

#: (title, top-level keys) or (title, nested dict key); order is display order.
GROUPS: list[tuple[str, list[str] | str]] = [
    (
        "Identity",
        [
            "serverName",
            "hostName",
            "serverId",
            "serverUid",
            "version",
            "revision",
            "serverPlatform",
            "platformDetail",
            "serverTime",
            "publicKey",
            "certificateValidation",
            "serverExternalAddress",
        ],
    ),
    (
        "API",
        [
            "apiVersion",
            "apiControlPort",
            "allowRemoteControl",
            "authRequired",
            "APITokensAvailable",
            "sharedTokensAvailable",
            "eventLogAvailable",
            "multiplexAvailable",
            "encryptionAvailable",
            "minCipher",
        ],
    ),
    ("Receiver", "receiver"),
    ("Bandwidth", "bandwidthLimits"),
    ("License", "license"),
    ("User", "user"),
    ("Configuration", "configuration"),
]


def _value(key: str, value: Any) -> Text:
    if key in ("serverTime", "expiry") and isinstance(value, int) and value > 10**12:
        # API timestamps are microseconds since the epoch, UTC (spec §3.12).
        when = datetime.datetime.fromtimestamp(value / 1e6, tz=datetime.UTC)
        return Text(when.strftime("%Y-%m-%d %H:%M:%S UTC"))
    if key == "minCipher" and isinstance(value, int):
        return Text(f"{CIPHER_NAMES.get(value, '?')} ({value})")
    if key == "certificateValidation" and isinstance(value, int):
        return Text(f"{value} days left")
    if isinstance(value, bool):
        return Text("yes" if value else "no")
    if value is None:
        return Text("—", style="dim")
    return safe(value)


def _flatten(prefix: str, data: dict[str, Any]) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key in sorted(data, key=str.casefold):
        value = data[key]
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            rows.extend(_flatten(f"{name}.", value))
        else:
            rows.append((name, value))
    return rows


def format_info(info: dict[str, Any]) -> list[tuple[str, list[tuple[str, Text]]]]:
    """The info grouped: ``[(group, [(field, value), ...]), ...]``, every key once."""
    groups: list[tuple[str, list[tuple[str, Text]]]] = []
    used: set[str] = set()
    for title, keys in GROUPS:
        rows: list[tuple[str, Text]] = []
        if isinstance(keys, str):
            used.add(keys)
            nested = info.get(keys)
            if isinstance(nested, dict):
                rows = [(name, _value(name.rsplit(".", 1)[-1], v)) for name, v in _flatten("", nested)]
            elif keys in info:
                rows = [(keys, _value(keys, nested))]
        else:
            for key in keys:
                used.add(key)
                if key in info:
                    rows.append((key, _value(key, info[key])))
        if rows:
            groups.append((title, rows))
    rest = [(name, _value(name, v)) for name, v in _flatten("", {k: v for k, v in info.items() if k not in used})]
    if rest:
        groups.append(("Other", rest))
    return groups


class ServerInfoScreen(Screen[None]):
    """getServerInfo of one connection; ``r`` reloads."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "app.pop_screen", "Close"),
        Binding("r", "reload", "Reload"),
    ]

    def __init__(self, backend: Backend, site_key: str) -> None:
        super().__init__()
        self.backend = backend
        self.site_key = site_key
        self.info: dict[str, Any] | None = None

    def compose(self) -> ComposeResult:
        yield Static(
            Text("Server information — ") + safe(self.backend.get(self.site_key).site.label), classes="screen-title"
        )
        with VerticalScroll(id="info-scroll"):
            yield Static("loading …", id="info-text")
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        self.query_one("#info-scroll").focus()
        self.action_reload()

    def action_reload(self) -> None:
        self._load()

    @work(group="server-info", exclusive=True, exit_on_error=False, description="getServerInfo")
    async def _load(self) -> None:
        try:
            info = await self.backend.server_info(self.site_key)
        except JettuiError as exc:
            self.query_one("#info-text", Static).update(Text(f"{exc.title}: ", style="bold red") + safe(str(exc)))
            return
        self.show_info(info)

    def show_info(self, info: dict[str, Any]) -> None:
        """Display ``info`` (public so a snapshot can show a normalised copy)."""
        self.info = info
        # A grid, so long values (the public key) wrap inside their column.
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column(overflow="fold")
        for i, (title, rows) in enumerate(format_info(info)):
            if i:
                grid.add_row("", "")
            grid.add_row(Text(title, style="bold underline"), "")
            for name, value in rows:
                grid.add_row(Text(f"  {name}"), value)
        self.query_one("#info-text", Static).update(grid)
