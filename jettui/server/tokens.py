"""API tokens: restricted, expiring logins that act as the user who made them.

A token string is ``<id>.<secret>``: the id is public (it names the token in listings and
events); the secret is 32 random bytes, shown once at creation and stored only as its
SHA-256.  Lookup is by id, and the secret's hash is compared in constant time.  Methods that
take a token accept the full string, the id alone, or a Token Structure.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any

from jettui.constants import PERMISSIONS_ALL, Permissions
from jettui.errors import CommandError
from jettui.server.auth import hash_password, verify_password
from jettui.server.state import StateStore

MAX_TOKEN_LENGTH = 256
MAX_DESCRIPTION = 1024
#: Longest token lifetime, in seconds (100 years): the expiry must fit the state's integers.
MAX_TIME_LIMIT = 100 * 365 * 86400


def _check_time_limit(time_limit: float) -> None:
    if not 0 < time_limit <= MAX_TIME_LIMIT:
        raise CommandError(f"timeLimitSeconds must be positive and at most {MAX_TIME_LIMIT} (got {time_limit})")


@dataclass(frozen=True, slots=True)
class APIToken:
    token_id: str
    owner: str
    path: str | None
    password_hash: str | None
    permissions: Permissions
    description: str
    creation_us: int
    expiry_us: int | None
    user_data: dict[str, Any]

    def expired(self, now_us: int) -> bool:
        return self.expiry_us is not None and now_us >= self.expiry_us

    def structure(self, token: str | None = None) -> dict[str, Any]:
        """The Token Structure; ``token`` is the full string, given only at creation."""
        return {
            "token": token or self.token_id,
            "tokenId": self.token_id,
            "creationTime": self.creation_us,
            "description": self.description,
            "expiryTime": self.expiry_us,
            "owner": self.owner,
            "ownerToken": None,
            "ownerTokenSession": None,
            "passwordRequired": self.password_hash is not None,
            "permissions": int(self.permissions),
            "path": self.path,
            "userData": self.user_data,
        }


def _secret_hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def token_id_of(token: object) -> str:
    """The id inside a token string, id, or Token Structure; CommandError for anything else."""
    if isinstance(token, dict):
        token = token.get("tokenId") or token.get("token")
    if not isinstance(token, str) or not token:
        raise CommandError("token must be a non-empty token string or a Token Structure")
    if len(token) > MAX_TOKEN_LENGTH:
        raise CommandError(f"token is longer than {MAX_TOKEN_LENGTH} characters: not a jettui token")
    return token.split(".", 1)[0]


def _row(row: Any) -> APIToken:
    return APIToken(
        row["token_id"],
        row["owner"],
        row["path"],
        row["password_hash"],
        Permissions(row["permissions"]),
        row["description"],
        row["creation_us"],
        row["expiry_us"],
        json.loads(row["user_data"]),
    )


class TokenStore:
    def __init__(self, state: StateStore, log_n: int) -> None:
        self.state = state
        self.log_n = log_n

    def create(
        self,
        owner: str,
        now_us: int,
        path: str | None,
        password: str | None,
        time_limit: float | None,
        description: str | None,
        permissions: int | None,
    ) -> tuple[APIToken, str]:
        if time_limit is not None:
            _check_time_limit(time_limit)
        if description is not None and len(description) > MAX_DESCRIPTION:
            raise CommandError(f"description is longer than {MAX_DESCRIPTION} characters")
        if permissions is not None and (permissions < 0 or permissions & ~int(PERMISSIONS_ALL)):
            raise CommandError(
                f"permissions {permissions} has unknown bits; valid flags: "
                + ", ".join(f"{p.name}={int(p)}" for p in Permissions)
            )
        token_id = base64.b32encode(secrets.token_bytes(10)).decode().lower()
        secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
        token = APIToken(
            token_id,
            owner,
            path,
            hash_password(password, self.log_n) if password else None,
            PERMISSIONS_ALL if permissions is None else Permissions(permissions),
            description or "",
            now_us,
            None if time_limit is None else now_us + int(time_limit * 1_000_000),
            {},
        )
        self.state.execute(
            "INSERT INTO api_tokens(token_id, secret_hash, owner, path, password_hash, permissions, "
            "description, creation_us, expiry_us) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                token.token_id,
                _secret_hash(secret),
                owner,
                path,
                token.password_hash,
                int(token.permissions),
                token.description,
                now_us,
                token.expiry_us,
            ),
        )
        return token, f"{token_id}.{secret}"

    def get(self, token: object) -> APIToken:
        rows = self.state.query("SELECT * FROM api_tokens WHERE token_id = ?", (token_id_of(token),))
        if not rows:
            raise CommandError("API token not found")
        return _row(rows[0])

    def list(self, owner: str | None, limit: int | None) -> list[APIToken]:
        if limit is not None and limit < 0:
            raise CommandError("limit must not be negative")
        sql = "SELECT * FROM api_tokens" + (" WHERE owner = ?" if owner is not None else "")
        sql += " ORDER BY creation_us" + (f" LIMIT {int(limit)}" if limit is not None else "")
        return [_row(r) for r in self.state.query(sql, (owner,) if owner is not None else ())]

    def update(self, token_id: str, now_us: int, time_limit: float | None, description: str | None) -> None:
        if time_limit is not None:
            _check_time_limit(time_limit)
            self.state.execute(
                "UPDATE api_tokens SET expiry_us = ? WHERE token_id = ?",
                (now_us + int(time_limit * 1_000_000), token_id),
            )
        if description is not None:
            if len(description) > MAX_DESCRIPTION:
                raise CommandError(f"description is longer than {MAX_DESCRIPTION} characters")
            self.state.execute("UPDATE api_tokens SET description = ? WHERE token_id = ?", (description, token_id))

    def delete(self, token_id: str) -> None:
        if self.state.execute("DELETE FROM api_tokens WHERE token_id = ?", (token_id,)) == 0:
            raise CommandError("API token not found")

    def expire(self, now_us: int, grace_us: int = 0) -> int:
        return self.state.execute(
            "DELETE FROM api_tokens WHERE expiry_us IS NOT NULL AND expiry_us + ? <= ?", (grace_us, now_us)
        )

    def verify(self, token: str, password: str | None, now_us: int) -> APIToken | None:
        """Blocking when the token has a password (scrypt): call from a worker thread."""
        if not isinstance(token, str) or "." not in token or len(token) > MAX_TOKEN_LENGTH:
            return None
        token_id, secret = token.split(".", 1)
        rows = self.state.query("SELECT * FROM api_tokens WHERE token_id = ?", (token_id,))
        if not rows or not hmac.compare_digest(bytes(rows[0]["secret_hash"]), _secret_hash(secret)):
            return None
        found = _row(rows[0])
        if found.expired(now_us):
            return None
        if found.password_hash is not None and not verify_password(password or "", found.password_hash):
            return None
        return found
