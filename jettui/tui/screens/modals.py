"""Small dialogs: errors, confirmations, one-line input, the F5/F6 copy dialog, F3 details.

All of them fit 80x24 and are driven by keys alone: Enter confirms, Escape cancels, Tab
moves between fields.  Everything shown that came from a server goes through
:func:`jettui.tui.text.safe`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

import humanize
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static

from jettui.constants import (
    CIPHER_NAMES,
    LS_TYPE_DIRECTORY,
    LS_TYPE_REGULAR,
    LS_TYPE_ROOT,
    LS_TYPE_SYMLINK,
    OVERWRITE_ALWAYS,
    OVERWRITE_NAMES,
    OVERWRITE_NEVER,
    OVERWRITE_VERSIONED,
)
from jettui.errors import JettuiError
from jettui.tui.backend import Backend
from jettui.tui.text import safe

__all__ = [
    "ConfirmModal",
    "CopyDialog",
    "CopyOptions",
    "DetailsModal",
    "ErrorModal",
    "InputModal",
]

#: Plain words for the overwrite modes, in the order the dialog offers them.
OVERWRITE_CHOICES: list[tuple[str, int]] = [
    ("always (part-file, then replace)", OVERWRITE_ALWAYS),
    ("never (keep existing files)", OVERWRITE_NEVER),
    ("versioned (keep .jetbak)", OVERWRITE_VERSIONED),
    *[
        (f"{name.lower().replace('_', ' ')}", value)
        for value, name in OVERWRITE_NAMES.items()
        if value not in (OVERWRITE_ALWAYS, OVERWRITE_NEVER, OVERWRITE_VERSIONED)
    ],
]
CIPHER_CHOICES: list[tuple[str, int | None]] = [
    ("server default", None),
    *[(name, value) for value, name in sorted(CIPHER_NAMES.items(), reverse=True)],
]


class _Dialog(ModalScreen[Any]):
    """Base: a centred box; Escape dismisses with None."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def action_cancel(self) -> None:
        self.dismiss(None)


class ErrorModal(_Dialog):
    """An error with its title (``JettuiError.title``) and the server's message."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,enter", "cancel", "Close"),
    ]

    def __init__(self, title: str, message: str) -> None:
        super().__init__(classes="dialog-screen error-screen")
        self.error_title = title
        self.message = message

    @classmethod
    def from_exception(cls, exc: BaseException, context: str = "") -> ErrorModal:
        title = exc.title if isinstance(exc, JettuiError) else "Unexpected error"
        message = str(exc) or type(exc).__name__
        return cls(title, f"{context}: {message}" if context else message)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog error"):
            yield Label(safe(self.error_title), classes="dialog-title")
            yield Static(safe(self.message, multiline=True), id="error-message", classes="dialog-body")
            with Horizontal(classes="dialog-buttons"):
                yield Button("OK", variant="error", id="ok")

    class Shown(Message):
        """Posted when the dialog shows, so the app can keep a log of every error shown."""

        def __init__(self, title: str, message: str) -> None:
            super().__init__()
            self.title = title
            self.message = message

    def on_mount(self) -> None:
        self.query_one("#ok", Button).focus()
        self.post_message(self.Shown(self.error_title, self.message))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None)


class ConfirmModal(_Dialog):
    """A yes/no question; dismisses with True or False.  ``y`` / ``n`` answer directly."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,n", "answer(False)", "No"),
        Binding("y", "answer(True)", "Yes"),
    ]

    def __init__(self, title: str, question: str | Text, yes: str = "Yes", *, danger: bool = False) -> None:
        super().__init__(classes="dialog-screen")
        self.dialog_title = title
        self.question = question
        self.yes = yes
        self.danger = danger

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog" + (" error" if self.danger else "")):
            yield Label(self.dialog_title, classes="dialog-title")
            yield Static(self.question, id="question", classes="dialog-body")
            with Horizontal(classes="dialog-buttons"):
                yield Button(self.yes, variant="error" if self.danger else "primary", id="yes")
                yield Button("No", id="no")

    def on_mount(self) -> None:
        self.query_one("#yes", Button).focus()

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class InputModal(_Dialog):
    """One line of input (mkdir name, selection pattern); dismisses with the text or None."""

    def __init__(self, title: str, prompt: str, value: str = "", placeholder: str = "") -> None:
        super().__init__(classes="dialog-screen")
        self.dialog_title = title
        self.prompt = prompt
        self.value = value
        self.placeholder = placeholder

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.dialog_title, classes="dialog-title")
            yield Label(self.prompt)
            yield Input(self.value, placeholder=self.placeholder, id="value", select_on_focus=True)
            with Horizontal(classes="dialog-buttons"):
                yield Button("OK", variant="primary", id="ok")
                yield Button("Cancel", id="cancel")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(self.query_one("#value", Input).value if event.button.id == "ok" else None)


@dataclass(frozen=True)
class CopyOptions:
    """What the F5/F6 dialog returns."""

    destination: str
    overwrite: int = OVERWRITE_ALWAYS
    cipher: int | None = None


