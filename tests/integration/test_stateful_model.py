"""A stateful model of the control plane: a hypothesis RuleBasedStateMachine drives a real
server (login as a user, a sandboxed user or a token; mkdir, mkFile, mv, rm; token create,
use and delete; sandbox mapping changes, which apply to new sessions only) and checks after
every step that the listings equal an in-memory model, that nothing exists outside the
roots, and that every failure is a CommandError the model predicted.  Transfers (the
server to itself, each overwrite mode) are rules too: the on-disk invariant then also proves
that no part-file or sidecar is left behind by a completed transfer.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from jettui.api import APIInterface, CommandError
from jettui.constants import (
    BACKUP_SUFFIX,
    LS_TYPE_REGULAR,
    OVERWRITE_ALWAYS,
    OVERWRITE_IN_PLACE_SAME_SIZE,
    OVERWRITE_NEVER,
    OVERWRITE_VERSIONED,
)
from tests.helpers import ServerThread, running_server

NAMES = st.sampled_from(["a", "b", "c"])
PATHS = st.lists(NAMES, min_size=1, max_size=3).map(lambda parts: "/".join(parts))
HOSTILE = st.sampled_from(["..", "../x", "a/../../x", "/../../outside/canary", "\x00", "other:/a"])
STEPS = {"count": 0}


class Tree:
    """The model of one root: directories (as relative paths) and files with their sizes."""

    def __init__(self) -> None:
        self.dirs: set[str] = {""}
        self.files: dict[str, int] = {}

    def exists(self, p: str) -> bool:
        return p in self.dirs or p in self.files

    def parent(self, p: str) -> str:
        return p.rsplit("/", 1)[0] if "/" in p else ""

    def mkdir(self, p: str) -> bool:
        parts = p.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if any(q in self.files for q in prefixes):
            return False
        self.dirs.update(prefixes)
        return True

    def mkfile(self, p: str, size: int) -> bool:
        if self.parent(p) not in self.dirs:
            return False
        if not self.exists(p):
            self.files[p] = size
        return True

    def rm(self, p: str) -> bool:
        if not self.exists(p):
            return False
        self.files = {f: s for f, s in self.files.items() if f != p and not f.startswith(p + "/")}
        self.dirs = {d for d in self.dirs if d != p and not d.startswith(p + "/")}
        return True

    def mv(self, a: str, b: str) -> bool:
        if not self.exists(a) or self.exists(b) or self.parent(b) not in self.dirs or b.startswith(a + "/"):
            return False

        def moved(x: str) -> str:
            return b + x[len(a) :] if x == a or x.startswith(a + "/") else x

        self.files = {moved(f): s for f, s in self.files.items()}
        self.dirs = {moved(d) for d in self.dirs}
        return True

    def receive(self, p: str, size: int, mode: int) -> None:
        """A file of ``size`` bytes transferred to ``p`` with overwrite ``mode``."""
        parts = p.split("/")
        if any("/".join(parts[:i]) in self.files for i in range(1, len(parts))):
            return  # a file where a directory should be: the receiver skips the file
        self.dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
        old = self.files.get(p)
        if old is None or mode == OVERWRITE_ALWAYS:
            self.files[p] = size
        elif mode == OVERWRITE_VERSIONED:
            self.files[p + BACKUP_SUFFIX] = old
            self.files[p] = size
        elif mode == OVERWRITE_IN_PLACE_SAME_SIZE and old in (0, size):
            self.files[p] = size
        # OVERWRITE_NEVER, or IN_PLACE_SAME_SIZE with another size: the old file stays.

    def sub(self, prefix: str) -> Tree:
        """The view of a token confined to ``prefix`` (a live slice, rebuilt on demand)."""
        view = Tree()
        n = len(prefix) + 1
        view.dirs = {""} | {d[n:] for d in self.dirs if d.startswith(prefix + "/")}
        view.files = {f[n:]: s for f, s in self.files.items() if f.startswith(prefix + "/")}
        return view


class World:
    def __init__(self, server: ServerThread, base: Path) -> None:
        self.server = server
        self.base = base
        self.outside = base / "outside"


def snapshot(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            p = Path(root, name)
            out[str(p)] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


class ControlPlaneModel(RuleBasedStateMachine):
    world: World

    @initialize()
    def setup(self) -> None:
        w = self.world
        for name in ("homes", "box1", "box2"):
            shutil.rmtree(w.base / name, ignore_errors=True)
            (w.base / name).mkdir()
        self.roots = {"alice": w.base / "homes" / "alice", "box1": w.base / "box1", "box2": w.base / "box2"}
        self.trees = {key: Tree() for key in self.roots}
        self.canary = snapshot(w.outside)
        self.admin = w.server.api().connect()
        self.admin.server.auth("root", "root-pw")
        self.admin.server.superuser()
        for token in self.admin.server.getAPITokens():
            self.admin.server.deleteAPIToken(token)
        self.sandy_mapping = "box1"
        self.admin.server.setSandboxMapping("sandy", {"": str(self.roots["box1"])})
        self.tokens: dict[str, tuple[str, str | None]] = {}  # token -> (alice's root key, confined prefix)
        self.deleted: list[str] = []
        self.api: APIInterface | None = None
        self.view: tuple[str, str | None] = ("", None)  # (root key, token prefix) of the session

    def teardown(self) -> None:
        for api in (self.api, getattr(self, "admin", None)):
            if api is not None:
                api.disconnect()

    # -- sessions ---------------------------------------------------------------------------
    def _session(self) -> APIInterface:
        if self.api is not None:
            self.api.disconnect()
        self.api = self.world.server.api().connect()
        return self.api

    @rule()
    def login_user(self) -> None:
        self._session().server.auth("alice", "alice-pw")  # sandboxed by the system mapping %u
        self.view = ("alice", None)

    @rule()
    def login_sandboxed(self) -> None:
        self._session().server.auth("sandy", "sandy-pw")
        self.view = (self.sandy_mapping, None)

    @rule(data=st.data())
    def login_token(self, data: st.DataObject) -> None:
        # In creation order, not sorted: the tokens are random strings, and an order that
        # differs between runs made a replayed example draw a different token (hypothesis
        # then fails with FlakyStrategyDefinition instead of running the model).
        candidates = list(self.tokens) + self.deleted[-1:]
        if not candidates:
            return
        token = data.draw(st.sampled_from(candidates))
        api = self._session()
        if token in self.deleted:
            with pytest.raises(CommandError, match="authentication failed"):
                api.server.authToken(token)
            self.view = ("", None)
            return
        owner, path = self.tokens[token]
        if path is not None and path not in self.trees[owner].dirs:
            # Its directory was removed since: the login fails and says why.
            with pytest.raises(CommandError, match=f"confined to /{re.escape(path)}, which cannot be opened"):
                api.server.authToken(token)
            self.view = ("", None)
            return
        api.server.authToken(token)
        self.view = self.tokens[token]

    @rule()
    def change_sandy_mapping(self) -> None:
        """New sessions only: the session open now keeps the roots it logged in with."""
        self.sandy_mapping = "box2" if self.sandy_mapping == "box1" else "box1"
        self.admin.server.setSandboxMapping("sandy", {"": str(self.roots[self.sandy_mapping])})

    # -- tokens -------------------------------------------------------------------------------
    @precondition(lambda self: self.view == ("alice", None))
    @rule(data=st.data())
    def create_token(self, data: st.DataObject) -> None:
        assert self.api is not None
        tree = self.trees["alice"]
        path = data.draw(st.sampled_from([None, *sorted(d for d in tree.dirs if d)]))
        token = self.api.server.createAPIToken(path=None if path is None else "/" + path)["token"]
        self.tokens[token] = ("alice", path)

    @precondition(lambda self: self.view == ("alice", None))
    @rule(data=st.data())
    def delete_token(self, data: st.DataObject) -> None:
        assert self.api is not None
        if not self.tokens:
            return
        token = data.draw(st.sampled_from(list(self.tokens)))  # creation order (see login_token)
        self.api.server.deleteAPIToken(token)
        del self.tokens[token]
        self.deleted.append(token)

    # -- files ----------------------------------------------------------------------------------
    def _tree(self) -> Tree | None:
        key, prefix = self.view
        if not key:
            return None
        tree = self.trees[key]
        return tree if prefix is None else tree.sub(prefix)

    def _do(self, expect: bool | None, method: str, *args: Any) -> None:
        """Run an async file call; it must fail (CommandError) exactly when the model says."""
        assert self.api is not None
        try:
            self.api.server.getRequestResult(getattr(self.api.server, method)(*args))
        except CommandError:
            ok = False
        else:
            ok = True
        assert ok == expect, f"{method}{args}: server {'succeeded' if ok else 'failed'}, model says {expect}"
        STEPS["count"] += 1

    def _apply(self, change: str, *args: Any) -> bool:
        """Apply a change to the model of the session's root (through a token's prefix)."""
        key, prefix = self.view
        tree = self.trees[key]
        if prefix is not None:
            if prefix not in tree.dirs:
                return False  # the token's directory is gone
            args = tuple(f"{prefix}/{a}" if isinstance(a, str) else a for a in args)
        return bool(getattr(tree, change)(*args))

    @precondition(lambda self: self.view[0] != "")
    @rule(path=PATHS)
    def mkdir(self, path: str) -> None:
        self._do(self._apply("mkdir", path), "mkdirAsync", "/" + path)

    @precondition(lambda self: self.view[0] != "")
    @rule(path=PATHS, size=st.integers(0, 3000))
    def mkfile(self, path: str, size: int) -> None:
        self._do(self._apply("mkfile", path, size), "mkFileAsync", "/" + path, size)

    @precondition(lambda self: self.view[0] != "")
    @rule(a=PATHS, b=PATHS)
    def mv(self, a: str, b: str) -> None:
        self._do(self._apply("mv", a, b), "mvAsync", "/" + a, "/" + b)

    @precondition(lambda self: self.view[0] != "")
    @rule(path=PATHS)
    def rm(self, path: str) -> None:
        self._do(self._apply("rm", path), "rmAsync", "/" + path)

    @precondition(lambda self: self.view[0] != "")
    @rule(path=HOSTILE, method=st.sampled_from(["mkdirAsync", "rmAsync", "lsAsync", "duAsync"]))
    def hostile(self, path: str, method: str) -> None:
        self._do(False, method, path)

    @precondition(lambda self: self.view[0] != "" and self.view[1] is None)
    @rule(
        data=st.data(),
        mode=st.sampled_from([OVERWRITE_ALWAYS, OVERWRITE_NEVER, OVERWRITE_VERSIONED, OVERWRITE_IN_PLACE_SAME_SIZE]),
    )
    def transfer_to_self(self, data: st.DataObject, mode: int) -> None:
        """Send a file of the session's root to the same server, as the same user: the receiver
        logs in anew, so a changed sandy mapping applies to where the file lands."""
        assert self.api is not None
        src_key = self.view[0]
        source = self.trees[src_key]
        if not source.files:
            return
        a = data.draw(st.sampled_from(sorted(source.files)), label="source")
        b = data.draw(PATHS, label="target")
        user = "alice" if src_key == "alice" else "sandy"
        dst_key = "alice" if user == "alice" else self.sandy_mapping
        if b in self.trees[dst_key].dirs:
            return  # a directory at the target: not a case of the overwrite modes
        server = self.world.server.server
        assert server is not None
        dest = self.api.send.createDestination("127.0.0.1", server.recv_port, userName=user, password=f"{user}-pw")
        manifest = self.api.send.waitForManifest(self.api.send.createManifest({"/" + b: "/" + a}), timeoutSeconds=30)
        assert manifest["status"] == "complete", manifest
        tid = self.api.send.createTransfer(dest, manifest, overwrite=mode)["transferId"]
        deadline = time.monotonic() + 60
        while (t := self.api.send.getTransfer(tid))["status"] not in ("complete", "error", "cancelled"):
            assert time.monotonic() < deadline, t
            time.sleep(0.02)
        assert t["status"] == "complete", t
        self.trees[dst_key].receive(b, source.files[a], mode)
        STEPS["transfers"] = STEPS.get("transfers", 0) + 1

    @rule()
    def anonymous_is_refused(self) -> None:
        with self.world.server.api() as api, pytest.raises(CommandError, match="authentication required"):
            api.server.mkdirAsync("/a")

    # -- invariants ------------------------------------------------------------------------------
    @invariant()
    def listings_equal_the_model(self) -> None:
        if not hasattr(self, "trees"):
            return
        tree = self._tree()
        if (
            tree is not None
            and self.api is not None
            and (self.view[1] is None or self.view[1] in self.trees["alice"].dirs)
        ):
            for d in sorted(tree.dirs):
                listing = self.api.server.getRequestResult(self.api.server.lsAsync("/" + d))
                got = {(f["name"], f["type"] == LS_TYPE_REGULAR, f["size"]) for f in listing["files"]}
                want = {(n.rsplit("/", 1)[-1], False, 0) for n in tree.dirs if n and tree.parent(n) == d}
                want |= {(n.rsplit("/", 1)[-1], True, s) for n, s in tree.files.items() if tree.parent(n) == d}
                got_norm = {(name, is_file, size if is_file else 0) for name, is_file, size in got}
                assert got_norm == want, f"listing of /{d}"
        # On disk too, for every root, whoever is logged in.
        for key, root in self.roots.items():
            if not root.exists():
                assert self.trees[key].dirs == {""} and not self.trees[key].files
                continue
            real = snapshot(root)
            model = {str(root / d) for d in self.trees[key].dirs if d} | {str(root / f) for f in self.trees[key].files}
            assert set(real) == model, key

    @invariant()
    def nothing_outside_the_roots(self) -> None:
        if not hasattr(self, "canary"):
            return
        STEPS["checked"] = STEPS.get("checked", 0) + 1
        assert snapshot(self.world.outside) == self.canary
        assert sorted(os.listdir(self.world.base)) == ["box1", "box2", "homes", "outside"]
        assert sorted(os.listdir(self.world.base / "homes")) in ([], ["alice"])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    parent = "/dev/shm" if os.access("/dev/shm", os.W_OK) else str(tmp_path_factory.mktemp("model"))
    base = Path(tempfile.mkdtemp(prefix="jettui-model-", dir=parent))
    (base / "outside").mkdir()
    (base / "outside" / "canary").write_bytes(b"canary")
    (base / "homes").mkdir()
    try:
        with running_server(superusers=["root"]) as st_:
            st_.add_user("root", "root-pw")
            st_.add_user("alice", "alice-pw")
            st_.add_user("sandy", "sandy-pw")
            assert st_.server is not None
            st_.server.sandboxes.set("", {"": f"{base}/homes/%u"})
            st_.server.sandboxes.set("root", False)  # the administrator sees everything
            # Many failed token logins are part of the run; the throttle has its own test.
            st_.server.throttle.cap = 0.0
            yield World(st_, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _run(world: World, examples: int, steps: int) -> None:
    ControlPlaneModel.world = world
    STEPS["count"] = STEPS["checked"] = 0
    test = ControlPlaneModel.TestCase
    test.settings = settings(
        max_examples=examples,
        stateful_step_count=steps,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    test("runTest").runTest()
    print(
        f"\nstateful model: {STEPS['checked']} states checked, {STEPS['count']} file operations, "
        f"{STEPS.get('transfers', 0)} transfers"
    )
    assert STEPS["checked"] >= examples


def test_control_plane_model(world: World) -> None:
    _run(world, examples=25, steps=15)


@pytest.mark.slow
def test_control_plane_model_long(world: World) -> None:
    _run(world, examples=400, steps=50)
