"""ServerInterface methods of the spine: authentication, requests, information and files."""

from __future__ import annotations

import asyncio
import functools
import importlib.metadata
import platform
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from jettui import __version__
from jettui.constants import API_VERSION, HASH_TYPES, Permissions
from jettui.errors import CommandError, construct_error
from jettui.server.core import now_us
from jettui.server.dispatch import Call, method
from jettui.server.fsview import FileSystemView
from jettui.server.requests import PagedWork, Pages

P = Permissions
MAX_SLEEP_MS = 3_600_000
#: Bounds of lsAsync's ``pageSize`` (jettui extension): entries on the first published page.
MIN_PAGE_SIZE = 1
MAX_PAGE_SIZE = 100_000
#: getRequestPage's default and largest ``maxEntries``: about 75 bytes of msgpack per
#: entry, so the default page is under 1 MB and decodes in a few milliseconds.
DEFAULT_PAGE_ENTRIES = 10_000
MAX_PAGE_ENTRIES = 200_000


def _request_id(value: int | dict[str, Any]) -> int:
    if isinstance(value, dict):
        value = value.get("requestId")  # type: ignore[assignment]
    if type(value) is not int:
        raise CommandError("requestId must be an int or a Request Structure with a 'requestId' key")
    return value


def _hash_type(value: str | None) -> str | None:
    if value in (None, ""):
        return None
    if value not in HASH_TYPES:
        raise CommandError(f"calculateHashType must be one of {', '.join(HASH_TYPES)}, not {value!r}")
    return value


def _fs(call: Call) -> FileSystemView:
    if call.session.fs is None:
        call.session.require_auth()
        roots = call.server.sandbox_for(call.session.principal)  # type: ignore[arg-type]
        call.session.fs = FileSystemView(roots, max_entries=call.server.config.max_ls_entries)
    return call.session.fs  # type: ignore[no-any-return]


Work = Callable[[], Awaitable[Any]]


def _fs_work(call: Call, func_name: str, *args: Any) -> Work:
    """The work of a file request: the blocking FileSystemView call, in a worker thread."""
    fs = _fs(call)

    async def work() -> Any:
        return await asyncio.to_thread(getattr(fs, func_name), *args)

    return work


# -- authentication ---------------------------------------------------------------------------
@method("server.authAsync", auth=False)
async def authAsync(
    call: Call,
    userName: str | None = None,
    password: str | None = None,
    token: str | None = None,
    tokenSession: str | None = None,
) -> Work:
    if token is not None and userName is not None:
        raise CommandError("authAsync: userName must be None when token is set")
    if token is None and not userName:
        raise CommandError("authAsync: userName is required (or a token)")

    async def work() -> None:
        if token is not None:
            principal = await call.server.authenticate_token(call.session.peer, token, password, tokenSession)
        else:
            principal = await call.server.authenticate_password(call.session.peer, userName or "", password or "")
        call.session.close_fs()
        call.session.principal = principal
        call.server.on_authenticated(call.session)

    return work


@method("server.superuser")
async def superuser(call: Call) -> None:
    p = call.session.require_auth()
    if p.token is not None or not p.superuser_eligible:
        raise CommandError(
            f"superuser: user {p.user_name!r} is not eligible for superuser privileges "
            "(start the server with --superuser NAME)"
        )
    p.superuser = True
    p.wrangler = True


# -- requests -------------------------------------------------------------------------------------
def _owners(call: Call) -> frozenset[str] | None:
    p = call.session.principal
    return None if p is not None and p.superuser else call.session.owner_keys


@method("server.getRequestStatus", auth=False)
async def getRequestStatus(call: Call, requestId: int | dict[str, Any]) -> dict[str, Any]:
    return call.server.requests.get(_request_id(requestId), _owners(call)).structure()


@method("server.getRequestResult", auth=False)
async def getRequestResult(call: Call, requestId: int | dict[str, Any]) -> Any:
    req = await call.server.requests.wait(_request_id(requestId), _owners(call))
    if req.status == "error":
        raise construct_error(req.error_code, req.error_message)  # keeps the class (e.g. authentication)
    return req.result


# -- simple ---------------------------------------------------------------------------------------
@method("server.echo")
async def echo(call: Call, text: str | None = None) -> str | None:
    return text


