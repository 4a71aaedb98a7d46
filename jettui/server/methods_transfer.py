"""SendInterface (``send.*``) and RecvInterface (``recv.*``) methods.

Names the public documents leave open, chosen in the same style: ``suspendTransfer``,
``resumeTransfer`` and ``cancelTransfer`` (each takes a transfer id or Transfer Structure
and returns the updated structure).
"""

from __future__ import annotations

from typing import Any

from jettui.constants import (
    OVERWRITE_ALWAYS,
    SYMLINKS_FOLLOW,
    TRANSFER_FLAG_READ_WRITE,
    TRANSFER_STATUS_CANCELLED,
    TRANSFER_STATUS_ERROR,
    Permissions,
)
from jettui.errors import CommandError
from jettui.server.dispatch import Call, method
from jettui.server.methods_admin import HOST_RE
from jettui.server.methods_server import Work, _fs
from jettui.server.sending import object_id

P = Permissions
MAX_ERROR_MESSAGE = 1000


def _hex_key(value: object, what: str) -> str:
    """A server's public key: 64 hex digits (32 raw bytes)."""
    try:
        if not isinstance(value, str) or len(bytes.fromhex(value)) != 32:
            raise ValueError
    except ValueError:
        raise CommandError(f"{what} must be a server's publicKey: 64 hex digits") from None
    return value.lower()


def _later(func: Any, *args: Any) -> Work:
    """The work of an ...Async request that only calls ``func``."""

    async def work() -> Any:
        return func(*args)

    return work


def _transfer_id(value: int | dict[str, Any]) -> int:
    tid = object_id(value, "transferId")
    if isinstance(tid, str):
        if not tid.isdigit():
            raise CommandError(f"transferId must be a number, not {tid!r}")
        tid = int(tid)
    return int(tid)


# -- destinations ---------------------------------------------------------------------------------
@method("send.createDestination", permission=P.TRANSFER)
async def createDestination(
    call: Call,
    destinationAddress: str,
    destinationPort: int = 8886,
    userName: str | None = None,
    password: str | None = None,
    token: str | None = None,
    sendRateMax: int | float | None = None,
    minCipher: int | None = None,
    destinationPublicKey: str | None = None,
) -> dict[str, Any]:
    if token is not None and userName is not None:
        raise CommandError("createDestination: give userName and password, or a token, not both")
    if not HOST_RE.match(destinationAddress):
        raise CommandError(f"destinationAddress {destinationAddress!r} is not a host name or IP address")
    if destinationPublicKey is not None:
        destinationPublicKey = _hex_key(destinationPublicKey, "destinationPublicKey")
    p = call.session.require_auth()
    params = dict(
        destinationAddress=destinationAddress,
        destinationPort=destinationPort,
        userName=userName,
        password=password,
        token=token,
        sendRateMax=sendRateMax,
        minCipher=minCipher,
        destinationPublicKey=destinationPublicKey,
    )
    return await call.server.sending.create_destination(p, call.session.peer, params)


@method("send.getDestination", permission=P.TRANSFER)
async def getDestination(call: Call, destinationId: str | dict[str, Any]) -> dict[str, Any]:
    sending = call.server.sending
    return sending.public_destination(
        sending.get_destination(call.session.require_auth(), object_id(destinationId, "destinationId"))
    )


@method("send.getDestinations", permission=P.TRANSFER)
async def getDestinations(call: Call) -> list[dict[str, Any]]:
    p, sending = call.session.require_auth(), call.server.sending
    return [sending.public_destination(d) for d in sending.visible_destinations(p)]


@method("send.deleteDestination", permission=P.TRANSFER)
async def deleteDestination(call: Call, destinationId: str | dict[str, Any]) -> None:
    call.server.sending.delete_destination(call.session.require_auth(), object_id(destinationId, "destinationId"))


@method("send.getConnection", permission=P.TRANSFER)
async def getConnection(call: Call, connectionId: str | dict[str, Any]) -> dict[str, Any]:
    sending = call.server.sending
    d = sending.get_destination(call.session.require_auth(), object_id(connectionId, "connectionId"))
    return sending.connection(d)


