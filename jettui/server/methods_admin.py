"""ServerInterface administration methods: tokens, sandboxes, wranglers, the event log,
garbage collection, bandwidth, license, external address, discovery and subscriptions."""

from __future__ import annotations

import asyncio
import re
import socket
from typing import Any

from jettui.constants import DEFAULT_RECV_PORT, Permissions
from jettui.errors import CommandError
from jettui.server import discovery
from jettui.server.auth import validate_user_name
from jettui.server.core import now_us
from jettui.server.dispatch import Call, method
from jettui.server.methods_server import Work, _fs
from jettui.server.tokens import APIToken

P = Permissions
#: A host name (RFC 1123 labels) or an IPv4 / IPv6 literal.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOST_RE = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*\.?$|^[0-9A-Fa-f:.]{{2,45}}$")
#: Notification topics a session may subscribe to.
TOPICS = frozenset({"events", "transfers"})


# -- API tokens -------------------------------------------------
def _visible_token(call: Call, token: object) -> APIToken:
    found = call.server.tokens.get(token)
    p = call.session.require_auth()
    if found.owner != p.user_name and not p.wrangler:
        raise CommandError("API token not found")
    return found


@method("server.createAPIToken", permission=P.MANAGE_TOKENS)
async def createAPIToken(
    call: Call,
    path: str | None = None,
    password: str | None = None,
    timeLimitSeconds: int | float | None = None,
    description: str | None = None,
    permissions: int | None = None,
) -> dict[str, Any]:
    p = call.session.require_auth()
    if permissions is not None and p.token is not None and permissions & ~int(p.permissions):
        raise CommandError("a token cannot create a token with permissions it does not have itself")
    if path is not None:
        # The path must exist in the creator's view; confinement is re-checked at each login.
        fs = _fs(call)
        await asyncio.to_thread(lambda: fs.ls(path, True))
    token, secret = call.server.tokens.create(
        p.user_name, now_us(), path, password, timeLimitSeconds, description, permissions
    )
    call.server.events.emit("tokenCreated", owner=p.user_name, token=token.token_id)
    return token.structure(secret)


@method("server.getAPIToken", permission=P.MANAGE_TOKENS)
async def getAPIToken(call: Call, token: str | dict[str, Any]) -> dict[str, Any]:
    return _visible_token(call, token).structure()


@method("server.getAPITokens", permission=P.MANAGE_TOKENS)
async def getAPITokens(call: Call, limit: int | None = None) -> list[dict[str, Any]]:
    p = call.session.require_auth()
    return [t.structure() for t in call.server.tokens.list(None if p.wrangler else p.user_name, limit)]


@method("server.updateAPIToken", permission=P.MANAGE_TOKENS)
async def updateAPIToken(
    call: Call,
    token: str | dict[str, Any],
    timeLimitSeconds: int | float | None = None,
    description: str | None = None,
) -> None:
    found = _visible_token(call, token)
    call.server.tokens.update(found.token_id, now_us(), timeLimitSeconds, description)


@method("server.deleteAPIToken", permission=P.MANAGE_TOKENS)
async def deleteAPIToken(call: Call, token: str | dict[str, Any]) -> None:
    found = _visible_token(call, token)
    call.server.tokens.delete(found.token_id)
    call.server.events.emit("tokenDeleted", owner=found.owner, token=found.token_id)


# -- sandboxes --------------------------------------------------
def _sandbox_user(userName: str) -> str:
    if userName:
        validate_user_name(userName)
    return userName


@method("server.setSandboxMapping", superuser=True)
async def setSandboxMapping(call: Call, userName: str, sandboxRoots: dict[str, Any] | bool) -> None:
    call.server.sandboxes.set(_sandbox_user(userName), sandboxRoots)
    call.server.events.emit("sandboxChanged", userName=userName, sandboxRoots=sandboxRoots)


@method("server.getSandboxMappings", superuser=True)
async def getSandboxMappings(call: Call) -> dict[str, Any]:
    return call.server.sandboxes.get_all()


