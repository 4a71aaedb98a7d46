"""Users, password hashes and login throttling.

Passwords are stored as scrypt hashes in the self-describing form
``scrypt$<log2 N>$<r>$<p>$<salt b64>$<hash b64>``, so the cost can be raised later without
invalidating stored hashes.  The default cost is OWASP's minimum for scrypt
(N = 2^17, r = 8, p = 1: about 0.7 s and 128 MiB on this project's 2-core machine), which is
why the hash runs in a worker thread and never on the event loop.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
import unicodedata
from dataclasses import dataclass, field

from jettui.errors import CommandError
from jettui.server.state import StateStore

#: OWASP's scrypt minimum, as log2(N).
DEFAULT_SCRYPT_LOG_N = 17
SCRYPT_R = 8
SCRYPT_P = 1
MAX_NAME_LENGTH = 64
MAX_PASSWORD_LENGTH = 1024


def validate_user_name(name: object, what: str = "user name") -> str:
    """Refuse names that could not be used safely in sandbox placeholders or paths."""
    if not isinstance(name, str) or not name:
        raise CommandError(f"{what} must be a non-empty string")
    if len(name) > MAX_NAME_LENGTH:
        raise CommandError(f"{what} is longer than {MAX_NAME_LENGTH} characters")
    for ch in name:
        if ch in "/\\%:\x00" or unicodedata.category(ch)[0] == "C":
            raise CommandError(f"{what} {name!r} contains {ch!r}, which is not allowed in names")
    if name in (".", ".."):
        raise CommandError(f"{what} {name!r} is not allowed")
    return name


def hash_password(password: str, log_n: int = DEFAULT_SCRYPT_LOG_N) -> str:
    if not 10 <= log_n <= 20:
        raise ValueError("scrypt log2(N) must be in [10, 20]")
    salt = os.urandom(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=1 << log_n, r=SCRYPT_R, p=SCRYPT_P, maxmem=1 << 30, dklen=32
    )
    enc = base64.b64encode
    return f"scrypt${log_n}${SCRYPT_R}${SCRYPT_P}${enc(salt).decode()}${enc(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, log_n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=1 << int(log_n),
            r=int(r),
            p=int(p),
            maxmem=1 << 30,
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


@dataclass(frozen=True, slots=True)
class User:
    uid: int
    name: str
    group: str


class UserStore:
    """The user table of a :class:`StateStore`."""

    def __init__(self, state: StateStore) -> None:
        self.state = state
        # A hash to verify against when the user does not exist, so that a wrong user
        # name costs the same time as a wrong password.
        self._dummy_hash = hash_password("", log_n=12)

    def add(self, name: str, password: str, group: str = "", log_n: int = DEFAULT_SCRYPT_LOG_N) -> User:
        validate_user_name(name)
        if group:
            validate_user_name(group, "group name")
        if not isinstance(password, str) or len(password) > MAX_PASSWORD_LENGTH:
            raise CommandError(f"password must be a string of at most {MAX_PASSWORD_LENGTH} characters")
        if self.get(name) is not None:
            raise CommandError(f"user {name!r} already exists")
        pw_hash = hash_password(password, log_n)
        with self.state.transaction() as db:
            cur = db.execute(
                "INSERT INTO users(name, grp, password_hash, created_us) VALUES(?, ?, ?, ?)",
                (name, group, pw_hash, time.time_ns() // 1000),
            )
            if group:
                db.execute("INSERT OR IGNORE INTO groups(name) VALUES(?)", (group,))
            uid = cur.lastrowid
        assert uid is not None
        return User(uid, name, group)

    def set_password(self, name: str, password: str, log_n: int = DEFAULT_SCRYPT_LOG_N) -> None:
        if self.get(name) is None:
            raise CommandError(f"no such user {name!r}")
        self.state.execute("UPDATE users SET password_hash = ? WHERE name = ?", (hash_password(password, log_n), name))

    def set_group(self, name: str, group: str) -> None:
        if group:
            validate_user_name(group, "group name")
            self.state.execute("INSERT OR IGNORE INTO groups(name) VALUES(?)", (group,))
        if self.state.execute("UPDATE users SET grp = ? WHERE name = ?", (group, name)) == 0:
            raise CommandError(f"no such user {name!r}")

    def delete(self, name: str) -> None:
        if self.state.execute("DELETE FROM users WHERE name = ?", (name,)) == 0:
            raise CommandError(f"no such user {name!r}")

    def get(self, name: str) -> User | None:
        rows = self.state.query("SELECT uid, name, grp FROM users WHERE name = ?", (name,))
        return User(rows[0]["uid"], rows[0]["name"], rows[0]["grp"]) if rows else None

    def list(self) -> list[User]:
        return [User(r["uid"], r["name"], r["grp"]) for r in self.state.query("SELECT uid, name, grp FROM users")]

    def group_id(self, group: str) -> int | None:
        rows = self.state.query("SELECT gid FROM groups WHERE name = ?", (group,))
        return int(rows[0]["gid"]) if rows else None

    def verify(self, name: str, password: str) -> User | None:
        """Blocking (scrypt): call from a worker thread."""
        rows = self.state.query("SELECT uid, name, grp, password_hash FROM users WHERE name = ?", (name,))
        if not rows:
            verify_password(password, self._dummy_hash)
            return None
        row = rows[0]
        if not verify_password(password, row["password_hash"]):
            return None
        return User(row["uid"], row["name"], row["grp"])


@dataclass
class LoginThrottle:
    """Slows repeated login failures from one source address.

    Each failure within ``window`` seconds doubles the delay before the next answer to that
    address, from ``base`` up to ``cap`` seconds.  Success clears the address.
    """

    base: float = 0.05
    cap: float = 5.0
    window: float = 600.0
    _failures: dict[str, tuple[int, float]] = field(default_factory=dict)

    def delay(self, address: str, now: float) -> float:
        count, last = self._failures.get(address, (0, 0.0))
        if count == 0 or now - last > self.window:
            return 0.0
        return min(self.cap, self.base * (2 ** (count - 1)))

    def failed(self, address: str, now: float) -> None:
        count, last = self._failures.get(address, (0, 0.0))
        if now - last > self.window:
            count = 0
        self._failures[address] = (count + 1, now)
        if len(self._failures) > 100_000:  # bound memory under a spray of addresses
            oldest = sorted(self._failures.items(), key=lambda kv: kv[1][1])[:50_000]
            for key, _ in oldest:
                del self._failures[key]

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)
