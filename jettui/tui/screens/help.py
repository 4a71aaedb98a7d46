"""F1: every key binding, generated from the BINDINGS the classes actually declare.

Nothing here is a hand-written list of keys: each section reads one class's ``BINDINGS``
(the app's, the pane's, the file list's, the queue's and each screen's), so the help can
never disagree with what the keys do.
"""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

__all__ = ["HelpScreen", "binding_sections", "key_label"]

_KEY_NAMES = {
    "full_stop": ".",
    "asterisk": "*",
    "plus": "+",
    "minus": "-",
    "slash": "/",
    "pageup": "PgUp",
    "pagedown": "PgDn",
    "backspace": "Backspace",
    "insert": "Insert",
    "space": "Space",
    "enter": "Enter",
    "escape": "Esc",
    "delete": "Del",
    "home": "Home",
    "end": "End",
    "tab": "Tab",
    "up": "↑",
    "down": "↓",
    "left": "←",
    "right": "→",
}


def key_label(key: str) -> str:
    """``ctrl+r`` -> ``Ctrl+R``, ``f5`` -> ``F5``, ``full_stop`` -> ``.``."""
    parts = key.split("+")
    out = []
    for part in parts[:-1]:
        out.append(part.capitalize())
    last = parts[-1]
    if last in _KEY_NAMES:
        out.append(_KEY_NAMES[last])
    elif len(last) > 1 and last[0] == "f" and last[1:].isdigit() or len(parts) > 1 and len(last) == 1:
        out.append(last.upper())
    else:
        out.append(last)
    return "+".join(out)


def _bindings(owner: type[Any]) -> list[Binding]:
    # Only what the class itself declares (not inherited defaults), in declaration order.
    declared: list[BindingType] = list(owner.__dict__.get("BINDINGS", []))
    return [b for b in declared if isinstance(b, Binding)]


def binding_sections(app: App[Any]) -> list[tuple[str, list[tuple[str, str]]]]:
    """``[(section, [(keys, description), ...]), ...]`` for the app's classes."""
    from jettui.tui.screens.admin import AdminScreen
    from jettui.tui.screens.connect import ConnectScreen
    from jettui.tui.screens.event_log import EventLogScreen
    from jettui.tui.screens.modals import ConfirmModal, DetailsModal
    from jettui.tui.screens.server_info import ServerInfoScreen
    from jettui.tui.widgets.file_list import FileList
    from jettui.tui.widgets.pane import RemotePane
    from jettui.tui.widgets.queue import TransferQueue

    owners: list[tuple[str, type[Any]]] = [
        ("Commander", type(app)),
        ("Pane", RemotePane),
        ("File list", FileList),
        ("Transfer queue (Ctrl+T)", TransferQueue),
        ("Details (F3)", DetailsModal),
        ("Confirmation", ConfirmModal),
        ("Server information (i)", ServerInfoScreen),
        ("Event log (e)", EventLogScreen),
        ("Administration (a)", AdminScreen),
        ("Connect (F9)", ConnectScreen),
        ("Help (F1)", HelpScreen),
        ("Always", App),
    ]
    sections = []
    for title, owner in owners:
        rows = []
        for binding in _bindings(owner):
            description = binding.description or binding.tooltip or binding.action
            if binding.action == "noop":
                continue
            keys = ", ".join(key_label(k.strip()) for k in binding.key.split(","))
            rows.append((keys, description))
        if rows:
            sections.append((title, rows))
    return sections


class HelpScreen(Screen[None]):
    """The binding reference; Esc, F1 or q closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,f1,q", "app.pop_screen", "Close help"),
    ]

    def compose(self) -> ComposeResult:
        text = Text()
        text.append("jettui — keys\n", style="bold")
        text.append("Tab switches panes; F-keys act on the selection (or the entry under the cursor).\n")
        for title, rows in binding_sections(self.app):
            text.append(f"\n{title}\n", style="bold underline")
            width = max(len(keys) for keys, _ in rows)
            for keys, description in rows:
                text.append(f"  {keys:<{width}}  ", style="bold")
                text.append(f"{description}\n")
        with VerticalScroll(id="help-scroll"):
            yield Static(text, id="help-text")
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        self.query_one("#help-scroll").focus()