@method("server.deleteSandboxMapping", superuser=True)
async def deleteSandboxMapping(call: Call, userName: str) -> None:
    call.server.sandboxes.delete(_sandbox_user(userName))
    call.server.events.emit("sandboxChanged", userName=userName, sandboxRoots=None)


# -- wranglers --------------------------------------------------
@method("server.addWranglerAsync", superuser=True)
async def addWranglerAsync(call: Call, name: str, isGroup: bool | None = None) -> Work:
    validate_user_name(name, "group name" if isGroup else "user name")

    async def work() -> None:
        call.server.wranglers.add(name, bool(isGroup))
        call.server.events.emit("wranglerChanged", name=name, isGroup=bool(isGroup), added=True)

    return work


@method("server.deleteWrangler", superuser=True)
async def deleteWrangler(call: Call, identifier: str | int, isGroup: bool | None = None) -> None:
    try:
        ident = int(identifier)
    except ValueError:
        raise CommandError(f"identifier must be a user or group id (a number), not {identifier!r}") from None
    if not isGroup:
        for user in call.server.users.list():
            if user.uid == ident and call.server.superuser_eligible(user.name):
                raise CommandError(f"user id {ident} ({user.name}) is a superuser and cannot be removed")
    call.server.wranglers.delete(ident, bool(isGroup))
    call.server.events.emit("wranglerChanged", identifier=ident, isGroup=bool(isGroup), added=False)


@method("server.getWranglers", superuser=True)
async def getWranglers(call: Call) -> dict[str, Any]:
    return call.server.wranglers.list()


@method("server.wrangler")
async def wrangler(call: Call) -> None:
    p = call.session.require_auth()
    if p.superuser or (p.token is None and call.server.wranglers.is_wrangler(p.uid, p.group)):
        p.wrangler = True
        return
    raise CommandError(f"wrangler: user {p.user_name!r} has not been given wrangler permissions")


