"""The server's persistent state: one SQLite database (stdlib sqlite3).

With a persistent state directory the database is ``<dir>/state.sqlite3``; without one it
lives in memory and is gone on exit, as the seed documents describe.

Schema changes are migrations, numbered from 1 and applied in order inside one
transaction each; ``PRAGMA user_version`` records how far a database has come.  Never edit
a migration that has shipped: add the next one.

All access goes through one connection guarded by a lock, so handlers may call it from
worker threads (``asyncio.to_thread``) as well as from the event loop.  Statements here are
short; nothing long-running holds the lock.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MIGRATIONS: list[str] = [
    # 1: users and key/value settings
    """
    CREATE TABLE users (
        uid INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        grp TEXT NOT NULL DEFAULT '',
        password_hash TEXT NOT NULL,
        created_us INTEGER NOT NULL
    );
    CREATE TABLE groups (
        gid INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE
    );
    CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 2: administration: API tokens, sandbox mappings, wranglers, event log, authorized clients
    """
    CREATE TABLE api_tokens (
        token_id TEXT PRIMARY KEY,
        secret_hash BLOB NOT NULL,
        owner TEXT NOT NULL,
        path TEXT,
        password_hash TEXT,
        permissions INTEGER NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        creation_us INTEGER NOT NULL,
        expiry_us INTEGER,
        user_data TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE sandbox_mappings (
        user_name TEXT PRIMARY KEY,
        roots TEXT NOT NULL
    );
    CREATE TABLE wranglers (
        kind TEXT NOT NULL CHECK (kind IN ('user', 'group')),
        ident INTEGER NOT NULL,
        name TEXT NOT NULL,
        PRIMARY KEY (kind, ident)
    );
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        ts_us INTEGER NOT NULL,
        name TEXT NOT NULL,
        owner TEXT,
        data TEXT NOT NULL
    );
    CREATE INDEX events_by_time ON events(ts_us);
    CREATE TABLE authorized_clients (
        public_key TEXT PRIMARY KEY
    );
    """,
    # 3: the data plane: destinations, manifests, transfers (with resume checkpoints), receptions
    """
    CREATE TABLE destinations (
        destination_id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        data TEXT NOT NULL
    );
    CREATE TABLE manifests (
        manifest_id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        created_us INTEGER NOT NULL,
        data TEXT NOT NULL,
        entries BLOB
    );
    CREATE TABLE transfers (
        transfer_id INTEGER PRIMARY KEY AUTOINCREMENT,
        owner TEXT NOT NULL,
        data TEXT NOT NULL,
        checkpoint BLOB
    );
    CREATE TABLE receptions (
        reception_key TEXT PRIMARY KEY,
        updated_us INTEGER NOT NULL,
        data TEXT NOT NULL
    );
    """,
    # 4: destinations belong to their owner (and token session): two users may each name the
    # same address:port
    """
    CREATE TABLE destinations_by_owner (
        owner TEXT NOT NULL,
        token_session TEXT NOT NULL DEFAULT '',
        destination_id TEXT NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (owner, token_session, destination_id)
    );
    INSERT INTO destinations_by_owner(owner, destination_id, data)
        SELECT owner, destination_id, data FROM destinations;
    DROP TABLE destinations;
    ALTER TABLE destinations_by_owner RENAME TO destinations;
    """,
]


class StateStore:
    """SQLite-backed server state, in a directory or in memory."""

    def __init__(self, state_dir: str | os.PathLike[str] | None) -> None:
        self.state_dir = Path(state_dir) if state_dir is not None else None
        if self.state_dir is not None:
            self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            target = str(self.state_dir / "state.sqlite3")
        else:
            target = ":memory:"
        self._lock = threading.RLock()
        self._db = sqlite3.connect(target, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        if self.state_dir is not None:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._migrate()

    @property
    def persistent(self) -> bool:
        return self.state_dir is not None

    def _migrate(self) -> None:
        with self._lock:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    for statement in script.split(";"):
                        if statement.strip():
                            self._db.execute(statement)
                    self._db.execute(f"PRAGMA user_version = {number}")
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise

    @property
    def schema_version(self) -> int:
        with self._lock:
            return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- generic helpers ---------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def execute(self, sql: str, args: tuple[Any, ...] = ()) -> int:
        """Run one statement; returns lastrowid (inserts) or rowcount (others)."""
        with self._lock:
            cur = self._db.execute(sql, args)
            return cur.lastrowid if sql.lstrip().upper().startswith("INSERT") else cur.rowcount

    # -- settings ---------------------------------------------------------------------------
    def get_setting(self, key: str, default: Any = None) -> Any:
        rows = self.query("SELECT value FROM settings WHERE key = ?", (key,))
        return json.loads(rows[0]["value"]) if rows else default

    def set_setting(self, key: str, value: Any) -> None:
        self.execute(
            "INSERT INTO settings(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, json.dumps(value)),
        )
