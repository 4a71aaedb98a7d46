"""RemotePane: one server connection and one directory, shown as PathBar + FileList + PaneStatus.

The pane owns navigation (Enter / Backspace through FileList's messages), the ``+`` / ``-``
pattern dialogs, the ``/`` quick filter and Ctrl+R.  Listings are loaded by one exclusive
worker per pane, so a quick succession of Enters only ever shows the last directory asked
for (Textual's DirectoryTree serialises its loads the same way).  The app tells the pane
about its connection's state; while the connection is down the pane says so in its notice
line and keeps showing the last listing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.text import Text
from textual import events, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.reactive import var
from textual.widgets import Input, Static

from jettui.errors import JettuiError
from jettui.tui.backend import Backend, is_dir_entry, join_path, parent_path
from jettui.tui.screens.modals import ErrorModal, InputModal
from jettui.tui.text import safe
from jettui.tui.widgets.file_list import PARENT_ENTRY, Entry, FileList
from jettui.tui.widgets.path_bar import PaneStatus, PathBar

__all__ = ["PaneSnapshot", "RemotePane", "basename"]

#: Seconds between additions of a listing's later pages to the list while it loads (when
#: the cursor nears the rows loaded so far): each costs a merge over the whole listing, so
#: they are batched rather than done per page.
EXTEND_INTERVAL = 0.25


def basename(path: str) -> str:
    """The last component of a virtual path; a root's name for ``/`` and ``name:/``."""
    if path == "/":
        return "/"
    if path.endswith(":/"):
        return path[:-2]
    return path.rstrip("/").rsplit("/", 1)[-1]


@dataclass
class PaneSnapshot:
    """Everything a pane shows, to swap two panes (Ctrl+U) without asking the servers."""

    site_key: str | None
    label: str
    path: str
    entries: list[Entry]
    at_root: bool
    cursor_name: str | None
    loaded: bool