# -- event log and subscriptions --------------------------------
@method("server.getEventLog")
async def getEventLog(
    call: Call,
    eventName: str | None = None,
    before: int | None = None,
    after: int | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    p = call.session.require_auth()
    owner = None if p.superuser else p.user_name
    events = await asyncio.to_thread(call.server.events.query, owner, eventName, before, after, limit)
    return {"eventLog": events}


@method("server.subscribe")
async def subscribe(call: Call, topics: list[str]) -> list[str]:
    unknown = sorted(set(topics) - TOPICS)
    if unknown:
        raise CommandError(f"unknown topic {unknown[0]!r}; topics: {', '.join(sorted(TOPICS))}")
    call.session.subscriptions.update(topics)
    return sorted(call.session.subscriptions)


@method("server.unsubscribe")
async def unsubscribe(call: Call, topics: list[str]) -> list[str]:
    call.session.subscriptions.difference_update(topics)
    return sorted(call.session.subscriptions)


# -- garbage collection -----------------------------------------
@method("server.garbageCollect", superuser=True)
async def garbageCollect(call: Call, force: bool = False) -> None:
    call.server.garbage_collect(bool(force))


@method("server.updateGarbageCollectSettings", superuser=True)
async def updateGarbageCollectSettings(
    call: Call, intervalSeconds: int | None = None, timeLimitSeconds: int | None = None
) -> dict[str, int]:
    changes = {
        k: v for k, v in (("intervalSeconds", intervalSeconds), ("timeLimitSeconds", timeLimitSeconds)) if v is not None
    }
    return call.server.update_gc_settings(changes)


@method("server.getGarbageCollectSettings", superuser=True)
async def getGarbageCollectSettings(call: Call) -> dict[str, int]:
    return call.server.gc_settings()


# -- bandwidth, license, address --------------------------------
@method("server.updateBandwidthLimits", superuser=True)
async def updateBandwidthLimits(
    call: Call,
    incomingLimitActive: bool | None = None,
    incomingRateLimit: int | float | None = None,
    incomingMaxConnections: int | None = None,
    borrowOutgoing: bool | None = None,
    outgoingLimitActive: bool | None = None,
    outgoingRateLimit: int | float | None = None,
    borrowIncoming: bool | None = None,
) -> None:
    given = {
        "incomingLimitActive": incomingLimitActive,
        "incomingRateLimit": incomingRateLimit,
        "incomingMaxConnections": incomingMaxConnections,
        "borrowOutgoing": borrowOutgoing,
        "outgoingLimitActive": outgoingLimitActive,
        "outgoingRateLimit": outgoingRateLimit,
        "borrowIncoming": borrowIncoming,
    }
    changes = {k: v for k, v in given.items() if v is not None}
    call.server.update_bandwidth(changes)
    call.server.events.emit("bandwidthChanged", **call.server.bandwidth_limits())


@method("server.setLicenseKeyAsync", superuser=True)
async def setLicenseKeyAsync(call: Call, key: str, validate: bool | None = None) -> Work:
    if not key or len(key) > 4096:
        raise CommandError("key must be a non-empty string of at most 4096 characters")
    if validate:
        raise CommandError(
            "setLicenseKeyAsync: cannot validate the key, no license server is reachable; jettui is an "
            "open build whose license is always valid (call again with validate=False to store the key)"
        )

    async def work() -> None:
        call.server.state.set_setting("licenseKey", key)
        call.server.events.emit("licenseChanged")

    return work


@method("server.setExternalAddress", superuser=True)
async def setExternalAddress(call: Call, address: str) -> None:
    host = address.rsplit(":", 1)[0] if address.count(":") == 1 else address
    if not HOST_RE.match(host):
        raise CommandError(f"address {address!r} is not a host name or IP address (optionally with :port)")
    call.server.state.set_setting("externalAddress", address)


# -- discovery --------------------------------------------------
@method("server.recvDiscoverPacketAsync")
async def recvDiscoverPacketAsync(call: Call, timeoutSeconds: int | float | None = None) -> tuple[Work, dict[str, Any]]:
    wait = discovery.DEFAULT_TIMEOUT if timeoutSeconds is None else float(timeoutSeconds)
    if not 0 < wait <= discovery.MAX_TIMEOUT:
        raise CommandError(f"timeoutSeconds must be in (0, {discovery.MAX_TIMEOUT:.0f}] (got {timeoutSeconds})")
    discover_id, fut = call.server.discovery.new()

    async def work() -> dict[str, Any]:
        try:
            async with asyncio.timeout(wait):
                address, port = await fut
        except TimeoutError:
            raise CommandError(f"no discover packet arrived within {wait:g} s") from None
        finally:
            call.server.discovery.forget(discover_id)
        return {"address": address, "port": port}

    return work, {"discoverId": discover_id}


@method("server.sendDiscoverPacketAsync")
async def sendDiscoverPacketAsync(
    call: Call, discoverId: str, destinationAddress: str, destinationPort: int | None = None
) -> Work:
    port = DEFAULT_RECV_PORT if destinationPort is None else destinationPort
    if not 0 < port < 65536:
        raise CommandError(f"destinationPort must be in 1..65535 (got {port})")
    if not discoverId or len(discoverId) > 128:
        raise CommandError("discoverId must be the id returned by recvDiscoverPacketAsync")
    if not HOST_RE.match(destinationAddress):
        raise CommandError(f"destinationAddress {destinationAddress!r} is not a host name or IP address")
    udp = call.server.udp
    if udp is None:
        raise CommandError("the UDP port is not open")

    async def work() -> dict[str, bool]:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                destinationAddress, port, family=udp.sock.family, type=socket.SOCK_DGRAM
            )
        except OSError as exc:
            raise CommandError(f"cannot resolve {destinationAddress!r}: {exc}") from exc
        addr = infos[0][4][:2]
        for _ in range(discovery.SEND_COUNT):  # packets may be lost: send a few
            udp.sendto(discovery.make_packet(discoverId), addr)
            await asyncio.sleep(discovery.SEND_INTERVAL)
        return {"discoverPacketSent": True}

    return work