@method("server.sleep")
async def sleep(call: Call, milliseconds: int | float) -> None:
    if milliseconds < 0:
        raise CommandError(f"sleep: milliseconds must not be negative (got {milliseconds})")
    if milliseconds > MAX_SLEEP_MS:
        raise CommandError(f"sleep: at most {MAX_SLEEP_MS} milliseconds")
    await asyncio.sleep(milliseconds / 1000)


@method("server.terminate", superuser=True)
async def terminate(call: Call) -> None:
    asyncio.get_running_loop().call_later(0.05, call.server.request_stop)


@functools.cache
def _third_party_licenses() -> dict[str, str]:
    names = ("textual", "rich", "msgpack", "cryptography", "humanize", "platformdirs", "markdown-it-py")
    out: dict[str, str] = {}
    for name in names:
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        texts = []
        for f in dist.files or ():
            base = f.name.upper()
            if base.startswith(("LICENSE", "LICENCE", "COPYING")) and f.suffix in ("", ".txt", ".md", ".rst"):
                try:
                    texts.append(f.read_text())
                except (OSError, UnicodeDecodeError):
                    pass
        meta = dist.metadata
        header = meta.get("License-Expression") or meta.get("License") or ""
        out[f"{dist.metadata['Name']} {dist.version}"] = "\n\n".join(t for t in [header, *texts] if t)
    return out


@method("server.getThirdPartyLicenses")
async def getThirdPartyLicenses(call: Call) -> dict[str, str]:
    return _third_party_licenses()


@method("server.getServerInfo", auth=False)
async def getServerInfo(call: Call) -> dict[str, Any]:
    server, session = call.server, call.session
    cfg = server.config
    p = session.principal
    info: dict[str, Any] = {
        "allowRemoteControl": cfg.api_allow_remote_control,
        "apiControlPort": server.api_port,
        "APITokensAvailable": server.api_tokens_available,
        "apiVersion": API_VERSION,
        "authRequired": True,
        "bandwidthLimits": server.bandwidth_limits(),
        "certificateValidation": server.keys.certificate_days_left(),
        "encryptionAvailable": True,
        "eventLogAvailable": server.event_log_available,
        "hostName": socket.gethostname(),
        "license": server.license_info(),
        "minCipher": server.min_cipher,
        "multiplexAvailable": True,
        "publicKey": server.keys.public_key,
        "receiver": {
            "authRequired": True,
            "encryptionEnabled": True,
            "onlyAuthorizedClientsAllowed": server.only_authorized_clients,
            "receiverIP": cfg.recv_host,
            "receiverPort": server.recv_port,
            "relayIP": None,
            "relayPort": None,
            "socketRecvBufferSize": server.socket_buffer_sizes[0],
            "socketSendBufferSize": server.socket_buffer_sizes[1],
        },
        "revision": 1,
        "serverExternalAddress": server.external_address,
        "serverId": server.server_id,
        "serverName": server.server_name,
        "serverPlatform": {"linux": "linux", "darwin": "macOS", "win32": "windows"}.get(sys.platform, sys.platform),
        "serverTime": now_us(),
        "serverUid": server.server_uid,
        "sharedTokensAvailable": False,
        "user": {
            "authed": p is not None,
            "permissions": int(p.permissions) if p is not None else 0,
            "sandboxed": None if p is None else server.sandbox_for(p) is not None,
            "superuser": bool(p and p.superuser),
            "token": p.token if p else None,
            "tokenSession": p.token_session if p else None,
            "userName": p.user_name if p and p.token is None else None,
        },
        "version": __version__,
        "platformDetail": platform.platform(terse=True),
    }
    if p is not None and p.superuser:
        info["configuration"] = {
            "cloudFileCache": {"highWatermark": 0, "maximumSize": 0},
            "garbageCollect": server.gc_settings(),
            "persistentStateDir": str(cfg.persistent_state_dir) if cfg.persistent_state_dir else None,
            "triggersAvailable": cfg.trigger_dir is not None,
        }
    return info


# -- files ------------------------------------------------------------------------------------------
@method("server.lsRootsAsync", permission=P.BROWSE)
async def lsRootsAsync(call: Call) -> Work:
    return _fs_work(call, "ls_roots")