class RemotePane(Vertical):
    """A pane bound to one connection (``site_key``) and one path (``""`` = the roots)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        # On the pane, not the app: the Screen's own Tab (focus next) is closer to the focus.
        Binding("tab", "app.switch_pane", "Other pane", show=False),
        Binding("plus", "select_pattern", "Select by pattern", show=False),
        Binding("minus", "unselect_pattern", "Unselect by pattern", show=False),
        Binding("slash", "quick_filter", "Quick filter", show=False),
        Binding("ctrl+r", "reread", "Reread directory", show=False),
        Binding("escape", "close_filter", "Clear quick filter", show=False),
    ]

    class _PaneMessage(Message):
        def __init__(self, pane: RemotePane) -> None:
            super().__init__()
            self.pane = pane

        @property
        def control(self) -> RemotePane:
            return self.pane

    class PathChanged(_PaneMessage):
        """The pane now shows ``path`` of ``site_key`` (a listing arrived)."""

    class DetailsRequested(_PaneMessage):
        """Enter on a file: the app opens the details dialog (as F3 does)."""

    site_key: var[str | None] = var(None, init=False)
    """The backend connection this pane lists; None before the first connect."""
    path: var[str] = var("", init=False)
    """The directory shown; ``""`` is the root listing (lsRootsAsync)."""
    loaded: var[bool] = var(False, init=False)
    """A listing of ``path`` has arrived at least once."""

    def __init__(
        self,
        backend: Backend,
        site_key: str | None,
        label: str,
        path: str,
        *,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id, classes="pane")
        self.backend = backend
        self.set_reactive(RemotePane.site_key, site_key)
        self.set_reactive(RemotePane.path, path)
        self.label = label
        self.path_bar = PathBar(label, path)
        self.file_list = FileList(id=f"{id}-list" if id else None)
        self.status = PaneStatus()
        self.notice = Static("", classes="pane-notice")
        self.filter_input = Input(placeholder="filter", classes="pane-filter")
        self.loading_path: str | None = None
        """The path a load is in flight for, if any."""
        self.last_error: str = ""

    def compose(self) -> ComposeResult:
        yield self.path_bar
        yield self.notice
        yield self.file_list
        yield self.filter_input
        yield self.status

    def on_mount(self) -> None:
        self.notice.display = False
        self.filter_input.display = False
        if self.site_key is None:
            self.show_notice("not connected — F9 connects", error=True)

    # -- state shown ----------------------------------------------------------------------

    def show_notice(self, text: str | Text, *, error: bool = False) -> None:
        """A one-line notice above the list (loading, disconnected, failed); empty hides it."""
        self.notice.update(safe(text) if isinstance(text, str) else text)
        self.notice.set_class(error, "-error")
        self.notice.display = bool(text)

    def connection_changed(self, state: str, error: str) -> None:
        """Called by the app when this pane's connection changes state."""
        if state == "reconnecting":
            self.show_notice(
                f"disconnected — reconnecting ({error})" if error else "disconnected — reconnecting", error=True
            )
        elif state == "connected":
            self.show_notice("")
            if self.loaded or self.loading_path is None:
                self.reread()
        elif state in ("failed", "closed"):
            self.show_notice(f"not connected: {error}" if error else "not connected — F9 connects", error=True)

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        self.path_bar.active = True

    def on_descendant_blur(self, event: events.DescendantBlur) -> None:
        self.path_bar.active = self.file_list.has_focus or self.filter_input.has_focus

    def on_file_list_view_changed(self, event: FileList.ViewChanged) -> None:
        self.status.sync(event.file_list)

    def on_file_list_selection_changed(self, event: FileList.SelectionChanged) -> None:
        self.status.sync(event.file_list)

    # -- binding and loading ------------------------------------------------------------------

    def bind_site(self, site_key: str, label: str, path: str) -> None:
        """Show ``path`` of another connection (after a connect, or Alt+I)."""
        self.site_key = site_key
        self.label = label
        self.path_bar.label = label
        self.loaded = False
        self.load(path)

    def load(self, path: str, keep_cursor_on: str | None = None, *, keep_selection: bool = False) -> None:
        """List ``path`` (in a worker); the pane changes directory when the listing arrives."""
        if self.site_key is None:
            self.show_notice("not connected — F9 connects", error=True)
            return
        self.loading_path = path
        self._load(self.site_key, path, keep_cursor_on, keep_selection)

    @work(group="ls", exclusive=True, exit_on_error=False, description="list a directory")
    async def _load(self, site_key: str, path: str, keep_cursor_on: str | None, keep_selection: bool) -> None:
        # Only show "loading" if the answer is slow, so fast listings do not flicker.
        timer = self.set_timer(0.15, lambda: self.show_notice(Text("loading ") + safe(path or "roots") + Text(" …")))
        # A reread keeps showing the old listing until the new one is whole, so the
        # selection and cursor are carried over once; a new directory is shown from its
        # first page on, and the rest is added as it arrives (FileList.extend_entries).
        whole_first = keep_selection and path == self.path and self.loaded
        shown = False
        received: list[Entry] = []
        pending: list[Entry] = []
        first_cursor: Entry | None = None
        flushed = told = 0.0
        try:
            async with contextlib.aclosing(self.backend.ls_pages(site_key, path)) as pages:
                async for page in pages:
                    if site_key != self.site_key:
                        timer.stop()
                        return  # the pane was re-bound while this listing was on its way
                    if not shown and whole_first and not page.done:
                        received.extend(page.entries)
                        continue
                    now = time.monotonic()
                    if not shown:
                        timer.stop()
                        self._show_listing(path, received + page.entries, page.at_root, keep_cursor_on, keep_selection)
                        shown, flushed = True, now
                        first_cursor = self.file_list.cursor_entry
                    else:
                        pending.extend(page.entries)
                        if page.done or (now - flushed >= EXTEND_INTERVAL and self._near_the_end()):
                            # The directory just left (Backspace) may come on a later page: go to
                            # it then, unless the user has moved the cursor meanwhile.
                            wanted = keep_cursor_on if self.file_list.cursor_entry is first_cursor else None
                            self.file_list.extend_entries(pending, keep_cursor_on=wanted)
                            first_cursor = self.file_list.cursor_entry if wanted else first_cursor
                            pending, flushed = [], now
                            self.status.sync(self.file_list)
                    if page.done:
                        self.loading_path = None
                        self.show_notice("")
                        self.file_list.warm_orders()
                    elif now - told >= EXTEND_INTERVAL:
                        self._show_progress(path, len(self.file_list.entries) + len(pending), page.expected)
                        told = now
        except asyncio.CancelledError:
            timer.stop()  # superseded by a newer load, which shows its own state
            raise
        except JettuiError as exc:
            timer.stop()
            self.loading_path = None
            self.last_error = str(exc)
            if shown:
                self.show_notice(Text("listing incomplete: ") + safe(str(exc)), error=True)
            elif self.loaded:
                self.show_notice("")
                self.app.push_screen(ErrorModal.from_exception(exc, f"cannot list {path or 'the roots'}"))
            else:
                self.show_notice(Text(f"{exc.title}: ") + safe(str(exc)), error=True)
            return

    def _near_the_end(self) -> bool:
        """The cursor is within two screens of the last row loaded so far: the user is
        heading for rows still on their way, so they are merged in now rather than at
        the end (each merge costs a pass over the listing, taken from the server's
        stat loop when the server is the embedded one)."""
        file_list = self.file_list
        return file_list.cursor >= len(file_list.rows) - 2 * max(1, file_list.size.height)

    def _show_progress(self, path: str, count: int, expected: int | None) -> None:
        if expected is not None and count >= expected:
            return  # all there but the last word: not worth a flash of the notice line
        # The server sends the rest when it has statted it all, so say what is coming.
        total = f"{expected:,}" if expected is not None else "more"
        self.show_notice(Text("loading ") + safe(path) + Text(f" … {count:,} of {total} entries"))

    def _show_listing(
        self, path: str, entries: list[Entry], at_root: bool, keep_cursor_on: str | None, keep_selection: bool
    ) -> None:
        """Switch the pane to ``path`` with ``entries`` (the whole listing or its first page)."""
        self.last_error = ""
        self.show_notice("")
        same_dir = path == self.path and self.loaded
        if same_dir and keep_selection:
            # A reread: keep the cursor where it is *now* (it may have moved while the
            # listing was on its way), not where it was when the reread was asked for.
            entry = self.file_list.cursor_entry
            keep_cursor_on = None if entry is None or entry is PARENT_ENTRY else str(entry.get("name"))
        self.file_list.set_entries(
            entries,
            at_root=at_root,
            keep_cursor_on=keep_cursor_on,
            keep_selection=keep_selection and same_dir,
        )
        if not same_dir:
            self.file_list.filter = ""
            self.filter_input.value = ""
            self.filter_input.display = False
        self.path = path
        self.path_bar.path = path
        self.loaded = True
        self.status.sync(self.file_list)
        self.post_message(self.PathChanged(self))

    def reread(self) -> None:
        """Ctrl+R: list the current directory again, keeping cursor and selection."""
        entry = self.file_list.cursor_entry
        name = None if entry is None or entry is PARENT_ENTRY else str(entry.get("name"))
        self.load(self.path, keep_cursor_on=name, keep_selection=True)

    def on_file_list_opened(self, event: FileList.Opened) -> None:
        event.stop()
        if is_dir_entry(event.entry):
            self.load(join_path(self.path, str(event.entry.get("name"))))
        else:
            self.post_message(self.DetailsRequested(self))

    def on_file_list_up_requested(self, event: FileList.UpRequested) -> None:
        event.stop()
        if self.path != "":
            self.load(parent_path(self.path), keep_cursor_on=basename(self.path))

    # -- what operations act on -------------------------------------------------------------------

    def target_entries(self) -> list[Entry]:
        """The selection, or else the entry under the cursor (never ``..``), as MC does."""
        selected = self.file_list.selected_entries
        if selected:
            return selected
        entry = self.file_list.cursor_entry
        if entry is None or entry is PARENT_ENTRY:
            return []
        return [entry]

    def path_of(self, entry: Entry) -> str:
        return join_path(self.path, str(entry.get("name")))

    def snapshot(self) -> PaneSnapshot:
        entry = self.file_list.cursor_entry
        return PaneSnapshot(
            self.site_key,
            self.label,
            self.path,
            list(self.file_list.entries),
            self.file_list.at_root,
            None if entry is None or entry is PARENT_ENTRY else str(entry.get("name")),
            self.loaded,
        )

    def restore(self, snap: PaneSnapshot) -> None:
        """Show what another pane showed (Ctrl+U), without a network round trip."""
        self.workers.cancel_group(self, "ls")
        self.loading_path = None
        self.site_key = snap.site_key
        self.label = snap.label
        self.path = snap.path
        self.loaded = snap.loaded
        self.path_bar.label = snap.label
        self.path_bar.path = snap.path
        self.file_list.filter = ""
        self.file_list.set_entries(snap.entries, at_root=snap.at_root, keep_cursor_on=snap.cursor_name)
        self.status.sync(self.file_list)
        self.show_notice("" if snap.site_key else "not connected — F9 connects", error=not snap.site_key)

    # -- actions ------------------------------------------------------------------------------------

    def action_reread(self) -> None:
        self.reread()

    def action_select_pattern(self) -> None:
        def done(pattern: str | None) -> None:
            if pattern:
                count = self.file_list.select_pattern(pattern)
                self.notify(f"{count} selected", timeout=2)

        self.app.push_screen(InputModal("Select", "Select files matching (glob):", "*"), done)

    def action_unselect_pattern(self) -> None:
        def done(pattern: str | None) -> None:
            if pattern:
                count = self.file_list.unselect_pattern(pattern)
                self.notify(f"{count} unselected", timeout=2)

        self.app.push_screen(InputModal("Unselect", "Unselect files matching (glob):", "*"), done)

    def action_quick_filter(self) -> None:
        self.filter_input.display = True
        self.filter_input.focus()

    def action_close_filter(self) -> None:
        if self.filter_input.display or self.file_list.filter:
            self.filter_input.value = ""
            self.file_list.filter = ""
            self.filter_input.display = False
            self.file_list.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input is self.filter_input:
            event.stop()
            self.file_list.filter = event.value

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input is self.filter_input:
            event.stop()
            # Enter keeps the filter and returns to the list, like MC's quick search.
            if not event.value:
                self.filter_input.display = False
            self.file_list.focus()

    def describe(self) -> dict[str, Any]:
        """State for tests and the help screen: site, path, counts."""
        return {
            "site_key": self.site_key,
            "path": self.path,
            "entries": len(self.file_list.entries),
            "selected": sorted(self.file_list.selected),
        }
