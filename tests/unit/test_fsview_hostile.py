"""FileSystemView against hostile paths: nothing outside a sandbox root is ever read or
written, whatever the path, and whatever happens to the tree while we work.

The world (under tmp_path)::

    outside/                 canary: secret.txt, outside-canary-name.txt, sub/deep.txt
    srv/data/                the sandbox root "" (rebuilt after every call that writes)
    srv/data-evil/           a prefix look-alike of the root, with canary.txt
    srv/other/               the sandbox root "other"

and inside the root, symbolic links that lead out every way we know (absolute, relative,
through "..", chained, looping, through /proc magic links, into the look-alike).  A
snapshot of everything except the two roots (names, types, sizes, times, contents, link
targets) is taken before and compared after every single call.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from jettui.errors import CommandError
from jettui.server import fsview
from jettui.server.fsview import FileSystemView

SECRET = b"TOP-SECRET-" + bytes(range(256)) * 30 + b"-END"  # 7695 bytes: a size nothing inside has
CANARY = b"look-alike canary!" * 5  # 90 bytes, a size nothing inside has
OUTSIDE_ONLY_NAMES = {"secret.txt", "outside-canary-name.txt", "deep.txt", "canary.txt"}
PROBE = f"jettui-escape-probe-{secrets.token_hex(4)}"


def _s3(payload: bytes) -> str:
    return hashlib.md5(payload).hexdigest()  # under 8 MiB the S3 ETag is the plain MD5


FORBIDDEN_HASHES = {hashlib.md5(SECRET).hexdigest(), _s3(SECRET), hashlib.md5(CANARY).hexdigest()}


@dataclass
class World:
    base: Path
    root: Path
    other: Path
    outside: Path
    evil: Path

    def build_roots(self) -> None:
        """(Re)build the contents of both roots in place: the view holds descriptors on
        the root directories themselves, so those must never be replaced."""
        for top in (self.root, self.other):
            _clear(top)
        r = self.root
        (r / "file.txt").write_bytes(b"inside file")
        (r / "mv-src").write_bytes(b"to be moved")
        (r / "sub").mkdir()
        (r / "sub" / "inner.txt").write_bytes(b"inner")
        links = {
            "link_abs": str(self.outside),
            "link_rel": "../../outside",
            "link_file_abs": str(self.outside / "secret.txt"),
            "link_file_rel": "../../outside/secret.txt",
            "link_updir": "../..",
            "link_dotdot2": "sub/../../..",
            "link_evil": "../data-evil",
            "link_evil_abs": str(self.evil),
            "link_loop": "link_loop",
            "link_chain": "link_rel",
            "link_proc": f"/proc/self/root{self.outside}",
            "link_proc_rel": "../" * 40 + f"proc/self/root{self.outside}",
            "link_in": "sub",
            "sub/link_up2": "../../..",
            "sub/link_up_file": "../../../outside/secret.txt",
        }
        for name, target in links.items():
            os.symlink(target, r / name)
        (self.other / "o.txt").write_bytes(b"other")

    def view(self) -> FileSystemView:
        return FileSystemView({"": str(self.root), "other": str(self.other)})

    def snapshot(self) -> dict[str, tuple[Any, ...]]:
        """Everything outside the roots, including directory times (an entry added or
        removed changes them) and file contents."""
        skip = {self.root, self.other}
        result: dict[str, tuple[Any, ...]] = {}
        stack = [self.base]
        while stack:
            here = stack.pop()
            for entry in os.scandir(here):
                path = Path(entry.path)
                if path in skip:
                    continue
                info = entry.stat(follow_symlinks=False)
                key = str(path.relative_to(self.base))
                if entry.is_symlink():
                    result[key] = ("link", os.readlink(path), info.st_mtime_ns)
                elif entry.is_dir(follow_symlinks=False):
                    result[key] = ("dir", info.st_mtime_ns, info.st_ctime_ns, info.st_mode)
                    stack.append(path)
                else:
                    digest = hashlib.sha256(path.read_bytes()).hexdigest()
                    result[key] = (
                        "file",
                        info.st_size,
                        info.st_mtime_ns,
                        info.st_ctime_ns,
                        info.st_mode,
                        digest,
                    )
        base_info = self.base.stat()
        result["."] = ("dir", base_info.st_mtime_ns, base_info.st_ctime_ns)
        return result


def _clear(directory: Path) -> None:
    """Empty a directory without following any link (our own careful rm for the tests)."""
    for entry in os.scandir(directory):
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            os.chmod(path, 0o700)
            _clear(path)
            path.rmdir()
        else:
            path.unlink()


def _make_world(base: Path) -> World:
    world = World(
        base=base,
        root=base / "srv" / "data",
        other=base / "srv" / "other",
        outside=base / "outside",
        evil=base / "srv" / "data-evil",
    )
    for directory in (world.root, world.other, world.outside / "sub", world.evil):
        directory.mkdir(parents=True)
    (world.outside / "secret.txt").write_bytes(SECRET)
    (world.outside / "outside-canary-name.txt").write_bytes(SECRET)
    (world.outside / "sub" / "deep.txt").write_bytes(SECRET)
    (world.evil / "canary.txt").write_bytes(CANARY)
    world.build_roots()
    return world


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    # These tests create and delete thousands of small files; tmpfs keeps that quick on a
    # busy disk.  Same filesystem semantics for everything tested here.
    if os.access("/dev/shm", os.W_OK):
        base = Path(tempfile.mkdtemp(prefix="jettui-hostile-", dir="/dev/shm"))
        try:
            yield _make_world(base)
        finally:
            _clear(base)
            base.rmdir()
    else:
        yield _make_world(tmp_path)


@pytest.fixture(params=["openat2", "walk"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "openat2" and not fsview.openat2_available():
        pytest.skip("this kernel has no openat2(2)")
    monkeypatch.setattr(fsview, "USE_OPENAT2", request.param == "openat2")
    return str(request.param)


# -- the hostile table -------------------------------------------------------------------

#: Refused while parsing: every method, display included, raises CommandError.
INVALID = [
    "..",
    "../",
    "/..",
    "/../outside/secret.txt",
    "../outside",
    "../../outside/secret.txt",
    "sub/../../outside",
    "./../outside",
    "//..//outside",
    "a/b/../../../outside",
    "sub/./.././../outside/secret.txt",
    "../data-evil/canary.txt",
    "/../data-evil",
    "link_in/../../outside",
    "../" * 30 + PROBE,
    "\x00",
    "sub\x00/../../outside",
    "file.txt\x00.jpg",
    "x" * 256,
    "sub/" + "y" * 300,
    "/a" * 2100,
    "q" * 5000,
    "evil:/secret.txt",
    "data:/file.txt",
    "C:/Windows/system32",
    "other:/../data/file.txt",
    "other:/../../outside",
    ":/../outside",
    "\ud800/x",
    "é" * 128,
]

#: Through a symbolic link that leads out: every method but display raises.
ESCAPE = [
    "link_abs/secret.txt",
    "link_abs/newdir/x",
    "link_abs/sub/deep.txt",
    "link_rel/secret.txt",
    "link_rel/sub/../secret.txt",
    "link_updir/outside/secret.txt",
    "link_updir/srv/data-evil/canary.txt",
    "link_dotdot2/outside/secret.txt",
    "sub/link_up2/outside/secret.txt",
    "link_evil/canary.txt",
    "link_evil_abs/canary.txt",
    "link_chain/secret.txt",
    "link_loop/x",
    "link_proc/secret.txt",
    "link_proc_rel/secret.txt",
    f"link_abs/{PROBE}",
]

#: The last component is a link that leads out: methods that follow it raise; the others
#: (stat, du, rm, mv, mkfile) act on the link itself, inside the root.
LEAF_LINK = [
    "link_abs",
    "link_rel",
    "link_file_abs",
    "link_file_rel",
    "link_updir",
    "link_evil",
    "link_loop",
    "link_proc",
    "sub/link_up_file",
]

#: Absolute paths are re-rooted and odd names are just names: these may succeed, inside.
CONTAINED = [
    "{OUT}/secret.txt",
    "{OUT}",
    "{EVIL}/canary.txt",
    "{ROOT}/file.txt",
    "{ROOT}-evil/canary.txt",
    "{BASE}/" + PROBE,
    "..\\..\\outside",
    "....//....//outside",
    "..%2f..%2foutside",
    "\u2025/outside",
    "\uff0e\uff0e/outside",
    "link_abs/../file.txt",
    "sub/\n../x",
    "%u/../file.txt",
    "~/.ssh/authorized_keys",
    "$HOME/x",
    "\udc80",
    "other:/new",
    "/a:b",
    "sub/inner.txt",
]

#: Real system paths, re-rooted: only ever given to methods that do not write.
READ_ONLY = ["/etc/passwd", "/proc/self/environ", "/proc/self/root/etc/shadow", "/dev/zero"]

NON_STR: list[object] = [None, 42, 1.5, b"../outside", ["../outside"], {"p": 1}, ("a",)]

FOLLOWING = {"ls", "ls_md5", "ls_s3", "ls_list", "open_read", "open_dir", "open_dir_nocreate", "mkdir"}

Method = Callable[[FileSystemView, Any], Any]

METHODS: dict[str, Method] = {
    "ls": lambda v, p: v.ls(p),
    "ls_dir": lambda v, p: v.ls(p, directory=True),
    "ls_md5": lambda v, p: v.ls(p, hash_type="MD5"),
    "ls_s3": lambda v, p: v.ls(p, hash_type="S3"),
    "ls_list": lambda v, p: v.ls_list(["/", p]),
    "ls_list_stat": lambda v, p: v.ls_list([p], stat_only=True, hash_type="MD5"),
    "du": lambda v, p: v.du(p),
    "open_read": lambda v, p: v.open_read(p),
    "open_dir": lambda v, p: v.open_dir_for_write(p),
    "open_dir_nocreate": lambda v, p: v.open_dir_for_write(p, create=False),
    "mkdir": lambda v, p: v.mkdir(p),
    "mkfile": lambda v, p: v.mkfile(p, 7),
    "mkfile_modify": lambda v, p: v.mkfile(p, 7, fill_random=True, modify_existing=True),
    "mv_from": lambda v, p: v.mv(p, "/mv-dst"),
    "mv_to": lambda v, p: v.mv("/mv-src", p),
    "rm": lambda v, p: v.rm(p),
    "display": lambda v, p: v.display(p),
}
WRITING = {"open_dir", "mkdir", "mkfile", "mkfile_modify", "mv_from", "mv_to", "rm"}

#: (path, method) pairs run per mode, filled in by the tests: the report's figure.
TRIED: dict[str, int] = {}


def _expand(path: str, world: World) -> str:
    return (
        path.replace("{OUT}", str(world.outside))
        .replace("{EVIL}", str(world.evil))
        .replace("{ROOT}", str(world.root))
        .replace("{BASE}", str(world.base))
    )


def _check_result(world: World, result: Any) -> None:
    """Nothing we got back may come from outside: descriptors point inside a root and do
    not read the secret; listings carry no outside name, hash or size."""
    if isinstance(result, int) and not isinstance(result, bool):
        try:
            where = os.readlink(f"/proc/self/fd/{result}")
            assert (
                where == str(world.root) or where.startswith(f"{world.root}/") or where.startswith(f"{world.other}")
            ), where
            if os.path.isfile(where):
                assert os.read(result, len(SECRET) + 1) != SECRET
        finally:
            os.close(result)
        return
    listings = result if isinstance(result, list) else [result] if isinstance(result, dict) else []
    for listing in listings:
        if "du" in listing:
            assert listing["du"] < len(SECRET)
            continue
        for entry in listing["files"]:
            assert entry["name"] not in OUTSIDE_ONLY_NAMES - {"secret.txt"} or entry["size"] != len(SECRET)
            assert entry["hash"] not in FORBIDDEN_HASHES
            assert entry["size"] not in (len(SECRET), len(CANARY))


def _must_refuse(category: str, method: str) -> bool:
    if category in ("invalid", "non-str"):
        return True
    if category == "escape":
        return method != "display"
    if category == "leaf":
        return method in FOLLOWING
    return False


def _run_table(world: World, category: str, paths: list[Any], methods: list[str]) -> int:
    view = world.view()
    before = world.snapshot()
    tried = 0
    try:
        for raw in paths:
            path = _expand(raw, world) if isinstance(raw, str) else raw
            for name in methods:
                tried += 1
                # Rebuild the root after anything that may have changed it (mkdir may have
                # made parents before failing), so every call meets the same hostile layout.
                dirty = name in ("mkdir", "open_dir") and category not in ("invalid", "non-str")
                try:
                    result = METHODS[name](view, path)
                except CommandError as exc:
                    message = str(exc)
                    assert str(world.base) not in message or category == "contained", (raw, name, message)
                else:
                    assert not _must_refuse(category, name), f"{name}({path!r}) was not refused"
                    _check_result(world, result)
                    dirty = dirty or name in WRITING
                assert world.snapshot() == before, f"{name}({path!r}) changed something outside"
                if dirty:
                    world.build_roots()
    finally:
        view.close()
    for probe in (Path("/") / PROBE, Path("/tmp") / PROBE, world.base / PROBE, world.base.parent / PROBE):
        assert not probe.exists(), probe
    return tried


@pytest.mark.parametrize(
    ("category", "paths"),
    [
        ("invalid", INVALID),
        ("escape", ESCAPE),
        ("leaf", LEAF_LINK),
        ("contained", CONTAINED),
        ("non-str", NON_STR),
    ],
)
def test_hostile_table(world: World, mode: str, category: str, paths: list[Any]) -> None:
    tried = _run_table(world, category, paths, list(METHODS))
    assert tried == len(paths) * len(METHODS)
    TRIED[f"{mode}:{category}"] = tried


def test_hostile_system_paths_read_only(world: World, mode: str) -> None:
    read_methods = [name for name in METHODS if name not in WRITING]
    _run_table(world, "contained", READ_ONLY, read_methods)


def test_table_is_big_enough() -> None:
    hostile = INVALID + ESCAPE + LEAF_LINK + CONTAINED + NON_STR
    assert len(hostile) >= 40
    assert len(set(map(repr, hostile))) == len(hostile)
    assert len(METHODS) >= 17


def test_error_messages_never_show_the_real_root(world: World, mode: str) -> None:
    with world.view() as view:
        for call in (
            lambda: view.ls("/nope"),
            lambda: view.ls("link_abs/secret.txt"),
            lambda: view.mkdir("file.txt/x"),
            lambda: view.mv("/file.txt", "/sub/inner.txt"),
            lambda: view.rm("/nope"),
            lambda: view.open_read("/sub"),
            lambda: view.du("link_loop/x"),
        ):
            with pytest.raises(CommandError) as info:
                call()
            assert str(world.base) not in str(info.value)


def test_inside_links_are_followed_and_outside_ones_are_not(world: World, mode: str) -> None:
    (world.root / "sub" / "back").symlink_to("../file.txt")
    with world.view() as view:
        fd = view.open_read("/sub/back")
        try:
            assert os.read(fd, 100) == b"inside file"
        finally:
            os.close(fd)
        assert {e["name"] for e in view.ls("/link_in")["files"]} >= {"inner.txt"}
        with pytest.raises(CommandError, match="outside the sandbox"):
            view.ls("/link_abs")
        with pytest.raises(CommandError, match="outside the sandbox"):
            view.open_read("/link_file_rel")


def test_a_long_chain_of_links_is_refused(world: World, mode: str) -> None:
    for i in range(45):
        os.symlink(f"c{i + 1}" if i < 44 else "file.txt", world.root / f"c{i}")
    with world.view() as view:
        with pytest.raises(CommandError, match="symbolic link"):
            view.open_read("/c0")
        fd = view.open_read("/c10")  # 34 links: within the kernel's limit of 40
        os.close(fd)


def test_prefix_look_alike_root_is_not_reachable(world: World, mode: str) -> None:
    # A root on srv/data must not reach srv/data-evil by any spelling.
    with world.view() as view:
        for path in ("/../data-evil/canary.txt", f"{world.evil}/canary.txt", "link_evil/canary.txt"):
            try:
                fd = view.open_read(path)
            except CommandError:
                continue
            _check_result(world, fd)


# -- the generated paths --------------------------------------------------------------------

_COMPONENTS = [
    "..",
    ".",
    "",
    "sub",
    "link_abs",
    "link_rel",
    "link_in",
    "link_updir",
    "link_loop",
    "link_evil",
    "link_chain",
    "link_proc",
    "sub/link_up2",
    "file.txt",
    "new",
    "x" * 255,
    "y" * 256,
    "é",
    "a:b",
    "\x00",
    ":",
    "\\",
    "outside",
    "secret.txt",
    "data-evil",
]
_PREFIXES = ["", "/", "other:", "other:/", "nope:", ":", "//", "./"]

hostile_paths = st.one_of(
    st.builds(
        lambda prefix, parts: prefix + "/".join(parts),
        st.sampled_from(_PREFIXES),
        st.lists(st.sampled_from(_COMPONENTS), max_size=12),
    ),
    st.text(alphabet=st.sampled_from(list("/.:\x00a\\é\u2025~%")), max_size=60),
    st.text(max_size=40),
)


def _inside(world: World, fd: int) -> bool:
    where = os.readlink(f"/proc/self/fd/{fd}")
    return any(where == str(top) or where.startswith(f"{top}/") for top in (world.root, world.other))


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(path=hostile_paths)
@example(path="::..")  # a file named ":.." in the blank root, displayed "/:.."
def test_any_path_resolves_inside_or_is_refused(world: World, mode: str, path: str) -> None:
    with world.view() as view:
        before = world.snapshot()
        try:
            shown = view.display(path)
        except CommandError:
            shown = None
        if shown is not None:
            assert shown.startswith(("/", "other:/"))
            # "/:.." is the blank root's file named ":..": only a named root has a prefix.
            inside = shown if shown.startswith("/") else shown.removeprefix("other:")
            assert ".." not in inside.split("/")
        openers: list[Callable[[], int]] = [
            lambda: view.open_dir_for_write(path, create=False),
            lambda: view.open_read(path),
            lambda: view.open_dir_for_write(path),
        ]
        for opener in openers:
            try:
                fd = opener()
            except CommandError:
                continue
            assert shown is not None  # anything that opens must also display
            try:
                assert _inside(world, fd)
                if os.path.isfile(f"/proc/self/fd/{fd}"):
                    assert os.read(fd, len(SECRET) + 1) != SECRET
            finally:
                os.close(fd)
        for action in (
            lambda: view.ls(path, hash_type="MD5"),
            lambda: view.du(path),
            lambda: view.mkdir(path),
            lambda: view.mkfile(path, 3),
        ):
            try:
                _check_result(world, action())
            except CommandError:
                pass
        assert world.snapshot() == before


# -- races -------------------------------------------------------------------------------------


class _Swapper(threading.Thread):
    """Flips root/swap between a real directory and a link to outside, as fast as it can."""

    def __init__(self, world: World) -> None:
        super().__init__(daemon=True)
        self.world = world
        self.stop = threading.Event()
        self.swaps = 0
        self.swap = world.root / "swap"
        self.aside = world.root / ".swap-aside"

    def run(self) -> None:
        targets = [str(self.world.outside), "../../outside", "link_abs", "sub/link_up2/outside"]
        while not self.stop.is_set():
            target = targets[self.swaps % len(targets)]
            try:
                self._to_link(target)
                self._to_dir()
            except OSError:
                self._repair()
            self.swaps += 1

    def _to_link(self, target: str) -> None:
        if self.aside.exists():
            _clear(self.aside)
            self.aside.rmdir()
        os.rename(self.swap, self.aside)
        os.symlink(target, self.swap)

    def _to_dir(self) -> None:
        os.unlink(self.swap)
        os.rename(self.aside, self.swap)
        for name in ("secret.txt", "f"):
            if not (self.swap / name).exists():
                (self.swap / name).write_bytes(b"inside " + name.encode())
        (self.swap / "sub").mkdir(exist_ok=True)

    def _repair(self) -> None:
        try:
            if self.swap.is_symlink() or self.swap.is_file():
                os.unlink(self.swap)
            if not self.swap.exists():
                if self.aside.is_dir():
                    os.rename(self.aside, self.swap)
                else:
                    self.swap.mkdir()
        except OSError:
            pass


def _race_operations(view: FileSystemView, world: World) -> list[Callable[[], Any]]:
    return [
        lambda: view.mkfile("/swap/secret.txt", 3, modify_existing=True),
        lambda: view.mkfile("/swap/planted.txt", 3),
        lambda: view.ls("/swap", hash_type="MD5"),
        lambda: view.ls("/swap/secret.txt", hash_type="S3"),
        lambda: view.ls_list(["/swap/sub"], stat_only=True),
        lambda: view.open_read("/swap/secret.txt"),
        lambda: view.open_dir_for_write("/swap/sub/made"),
        lambda: view.mv("/swap/secret.txt", "/stolen.txt"),
        lambda: view.mv("/swap/sub/deep.txt", "/stolen-deep.txt"),
        lambda: view.mv("/file.txt", "/swap/planted-by-mv.txt"),
        lambda: view.mv("/swap/planted-by-mv.txt", "/file.txt"),
        lambda: view.rm("/swap/secret.txt"),
        lambda: view.rm("/swap/sub"),
        lambda: view.mkdir("/swap/sub/a/b"),
        lambda: view.du("/swap"),
        lambda: view.rm("/stolen.txt"),
        lambda: view.rm("/stolen-deep.txt"),
    ]


def test_directory_swapped_for_an_outside_link_during_operations(world: World, mode: str) -> None:
    (world.root / "swap").mkdir()
    (world.outside / "sub" / "made").mkdir()  # so that "made" would be found outside too
    before = world.snapshot()
    swapper = _Swapper(world)
    done = succeeded = 0
    with world.view() as view:
        operations = _race_operations(view, world)
        swapper.start()
        try:
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                for operation in operations:
                    try:
                        result = operation()
                    except CommandError:
                        pass
                    else:
                        succeeded += 1
                        _check_result(world, result)
                    done += 1
        finally:
            swapper.stop.set()
            swapper.join(10)
    assert not swapper.is_alive()
    for stolen in ("stolen.txt", "stolen-deep.txt"):
        if (world.root / stolen).exists():
            assert (world.root / stolen).read_bytes() != SECRET
    assert world.snapshot() == before
    # The race really ran: many swaps, and operations that both succeeded and failed.
    print(f"race[{mode}]: {done} operations ({succeeded} succeeded), {swapper.swaps} swaps")
    assert swapper.swaps > 50
    assert 0 < succeeded < done


def test_tree_walks_survive_links_swapped_in(world: World, mode: str) -> None:
    """rm/du of a tree whose subdirectories are turned into outside links mid-walk."""
    before = world.snapshot()
    with world.view() as view:
        for round_ in range(8):
            tree = world.root / "tree"
            for i in range(12):
                (tree / f"d{i}" / "x").mkdir(parents=True)
                (tree / f"d{i}" / "x" / "secret.txt").write_bytes(b"inside")
            stop = threading.Event()

            def flip(tree: Path = tree, stop: threading.Event = stop) -> None:
                i = 0
                while not stop.is_set() and i < 12:
                    victim = tree / f"d{i}"
                    try:
                        os.rename(victim, tree / f"gone{i}")
                        os.symlink(world.outside, victim)
                    except OSError:
                        pass
                    i += 1

            flipper = threading.Thread(target=flip, daemon=True)
            flipper.start()
            try:
                if round_ % 2:
                    view.du("/tree")
                view.rm("/tree")
            except CommandError:
                pass
            finally:
                stop.set()
                flipper.join(10)
            if tree.exists() or tree.is_symlink():
                _clear(tree)
                tree.rmdir()
    assert world.snapshot() == before


@pytest.fixture(autouse=True, scope="module")
def _report_counts() -> Iterator[None]:
    yield
    if TRIED:
        total = sum(TRIED.values())
        print(f"\nhostile table: {total} (path, method) calls: {TRIED}")
