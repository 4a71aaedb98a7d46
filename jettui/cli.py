"""The ``jettui`` command: the commander (default), ``server``, ``user`` and ``trust``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import getpass
import logging
import os
import signal
import sys
from pathlib import Path

from jettui import __version__
from jettui.constants import CIPHER_NAMES, DEFAULT_API_PORT, DEFAULT_RECV_PORT
from jettui.errors import JettuiError
from jettui.loop import run as run_loop

SUBCOMMANDS = ("server", "user", "trust")
#: The server's cyclic-GC thresholds (generation 0 allocations, then 1 and 2 in passes of
#: the younger one); see _run_server.
GC_THRESHOLDS = (200_000, 20, 100)


def _add_server_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--api-host", default="127.0.0.1", help="address of the TLS API (default 127.0.0.1)")
    p.add_argument("--api-port", type=int, default=DEFAULT_API_PORT, help="TCP port of the API (default 8886)")
    p.add_argument(
        "--api-allow-remote-control",
        action="store_true",
        help="accept API connections from other hosts (needed for a non-loopback --api-host)",
    )
    p.add_argument("--recv-host", default="0.0.0.0", help="address of the UDP data plane (default 0.0.0.0)")
    p.add_argument("--recv-port", type=int, default=DEFAULT_RECV_PORT, help="UDP data port (default 8886)")
    p.add_argument("--persistent-state-dir", type=Path, help="keep keys and state here (else in memory)")
    p.add_argument("--server-name", default="", help="friendly server name (default: host name)")
    p.add_argument(
        "--superuser",
        action="append",
        default=[],
        metavar="USER",
        help="user eligible for superuser (repeatable)",
    )
    p.add_argument("--external-address", help="host[:port] advertised to others")
    p.add_argument("--incoming-rate-limit", type=float, metavar="KBITS", help="incoming limit in kbit/s (locked)")
    p.add_argument("--outgoing-rate-limit", type=float, metavar="KBITS", help="outgoing limit in kbit/s (locked)")
    p.add_argument("--borrow-incoming-rate", action="store_true", default=None, help="lend unused incoming rate")
    p.add_argument("--borrow-outgoing-rate", action="store_true", default=None, help="lend unused outgoing rate")
    p.add_argument(
        "--min-cipher",
        choices=[n.lower() for n in CIPHER_NAMES.values()],
        default="none",
        help="lowest transfer cipher accepted",
    )
    p.add_argument("--trigger-dir", type=Path, help="directory of trigger executables named after events")
    p.add_argument("--sandbox-dir", type=Path, help="system sandbox root: every user sees only this directory")
    limits = p.add_argument_group("limits")
    limits.add_argument("--max-connections", type=int, default=10_000, help="open API connections (default 10000)")
    limits.add_argument(
        "--max-unauthenticated", type=int, default=512, help="connections not yet logged in (default 512)"
    )
    limits.add_argument(
        "--max-unauthenticated-per-address",
        type=int,
        default=64,
        help="connections not yet logged in from one address (default 64)",
    )
    limits.add_argument(
        "--max-requests-per-connection", type=int, default=64, help="requests in flight per connection (default 64)"
    )
    limits.add_argument("--login-grace", type=float, default=30.0, help="seconds to log in (default 30)")
    limits.add_argument(
        "--handshake-timeout", type=float, default=10.0, help="seconds for the TLS handshake (default 10)"
    )
    limits.add_argument(
        "--frame-timeout", type=float, default=60.0, help="seconds a started request frame may take (default 60)"
    )
    limits.add_argument(
        "--max-unauthenticated-frame",
        type=int,
        default=64 * 1024,
        help="largest request frame before login, bytes (default 65536)",
    )
    limits.add_argument(
        "--max-ls-entries", type=int, default=2_000_000, help="entries one directory listing may hold (default 2000000)"
    )
    limits.add_argument("--idle-timeout", type=float, default=300.0, help="idle connection timeout (default 300)")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")


def _server_config(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from jettui.server import BandwidthOptions, ServerConfig

    cipher = {n.lower(): v for v, n in CIPHER_NAMES.items()}[args.min_cipher]
    return ServerConfig(
        api_host=args.api_host,
        api_port=args.api_port,
        api_allow_remote_control=args.api_allow_remote_control,
        recv_host=args.recv_host,
        recv_port=args.recv_port,
        persistent_state_dir=args.persistent_state_dir,
        server_name=args.server_name,
        superusers=list(args.superuser),
        external_address=args.external_address,
        bandwidth=BandwidthOptions(
            args.incoming_rate_limit,
            args.outgoing_rate_limit,
            args.borrow_incoming_rate,
            args.borrow_outgoing_rate,
        ),
        min_cipher=cipher,
        trigger_dir=args.trigger_dir,
        sandbox_dir=args.sandbox_dir,
        max_connections=args.max_connections,
        max_unauthenticated=args.max_unauthenticated,
        max_unauthenticated_per_address=args.max_unauthenticated_per_address,
        max_requests_per_connection=args.max_requests_per_connection,
        login_grace=args.login_grace,
        idle_timeout=args.idle_timeout,
        handshake_timeout=args.handshake_timeout,
        frame_timeout=args.frame_timeout,
        max_unauthenticated_frame=args.max_unauthenticated_frame,
        max_ls_entries=args.max_ls_entries,
    )


async def _run_server(args: argparse.Namespace) -> int:
    from jettui.server import Server

    server = Server(_server_config(args))
    await server.start()
    # A transfer of many small files keeps a few objects per file alive for its whole run
    # (manifest entries, ranges, per-file state): with the default thresholds the cyclic
    # collector rescanned them all again and again, a fifth of both servers' CPU for 40,000
    # files (measured: 20.8 -> 25.7 k files/s).  Everything built at start-up is frozen
    # out of the scans for good.  A 10,000-file transfer still cost the receiver 26-31 ms
    # of collections (two, at 50,000 allocations); at 200,000 most transfers see none, and
    # Server.transfer_ended collects when the last transfer ends, so none runs mid-transfer.
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.request_stop)
    print(
        f"jettui server {server.server_name}: API {args.api_host}:{server.api_port} (TLS), "
        f"data UDP {server.recv_port}, certificate SHA-256 {server.fingerprint}",
        flush=True,
    )
    try:
        await server.serve_forever()
    finally:
        await server.stop()
    return 0


def _password_from_env_or_prompt() -> str:
    env = os.environ.get("JETTUI_PASSWORD")
    if env is not None:
        return env
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Repeat password: "):
        raise JettuiError("the passwords do not match")
    return first


def _user_command(args: argparse.Namespace) -> int:
    from jettui.server.auth import UserStore
    from jettui.server.state import StateStore

    state = StateStore(args.persistent_state_dir)
    try:
        users = UserStore(state)
        if args.action == "add":
            users.add(args.name, _password_from_env_or_prompt(), args.group or "")
            print(f"user {args.name!r} added")
        elif args.action == "passwd":
            users.set_password(args.name, _password_from_env_or_prompt())
            if args.group is not None:
                users.set_group(args.name, args.group)
            print(f"password of {args.name!r} changed")
        elif args.action == "del":
            users.delete(args.name)
            print(f"user {args.name!r} deleted")
        else:
            for user in users.list():
                print(f"{user.uid}\t{user.name}\t{user.group}")
    finally:
        state.close()
    return 0


def _trust_command(args: argparse.Namespace) -> int:
    from jettui.api.trust import TrustStore

    store = TrustStore()
    if args.forget:
        found = store.forget(args.forget)
        print(f"{args.forget}: {'forgotten' if found else 'was not pinned'} ({store.path})")
    else:
        for endpoint, fp in sorted(store._read().items()):
            print(f"{endpoint} {fp}")
    return 0


def _commander(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="jettui",
        description="Twin-pane commander for jettui servers. With no server given, starts an embedded one.",
        epilog="Other commands: jettui server --help | jettui user --help | jettui trust --help",
    )
    p.add_argument("target", nargs="?", help="HOST[:PORT] or jet://USER@HOST:PORT for both panes")
    p.add_argument("--left", help="server of the left pane")
    p.add_argument("--right", help="server of the right pane")
    p.add_argument("--version", action="version", version=f"jettui {__version__}")
    args = p.parse_args(argv)
    from jettui.tui import run_commander

    return run_commander(args.target, left=args.left, right=args.right)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in SUBCOMMANDS:
            command, rest = argv[0], argv[1:]
            if command == "server":
                p = argparse.ArgumentParser(prog="jettui server", description="Run a jettui server in the foreground.")
                _add_server_options(p)
                args = p.parse_args(rest)
                logging.basicConfig(
                    level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
                )
                with contextlib.suppress(KeyboardInterrupt):
                    return run_loop(_run_server(args))
                return 0
            if command == "user":
                p = argparse.ArgumentParser(
                    prog="jettui user",
                    description="Manage users (password from a prompt or $JETTUI_PASSWORD).",
                )
                p.add_argument("action", choices=["add", "passwd", "del", "list"])
                p.add_argument("name", nargs="?", default="")
                p.add_argument("--group", default=None)
                p.add_argument("--persistent-state-dir", type=Path, required=True)
                args = p.parse_args(rest)
                if args.action != "list" and not args.name:
                    p.error("a user name is required")
                return _user_command(args)
            p = argparse.ArgumentParser(prog="jettui trust", description="Known server certificates.")
            p.add_argument("--forget", metavar="HOST:PORT", help="forget the pinned certificate of a server")
            return _trust_command(p.parse_args(rest))
        return _commander(argv)
    except JettuiError as exc:
        print(f"jettui: {exc.title}: {exc}", file=sys.stderr)
        return 1
