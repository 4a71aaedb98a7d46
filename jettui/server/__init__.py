"""The jettui server daemon."""

from jettui.server import methods_admin, methods_server, methods_transfer  # noqa: F401  (register the API methods)
from jettui.server.config import BandwidthOptions, ServerConfig
from jettui.server.core import Server

__all__ = ["BandwidthOptions", "Server", "ServerConfig"]
