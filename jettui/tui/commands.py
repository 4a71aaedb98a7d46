"""The command palette (F2, Ctrl+P): every screen and action of the commander, by name.

The list is generated from the BINDINGS the app, the pane, the file list and the queue
declare (so a new binding shows up here without a second list to keep in step), plus the
screens that have no key of their own.  Pane and list actions run on the active pane.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider

if TYPE_CHECKING:
    from jettui.tui.app import JettuiApp

__all__ = ["CommanderCommands", "PaletteCommand", "palette_commands"]

#: Actions that make no sense from the palette (it closes before they run, or they are keys).
_SKIP = {"command_palette", "noop", "g_prefix", "cursor_up", "cursor_down", "close_filter"}


@dataclass(frozen=True)
class PaletteCommand:
    name: str
    help: str
    run: Callable[[], Any]


def _key_text(binding: Binding) -> str:
    from jettui.tui.screens.help import key_label

    return ", ".join(key_label(k.strip()) for k in binding.key.split(","))


def palette_commands(app: JettuiApp) -> Iterator[PaletteCommand]:
    """Every command: the app's bindings, then the active pane's, list's and queue's."""
    from jettui.tui.widgets.file_list import FileList
    from jettui.tui.widgets.pane import RemotePane
    from jettui.tui.widgets.queue import TransferQueue

    seen: set[str] = set()

    def make(target: Callable[[], Any], action: str) -> Callable[[], Any]:
        async def run() -> None:
            await app.run_action(action, target())

        return run

    sources: list[tuple[str, list[Any], Callable[[], Any]]] = [
        ("", list(type(app).BINDINGS), lambda: app),
        ("pane", list(RemotePane.BINDINGS), app.active_pane),
        ("list", list(FileList.BINDINGS), lambda: app.active_pane().file_list),
        ("queue", list(TransferQueue.BINDINGS), lambda: app.queue),
    ]
    for area, bindings, target in sources:
        for binding in bindings:
            if not isinstance(binding, Binding) or not binding.description:
                continue
            action = binding.action
            name = action.split("(")[0].removeprefix("app.")
            if name in _SKIP or binding.description in seen:
                continue
            seen.add(binding.description)
            keys = _key_text(binding)
            help_text = f"{keys}" + (f" · {area}" if area else "")
            yield PaletteCommand(binding.description, help_text, make(target, action))


class CommanderCommands(Provider):
    """Provider for the palette: fuzzy match on the command names."""

    def _commands(self) -> list[PaletteCommand]:
        app = cast("JettuiApp", self.app)
        return list(palette_commands(app))

    async def discover(self) -> Hits:
        for command in self._commands():
            yield DiscoveryHit(command.name, command.run, help=command.help)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for command in self._commands():
            score = matcher.match(command.name)
            if score > 0:
                yield Hit(score, matcher.highlight(command.name), command.run, help=command.help)