@method("send.getConnections", permission=P.TRANSFER)
async def getConnections(call: Call) -> list[dict[str, Any]]:
    p, sending = call.session.require_auth(), call.server.sending
    return [sending.connection(d) for d in sending.visible_destinations(p)]


# -- manifests -----------------------------------------------------------------------------------------
@method("send.createManifest", permission=P.TRANSFER | P.READ)
async def createManifest(call: Call, mappings: dict[str, Any]) -> dict[str, Any]:
    return call.server.sending.create_manifest(call.session.require_auth(), _fs(call), mappings)


@method("send.getManifest", permission=P.TRANSFER)
async def getManifest(call: Call, manifestId: str | dict[str, Any]) -> dict[str, Any]:
    sending = call.server.sending
    m = sending.get_manifest(call.session.require_auth(), str(object_id(manifestId, "manifestId")))
    return sending.public_manifest(m)


@method("send.getManifests", permission=P.TRANSFER)
async def getManifests(call: Call) -> list[dict[str, Any]]:
    p, sending = call.session.require_auth(), call.server.sending
    return [sending.public_manifest(m) for m in sending.manifests.values() if sending._may_see(p, m)]


@method("send.getManifestFiles", permission=P.TRANSFER)
async def getManifestFiles(call: Call, manifestId: str | dict[str, Any]) -> dict[str, Any]:
    return call.server.sending.manifest_files(call.session.require_auth(), str(object_id(manifestId, "manifestId")))


@method("send.deleteManifest", permission=P.TRANSFER)
async def deleteManifest(call: Call, manifestId: str | dict[str, Any]) -> None:
    call.server.sending.delete_manifest(call.session.require_auth(), str(object_id(manifestId, "manifestId")))


@method("send.waitForManifest", permission=P.TRANSFER)
async def waitForManifest(
    call: Call, manifestId: str | dict[str, Any], timeoutSeconds: int | float | None = None
) -> dict[str, Any]:
    if timeoutSeconds is not None and timeoutSeconds <= 0:
        raise CommandError("timeoutSeconds must be positive")
    p = call.session.require_auth()
    return await call.server.sending.wait_manifest(p, str(object_id(manifestId, "manifestId")), timeoutSeconds)


# -- transfers -------------------------------------------------------------------------------------------
@method("send.createTransfer", permission=P.TRANSFER)
async def createTransfer(
    call: Call,
    destinationId: str | dict[str, Any],
    manifestId: str | dict[str, Any],
    destinationPath: str | None = None,
    overwrite: int = OVERWRITE_ALWAYS,
    transferFlags: int = TRANSFER_FLAG_READ_WRITE,
    symlinks: int = SYMLINKS_FOLLOW,
    priority: int = 100,
    checkpointFrequencySeconds: int | float | None = 5,
    minCipher: int | None = None,
) -> dict[str, Any]:
    if destinationPath is not None and ("\x00" in destinationPath or len(destinationPath.encode()) > 4096):
        raise CommandError("destinationPath must be a path of at most 4096 bytes without NUL")
    params = dict(
        destinationId=object_id(destinationId, "destinationId"),
        manifestId=str(object_id(manifestId, "manifestId")),
        destinationPath=destinationPath,
        overwrite=overwrite,
        transferFlags=transferFlags,
        symlinks=symlinks,
        priority=priority,
        checkpointFrequencySeconds=checkpointFrequencySeconds,
        minCipher=minCipher,
    )
    return call.server.sending.create_transfer(call.session.require_auth(), params)


@method("send.getTransfer", permission=P.TRANSFER)
async def getTransfer(call: Call, transferId: int | dict[str, Any]) -> dict[str, Any]:
    return call.server.sending.get_transfer(call.session.require_auth(), _transfer_id(transferId))


@method("send.getTransfers", permission=P.TRANSFER)
async def getTransfers(call: Call) -> list[dict[str, Any]]:
    return call.server.sending.list_transfers(call.session.require_auth())


@method("send.deleteTransfer", permission=P.TRANSFER)
async def deleteTransfer(call: Call, transferId: int | dict[str, Any]) -> None:
    call.server.sending.delete_transfer(call.session.require_auth(), _transfer_id(transferId))


