"""JettuiApp: two RemotePanes over the transfer queue, the F-key operations and the screens.

The app is the hub of the message flow: the backend posts connection, event and transfer
messages to it, and it hands them down to the panes, the queue and open screens as
attribute changes or method calls.  The F-key operations act on both panes at once (the
active pane is the source, the other the destination, as in Midnight Commander), so their
bindings live here; each runs its network calls in a worker and reports failures in an
:class:`ErrorModal` with the server's message.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Any, ClassVar

import humanize
from rich.text import Text
from textual import events, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import Footer

from jettui.constants import TRANSFER_STATUS_COMPLETE
from jettui.errors import JettuiError
from jettui.tui.backend import Backend, ConnState, is_dir_entry, join_path
from jettui.tui.commands import CommanderCommands
from jettui.tui.messages import ConnectionChanged, ServerEvent, TransfersListed, TransferUpdated
from jettui.tui.screens.admin import AdminScreen
from jettui.tui.screens.connect import ConnectScreen
from jettui.tui.screens.event_log import EventLogScreen
from jettui.tui.screens.help import HelpScreen
from jettui.tui.screens.modals import ConfirmModal, CopyDialog, CopyOptions, DetailsModal, ErrorModal, InputModal
from jettui.tui.screens.server_info import ServerInfoScreen
from jettui.tui.sites import Site, SiteStore
from jettui.tui.text import safe
from jettui.tui.widgets.file_list import STYLESHEET, Entry
from jettui.tui.widgets.pane import RemotePane, basename
from jettui.tui.widgets.queue import TransferQueue

__all__ = ["JettuiApp", "PaneSpec"]


@dataclass
class PaneSpec:
    """What a pane opens at start: a site (None: nothing yet) and a path (``""``: roots)."""

    site: Site | None
    path: str = ""


@dataclass
class _PendingMove:
    """An F6 across servers: the sources are deleted once the transfer is complete."""

    site_key: str
    paths: list[str]
    pane_id: str
    done: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class JettuiApp(App[None]):
    """The commander."""

    TITLE = "jettui"
    CSS_PATH: ClassVar[list[str | Any]] = [STYLESHEET, "app.tcss"]
    COMMANDS = App.COMMANDS | {CommanderCommands}

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f1", "help", "Help"),
        Binding("f2,ctrl+p", "command_palette", "Menu", priority=True),
        Binding("f3", "details", "View"),
        Binding("f5", "copy", "Copy"),
        Binding("f6", "move", "RenMov"),
        Binding("f7", "mkdir", "Mkdir"),
        Binding("f8", "delete", "Delete"),
        Binding("f9", "connect", "Connect", show=False),
        Binding("f10,q", "quit", "Quit"),
        Binding("ctrl+u", "swap_panes", "Swap panes", show=False),
        Binding("alt+i", "same_path", "Same path in other pane", show=False),
        Binding("ctrl+t", "toggle_queue_focus", "Transfer queue", show=False),
        Binding("i", "server_info", "Server information", show=False),
        Binding("e", "event_log", "Event log", show=False),
        Binding("a", "admin", "Administration", show=False),
    ]

    #: Actions that act on the panes: disabled (and out of the footer) while a screen is on top.
    MAIN_ONLY: ClassVar[frozenset[str]] = frozenset(
        {
            "details",
            "copy",
            "move",
            "mkdir",
            "delete",
            "connect",
            "swap_panes",
            "same_path",
            "toggle_queue_focus",
            "server_info",
            "event_log",
            "admin",
            "switch_pane",
        }
    )

    def __init__(
        self,
        left: PaneSpec,
        right: PaneSpec,
        *,
        sites: SiteStore | None = None,
    ) -> None:
        super().__init__()
        self.backend = Backend(self.post_message)
        self.sites = sites or SiteStore()
        self.specs = {"left": left, "right": right}
        self._active_id = "left"
        self._last_pane_focus: str = "left"
        self.pending_moves: dict[tuple[str, Any], _PendingMove] = {}
        self.destinations: dict[tuple[str, Any], tuple[str, str]] = {}
        """Transfers ordered here -> (destination site key, directory), reread when complete."""
        self.errors: list[tuple[str, str]] = []
        """Every error shown, (title, message): for tests and the log."""

    # -- layout ---------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Horizontal(id="panes"):
            for pane_id, spec in self.specs.items():
                label = spec.site.label if spec.site else "not connected"
                yield RemotePane(self.backend, None, label, spec.path, id=pane_id)
        yield TransferQueue(self.backend, id="queue")
        yield Footer(show_command_palette=False)

    @property
    def left(self) -> RemotePane:
        return self.query_one("#left", RemotePane)

    @property
    def right(self) -> RemotePane:
        return self.query_one("#right", RemotePane)

    @property
    def queue(self) -> TransferQueue:
        return self.query_one("#queue", TransferQueue)

    def active_pane(self) -> RemotePane:
        # From the focus itself: the DescendantFocus event that records it may still be
        # queued behind keys typed quickly after a Tab.
        focused = self.screen_stack[0].focused
        if focused is not None:
            for node in focused.ancestors_with_self:
                if isinstance(node, RemotePane) and node.id:
                    self._active_id = node.id
                    break
        return self.query_one(f"#{self._active_id}", RemotePane)

    def other_pane(self) -> RemotePane:
        return self.query_one("#right" if self.active_pane().id == "left" else "#left", RemotePane)

    def panes(self) -> list[RemotePane]:
        # query, not query_one: backend messages may still arrive while the app shuts down.
        return list(self.query(RemotePane))

    def on_mount(self) -> None:
        self.left.file_list.focus()
        self.run_worker(self.backend.monitor(), group="monitor", exit_on_error=False, description="connection monitor")
        self._start_sites()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return not (action in self.MAIN_ONLY and len(self.screen_stack) > 1)

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        for node in event.widget.ancestors_with_self:
            if isinstance(node, RemotePane) and node.id:
                self._active_id = node.id
                self._last_pane_focus = node.id
                return

    def show_error(self, exc: BaseException, context: str = "") -> None:
        """Show an error in the one ErrorModal (never swallowed)."""
        self.push_screen(ErrorModal.from_exception(exc, context))

    def on_error_modal_shown(self, message: ErrorModal.Shown) -> None:
        self.errors.append((message.title, message.message))

    # -- connections -------------------------------------------------------------------------

    def _start_sites(self) -> None:
        groups: dict[str, tuple[Site, list[tuple[RemotePane, str]]]] = {}
        for pane_id, spec in self.specs.items():
            if spec.site is None:
                continue
            key = f"{spec.site.endpoint}/{spec.site.user}/{spec.site.token}"
            groups.setdefault(key, (spec.site, []))[1].append((self.query_one(f"#{pane_id}", RemotePane), spec.path))
        for site, targets in groups.values():
            if site.fingerprint and site.has_credentials:
                self._open_site(site, targets)
            else:
                self._ask_connect(site, targets)

    def _ask_connect(self, site: Site | None, targets: list[tuple[RemotePane, str]]) -> None:
        def connected(key: str | None) -> None:
            if key is None:
                return
            conn = self.backend.get(key)
            for pane, path in targets:
                pane.bind_site(key, conn.site.label, path)

        self.push_screen(ConnectScreen(self.backend, self.sites, site), connected)

    @work(group="open-site", exit_on_error=False, description="open a site")
    async def _open_site(self, site: Site, targets: list[tuple[RemotePane, str]]) -> None:
        conn = self.backend.add(site)
        for pane, _ in targets:
            pane.show_notice(Text("connecting to ") + safe(site.label) + Text(" …"))
        try:
            if conn.state is not ConnState.CONNECTED:
                await conn.open()
        except JettuiError as exc:
            for pane, _ in targets:
                pane.show_notice(Text(f"{exc.title}: ") + safe(str(exc)), error=True)
            self.show_error(exc, f"connecting to {site.label}")
            return
        for pane, path in targets:
            pane.bind_site(conn.key, site.label, path)

    def on_connection_changed(self, message: ConnectionChanged) -> None:
        for pane in self.panes():
            if pane.site_key == message.site_key:
                pane.connection_changed(message.state, message.error)

    def on_server_event(self, message: ServerEvent) -> None:
        for screen in self.screen_stack:
            if isinstance(screen, EventLogScreen) and screen.site_key == message.site_key:
                screen.add_live(message.event)

    def on_transfer_updated(self, message: TransferUpdated) -> None:
        for queue in self.query(TransferQueue):
            queue.update(message.site_key, message.transfer)
        self._check_move(message.site_key, message.transfer)

    def on_transfers_listed(self, message: TransfersListed) -> None:
        for queue in self.query(TransferQueue):
            if message.supported:
                queue.replace_site(message.site_key, message.transfers)
            else:
                queue.mark_unsupported(message.site_key)
        if not message.supported:
            return
        for transfer in message.transfers:
            self._check_move(message.site_key, transfer)

    # -- pane keys ------------------------------------------------------------------------------

    def action_switch_pane(self) -> None:
        # set_focus now, not focus() (which defers to the next idle): keys typed right after
        # Tab are already queued and must go to the newly active pane.
        self.screen.set_focus(self.other_pane().file_list)

    def action_toggle_queue_focus(self) -> None:
        table = self.queue.table
        if table.has_focus:
            self.screen.set_focus(self.query_one(f"#{self._last_pane_focus}", RemotePane).file_list)
        else:
            self.screen.set_focus(table)

    def action_swap_panes(self) -> None:
        left, right = self.left.snapshot(), self.right.snapshot()
        self.left.restore(right)
        self.right.restore(left)

    def action_same_path(self) -> None:
        source, target = self.active_pane(), self.other_pane()
        if source.site_key is None:
            return
        target.bind_site(source.site_key, source.label, source.path)

    def on_remote_pane_details_requested(self, message: RemotePane.DetailsRequested) -> None:
        self.action_details()

    # -- screens ---------------------------------------------------------------------------------

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_connect(self) -> None:
        pane = self.active_pane()
        self._ask_connect(None, [(pane, "")])

    def _active_key(self) -> str | None:
        key = self.active_pane().site_key
        if key is None:
            self.notify("this pane is not connected: F9 connects", severity="warning", timeout=3)
        return key

    def action_server_info(self) -> None:
        key = self._active_key()
        if key is not None:
            self.push_screen(ServerInfoScreen(self.backend, key))

    def action_event_log(self) -> None:
        key = self._active_key()
        if key is not None:
            self.push_screen(EventLogScreen(self.backend, key))

    def action_admin(self) -> None:
        key = self._active_key()
        if key is not None:
            self.push_screen(AdminScreen(self.backend, key))

    async def action_quit(self) -> None:
        await self.backend.close_all()
        self.exit()

    async def on_unmount(self) -> None:
        # However the app ends (quit, Ctrl+Q, a test leaving run_test): close the sockets.
        await self.backend.close_all()

    # -- F3 ---------------------------------------------------------------------------------------

    def action_details(self) -> None:
        pane = self.active_pane()
        entry = pane.file_list.cursor_entry
        if pane.site_key is None or entry is None or not pane.target_entries():
            return
        entries = pane.target_entries()
        entry = entries[0] if len(entries) == 1 else entry
        if entry.get("name") == "..":
            return
        self.push_screen(DetailsModal(self.backend, pane.site_key, pane.path_of(entry), dict(entry)))

    # -- F5 / F6 ------------------------------------------------------------------------------------

    def _summary(self, verb: str, entries: list[Entry]) -> Text:
        if len(entries) == 1:
            return Text(f"{verb} ") + safe(entries[0].get("name")) + Text(" to:")
        size = sum(e.get("size", 0) for e in entries if isinstance(e.get("size"), int))
        return Text(f"{verb} {len(entries)} entries ({humanize.naturalsize(size, binary=True)}) to:")

    def action_copy(self) -> None:
        source, target = self.active_pane(), self.other_pane()
        entries = source.target_entries()
        if not entries or source.site_key is None:
            return
        if target.site_key is None:
            self.notify("the other pane is not connected: F9 connects", severity="warning", timeout=3)
            return
        paths = [source.path_of(e) for e in entries]
        src_key, dst_key = source.site_key, target.site_key

        def chosen(options: CopyOptions | None) -> None:
            if options is not None and options.destination:
                self._copy(src_key, dst_key, paths, options, source.id or "left", move=False)

        self.push_screen(CopyDialog("Copy", self._summary("Copy", entries), target.path), chosen)

    def action_move(self) -> None:
        source, target = self.active_pane(), self.other_pane()
        entries = source.target_entries()
        if not entries or source.site_key is None:
            return
        paths = [source.path_of(e) for e in entries]
        src_key = source.site_key
        same_server = target.site_key == src_key or target.site_key is None
        default = target.path if target.site_key is not None else source.path

        def chosen(options: CopyOptions | None) -> None:
            if options is None or not options.destination:
                return
            if same_server or options.destination == source.path:
                self._move_local(src_key, source.path, paths, options.destination, default)
            elif target.site_key is not None:
                self._copy(src_key, target.site_key, paths, options, source.id or "left", move=True)

        title = "Move / rename" if same_server else "Move (transfer, then delete)"
        self.push_screen(CopyDialog(title, self._summary("Move", entries), default, transfer=not same_server), chosen)

    @work(group="op", exit_on_error=False, description="move / rename")
    async def _move_local(self, key: str, here: str, paths: list[str], destination: str, default: str) -> None:
        # MC's rule: a directory (the other pane's, or one ending in /) receives the entries;
        # anything else is the new name of a single entry (relative to the source directory).
        into_dir = destination == default or destination.endswith("/") or len(paths) > 1
        if not destination.startswith("/") and ":" not in destination.split("/", 1)[0]:
            destination = join_path(here, destination) if here else destination
        moves = [
            (path, join_path(destination.rstrip("/") or "/", basename(path)) if into_dir else destination)
            for path in paths
        ]
        try:
            for old, new in moves:
                await self.backend.mv(key, old, new)
        except JettuiError as exc:
            self.show_error(exc, f"move {old} to {new}")
        self._reread_key(key)

    @work(group="op", exit_on_error=False, description="order a transfer")
    async def _copy(
        self, src_key: str, dst_key: str, paths: list[str], options: CopyOptions, pane_id: str, *, move: bool
    ) -> None:
        try:
            transfer = await self.backend.copy(
                src_key, dst_key, paths, options.destination, overwrite=options.overwrite, cipher=options.cipher
            )
        except JettuiError as exc:
            self.show_error(exc, "the transfer could not be ordered")
            return
        self.query_one(f"#{pane_id}", RemotePane).file_list.clear_selection()
        self.destinations[(src_key, transfer.get("transferId"))] = (dst_key, options.destination)
        if move:
            self.pending_moves[(src_key, transfer.get("transferId"))] = _PendingMove(src_key, paths, pane_id)
            self._check_move(src_key, transfer)
        self.notify(f"transfer {transfer.get('transferId')} ordered", timeout=3)

    def _check_move(self, site_key: str, transfer: dict[str, Any]) -> None:
        """A transfer ordered here completed: show its files, and finish an F6 across servers."""
        if transfer.get("status") == TRANSFER_STATUS_COMPLETE:
            target = self.destinations.pop((site_key, transfer.get("transferId")), None)
            if target is not None:
                for pane in self.panes():
                    if (pane.site_key, pane.path) == target:
                        pane.reread()
        pending = self.pending_moves.get((site_key, transfer.get("transferId")))
        if pending is None or pending.done or transfer.get("status") != TRANSFER_STATUS_COMPLETE:
            return
        pending.done = True
        self._finish_move(pending)

    @work(group="op", exit_on_error=False, description="delete moved sources")
    async def _finish_move(self, pending: _PendingMove) -> None:
        try:
            await self.backend.rm(pending.site_key, pending.paths)
        except JettuiError as exc:
            self.show_error(exc, "the copy is complete but the sources could not be deleted")
        self._reread_key(pending.site_key)

    def _reread_key(self, key: str) -> None:
        for pane in self.panes():
            if pane.site_key == key:
                pane.reread()

    # -- F7 ----------------------------------------------------------------------------------------

    def action_mkdir(self) -> None:
        pane = self.active_pane()
        if pane.site_key is None or pane.path == "":
            return
        key, here = pane.site_key, pane.path

        def chosen(name: str | None) -> None:
            if name:
                self._mkdir(key, here, name)

        self.push_screen(InputModal("Make directory", "Name of the new directory:"), chosen)

    @work(group="op", exit_on_error=False, description="make a directory")
    async def _mkdir(self, key: str, here: str, name: str) -> None:
        path = name if name.startswith("/") else join_path(here, name)
        try:
            await self.backend.mkdir(key, path)
        except JettuiError as exc:
            self.show_error(exc, f"mkdir {path}")
            return
        for pane in self.panes():
            if pane.site_key == key and pane.path == here:
                pane.load(here, keep_cursor_on=posixpath.basename(name.rstrip("/")) or None)

    # -- F8 -------------------------------------------------------------------------------------------

    def action_delete(self) -> None:
        pane = self.active_pane()
        entries = pane.target_entries()
        if not entries or pane.site_key is None or pane.path == "":
            return
        self._confirm_delete(pane.site_key, [pane.path_of(e) for e in entries], entries)

    @work(group="op", exit_on_error=False, description="size the entries to delete")
    async def _confirm_delete(self, key: str, paths: list[str], entries: list[Entry]) -> None:
        total = 0
        dirs = 0
        try:
            for path, entry in zip(paths, entries, strict=True):
                if is_dir_entry(entry):
                    dirs += 1
                    total += await self.backend.du(key, path)
                elif isinstance(entry.get("size"), int):
                    total += entry["size"]
        except JettuiError as exc:
            self.show_error(exc, "cannot size the entries to delete")
            return
        what = safe(entries[0].get("name")) if len(entries) == 1 else Text(f"{len(entries)} entries")
        question = Text("Delete ") + what
        if dirs:
            question += Text(f" ({dirs} director{'y' if dirs == 1 else 'ies'}, with their contents)")
        question += Text(f", {humanize.naturalsize(total, binary=True)} ({total:,} bytes) in total?")
        answer = await self.push_screen_wait(ConfirmModal("Delete", question, "Delete", danger=True))
        if not answer:
            return
        try:
            await self.backend.rm(key, paths)
        except JettuiError as exc:
            self.show_error(exc, "delete")
        for pane in self.panes():
            if pane.site_key == key:
                pane.file_list.clear_selection()
        self._reread_key(key)
