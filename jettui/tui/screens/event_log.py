"""Event log: getEventLog in a table, filtered by event name and time, with a live tail.

The filters go to the server (``eventName``, ``after``, ``before``), so a large log is not
fetched whole.  New events arrive as ``events.event`` notifications (the backend subscribes
every connection to ``events``); the app hands them to :meth:`EventLogScreen.add_live`,
which appends those that pass the filters and, while following, keeps the cursor on them.

Times: absolute ``YYYY-MM-DD[ HH:MM[:SS]]`` (UTC, as the API's timestamps), or relative
``30s``, ``10m``, ``2h``, ``7d`` (that long before now).
"""

from __future__ import annotations

import datetime
import json
import re
import time
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Label, Static

from jettui.errors import JettuiError
from jettui.tui.backend import Backend
from jettui.tui.text import safe

__all__ = ["EventLogScreen", "parse_time"]

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: How many events one load asks for (the newest ones).
LIMIT = 1000


def parse_time(text: str, now: float | None = None) -> int | None:
    """A filter time as API microseconds; None for empty.  Raises ValueError otherwise."""
    text = text.strip()
    if not text:
        return None
    match = _RELATIVE.match(text)
    if match:
        seconds = float(match[1]) * _UNITS[match[2]]
        return int(((time.time() if now is None else now) - seconds) * 1_000_000)
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            when = datetime.datetime.strptime(text, fmt).replace(tzinfo=datetime.UTC)
        except ValueError:
            continue
        return int(when.timestamp() * 1_000_000)
    raise ValueError(f"not a time: {text!r} (use YYYY-MM-DD HH:MM, or 30s / 10m / 2h / 7d ago)")


def _when(timestamp: Any) -> str:
    if not isinstance(timestamp, int):
        return "?"
    when = datetime.datetime.fromtimestamp(timestamp / 1e6, tz=datetime.UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S")


def _details(event: dict[str, Any]) -> Text:
    rest = {k: v for k, v in event.items() if k not in ("_event", "_timestamp")}
    return safe(json.dumps(rest, default=repr, ensure_ascii=False, sort_keys=True)[:400])


class EventLogScreen(Screen[None]):
    """The event log of one connection."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Close"),
        Binding("ctrl+r", "reload", "Reload"),
        Binding("ctrl+f", "toggle_follow", "Follow new events"),
        Binding("ctrl+n", "focus_filter", "Filter by name"),
    ]

    def __init__(self, backend: Backend, site_key: str) -> None:
        super().__init__()
        self.backend = backend
        self.site_key = site_key
        self.events: list[dict[str, Any]] = []
        self.follow = True
        self.name_filter = ""
        self.after: int | None = None
        self.before: int | None = None

    def compose(self) -> ComposeResult:
        yield Static(Text("Event log — ") + safe(self.backend.get(self.site_key).site.label), classes="screen-title")
        with Horizontal(classes="filters"):
            yield Label("Event")
            yield Input(placeholder="name (all)", id="filter-name", compact=True)
            yield Label("After")
            yield Input(placeholder="1h / 2024-01-31 12:00", id="filter-after", compact=True)
            yield Label("Before")
            yield Input(placeholder="", id="filter-before", compact=True)
        yield Static("", id="event-status")
        yield DataTable(cursor_type="row", id="events")
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        table = self.query_one("#events", DataTable)
        table.add_column("Time (UTC)", key="time")
        table.add_column("Event", key="event")
        table.add_column("Details", key="details")
        table.focus()
        self.action_reload()

    def _status(self) -> None:
        follow = "following" if self.follow else "paused (Ctrl+F follows)"
        self.query_one("#event-status", Static).update(f"{len(self.events)} events · {follow}")

    def action_focus_filter(self) -> None:
        self.query_one("#filter-name", Input).focus()

    def action_toggle_follow(self) -> None:
        self.follow = not self.follow
        self._status()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        try:
            self.after = parse_time(self.query_one("#filter-after", Input).value)
            self.before = parse_time(self.query_one("#filter-before", Input).value)
        except ValueError as exc:
            self.query_one("#event-status", Static).update(Text(str(exc), style="bold red"))
            return
        self.name_filter = self.query_one("#filter-name", Input).value.strip()
        self.action_reload()
        self.query_one("#events", DataTable).focus()

    def action_reload(self) -> None:
        self._load()

    @work(group="event-log", exclusive=True, exit_on_error=False, description="getEventLog")
    async def _load(self) -> None:
        try:
            events = await self.backend.event_log(
                self.site_key, self.name_filter or None, after=self.after, before=self.before, limit=LIMIT
            )
        except JettuiError as exc:
            self.query_one("#event-status", Static).update(Text(f"{exc.title}: ", style="bold red") + safe(str(exc)))
            return
        table = self.query_one("#events", DataTable)
        table.clear()
        self.events = []
        for event in events:
            self._add(event)
        self._status()
        if self.follow and table.row_count:
            table.move_cursor(row=table.row_count - 1)

    def _matches(self, event: dict[str, Any]) -> bool:
        if self.name_filter and event.get("_event") != self.name_filter:
            return False
        ts = event.get("_timestamp")
        if not isinstance(ts, int):
            return True
        if self.after is not None and ts <= self.after:
            return False
        return not (self.before is not None and ts >= self.before)

    def _add(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self.query_one("#events", DataTable).add_row(
            Text(_when(event.get("_timestamp"))), safe(event.get("_event")), _details(event)
        )

    def add_live(self, event: dict[str, Any]) -> None:
        """A pushed event: appended if it passes the filters; followed if following."""
        if not self._matches(event):
            return
        self._add(event)
        self._status()
        table = self.query_one("#events", DataTable)
        if self.follow:
            table.move_cursor(row=table.row_count - 1)