class CopyDialog(_Dialog):
    """F5 copy / F6 move: destination directory, overwrite mode and cipher level.

    ``transfer=False`` (a move or rename on one server, which is mvAsync) hides the
    transfer options, which would not apply.
    """

    def __init__(self, title: str, summary: Text | str, destination: str, *, transfer: bool = True) -> None:
        super().__init__(classes="dialog-screen")
        self.dialog_title = title
        self.summary = summary
        self.destination = destination
        self.transfer = transfer

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog copy-dialog"):
            yield Label(self.dialog_title, classes="dialog-title")
            yield Static(self.summary, id="summary")
            yield Input(self.destination, id="destination", select_on_focus=False)
            if self.transfer:
                with Horizontal(classes="field"):
                    yield Label("Overwrite", classes="field-label")
                    yield Select(
                        OVERWRITE_CHOICES, value=OVERWRITE_ALWAYS, allow_blank=False, id="overwrite", compact=True
                    )
                with Horizontal(classes="field"):
                    yield Label("Cipher", classes="field-label")
                    yield Select(CIPHER_CHOICES, value=None, allow_blank=False, id="cipher", compact=True)
            with Horizontal(classes="dialog-buttons"):
                yield Button("OK", variant="primary", id="ok")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#destination", Input).focus()

    def _result(self) -> CopyOptions:
        destination = self.query_one("#destination", Input).value.strip()
        if not self.transfer:
            return CopyOptions(destination)
        overwrite = self.query_one("#overwrite", Select).value
        cipher = self.query_one("#cipher", Select).value
        return CopyOptions(
            destination,
            overwrite if isinstance(overwrite, int) else OVERWRITE_ALWAYS,
            cipher if isinstance(cipher, int) else None,
        )

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(self._result())

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(self._result() if event.button.id == "ok" else None)


_TYPE_NAMES = {
    LS_TYPE_REGULAR: "file",
    LS_TYPE_DIRECTORY: "directory",
    LS_TYPE_SYMLINK: "symbolic link",
    LS_TYPE_ROOT: "root",
}


def _access_text(bits: object) -> str:
    if not isinstance(bits, int):
        return "?"
    return "".join(flag if bits & bit else "-" for flag, bit in (("r", 4), ("w", 2), ("x", 1)))


class DetailsModal(_Dialog):
    """F3: the entry's stat (lsListAsync statOnly), its disk usage (duAsync, ``d``) and,
    on request, its MD5 (``m``) or S3 (``s``) hash.  Each query runs in its own worker."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,enter,f3", "cancel", "Close"),
        Binding("d", "du", "Disk usage"),
        Binding("m", "hash('MD5')", "MD5"),
        Binding("s", "hash('S3')", "S3 hash"),
    ]

    def __init__(self, backend: Backend, site_key: str, path: str, entry: dict[str, Any]) -> None:
        super().__init__(classes="dialog-screen")
        self.backend = backend
        self.site_key = site_key
        self.path = path
        self.entry = dict(entry)
        self.values: dict[str, Text] = {}

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog details"):
            yield Label(Text("Details: ") + safe(self.path), classes="dialog-title")
            yield Static(id="details", classes="dialog-body")
            yield Static("d disk usage · m MD5 · s S3 hash · Esc close", classes="dialog-hint")

    def on_mount(self) -> None:
        self._show()
        self.load_stat()
        if self.entry.get("type") in (LS_TYPE_DIRECTORY, LS_TYPE_ROOT):
            self.action_du()

    def _show(self) -> None:
        e = self.entry
        mtime = e.get("mtime")
        when = (
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(mtime))
            if isinstance(mtime, int | float) and not isinstance(mtime, bool) and 0 <= mtime < 2**37
            else "?"
        )
        size = e.get("size")
        kind = e.get("type")
        kind_text = Text(_TYPE_NAMES.get(kind, repr(kind))) if isinstance(kind, int) else safe(kind)
        size_text = (
            Text(f"{size:,} B ({humanize.naturalsize(size, binary=True)})") if isinstance(size, int) else safe(size)
        )
        rows: list[tuple[str, Text]] = [
            ("Name", safe(e.get("name"))),
            ("Type", kind_text),
            ("Size", size_text),
            ("Modified", Text(when)),
            ("Access", Text(_access_text(e.get("access")))),
            *[(k, v) for k, v in self.values.items()],
        ]
        text = Text()
        for i, (label, value) in enumerate(rows):
            if i:
                text.append("\n")
            text.append(f"{label:<10} ", style="bold")
            text.append_text(value)
        self.query_one("#details", Static).update(text)

    def _set(self, label: str, value: Text | str) -> None:
        self.values[label] = value if isinstance(value, Text) else Text(value)
        self._show()

    @work(group="details-stat", exclusive=True, exit_on_error=False)
    async def load_stat(self) -> None:
        try:
            self.entry.update(await self.backend.stat(self.site_key, self.path))
        except JettuiError as exc:
            self._set("Stat", Text(f"{exc.title}: ", style="bold red") + safe(str(exc)))
            return
        self._show()

    def action_du(self) -> None:
        self._set("Disk usage", "calculating…")
        self.load_du()

    @work(group="details-du", exclusive=True, exit_on_error=False)
    async def load_du(self) -> None:
        try:
            used = await self.backend.du(self.site_key, self.path)
        except JettuiError as exc:
            self._set("Disk usage", Text(f"{exc.title}: ", style="bold red") + safe(str(exc)))
            return
        self._set("Disk usage", f"{used:,} B ({humanize.naturalsize(used, binary=True)})")

    def action_hash(self, hash_type: str) -> None:
        self._set(hash_type, "calculating…")
        self.load_hash(hash_type)

    @work(group="details-hash", exit_on_error=False)
    async def load_hash(self, hash_type: str) -> None:
        try:
            entry = await self.backend.stat(self.site_key, self.path, hash_type)
        except JettuiError as exc:
            self._set(hash_type, Text(f"{exc.title}: ", style="bold red") + safe(str(exc)))
            return
        digest = entry.get("hash")
        self._set(hash_type, safe(digest) if digest else Text("(no hash: not a regular file)"))