@method("send.failTransfer", permission=P.TRANSFER)
async def failTransfer(call: Call, transferId: int | dict[str, Any], errorMessage: str | None = None) -> None:
    message = (errorMessage or "failed by the API")[:MAX_ERROR_MESSAGE]
    call.server.sending.stop_transfer(call.session.require_auth(), _transfer_id(transferId), TRANSFER_STATUS_ERROR,
                                      message)  # fmt: skip


@method("send.suspendTransfer", permission=P.TRANSFER)
async def suspendTransfer(call: Call, transferId: int | dict[str, Any]) -> dict[str, Any]:
    return call.server.sending.suspend(call.session.require_auth(), _transfer_id(transferId))


@method("send.resumeTransfer", permission=P.TRANSFER)
async def resumeTransfer(call: Call, transferId: int | dict[str, Any]) -> dict[str, Any]:
    return call.server.sending.resume(call.session.require_auth(), _transfer_id(transferId))


@method("send.cancelTransfer", permission=P.TRANSFER)
async def cancelTransfer(call: Call, transferId: int | dict[str, Any]) -> dict[str, Any]:
    p = call.session.require_auth()
    return call.server.sending.stop_transfer(p, _transfer_id(transferId), TRANSFER_STATUS_CANCELLED, "cancelled")


def _user_data_owner(call: Call, object_id: str | int | dict[str, Any]) -> Any:
    """The destination, manifest or transfer named by an id or structure, and its saver."""
    if isinstance(object_id, dict):
        object_id = object_id.get("transferId") or object_id.get("manifestId") or object_id.get("destinationId") or ""
    return call.server.sending.object_record(call.session.require_auth(), object_id)


# -- user data ---------------------------------------------------------------------------------------------
@method("send.updateObjectUserData", permission=P.TRANSFER)
async def updateObjectUserData(call: Call, objectId: str | int | dict[str, Any], userData: dict[str, Any]) -> None:
    record, save = _user_data_owner(call, objectId)
    if len(repr(userData)) > 64 * 1024:
        raise CommandError("userData is larger than 64 KiB")
    record.setdefault("userData", {}).update(userData)
    save()


@method("send.deleteObjectUserData", permission=P.TRANSFER)
async def deleteObjectUserData(call: Call, objectId: str | int | dict[str, Any], key: str) -> None:
    record, save = _user_data_owner(call, objectId)
    if key not in record.get("userData", {}):
        raise CommandError(f"userData has no key {key!r}")
    del record["userData"][key]
    save()


# -- RecvInterface --------------------------------------------------------------------------------------------
def _client_key(value: str | dict[str, Any]) -> str:
    return _hex_key(value.get("clientPublicKey") if isinstance(value, dict) else value, "clientPublicKey")


@method("recv.addAuthorizedClientAsync", superuser=True)
async def addAuthorizedClientAsync(call: Call, clientPublicKey: str | dict[str, Any]) -> Work:
    return _later(call.server.receiving.add_authorized, _client_key(clientPublicKey))


@method("recv.removeAuthorizedClientAsync", superuser=True)
async def removeAuthorizedClientAsync(call: Call, clientPublicKey: str | dict[str, Any]) -> Work:
    return _later(call.server.receiving.remove_authorized, _client_key(clientPublicKey))


@method("recv.allowOnlyAuthorizedClientsAsync", superuser=True)
async def allowOnlyAuthorizedClientsAsync(call: Call, onlyAuthorizedClientsAllowed: bool | dict[str, Any]) -> Work:
    value = onlyAuthorizedClientsAllowed
    if isinstance(value, dict):
        value = value.get("onlyAuthorizedClientsAllowed")  # type: ignore[assignment]
    if not isinstance(value, bool):
        raise CommandError("onlyAuthorizedClientsAllowed must be True or False")
    return _later(call.server.receiving.set_only_authorized, value)


@method("recv.getSourcesAsync")
async def getSourcesAsync(call: Call) -> Work:
    return _later(lambda: {"sources": call.server.receiving.sources()})


@method("recv.getTransfersAsync")
async def getTransfersAsync(call: Call) -> Work:
    p = call.session.require_auth()

    async def work() -> dict[str, Any]:
        transfers = call.server.receiving.transfers()
        if not p.superuser and not p.wrangler:
            transfers = [t for t in transfers if t.get("userName") == p.user_name]
        return {"transfers": transfers}

    return work
