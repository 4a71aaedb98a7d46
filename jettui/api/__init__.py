"""The jettui client API, with the names of the JetStream Python API.

Scripts written for ``jetstream`` run after changing their imports::

    from jettui.api import JetStream
    from jettui.constants import *

    api = JetStream().api("localhost", 8886)
    with api:
        api.server.auth("jsmith", "secret")
        print(api.server.getServerInfo()["serverName"])

The commander and other asyncio code use :func:`connect_async` / :class:`AsyncAPIInterface`,
the same interface with ``await``.
"""

from jettui.api.client import AsyncClient, ClientState
from jettui.api.connect import AsyncAPIInterface, connect_async
from jettui.api.interfaces import AsyncRecvInterface, AsyncSendInterface, AsyncServerInterface
from jettui.api.sync import (
    APIInterface,
    JetStream,
    Jetstream,
    RecvInterface,
    SendInterface,
    ServerInterface,
    connect,
)
from jettui.api.trust import TrustStore
from jettui.errors import CommandError

__all__ = [
    "APIInterface",
    "AsyncAPIInterface",
    "AsyncClient",
    "AsyncRecvInterface",
    "AsyncSendInterface",
    "AsyncServerInterface",
    "ClientState",
    "CommandError",
    "JetStream",
    "Jetstream",
    "RecvInterface",
    "SendInterface",
    "ServerInterface",
    "TrustStore",
    "connect",
    "connect_async",
]
