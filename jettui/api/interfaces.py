"""The seed-named API surface, in its asyncio flavour.

Every method here is declared once with the seed's name, parameters and defaults; the
:func:`remote` decorator turns the declaration into a call: arguments are checked against
the declared types (raising CommandError before anything is sent), positional arguments
become the keyword map of the wire request, and the server's answer or error comes back.
Only the arguments the caller gave are sent, so the server's defaults apply to the rest.

The synchronous classes in :mod:`jettui.api.sync` are generated from these; there is no
second implementation.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

from jettui.api.client import DEFAULT
from jettui.constants import OVERWRITE_ALWAYS, SYMLINKS_FOLLOW, TRANSFER_FLAG_READ_WRITE
from jettui.validate import positional_to_keywords

F = TypeVar("F", bound=Callable[..., Coroutine[Any, Any, Any]])
Timeout = Callable[["_Interface", dict[str, Any]], float | None]


def remote(wire_name: str, timeout: Timeout | None = None) -> Callable[[F], F]:
    """Make a declared method call ``wire_name`` on the server."""

    def decorate(func: F) -> F:
        @functools.wraps(func)
        async def call(self: _Interface, *args: Any, **kwargs: Any) -> Any:
            params = positional_to_keywords(func, func.__name__, args, kwargs)
            limit = DEFAULT if timeout is None else timeout(self, params)
            return await self._api.client.call(wire_name, params, limit)

        call.wire_name = wire_name  # type: ignore[attr-defined]
        return call  # type: ignore[return-value]

    return decorate


def _no_timeout(iface: _Interface, params: dict[str, Any]) -> float | None:
    return None


def _sleep_timeout(iface: _Interface, params: dict[str, Any]) -> float | None:
    base = iface._api.timeout
    return None if base is None else base + float(params.get("milliseconds", 0)) / 1000


class Connection(Protocol):
    """What an interface needs of its API object: the asyncio one or the synchronous one."""

    timeout: float | None

    @property
    def client(self) -> Any: ...


class _Interface:
    def __init__(self, api: Connection) -> None:
        self._api = api


class AsyncServerInterface(_Interface):
    """ServerInterface: authentication, files, requests and administration."""

    # -- authentication --------------------------------------------------------------
    async def auth(self, userName: str, password: str) -> None:
        """Authenticate a user (authAsync, then wait for its result)."""
        request = await self.authAsync(userName=userName, password=password)
        await self.getRequestResult(request)

    async def authToken(self, token: str, password: str | None = None, tokenSession: str | None = None) -> None:
        """Authenticate with an API token (authAsync, then wait for its result)."""
        request = await self.authAsync(token=token, password=password, tokenSession=tokenSession)
        await self.getRequestResult(request)

    @remote("server.authAsync")
    async def authAsync(
        self,
        userName: str | None = None,
        password: str | None = None,
        token: str | None = None,
        tokenSession: str | None = None,
    ) -> dict[str, Any]: ...

    @remote("server.superuser")
    async def superuser(self) -> None: ...

    @remote("server.wrangler")
    async def wrangler(self) -> None: ...

    # -- requests ----------------------------------------------------------------------
    @remote("server.getRequestStatus")
    async def getRequestStatus(self, requestId: int | dict[str, Any]) -> dict[str, Any]: ...

    @remote("server.getRequestResult", timeout=_no_timeout)
    async def getRequestResult(self, requestId: int | dict[str, Any]) -> Any: ...

    @remote("server.getRequestPage", timeout=_no_timeout)
    async def getRequestPage(
        self, requestId: int | dict[str, Any], offset: int = 0, maxEntries: int = 10_000, waitForEnd: bool = False
    ) -> dict[str, Any]:
        """Jettui extension: entries ``offset`` on of a progressive request (lsAsync with
        ``pageSize``), waiting server-side until some are there or the request ended
        (``waitForEnd``: until it ended).

        Returns ``{"requestId", "offset", "files", "expected", "done"}``; read on from
        ``offset + len(files)`` until ``done``.  A failed request raises its error."""
        ...

    # -- information -------------------------------------------------------------------
    @remote("server.echo")
    async def echo(self, text: str | None = None) -> str | None: ...

    @remote("server.sleep", timeout=_sleep_timeout)
    async def sleep(self, milliseconds: int | float) -> None: ...

    @remote("server.getServerInfo")
    async def getServerInfo(self) -> dict[str, Any]: ...

    @remote("server.getThirdPartyLicenses")
    async def getThirdPartyLicenses(self) -> dict[str, str]: ...

    @remote("server.terminate")
    async def terminate(self) -> None: ...

    # -- files ---------------------------------------------------------------------------
    @remote("server.lsAsync")
    async def lsAsync(
        self,
        path: str,
        directory: bool | None = None,
        calculateHashType: str | None = None,
        pageSize: int | None = None,
    ) -> dict[str, Any]:
        """``pageSize`` (jettui extension, jettui servers only): list directories first, then
        by case-folded name, and publish the first this many entries (then the rest in larger
        pages) while the rest are still being read, for :meth:`getRequestPage`.  getRequestResult still gives the
        whole listing."""
        ...

    @remote("server.lsListAsync")
    async def lsListAsync(
        self, pathList: list[str], statOnly: bool | None = None, calculateHashType: str | None = None
    ) -> dict[str, Any]: ...

    @remote("server.lsRootsAsync")
    async def lsRootsAsync(self) -> dict[str, Any]: ...

    @remote("server.mkdirAsync")
    async def mkdirAsync(self, path: str) -> dict[str, Any]: ...

    @remote("server.mkFileAsync")
    async def mkFileAsync(
        self, path: str, size: int, fillRandom: bool = False, modifyExisting: bool = False
    ) -> dict[str, Any]: ...

    @remote("server.mvAsync")
    async def mvAsync(self, path: str, newPath: str) -> dict[str, Any]: ...

    @remote("server.rmAsync")
    async def rmAsync(self, path: str) -> dict[str, Any]: ...

    @remote("server.duAsync")
    async def duAsync(self, path: str) -> dict[str, Any]: ...

    # -- API tokens --------------------------------------------------------------------------
    @remote("server.createAPIToken")
    async def createAPIToken(
        self,
        path: str | None = None,
        password: str | None = None,
        timeLimitSeconds: int | float | None = None,
        description: str | None = None,
        permissions: int | None = None,
    ) -> dict[str, Any]: ...

    @remote("server.getAPIToken")
    async def getAPIToken(self, token: str | dict[str, Any]) -> dict[str, Any]: ...

    @remote("server.getAPITokens")
    async def getAPITokens(self, limit: int | None = None) -> list[dict[str, Any]]: ...

    @remote("server.updateAPIToken")
    async def updateAPIToken(
        self,
        token: str | dict[str, Any],
        timeLimitSeconds: int | float | None = None,
        description: str | None = None,
    ) -> None: ...

    @remote("server.deleteAPIToken")
    async def deleteAPIToken(self, token: str | dict[str, Any]) -> None: ...

    # -- sandboxes and wranglers -------------------------------------------------------------
    @remote("server.setSandboxMapping")
    async def setSandboxMapping(self, userName: str, sandboxRoots: dict[str, Any] | bool) -> None: ...

    @remote("server.getSandboxMappings")
    async def getSandboxMappings(self) -> dict[str, Any]: ...

    @remote("server.deleteSandboxMapping")
    async def deleteSandboxMapping(self, userName: str) -> None: ...

    @remote("server.addWranglerAsync")
    async def addWranglerAsync(self, name: str, isGroup: bool | None = None) -> dict[str, Any]: ...

    @remote("server.deleteWrangler")
    async def deleteWrangler(self, identifier: str | int, isGroup: bool | None = None) -> None: ...

    @remote("server.getWranglers")
    async def getWranglers(self) -> dict[str, Any]: ...

    # -- event log, garbage collection, bandwidth, license, address ---------------------------
    @remote("server.getEventLog")
    async def getEventLog(
        self,
        eventName: str | None = None,
        before: int | None = None,
        after: int | None = None,
        limit: int | None = None,
    ) -> dict[str, Any]: ...

    @remote("server.garbageCollect")
    async def garbageCollect(self, force: bool = False) -> None: ...

    @remote("server.updateGarbageCollectSettings")
    async def updateGarbageCollectSettings(
        self, intervalSeconds: int | None = None, timeLimitSeconds: int | None = None
    ) -> dict[str, Any]: ...

    @remote("server.getGarbageCollectSettings")
    async def getGarbageCollectSettings(self) -> dict[str, Any]: ...

    @remote("server.updateBandwidthLimits")
    async def updateBandwidthLimits(
        self,
        incomingLimitActive: bool | None = None,
        incomingRateLimit: int | float | None = None,
        incomingMaxConnections: int | None = None,
        borrowOutgoing: bool | None = None,
        outgoingLimitActive: bool | None = None,
        outgoingRateLimit: int | float | None = None,
        borrowIncoming: bool | None = None,
    ) -> None: ...

    @remote("server.setLicenseKeyAsync")
    async def setLicenseKeyAsync(self, key: str, validate: bool | None = None) -> dict[str, Any]: ...

    @remote("server.setExternalAddress")
    async def setExternalAddress(self, address: str) -> None: ...

    @remote("server.recvDiscoverPacketAsync")
    async def recvDiscoverPacketAsync(self, timeoutSeconds: int | float | None = None) -> dict[str, Any]: ...

    @remote("server.sendDiscoverPacketAsync")
    async def sendDiscoverPacketAsync(
        self, discoverId: str, destinationAddress: str, destinationPort: int | None = None
    ) -> dict[str, Any]: ...

    # -- notifications (jettui extension: the commander tails events and progress) -------------
    @remote("server.subscribe")
    async def subscribe(self, topics: list[str]) -> list[str]: ...

    @remote("server.unsubscribe")
    async def unsubscribe(self, topics: list[str]) -> list[str]: ...


class AsyncSendInterface(_Interface):
    """SendInterface: destinations, manifests and transfers on the sending server."""

    @remote("send.createDestination")
    async def createDestination(
        self,
        destinationAddress: str,
        destinationPort: int = 8886,
        userName: str | None = None,
        password: str | None = None,
        token: str | None = None,
        sendRateMax: int | float | None = None,
        minCipher: int | None = None,
        destinationPublicKey: str | None = None,
    ) -> dict[str, Any]: ...

    @remote("send.getDestination")
    async def getDestination(self, destinationId: str | dict[str, Any]) -> dict[str, Any]: ...

    @remote("send.getDestinations")
    async def getDestinations(self) -> list[dict[str, Any]]: ...

    @remote("send.deleteDestination")
    async def deleteDestination(self, destinationId: str | dict[str, Any]) -> None: ...

    @remote("send.createManifest")
    async def createManifest(self, mappings: dict[str, Any]) -> dict[str, Any]: ...

    @remote("send.getManifest")
    async def getManifest(self, manifestId: str | dict[str, Any]) -> dict[str, Any]: ...

    @remote("send.getManifests")
    async def getManifests(self) -> list[dict[str, Any]]: ...

    @remote("send.getManifestFiles")
    async def getManifestFiles(self, manifestId: str | dict[str, Any]) -> dict[str, Any]: ...

    @remote("send.deleteManifest")
    async def deleteManifest(self, manifestId: str | dict[str, Any]) -> None: ...

    @remote("send.waitForManifest", timeout=_no_timeout)
    async def waitForManifest(
        self, manifestId: str | dict[str, Any], timeoutSeconds: int | float | None = None
    ) -> dict[str, Any]: ...

    @remote("send.createTransfer")
    async def createTransfer(
        self,
        destinationId: str | dict[str, Any],
        manifestId: str | dict[str, Any],
        destinationPath: str | None = None,
        overwrite: int = OVERWRITE_ALWAYS,
        transferFlags: int = TRANSFER_FLAG_READ_WRITE,
        symlinks: int = SYMLINKS_FOLLOW,
        priority: int = 100,
        checkpointFrequencySeconds: int | float | None = 5,
        minCipher: int | None = None,
    ) -> dict[str, Any]: ...

    @remote("send.getTransfer")
    async def getTransfer(self, transferId: int | dict[str, Any]) -> dict[str, Any]: ...

    @remote("send.getTransfers")
    async def getTransfers(self) -> list[dict[str, Any]]: ...

    @remote("send.deleteTransfer")
    async def deleteTransfer(self, transferId: int | dict[str, Any]) -> None: ...

    @remote("send.failTransfer")
    async def failTransfer(self, transferId: int | dict[str, Any], errorMessage: str | None = None) -> None: ...

    @remote("send.suspendTransfer")
    async def suspendTransfer(self, transferId: int | dict[str, Any]) -> dict[str, Any]: ...

    @remote("send.resumeTransfer")
    async def resumeTransfer(self, transferId: int | dict[str, Any]) -> dict[str, Any]: ...

    @remote("send.cancelTransfer")
    async def cancelTransfer(self, transferId: int | dict[str, Any]) -> dict[str, Any]: ...

    @remote("send.getConnection")
    async def getConnection(self, connectionId: str | dict[str, Any]) -> dict[str, Any]: ...

    @remote("send.getConnections")
    async def getConnections(self) -> list[dict[str, Any]]: ...

    @remote("send.updateObjectUserData")
    async def updateObjectUserData(self, objectId: str | int | dict[str, Any], userData: dict[str, Any]) -> None: ...

    @remote("send.deleteObjectUserData")
    async def deleteObjectUserData(self, objectId: str | int | dict[str, Any], key: str) -> None: ...


class AsyncRecvInterface(_Interface):
    """RecvInterface: what the receiving server knows about its senders."""

    @remote("recv.addAuthorizedClientAsync")
    async def addAuthorizedClientAsync(self, clientPublicKey: str | dict[str, Any]) -> dict[str, Any]: ...

    @remote("recv.removeAuthorizedClientAsync")
    async def removeAuthorizedClientAsync(self, clientPublicKey: str | dict[str, Any]) -> dict[str, Any]: ...

    @remote("recv.allowOnlyAuthorizedClientsAsync")
    async def allowOnlyAuthorizedClientsAsync(
        self, onlyAuthorizedClientsAllowed: bool | dict[str, Any]
    ) -> dict[str, Any]: ...

    @remote("recv.getSourcesAsync")
    async def getSourcesAsync(self) -> dict[str, Any]: ...

    @remote("recv.getTransfersAsync")
    async def getTransfersAsync(self) -> dict[str, Any]: ...
