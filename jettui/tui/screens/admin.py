"""Administration (superusers): API tokens, sandboxes, wranglers, bandwidth, garbage
collection and authorized clients, one tab each.

On opening, the screen asks the server for superuser rights (``server.superuser()``); if
it refuses, the refusal is shown and the tabs that need the rights will show the server's
error when used (tokens only need the token permission).  Every failing call shows the
server's message in the status line *and* in an ErrorModal: nothing is swallowed.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Button, Checkbox, DataTable, Footer, Input, Static, TabbedContent, TabPane

from jettui.api import AsyncAPIInterface
from jettui.errors import JettuiError
from jettui.tui.backend import Backend
from jettui.tui.screens.modals import ErrorModal
from jettui.tui.text import safe

__all__ = ["AdminScreen"]


def _time(value: Any) -> Text:
    if not isinstance(value, int):
        return Text("never" if value is None else "?")
    return Text(datetime.datetime.fromtimestamp(value / 1e6, tz=datetime.UTC).strftime("%Y-%m-%d %H:%M"))


def _number(text: str, what: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise JettuiError(f"{what} must be a number, not {text!r}") from None


class AdminScreen(Screen[None]):
    """The administration tabs for one connection."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Close"),
        Binding("ctrl+r", "reload", "Reload"),
    ]

    def __init__(self, backend: Backend, site_key: str) -> None:
        super().__init__()
        self.backend = backend
        self.site_key = site_key
        self.tokens: list[dict[str, Any]] = []
        self.created_token: str | None = None
        """The full token string of the last token created (shown once, as the seed says)."""

    def compose(self) -> ComposeResult:
        label = self.backend.get(self.site_key).site.label
        yield Static(Text("Administration — ") + safe(label), classes="screen-title")
        yield Static("", id="admin-status")
        with TabbedContent(id="admin-tabs"):
            with TabPane("Tokens", id="tab-tokens"):
                yield DataTable(cursor_type="row", id="tokens")
                with Horizontal(classes="form-row"):
                    yield Input(placeholder="description", id="token-description", compact=True)
                    yield Input(placeholder="seconds (∞)", id="token-seconds", compact=True, classes="short")
                    yield Button("Create", id="token-create", compact=True)
                    yield Button("Delete", id="token-delete", compact=True, variant="error")
            with TabPane("Sandboxes", id="tab-sandboxes"):
                yield DataTable(cursor_type="row", id="sandboxes")
                with Horizontal(classes="form-row"):
                    yield Input(placeholder="user ('' = system)", id="sandbox-user", compact=True, classes="short")
                    yield Input(placeholder='/data or {"name": "/dir"}', id="sandbox-roots", compact=True)
                    yield Button("Set", id="sandbox-set", compact=True)
                    yield Button("Delete", id="sandbox-delete", compact=True, variant="error")
            with TabPane("Wranglers", id="tab-wranglers"):
                yield DataTable(cursor_type="row", id="wranglers")
                with Horizontal(classes="form-row"):
                    yield Input(placeholder="user or group name", id="wrangler-name", compact=True)
                    yield Checkbox("group", id="wrangler-group", compact=True)
                    yield Button("Add", id="wrangler-add", compact=True)
                    yield Button("Delete", id="wrangler-delete", compact=True, variant="error")
            with TabPane("Bandwidth", id="tab-bandwidth"):
                yield Static("", id="bandwidth-now")
                with Horizontal(classes="form-row"):
                    yield Checkbox("in", id="bw-in-active", compact=True)
                    yield Input(placeholder="incoming kbit/s", id="bw-in-rate", compact=True)
                    yield Checkbox("out", id="bw-out-active", compact=True)
                    yield Input(placeholder="outgoing kbit/s", id="bw-out-rate", compact=True)
                    yield Button("Apply", id="bw-apply", compact=True)
            with TabPane("Garbage collection", id="tab-gc"):
                yield Static("", id="gc-now")
                with Horizontal(classes="form-row"):
                    yield Input(placeholder="interval s", id="gc-interval", compact=True)
                    yield Input(placeholder="time limit s", id="gc-limit", compact=True)
                    yield Button("Apply", id="gc-apply", compact=True)
                    yield Checkbox("force", id="gc-force", compact=True)
                    yield Button("Run now", id="gc-run", compact=True)
            with TabPane("Authorized clients", id="tab-clients"):
                yield Static("", id="clients-now")
                with Horizontal(classes="form-row"):
                    yield Input(placeholder="client public key (hex)", id="client-key", compact=True)
                    yield Button("Add", id="client-add", compact=True)
                    yield Button("Remove", id="client-remove", compact=True, variant="error")
                with Horizontal(classes="form-row"):
                    yield Checkbox("only authorized clients may send", id="clients-only", compact=True)
                    yield Button("Apply", id="clients-apply", compact=True)
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        self.query_one("#tokens", DataTable).add_columns("Token", "Description", "Owner", "Expires", "Path")
        self.query_one("#sandboxes", DataTable).add_columns("User", "Roots")
        self.query_one("#wranglers", DataTable).add_columns("Kind", "Id", "Name")
        self._elevate()

    # -- status and errors -------------------------------------------------------------------

    def _status(self, text: str | Text, *, error: bool = False) -> None:
        body = safe(text) if isinstance(text, str) else text
        if error:
            body.stylize("bold red")
        self.query_one("#admin-status", Static).update(body)

    def _fail(self, exc: JettuiError, what: str) -> None:
        self._status(Text(f"{what}: {exc.title}: ") + safe(str(exc)), error=True)
        self.app.push_screen(ErrorModal.from_exception(exc, what))

    async def _call(self, func: Callable[[AsyncAPIInterface], Awaitable[Any]]) -> Any:
        return await self.backend.call(self.site_key, func)

    # -- loading --------------------------------------------------------------------------------

    @work(group="admin-load", exclusive=True, exit_on_error=False, description="superuser")
    async def _elevate(self) -> None:
        try:
            await self.backend.superuser(self.site_key)
            self._status("superuser rights granted")
        except JettuiError as exc:
            # Not fatal: token management works without it. Shown, not swallowed.
            self._status(Text("no superuser rights: ") + safe(str(exc)), error=True)
        await self._reload_all()

    def action_reload(self) -> None:
        self._reload()

    @work(group="admin-load", exclusive=True, exit_on_error=False, description="reload administration")
    async def _reload(self) -> None:
        await self._reload_all()

    async def _reload_all(self) -> None:
        loaders = (
            self._load_tokens,
            self._load_sandboxes,
            self._load_wranglers,
            self._load_settings,
        )
        errors = []
        for loader in loaders:
            try:
                await loader()
            except JettuiError as exc:
                errors.append(f"{exc.title}: {exc}")
        if errors:
            self._status("; ".join(errors), error=True)

    async def _load_tokens(self) -> None:
        tokens = await self._call(lambda api: api.server.getAPITokens())
        self.tokens = [t for t in tokens if isinstance(t, dict)]
        table = self.query_one("#tokens", DataTable)
        table.clear()
        for token in self.tokens:
            table.add_row(
                safe(token.get("tokenId", token.get("token"))),
                safe(token.get("description") or ""),
                safe(token.get("owner")),
                _time(token.get("expiryTime")),
                safe(token.get("path") or ""),
            )

    async def _load_sandboxes(self) -> None:
        mappings = await self._call(lambda api: api.server.getSandboxMappings())
        table = self.query_one("#sandboxes", DataTable)
        table.clear()
        for user, roots in sorted(mappings.items()):
            table.add_row(safe(user or "(system)"), safe(json.dumps(roots, ensure_ascii=False)), key=user)

    async def _load_wranglers(self) -> None:
        wranglers = await self._call(lambda api: api.server.getWranglers())
        table = self.query_one("#wranglers", DataTable)
        table.clear()
        for kind in ("users", "groups"):
            for item in wranglers.get(kind, []):
                table.add_row(Text(kind[:-1]), safe(item.get("id")), safe(item.get("name")))

    async def _load_settings(self) -> None:
        info = await self.backend.server_info(self.site_key)
        bw = info.get("bandwidthLimits") or {}
        self.query_one("#bandwidth-now", Static).update(
            Text("now: ")
            + safe(", ".join(f"{k}={v}" for k, v in sorted(bw.items())))
            + Text("\nrates in kbit/s; settings given on the server's command line are locked")
        )
        self.query_one("#bw-in-active", Checkbox).value = bool(bw.get("incomingLimitActive"))
        self.query_one("#bw-out-active", Checkbox).value = bool(bw.get("outgoingLimitActive"))
        gc = (info.get("configuration") or {}).get("garbageCollect")
        self.query_one("#gc-now", Static).update(
            Text("now: ") + safe(", ".join(f"{k}={v}" for k, v in sorted(gc.items())))
            if isinstance(gc, dict)
            else Text("settings visible to superusers only")
        )
        receiver = info.get("receiver") or {}
        only = bool(receiver.get("onlyAuthorizedClientsAllowed"))
        self.query_one("#clients-now", Static).update(
            Text(f"only authorized clients: {'yes' if only else 'no'} · this server's public key: ")
            + safe(info.get("publicKey"))
        )
        self.query_one("#clients-only", Checkbox).value = only

    # -- actions ------------------------------------------------------------------------------------

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        handlers: dict[str, tuple[str, Callable[[], Awaitable[str]]]] = {
            "token-create": ("create token", self._token_create),
            "token-delete": ("delete token", self._token_delete),
            "sandbox-set": ("set sandbox", self._sandbox_set),
            "sandbox-delete": ("delete sandbox", self._sandbox_delete),
            "wrangler-add": ("add wrangler", self._wrangler_add),
            "wrangler-delete": ("delete wrangler", self._wrangler_delete),
            "bw-apply": ("update bandwidth", self._bandwidth),
            "gc-apply": ("update garbage collection", self._gc_settings),
            "gc-run": ("garbage collect", self._gc_run),
            "client-add": ("add authorized client", self._client_add),
            "client-remove": ("remove authorized client", self._client_remove),
            "clients-apply": ("authorized clients only", self._clients_only),
        }
        found = handlers.get(event.button.id or "")
        if found is not None:
            self._run(*found)

    @work(group="admin-op", exit_on_error=False, description="administration")
    async def _run(self, what: str, operation: Callable[[], Awaitable[str]]) -> None:
        try:
            done = await operation()
            await self._reload_all()
        except JettuiError as exc:
            self._fail(exc, what)
            return
        self._status(done)

    def _value(self, selector: str) -> str:
        return self.query_one(selector, Input).value.strip()

    async def _token_create(self) -> str:
        description = self._value("#token-description") or None
        seconds = _number(self._value("#token-seconds"), "time limit")
        token = await self._call(
            lambda api: api.server.createAPIToken(timeLimitSeconds=seconds, description=description)
        )
        self.created_token = str(token.get("token"))
        return f"token created (shown once, copy it now): {self.created_token}"

    def _row(self, table_id: str) -> int | None:
        table = self.query_one(table_id, DataTable)
        return table.cursor_row if table.row_count else None

    async def _token_delete(self) -> str:
        row = self._row("#tokens")
        if row is None or row >= len(self.tokens):
            raise JettuiError("select a token in the table first")
        token = self.tokens[row]
        token_id = str(token.get("tokenId", token.get("token")))
        await self._call(lambda api: api.server.deleteAPIToken(token_id))
        return f"token {token_id} deleted"

    async def _sandbox_set(self) -> str:
        user = self._value("#sandbox-user")
        raw = self._value("#sandbox-roots")
        roots: Any
        if raw.startswith("{"):
            try:
                roots = json.loads(raw)
            except ValueError as exc:
                raise JettuiError(f"sandbox roots are not valid JSON: {exc}") from None
        elif raw.lower() == "false":
            roots = False
        elif raw:
            roots = {"": raw}
        else:
            raise JettuiError("give a directory, a JSON mapping {name: directory}, or false")
        await self._call(lambda api: api.server.setSandboxMapping(user, roots))
        return f"sandbox of {user or 'the system'} set"

    async def _sandbox_delete(self) -> str:
        user = self._value("#sandbox-user")
        await self._call(lambda api: api.server.deleteSandboxMapping(user))
        return f"sandbox of {user or 'the system'} deleted"

    async def _wrangler_add(self) -> str:
        name = self._value("#wrangler-name")
        is_group = self.query_one("#wrangler-group", Checkbox).value
        await self.backend.request(self.site_key, "addWranglerAsync", name, is_group)
        return f"wrangler {name} added"

    async def _wrangler_delete(self) -> str:
        table = self.query_one("#wranglers", DataTable)
        if not table.row_count:
            raise JettuiError("select a wrangler in the table first")
        kind, ident, _ = (
            cell.plain if isinstance(cell, Text) else str(cell) for cell in table.get_row_at(table.cursor_row)
        )
        await self._call(lambda api: api.server.deleteWrangler(int(ident), kind == "group"))
        return f"wrangler {ident} deleted"

    async def _bandwidth(self) -> str:
        incoming = _number(self._value("#bw-in-rate"), "incoming rate")
        outgoing = _number(self._value("#bw-out-rate"), "outgoing rate")
        in_active = self.query_one("#bw-in-active", Checkbox).value
        out_active = self.query_one("#bw-out-active", Checkbox).value
        await self._call(
            lambda api: api.server.updateBandwidthLimits(
                incomingLimitActive=in_active,
                incomingRateLimit=incoming,
                outgoingLimitActive=out_active,
                outgoingRateLimit=outgoing,
            )
        )
        return "bandwidth limits updated"

    async def _gc_settings(self) -> str:
        interval = _number(self._value("#gc-interval"), "interval")
        limit = _number(self._value("#gc-limit"), "time limit")
        await self._call(
            lambda api: api.server.updateGarbageCollectSettings(
                intervalSeconds=None if interval is None else int(interval),
                timeLimitSeconds=None if limit is None else int(limit),
            )
        )
        return "garbage collection settings updated"

    async def _gc_run(self) -> str:
        force = self.query_one("#gc-force", Checkbox).value
        await self._call(lambda api: api.server.garbageCollect(force))
        return "garbage collection done"

    async def _client_request(self, method: str, *args: Any) -> None:
        async def run(api: AsyncAPIInterface) -> Any:
            req = await getattr(api.recv, method)(*args)
            return await api.server.getRequestResult(req)

        await self._call(run)

    async def _client_add(self) -> str:
        await self._client_request("addAuthorizedClientAsync", self._value("#client-key"))
        return "authorized client added"

    async def _client_remove(self) -> str:
        await self._client_request("removeAuthorizedClientAsync", self._value("#client-key"))
        return "authorized client removed"

    async def _clients_only(self) -> str:
        only = self.query_one("#clients-only", Checkbox).value
        await self._client_request("allowOnlyAuthorizedClientsAsync", only)
        return f"only authorized clients: {'yes' if only else 'no'}"
