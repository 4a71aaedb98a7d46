"""The embedded default: a real server of our own, on a free loopback port.

``jettui`` with no arguments starts one and opens both panes on it.  Its only account is
the current OS user with a random secret known to this process alone, and its certificate
fingerprint is handed to the client directly, so nothing is pinned on disk for it.  It is
not sandboxed: it runs with the user's own rights and shows the user's own files.

The commander runs it in a child process (:class:`EmbeddedProcess`): a server in the UI's
own process shares its GIL, and its stat calls and datagram handling then stall the UI (a
100,000-entry listing took 1.75 s instead of 1.3 s, measured).  The child reads its secret
from its stdin, answers with one JSON line, and stops when that stdin closes, so it never
outlives the commander.  :class:`EmbeddedServer` runs the same server in a thread, for
tests that reach into it.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import logging
import os
import secrets
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from jettui.loop import new_event_loop
from jettui.server.config import ServerConfig
from jettui.server.core import Server


@dataclass(frozen=True)
class EmbeddedInfo:
    host: str
    port: int
    recv_port: int
    fingerprint: str
    user: str
    secret: str


class EmbeddedServer:
    """Start with :meth:`start`, stop with :meth:`stop` (or use as a context manager)."""

    def __init__(self, config: ServerConfig | None = None, user: str | None = None, secret: str | None = None) -> None:
        self.config = config or ServerConfig(api_port=0, recv_port=0, recv_host="127.0.0.1")
        self.config.embedded_user = user or getpass.getuser()
        self.config.embedded_secret = secret or secrets.token_urlsafe(32)
        self.server: Server | None = None
        self.info: EmbeddedInfo | None = None
        self._loop = new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="jettui-embedded", daemon=True)

    def start(self) -> EmbeddedInfo:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        self.info = future.result(timeout=30)
        return self.info

    async def _start(self) -> EmbeddedInfo:
        self.server = Server(self.config)
        await self.server.start()
        assert self.config.embedded_user and self.config.embedded_secret
        return EmbeddedInfo(
            self.config.api_host,
            self.server.api_port,
            self.server.recv_port,
            self.server.fingerprint,
            self.config.embedded_user,
            self.config.embedded_secret,
        )

    def stop(self) -> None:
        if self.server is not None and self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(timeout=30)
            self.server = None
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        if not self._thread.is_alive() and not self._loop.is_closed():
            self._loop.close()

    def __enter__(self) -> EmbeddedInfo:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EmbeddedProcess:
    """The embedded server in a child process; the same start/stop as :class:`EmbeddedServer`."""

    #: ServerConfig fields a caller may set (plain values; paths as strings).
    OPTIONS = frozenset({"server_name", "sandbox_dir", "persistent_state_dir", "min_cipher"})

    def __init__(self, log_path: str | None = None, **options: object) -> None:
        unknown = set(options) - self.OPTIONS
        if unknown:
            raise TypeError(f"EmbeddedProcess: unsupported options {sorted(unknown)}")
        self.log_path = log_path
        self.options = {k: str(v) if isinstance(v, os.PathLike) else v for k, v in options.items()}
        self.info: EmbeddedInfo | None = None
        self._proc: subprocess.Popen[str] | None = None

    def start(self) -> EmbeddedInfo:
        log = open(self.log_path, "w") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "jettui.server.embedded"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                start_new_session=True,  # the terminal's Ctrl+C belongs to the commander
            )
        finally:
            if log is not subprocess.DEVNULL:
                log.close()  # type: ignore[union-attr]
        assert self._proc.stdin is not None and self._proc.stdout is not None
        request = {"user": getpass.getuser(), "secret": secrets.token_urlsafe(32), "options": self.options}
        self._proc.stdin.write(json.dumps(request) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        try:
            self.info = EmbeddedInfo(**json.loads(line))
        except (ValueError, TypeError) as exc:
            self.stop()
            raise RuntimeError(f"the embedded server did not start ({line.strip() or 'no answer'})") from exc
        return self.info

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            if proc.stdin is not None:
                proc.stdin.close()  # the child's signal to stop
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> EmbeddedInfo:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _child() -> int:
    """``python -m jettui.server.embedded``: the child side of :class:`EmbeddedProcess`."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    request = json.loads(sys.stdin.readline())
    options = dict(request.get("options") or {})
    for name in ("sandbox_dir", "persistent_state_dir"):
        if options.get(name) is not None:
            options[name] = Path(options[name])
    config = ServerConfig(api_port=0, recv_port=0, recv_host="127.0.0.1", **options)
    server = EmbeddedServer(config, user=request["user"], secret=request["secret"])
    info = server.start()
    sys.stdout.write(json.dumps(asdict(info)) + "\n")
    sys.stdout.flush()
    try:
        while sys.stdin.readline():  # EOF: the commander stopped us or is gone
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(_child())
