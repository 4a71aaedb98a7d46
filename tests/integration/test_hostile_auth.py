"""Authentication hygiene: scrypt cost, token secrets (32 random bytes, stored only as
hashes, compared in constant time), failed logins slowed per source, and user names that
could feed sandbox placeholders or paths refused at creation."""

from __future__ import annotations

import base64
import inspect
import sqlite3
import time
from pathlib import Path

import pytest

from jettui.api import CommandError
from jettui.server import auth, tokens
from jettui.server.auth import LoginThrottle, UserStore, hash_password, validate_user_name, verify_password
from jettui.server.config import ServerConfig
from jettui.server.state import StateStore
from tests.helpers import running_server


def test_scrypt_parameters_are_at_least_owasp() -> None:
    assert auth.DEFAULT_SCRYPT_LOG_N >= 17 and auth.SCRYPT_R >= 8 and auth.SCRYPT_P >= 1
    assert ServerConfig().scrypt_log_n >= 17
    scheme, log_n, r, p, salt, digest = hash_password("pw", log_n=17).split("$")
    assert (scheme, int(log_n), int(r), int(p)) == ("scrypt", 17, 8, 1)
    assert len(base64.b64decode(salt)) == 16 and len(base64.b64decode(digest)) == 32
    # The stored form records the cost, and a tampered cost does not verify.
    stored = hash_password("pw", log_n=10)
    assert verify_password("pw", stored) and not verify_password("pw", stored.replace("$10$", "$11$", 1))
    assert hash_password("pw", log_n=10) != stored  # salted
    with pytest.raises(ValueError):
        hash_password("pw", log_n=9)


def test_users_are_hashed_with_the_default_cost(tmp_path: Path) -> None:
    users = UserStore(StateStore(tmp_path))
    users.add("carol", "carol-pw")  # the real default, 2^17
    db = sqlite3.connect(tmp_path / "state.sqlite3")
    (stored,) = db.execute("SELECT password_hash FROM users WHERE name = 'carol'").fetchone()
    assert stored.startswith("scrypt$17$8$1$") and "carol-pw" not in stored


def test_token_secrets_are_random_hashed_and_never_stored(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    with running_server(persistent_state_dir=state_dir) as st:
        st.add_user("bob", "bob-pw")
        with st.api() as api:
            api.server.auth("bob", "bob-pw")
            made = [api.server.createAPIToken(password="tok-pw")["token"] for _ in range(3)]
    secrets_ = [t.split(".", 1)[1] for t in made]
    for secret in secrets_:
        raw = base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))
        assert len(raw) == 32
    assert len(set(secrets_)) == 3
    blob = b"".join(p.read_bytes() for p in state_dir.rglob("*") if p.is_file())
    for token in made:
        secret = token.split(".", 1)[1]
        assert secret.encode() not in blob and token.encode() not in blob
        assert base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4)) not in blob
    assert b"tok-pw" not in blob


def test_token_comparison_is_constant_time() -> None:
    source = inspect.getsource(tokens.TokenStore.verify)
    assert "hmac.compare_digest" in source and "==" not in source.split("compare_digest", 1)[1].split("\n", 1)[0]
    assert "hmac.compare_digest" in inspect.getsource(auth.verify_password)


def test_wrong_secret_of_a_real_token_id_is_refused(tmp_path: Path) -> None:
    with running_server() as st:
        st.add_user("bob", "bob-pw")
        with st.api() as api:
            api.server.auth("bob", "bob-pw")
            token = api.server.createAPIToken()["token"]
        token_id, secret = token.split(".", 1)
        # The last character changed to another one (always "A" was the secret itself 1 in 64 runs).
        other = "B" if secret[-1] == "A" else "A"
        for guess in (f"{token_id}.{secret[:-1]}{other}", f"{token_id}.", f"{token_id}.{secret}x", token_id):
            with st.api() as api, pytest.raises(CommandError, match="authentication failed"):
                api.server.authToken(guess)


def test_failed_logins_are_slowed_per_source() -> None:
    throttle = LoginThrottle(base=0.05, cap=5.0, window=600)
    assert throttle.delay("10.0.0.1", 0) == 0
    for i in range(10):
        throttle.failed("10.0.0.1", float(i))
    assert throttle.delay("10.0.0.1", 10) == 5.0  # doubled up to the cap
    assert throttle.delay("10.0.0.2", 10) == 0  # another source is not slowed
    assert throttle.delay("10.0.0.1", 700) == 0  # the window passed
    throttle.succeeded("10.0.0.1")
    assert throttle.delay("10.0.0.1", 11) == 0
    for i in range(200_001):  # a spray of addresses does not grow memory without bound
        throttle.failed(f"a{i}", 1.0)
    assert len(throttle._failures) <= 100_001


def test_failed_logins_over_the_wire_get_slower() -> None:
    with running_server() as st:
        st.add_user("bob", "bob-pw")
        assert st.server is not None
        st.server.throttle = LoginThrottle(base=0.2, cap=0.8)
        times = []
        with st.api() as api:
            for _ in range(4):
                start = time.monotonic()
                with pytest.raises(CommandError, match="authentication failed"):
                    api.server.auth("bob", "wrong")
                times.append(time.monotonic() - start)
        assert times[0] < 0.2 and times[1] >= 0.2 and times[3] >= 0.8, times


@pytest.mark.parametrize(
    "name", ["a/b", "a%u", "a:b", "a\x00b", "a\x1b[31m", "a\nb", "a\u202eb", "..", ".", "", "x" * 65, "a\\b"]
)
def test_hostile_user_names_are_refused_at_creation(tmp_path: Path, name: str) -> None:
    users = UserStore(StateStore(None))
    with pytest.raises(CommandError):
        validate_user_name(name)
    with pytest.raises(CommandError):
        users.add(name, "pw", log_n=10)
    if name:  # an empty group means "no group"
        with pytest.raises(CommandError):
            users.add("fine", "pw", group=name, log_n=10)
    assert users.get(name) is None


def test_hostile_names_refused_by_the_admin_api(tmp_path: Path) -> None:
    with running_server(superusers=["root"]) as st:
        st.add_user("root", "root-pw")
        with st.api() as api:
            api.server.auth("root", "root-pw")
            api.server.superuser()
            for name in ("a/b", "a%u", "a:b", "a\x00b", "a\x1b[31m"):
                with pytest.raises(CommandError, match="not allowed|must"):
                    api.server.setSandboxMapping(name, {"": str(tmp_path)})
                with pytest.raises(CommandError, match="not allowed|must"):
                    api.server.getRequestResult(api.server.addWranglerAsync(name))
