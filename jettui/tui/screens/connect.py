"""Connect: host, port, user and password (or an API token), saved sites, and the trust
prompt on first contact.

Connecting is two steps (see backend.py): TLS first, and if the server's certificate is
not known yet, its SHA-256 fingerprint is shown and nothing is sent until the user trusts
it ("Trust & connect", or ``y``); only then are credentials sent.  The screen dismisses
with the connection's key, or None when cancelled.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Select, Static

from jettui.constants import DEFAULT_API_PORT
from jettui.errors import JettuiError
from jettui.tui.backend import Backend, Connection, ConnState
from jettui.tui.sites import Site, SiteStore
from jettui.tui.text import safe

__all__ = ["ConnectScreen", "format_fingerprint"]


def format_fingerprint(fingerprint: str) -> str:
    """``ab12cd...`` as ``AB:12:CD:…`` in two lines of 16 pairs (easy to compare aloud)."""
    pairs = [fingerprint[i : i + 2].upper() for i in range(0, len(fingerprint), 2)]
    return "\n".join(":".join(pairs[i : i + 16]) for i in range(0, len(pairs), 16))


class ConnectScreen(ModalScreen[str | None]):
    """The connect dialog; dismisses with the connection key or None."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "save", "Save site"),
        Binding("ctrl+y", "trust", "Trust the shown certificate"),
    ]

    def __init__(self, backend: Backend, store: SiteStore, site: Site | None = None) -> None:
        super().__init__(classes="dialog-screen")
        self.backend = backend
        self.store = store
        self.prefill = site
        self.pending: Connection | None = None
        """A connection waiting for the user to trust its certificate."""
        try:
            self.saved = store.load()
            self.load_error = ""
        except JettuiError as exc:
            self.saved = []
            self.load_error = str(exc)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog connect"):
            yield Label("Connect to a jettui server", classes="dialog-title")
            options = [(safe(s.name), s.name) for s in self.saved]
            yield Select(options, prompt="saved sites", id="saved", compact=True, disabled=not options)
            with Horizontal(classes="field"):
                yield Label("Name", classes="field-label")
                yield Input(placeholder="(to save the site)", id="name", compact=True)
            with Horizontal(classes="field"):
                yield Label("Host", classes="field-label")
                yield Input(placeholder="host name or address", id="host", compact=True)
                yield Label(" Port ")
                yield Input(str(DEFAULT_API_PORT), id="port", compact=True, type="integer", classes="port")
            with Horizontal(classes="field"):
                yield Label("User", classes="field-label")
                yield Input(id="user", compact=True)
            with Horizontal(classes="field"):
                yield Label("Password", classes="field-label")
                yield Input(password=True, id="password", compact=True)
            with Horizontal(classes="field"):
                yield Label("Token", classes="field-label")
                yield Input(placeholder="API token instead of user/password", id="token", compact=True)
            with Horizontal(classes="field"):
                yield Checkbox("save site", id="save", compact=True)
                yield Checkbox("remember password", id="remember", compact=True)
            yield Static("", id="connect-status")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Connect", variant="primary", id="connect", compact=True)
                yield Button("Trust & connect", variant="warning", id="trust", compact=True)
                yield Button("Delete site", id="delete", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one("#trust", Button).display = False
        if self.load_error:
            self._status(Text(self.load_error, style="bold red"))
        if self.prefill is not None:
            self._fill(self.prefill)
        focus = "#host"
        if self.prefill is not None and self.prefill.host:
            focus = "#password" if self.prefill.user and not self.prefill.token else "#connect"
        self.query_one(focus).focus()
        if self.prefill is not None and self.prefill.has_credentials:
            self.action_connect()

    def _fill(self, site: Site) -> None:
        self.query_one("#name", Input).value = site.name
        self.query_one("#host", Input).value = site.host
        self.query_one("#port", Input).value = str(site.port)
        self.query_one("#user", Input).value = site.user
        self.query_one("#password", Input).value = site.password
        self.query_one("#token", Input).value = site.token
        self.query_one("#remember", Checkbox).value = site.remember_password

    def _status(self, text: Text | str) -> None:
        self.query_one("#connect-status", Static).update(text)

    def _site(self) -> Site:
        def value(selector: str) -> str:
            return self.query_one(selector, Input).value.strip()

        host = value("#host")
        if not host:
            raise JettuiError("a host is required")
        try:
            port = int(value("#port") or DEFAULT_API_PORT)
        except ValueError:
            raise JettuiError("the port must be a number") from None
        if not 0 < port < 65536:
            raise JettuiError(f"port {port} is out of range")
        user, token = value("#user"), value("#token")
        if not user and not token:
            raise JettuiError("give a user name and password, or an API token")
        base = self.prefill if self.prefill is not None and self.prefill.host == host else None
        return Site(
            name=value("#name"),
            host=host,
            port=port,
            user=user if not token else "",
            token=token,
            password=self.query_one("#password", Input).value,
            remember_password=self.query_one("#remember", Checkbox).value,
            fingerprint=base.fingerprint if base is not None and base.port == port else None,
            embedded=bool(base and base.embedded),
        )

    # -- events ----------------------------------------------------------------------------------

    def on_select_changed(self, event: Select.Changed) -> None:
        for site in self.saved:
            if site.name == event.value:
                self._fill(site)
                self.query_one("#password", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_connect()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        button = event.button.id
        if button == "connect":
            self.action_connect()
        elif button == "trust":
            self.action_trust()
        elif button == "delete":
            self._delete_site()
        else:
            self.action_cancel()

    def action_save(self) -> None:
        try:
            site = self._site()
            if not site.name:
                raise JettuiError("give the site a name to save it")
            self.store.save(site)
        except (JettuiError, OSError) as exc:
            self._status(Text(str(exc), style="bold red"))
            return
        self._status(Text("site saved: ") + safe(site.name))

    def _delete_site(self) -> None:
        name = self.query_one("#name", Input).value.strip()
        try:
            found = self.store.delete(name)
        except (JettuiError, OSError) as exc:
            self._status(Text(str(exc), style="bold red"))
            return
        self._status(Text("deleted: " if found else "no saved site named ") + safe(name))

    def action_cancel(self) -> None:
        if self.pending is not None:
            self._close_pending(self.pending)
        self.dismiss(None)

    @work(group="connect-close", exit_on_error=False)
    async def _close_pending(self, conn: Connection) -> None:
        await conn.close()

    def action_connect(self) -> None:
        try:
            site = self._site()
            if self.query_one("#save", Checkbox).value:
                if not site.name:
                    raise JettuiError("give the site a name to save it")
                self.store.save(site)
        except (JettuiError, OSError) as exc:
            self._status(Text(str(exc), style="bold red"))
            return
        self._connect(site)

    @work(group="connect", exclusive=True, exit_on_error=False, description="connect")
    async def _connect(self, site: Site) -> None:
        self._status(Text("connecting to ") + safe(site.endpoint) + Text(" …"))
        conn = self.backend.add(site)
        if conn.state is ConnState.CONNECTED:
            self.dismiss(conn.key)
            return
        try:
            first_contact = await conn.handshake()
        except JettuiError as exc:
            self._status(Text(f"{exc.title}: ", style="bold red") + safe(str(exc)))
            return
        if first_contact:
            self.pending = conn
            text = Text("First contact with ", style="bold yellow") + safe(site.endpoint)
            text.append("\nCertificate SHA-256:\n")
            text.append(format_fingerprint(conn.fingerprint or ""), style="bold")
            text.append("\nCompare it with the server's (jettui server prints it). Trust it? (Ctrl+Y)")
            self._status(text)
            trust = self.query_one("#trust", Button)
            trust.display = True
            trust.focus()
            return
        await self._login(conn)

    def action_trust(self) -> None:
        conn = self.pending
        if conn is None:
            return
        conn.trust()
        self.pending = None
        self.query_one("#trust", Button).display = False
        self._trusted_login(conn)

    @work(group="connect", exclusive=True, exit_on_error=False, description="login")
    async def _trusted_login(self, conn: Connection) -> None:
        await self._login(conn)

    async def _login(self, conn: Connection) -> None:
        self._status(Text("logging in to ") + safe(conn.site.endpoint) + Text(" …"))
        try:
            await conn.login()
        except JettuiError as exc:
            self._status(Text(f"{exc.title}: ", style="bold red") + safe(str(exc)))
            return
        self.dismiss(conn.key)
