"""The one-line chrome around a pane's FileList: PathBar on top, PaneStatus below.

Both show strings that come from a server or the user (server labels, paths, the quick
filter), so they go through the same ``escape_name`` as file names: no control character
reaches the terminal raw, and escaped characters are drawn in their own style.
"""

from __future__ import annotations

from typing import ClassVar

import humanize
from rich.style import Style
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from jettui.tui.widgets.file_list import FileList, SortKey, escape_name, fit_runs

__all__ = ["PaneStatus", "PathBar"]

_SORT_LABELS: dict[SortKey, str] = {"name": "name", "size": "size", "mtime": "time"}


def _runs_to_text(runs: list[tuple[str, bool]], style: Style, escaped_style: Style) -> Text:
    text = Text(no_wrap=True, overflow="crop", end="")
    for chunk, escaped in runs:
        text.append(chunk, escaped_style if escaped else style)
    return text


class PathBar(Widget):
    """Server label and path of one pane; highlighted (class ``-active``) for the active pane.

    The path is cut from the left (``…/deep/dir``) when it does not fit: the end of a path
    is what tells two panes apart.
    """

    COMPONENT_CLASSES: ClassVar[set[str]] = {"path-bar--label", "path-bar--escaped"}

    DEFAULT_CSS = """
    PathBar { height: 1; }
    """

    label: reactive[str] = reactive("")
    """Server label, e.g. ``local`` or ``jet://alice@host:8886``."""
    path: reactive[str] = reactive("")
    """Directory shown by the pane; empty for the root listing."""
    active: reactive[bool] = reactive(False)
    """True when this bar's pane has the focus."""

    def __init__(
        self,
        label: str = "",
        path: str = "",
        *,
        active: bool = False,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.set_reactive(PathBar.label, label)
        self.set_reactive(PathBar.path, path)
        # Watchers do not run before mount, so apply the class by hand as well.
        self.set_reactive(PathBar.active, active)
        self.set_class(active, "-active")

    def watch_active(self, active: bool) -> None:
        self.set_class(active, "-active")

    def render(self) -> Text:
        width = self.size.width
        base = self.rich_style
        escaped_style = base + self.get_component_rich_style("path-bar--escaped", partial=True)
        label_style = base + self.get_component_rich_style("path-bar--label", partial=True)
        # The label gets at most a third of the bar, so a long host name never hides the path.
        label_runs, label_cells = fit_runs(escape_name(self.label, allow_slash=True), max(1, width // 3))
        path_runs, _ = fit_runs(
            escape_name(self.path or "(roots)", allow_slash=True),
            max(0, width - label_cells - 1),
            keep="tail",
        )
        text = _runs_to_text(label_runs, label_style, escaped_style)
        text.append(" ", base)
        text.append_text(_runs_to_text(path_runs, base, escaped_style))
        return text


class PaneStatus(Widget):
    """Status line of a pane: ``3 selected, 12.3 MiB · 1,204 entries · filter: foo · sort: name ↑``.

    When filters hide entries the count reads ``12/1,204 entries`` (shown/total).

    Call :meth:`sync` from the pane on ``FileList.SelectionChanged`` and ``FileList.ViewChanged``.
    """

    COMPONENT_CLASSES: ClassVar[set[str]] = {"pane-status--selected", "pane-status--escaped"}

    DEFAULT_CSS = """
    PaneStatus { height: 1; }
    """

    selected_count: reactive[int] = reactive(0)
    """Number of selected entries."""
    selected_size: reactive[int] = reactive(0)
    """Total size of the selected entries, in bytes."""
    shown: reactive[int] = reactive(0)
    """Entries shown (after the hidden-file and quick filters), not counting ``..``."""
    total: reactive[int] = reactive(0)
    """Entries in the listing."""
    filter_text: reactive[str] = reactive("")
    """The quick filter, if any."""
    sort_key: reactive[SortKey] = reactive("name")
    """Sort column of the list."""
    sort_reverse: reactive[bool] = reactive(False)
    """Reversed sort."""

    def sync(self, file_list: FileList) -> None:
        """Copy the figures shown from ``file_list``."""
        self.selected_count = len(file_list.selected)
        self.selected_size = file_list.selected_size
        self.shown = file_list.shown_count
        self.total = len(file_list.entries)
        self.filter_text = file_list.filter
        self.sort_key = file_list.sort_key
        self.sort_reverse = file_list.sort_reverse

    def render(self) -> Text:
        base = self.rich_style
        escaped_style = base + self.get_component_rich_style("pane-status--escaped", partial=True)
        # Parts in priority order: on a narrow pane the later ones are left out whole
        # rather than cut mid-word (the sort order is also visible from the list itself).
        # At 80x24 (37 cells) "3 selected, 12.3 MiB · 1,204 entries" must still fit.
        parts: list[Text] = []
        if self.selected_count:
            size = humanize.naturalsize(self.selected_size, binary=True)
            style = base + self.get_component_rich_style("pane-status--selected", partial=True)
            parts.append(Text(f"{self.selected_count:,} selected, {size}", style))
        if self.shown == self.total:
            parts.append(Text(f"{self.total:,} entries", base))
        else:
            parts.append(Text(f"{self.shown:,}/{self.total:,} entries", base))
        if self.filter_text:
            runs = escape_name(self.filter_text, allow_slash=True)
            parts.append(Text("filter: ", base) + _runs_to_text(runs, base, escaped_style))
        arrow = "↓" if self.sort_reverse else "↑"
        parts.append(Text(f"sort: {_SORT_LABELS[self.sort_key]} {arrow}", base))

        width = self.size.width
        sep = Text(" · ", base)
        text = Text(no_wrap=True, overflow="ellipsis", end="")
        for part in parts:
            addition = part if not text else sep + part
            if text and width and text.cell_len + addition.cell_len > width:
                break
            text.append_text(addition)
        if width and text.cell_len > width:
            text.truncate(width, overflow="ellipsis")
        return text