@method("server.lsAsync", permission=P.BROWSE)
async def lsAsync(
    call: Call,
    path: str,
    directory: bool | None = None,
    calculateHashType: str | None = None,
    pageSize: int | None = None,
) -> Work | PagedWork:
    """``pageSize`` is a jettui extension: see :meth:`FileSystemView.ls_paged` and
    ``getRequestPage``.  Without it the listing is the seed's, in directory order."""
    hash_type = _hash_type(calculateHashType)
    if hash_type is not None:
        call.session.require_permission(call.method + " with calculateHashType", P.READ)
    if pageSize is None:
        return _fs_work(call, "ls", path, bool(directory), hash_type)
    if not MIN_PAGE_SIZE <= pageSize <= MAX_PAGE_SIZE:
        raise CommandError(
            f"lsAsync: pageSize must be from {MIN_PAGE_SIZE} to {MAX_PAGE_SIZE} entries (got {pageSize})"
        )
    fs = _fs(call)
    pages = Pages()
    loop = asyncio.get_running_loop()

    def publish(files: list[dict[str, Any]], expected: int | None, last: bool) -> None:
        loop.call_soon_threadsafe(pages.publish, files, expected, last)

    async def work() -> Any:
        return await asyncio.to_thread(fs.ls_paged, path, bool(directory), hash_type, pageSize, publish)

    return PagedWork(work, pages)


@method("server.getRequestPage", auth=False)
async def getRequestPage(
    call: Call,
    requestId: int | dict[str, Any],
    offset: int = 0,
    maxEntries: int = DEFAULT_PAGE_ENTRIES,
    waitForEnd: bool = False,
) -> dict[str, Any]:
    """A page of a progressive request's result (jettui extension; lsAsync with pageSize).

    Waits until the request has published more than ``offset`` entries or has finished,
    then answers ``{"requestId", "offset", "files", "expected", "done"}``: up to
    ``maxEntries`` entries from ``offset`` on, the number of entries the request expects
    (an upper bound, None until known), and whether ``files`` reaches the end of a
    finished listing.  ``waitForEnd`` waits for the request to end first: a client that
    has shown the first page reads the rest then, so that decoding it does not compete
    with the listing for the CPU (and, with an embedded server, for the GIL: every stat
    then hands it over).  A failed request raises its error, as getRequestResult does."""
    if offset < 0:
        raise CommandError(f"getRequestPage: offset must not be negative (got {offset})")
    if not 1 <= maxEntries <= MAX_PAGE_ENTRIES:
        raise CommandError(f"getRequestPage: maxEntries must be from 1 to {MAX_PAGE_ENTRIES} (got {maxEntries})")
    rid = _request_id(requestId)
    req = call.server.requests.get(rid, _owners(call))
    pages = req.pages
    if pages is None:
        raise CommandError(
            f"getRequestPage: request {rid} ({req.method}) has no pages; only lsAsync with pageSize publishes them"
        )
    if waitForEnd:
        await req.done.wait()
    await pages.wait_beyond(offset)
    if req.status == "error":
        raise construct_error(req.error_code, req.error_message)
    files = pages.items[offset : offset + maxEntries]
    return {
        "requestId": rid,
        "offset": offset,
        "files": files,
        "expected": pages.expected,
        "done": pages.finished and offset + len(files) >= len(pages.items),
    }


@method("server.lsListAsync", permission=P.BROWSE)
async def lsListAsync(
    call: Call, pathList: list[str], statOnly: bool | None = None, calculateHashType: str | None = None
) -> Work:
    hash_type = _hash_type(calculateHashType)
    if hash_type is not None:
        call.session.require_permission(call.method + " with calculateHashType", P.READ)
    return _fs_work(call, "ls_list", list(pathList), bool(statOnly), hash_type)


@method("server.duAsync", permission=P.BROWSE)
async def duAsync(call: Call, path: str) -> Work:
    return _fs_work(call, "du", path)


@method("server.mkdirAsync", permission=P.WRITE)
async def mkdirAsync(call: Call, path: str) -> Work:
    return _fs_work(call, "mkdir", path)


@method("server.mkFileAsync", permission=P.WRITE)
async def mkFileAsync(call: Call, path: str, size: int, fillRandom: bool = False, modifyExisting: bool = False) -> Work:
    if size < 0:
        raise CommandError(f"mkFileAsync: size must not be negative (got {size})")
    return _fs_work(call, "mkfile", path, size, bool(fillRandom), bool(modifyExisting))


@method("server.mvAsync", permission=P.WRITE | P.DELETE)
async def mvAsync(call: Call, path: str, newPath: str) -> Work:
    return _fs_work(call, "mv", path, newPath)


@method("server.rmAsync", permission=P.DELETE)
async def rmAsync(call: Call, path: str) -> Work:
    return _fs_work(call, "rm", path)
