"""TransferQueue: the panel below the panes, one row per transfer of every connected server.

Transfers belong to the servers, not to the commander: the queue is a view of what the
servers' ``getTransfers`` and ``transfers.progress`` notifications say, so closing and
reopening the commander shows the same rows.  Finished and failed transfers stay listed with
their reason until deleted (``x``).  Rows are keyed by ``site key # transferId``.

The rate column uses the structure's ``rate`` (bytes/s) when the server sends it, else the
change in acknowledged bytes between two updates; the ETA follows from it (humanize).
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import humanize
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.coordinate import Coordinate
from textual.widgets import DataTable, Static

from jettui.constants import (
    CIPHER_NAMES,
    TRANSFER_END_STATUSES,
    TRANSFER_STATUS_COMPLETE,
    TRANSFER_STATUS_ERROR,
    TRANSFER_STATUS_SENDING,
    TRANSFER_STATUS_SUSPENDED,
)
from jettui.errors import JettuiError
from jettui.tui.backend import Backend
from jettui.tui.screens.modals import ConfirmModal, ErrorModal
from jettui.tui.text import safe

__all__ = ["TransferQueue", "progress_of"]

#: (key, label, width): fixed widths, so 80 columns show everything up to the RTT and a
#: stream of updates never re-measures the table; the last column takes the rest.
COLUMNS: tuple[tuple[str, str, int | None], ...] = (
    ("id", "ID", 3),
    ("state", "State", 9),
    ("progress", "Progress", 11),
    ("bytes", "Bytes", 11),
    ("rate", "Rate", 9),
    ("eta", "ETA", 10),
    ("cipher", "Cipher", 6),
    ("rtt", "RTT", 5),
    ("info", "Destination / reason", None),
)
#: Short cipher names for the 6-cell column (the full names are in the constants).
_CIPHER_SHORT = {"NONE": "none", "UNENCRYPTED": "auth", "ENCRYPTED_128": "aes128", "ENCRYPTED_256": "aes256"}
_BAR_CELLS = 6
_STATE_STYLES = {
    TRANSFER_STATUS_SENDING: "bold green",
    TRANSFER_STATUS_SUSPENDED: "yellow",
    TRANSFER_STATUS_ERROR: "bold red",
    TRANSFER_STATUS_COMPLETE: "green",
}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def progress_of(transfer: dict[str, Any]) -> tuple[int, int | None]:
    """Acknowledged bytes and total bytes of a Transfer Structure (total None if unknown)."""
    total = _int(transfer.get("totalBytes"))
    done = _int(transfer.get("bytesAcked"))
    if done is None:
        acked, size = _int(transfer.get("blocksAcked")), _int(transfer.get("blockSize"))
        done = acked * size if acked is not None and size is not None else 0
    if transfer.get("status") == TRANSFER_STATUS_COMPLETE and total is not None:
        done = total
    if total is not None:
        done = min(done, total)
    return max(0, done), total


def _cipher_name(value: Any) -> str:
    """The negotiated cipher, given as a name (the engine's) or a MIN_CIPHER_* number."""
    name = CIPHER_NAMES.get(value) if isinstance(value, int) else value
    return _CIPHER_SHORT.get(name, "—") if isinstance(name, str) else "—"


def _bar(fraction: float) -> Text:
    fraction = min(1.0, max(0.0, fraction))
    filled = round(fraction * _BAR_CELLS)
    text = Text("█" * filled, style="green")
    text.append("░" * (_BAR_CELLS - filled), style="dim")
    text.append(f" {fraction * 100:3.0f}%")
    return text


class TransferQueue(Vertical, can_focus=False):
    """The transfer queue; ``update`` / ``replace_site`` are called by the app."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("p", "suspend", "Pause transfer"),
        Binding("u", "resume", "Resume transfer"),
        Binding("c", "cancel", "Cancel transfer"),
        Binding("t", "retry", "Retry transfer"),
        Binding("x,delete", "delete", "Delete record"),
    ]

    def __init__(self, backend: Backend, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.backend = backend
        self.transfers: dict[str, tuple[str, dict[str, Any]]] = {}
        """Row key -> (site key, latest Transfer Structure)."""
        self.labels: dict[str, str] = {}
        """Site key -> label, for the ID column when several servers are shown."""
        self._rates: dict[str, tuple[float, int, float | None]] = {}
        self.unsupported: set[str] = set()
        self.title = Static("", classes="queue-title")
        self.table: DataTable[Any] = DataTable(cursor_type="row", zebra_stripes=False, id="queue-table")

    def compose(self) -> ComposeResult:
        yield self.title
        yield self.table

    def on_mount(self) -> None:
        for key, label, width in COLUMNS:
            self.table.add_column(label, key=key, width=width)
        self._retitle()

    # -- data in ----------------------------------------------------------------------------

    @staticmethod
    def row_key(site_key: str, transfer: dict[str, Any]) -> str:
        return f"{site_key}#{transfer.get('transferId')}"

    def update(self, site_key: str, transfer: dict[str, Any]) -> None:
        """Add or refresh one row from a Transfer Structure."""
        if transfer.get("transferId") is None:
            return
        self.unsupported.discard(site_key)
        key = self.row_key(site_key, transfer)
        previous = self.transfers.get(key)
        if previous is not None:
            merged = dict(previous[1])
            merged.update(transfer)  # progress notifications may carry only the live figures
            transfer = merged
        self.transfers[key] = (site_key, transfer)
        cells = self._cells(key, transfer)
        if previous is None:
            self.table.add_row(*cells, key=key)
        else:
            for (column, _, _), value in zip(COLUMNS, cells, strict=True):
                self.table.update_cell(key, column, value)
        self._retitle()

    def replace_site(self, site_key: str, transfers: list[dict[str, Any]]) -> None:
        """A full list from getTransfers: update rows, drop the ones the server forgot."""
        self.unsupported.discard(site_key)
        keep = set()
        for transfer in transfers:
            self.update(site_key, transfer)
            keep.add(self.row_key(site_key, transfer))
        for key in [k for k, (s, _) in self.transfers.items() if s == site_key and k not in keep]:
            self.transfers.pop(key)
            self._rates.pop(key, None)
            self.table.remove_row(key)
        self._retitle()

    def mark_unsupported(self, site_key: str) -> None:
        self.unsupported.add(site_key)
        self._retitle()

    def _retitle(self) -> None:
        count = len(self.transfers)
        active = sum(1 for _, t in self.transfers.values() if t.get("status") not in TRANSFER_END_STATUSES)
        current = self.current() if self.table.has_focus else None
        if current is not None:
            # Focused: the highlighted transfer in full (its reason may be cut in the table).
            transfer = current[1]
            reason = transfer.get("errorMessage") or transfer.get("destinationPath") or ""
            text = Text(f"#{transfer.get('transferId')} {transfer.get('status')}: ") + safe(reason)
            text.append("  (p pause · u resume · c cancel · t retry · x delete)")
        elif count:
            text = Text(f"Transfers: {active} active, {count - active} finished — Ctrl+T to manage")
        elif self.unsupported:
            text = Text("Transfers: this server has no transfer engine yet")
        else:
            text = Text("Transfers: none — F5 copies the selection to the other pane")
        self.title.update(text)
        self.set_class(not count, "-empty")

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._retitle()

    def on_descendant_focus(self) -> None:
        self._retitle()

    def on_descendant_blur(self) -> None:
        self._retitle()

    def _rate(self, key: str, transfer: dict[str, Any], done: int) -> float | None:
        # "rate" is the measured rate; "sendRate" is the controller's target, not a measurement.
        rate = transfer.get("rate")
        if isinstance(rate, int | float) and not isinstance(rate, bool) and rate >= 0:
            return float(rate)
        now = time.monotonic()
        last = self._rates.get(key)
        estimate = None
        if last is not None and now > last[0] and done >= last[1]:
            estimate = (done - last[1]) / (now - last[0])
            if last[2] is not None:
                estimate = 0.7 * last[2] + 0.3 * estimate  # smooth bursty notifications
        self._rates[key] = (now, done, estimate)
        return estimate

    def _cells(self, key: str, transfer: dict[str, Any]) -> tuple[Text, ...]:
        status = str(transfer.get("status", "?"))
        done, total = progress_of(transfer)
        active = status not in TRANSFER_END_STATUSES
        rate = self._rate(key, transfer, done) if active else None
        if total:
            progress = _bar(done / total)
            size = f"{humanize.naturalsize(done, gnu=True)}/{humanize.naturalsize(total, gnu=True)}"
        else:
            progress = Text("—")
            size = humanize.naturalsize(done, gnu=True)
        eta = "—"
        if active and rate and total is not None and rate > 0:
            eta = humanize.naturaldelta(max(0.0, (total - done) / rate))
        elif status == TRANSFER_STATUS_COMPLETE:
            eta = "done"
        cipher = transfer.get("cipher")
        rtt = transfer.get("roundTripTimeMs")
        if status in (TRANSFER_STATUS_ERROR, "cancelled") and transfer.get("errorMessage"):
            info = Text("⚠ ", style="bold red") + safe(transfer.get("errorMessage"))
        else:
            info = safe(transfer.get("destinationPath") or "")
        return (
            safe(transfer.get("transferId")),
            Text(status, style=_STATE_STYLES.get(status, "")),
            progress,
            Text(size),
            Text(humanize.naturalsize(rate, gnu=True) + "/s" if rate else "—"),
            Text(eta),
            Text(_cipher_name(cipher)),
            Text(f"{rtt:.0f}ms" if isinstance(rtt, int | float) and not isinstance(rtt, bool) else "—"),
            info,
        )

    # -- actions -------------------------------------------------------------------------------

    def current(self) -> tuple[str, dict[str, Any]] | None:
        """Site key and transfer of the row under the cursor."""
        if not self.transfers or self.table.row_count == 0:
            return None
        row_key = self.table.coordinate_to_cell_key(Coordinate(self.table.cursor_row, 0)).row_key.value
        return self.transfers.get(str(row_key))

    def action_suspend(self) -> None:
        self._act("suspend")

    def action_resume(self) -> None:
        self._act("resume")

    def action_cancel(self) -> None:
        found = self.current()
        if found is None:
            return
        site_key, transfer = found

        def confirmed(yes: bool | None) -> None:
            if yes:
                self._act("cancel")

        self.app.push_screen(
            ConfirmModal(
                "Cancel transfer",
                Text("Cancel transfer ") + safe(transfer.get("transferId")) + Text("?"),
                "Cancel it",
                danger=True,
            ),
            confirmed,
        )

    def action_delete(self) -> None:
        found = self.current()
        if found is not None and found[1].get("status") in TRANSFER_END_STATUSES:
            self._act("delete")

    def action_retry(self) -> None:
        found = self.current()
        if found is None:
            return
        site_key, transfer = found
        if transfer.get("status") not in (TRANSFER_STATUS_ERROR, "cancelled"):
            self.notify("only failed or cancelled transfers can be retried", severity="warning", timeout=3)
            return
        self._retry(site_key, transfer)

    def _act(self, action: str) -> None:
        found = self.current()
        if found is not None:
            self._run_action(found[0], found[1], action)

    @work(group="queue-action", exit_on_error=False, description="transfer action")
    async def _run_action(self, site_key: str, transfer: dict[str, Any], action: str) -> None:
        try:
            await self.backend.transfer_action(site_key, transfer.get("transferId"), action)
            if action == "delete":
                key = self.row_key(site_key, transfer)
                if key in self.transfers:
                    self.transfers.pop(key)
                    self.table.remove_row(key)
                    self._retitle()
        except JettuiError as exc:
            self.app.push_screen(ErrorModal.from_exception(exc, f"{action} transfer {transfer.get('transferId')}"))

    @work(group="queue-action", exit_on_error=False, description="retry a transfer")
    async def _retry(self, site_key: str, transfer: dict[str, Any]) -> None:
        try:
            await self.backend.retry(site_key, transfer)
        except JettuiError as exc:
            self.app.push_screen(ErrorModal.from_exception(exc, f"retry transfer {transfer.get('transferId')}"))
