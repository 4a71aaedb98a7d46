"""The event log, live event notifications, and triggers.

Every event is a row (``_event``, ``_timestamp`` in µs, the ids it concerns) owned by the
user it concerns, if any.  Non-superusers read only their own.  Sessions subscribed to
``events`` get each new event they may read as an ``events.event`` notification.  A trigger
is an executable in ``--trigger-dir`` named after the event (``launch``,
``send.destinationCreated``, ...): it runs with the event's arguments, bounded in time,
never on the event loop's critical path, and its failure is itself logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from jettui.errors import CommandError
from jettui.server.state import StateStore

log = logging.getLogger("jettui.server.events")

#: Rows kept at most; the oldest go first at garbage collection.
MAX_EVENTS = 200_000
TRIGGER_TIMEOUT = 60.0

Listener = Callable[[dict[str, Any], str | None], None]


class EventLog:
    def __init__(self, state: StateStore, clock_us: Callable[[], int], trigger_dir: Path | None = None) -> None:
        self.state = state
        self.clock_us = clock_us
        self.trigger_dir = trigger_dir
        self._listeners: list[Listener] = []
        self._trigger_tasks: set[asyncio.Task[None]] = set()

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def emit(
        self,
        name: str,
        /,
        owner: str | None = None,
        trigger: str | None = None,
        trigger_args: Iterable[str] | None = None,
        **data: Any,
    ) -> dict[str, Any]:
        """Record an event; run the trigger named ``trigger`` (default: the event's name)
        with ``trigger_args`` (default: the event's values)."""
        ts = self.clock_us()
        event = {"_event": name, "_timestamp": ts, **data}
        self.state.execute(
            "INSERT INTO events(ts_us, name, owner, data) VALUES(?, ?, ?, ?)",
            (ts, name, owner, json.dumps(data, default=str)),
        )
        for listener in list(self._listeners):
            try:
                listener(event, owner)
            except Exception:
                log.exception("event listener failed")
        if name != "triggerFailed":  # a failing trigger must not trigger itself
            args = [str(v) for v in data.values()] if trigger_args is None else list(trigger_args)
            self.run_trigger(trigger or name, args)
        return event

    def query(
        self,
        owner: str | None,
        event_name: str | None = None,
        before: int | None = None,
        after: int | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Oldest first; ``owner=None`` reads everyone's events (superusers)."""
        if limit is not None and limit < 0:
            raise CommandError("limit must not be negative")
        where, args = [], []
        for clause, value in (
            ("owner = ?", owner),
            ("name = ?", event_name),
            ("ts_us < ?", before),
            ("ts_us > ?", after),
        ):
            if value is not None:
                where.append(clause)
                args.append(value)
        sql = "SELECT ts_us, name, data FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        if limit is not None:
            # The newest `limit` events, still returned oldest first.
            sql = f"SELECT * FROM ({sql} ORDER BY seq DESC LIMIT {int(limit)}) ORDER BY ts_us"
        else:
            sql += " ORDER BY seq"
        return [
            {"_event": r["name"], "_timestamp": r["ts_us"], **json.loads(r["data"])}
            for r in self.state.query(sql, tuple(args))
        ]

    def trim(self, keep: int = MAX_EVENTS) -> int:
        return self.state.execute("DELETE FROM events WHERE seq <= (SELECT MAX(seq) FROM events) - ?", (keep,))

    # -- triggers ------------------------------------------------------------------------------
    def run_trigger(self, name: str, args: list[str]) -> None:
        if self.trigger_dir is None:
            return
        path = self.trigger_dir / name
        if "/" in name or not path.is_file() or not os.access(path, os.X_OK):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(self._run_trigger(path, args), name=f"trigger-{name}")
        self._trigger_tasks.add(task)
        task.add_done_callback(self._trigger_tasks.discard)

    async def _run_trigger(self, path: Path, args: list[str]) -> None:
        try:
            proc = await asyncio.create_subprocess_exec(
                str(path),
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            self.emit("triggerFailed", triggerName=path.name, errorMessage=str(exc))
            return
        try:
            async with asyncio.timeout(TRIGGER_TIMEOUT):
                _, stderr = await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            self.emit("triggerFailed", triggerName=path.name, errorMessage=f"timed out after {TRIGGER_TIMEOUT} s")
            return
        if proc.returncode != 0:
            self.emit(
                "triggerFailed",
                triggerName=path.name,
                errorMessage=f"exit status {proc.returncode}: {stderr.decode(errors='replace')[-500:]}",
            )

    async def wait_triggers(self) -> None:
        if self._trigger_tasks:
            await asyncio.gather(*self._trigger_tasks, return_exceptions=True)
