"""FileSystemView: the normal behaviour of every method and the seed's semantics.

Every test runs twice, once through openat2(2) and once through the component-by-component
fallback walk, because the server may run on either kind of kernel.
"""

from __future__ import annotations

import errno
import hashlib
import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jettui.constants import (
    ACCESS_EXECUTE,
    ACCESS_READ,
    ACCESS_WRITE,
    LS_TYPE_DIRECTORY,
    LS_TYPE_REGULAR,
    LS_TYPE_ROOT,
    LS_TYPE_SYMLINK,
)
from jettui.errors import CommandError
from jettui.server import fsview
from jettui.server.fsview import FileSystemView
from jettui.server.sandbox import MAX_NAME_BYTES, VirtualPath, check_sandbox_name, parse_path

MiB = 1024 * 1024

MODES = ["openat2", "walk"]


def _set_mode(monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    if mode == "openat2" and not fsview.openat2_available():
        pytest.skip("this kernel has no openat2(2)")
    monkeypatch.setattr(fsview, "USE_OPENAT2", mode == "openat2")


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    _set_mode(monkeypatch, request.param)
    return str(request.param)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    root = tmp_path / "srv" / "data"
    root.mkdir(parents=True)
    (tmp_path / "srv" / "other").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_bytes(b"outside secret")
    return root


@pytest.fixture
def view(mode: str, data: Path) -> Iterator[FileSystemView]:
    fs = FileSystemView({"": str(data), "other": str(data.parent / "other")})
    yield fs
    fs.close()


def _names(listing: dict[str, Any]) -> set[str]:
    return {entry["name"] for entry in listing["files"]}


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _s3_etag(payload: bytes, part: int = 8 * MiB) -> str:
    """The S3 multipart ETag, computed independently of the code under test."""
    parts = [payload[i : i + part] for i in range(0, len(payload), part)] or [b""]
    if len(parts) == 1:
        return hashlib.md5(payload).hexdigest()
    digests = b"".join(hashlib.md5(p).digest() for p in parts)
    return f"{hashlib.md5(digests).hexdigest()}-{len(parts)}"


# -- construction and roots -------------------------------------------------------------


def test_ls_roots_lists_each_root_as_type_10(view: FileSystemView, data: Path) -> None:
    roots = view.ls_roots()
    assert roots["path"] == ""
    by_name = {entry["name"]: entry for entry in roots["files"]}
    assert set(by_name) == {"/", "other"}
    st = data.stat()
    blank = by_name["/"]
    assert blank["type"] == LS_TYPE_ROOT
    assert blank["size"] == 0
    assert blank["mtime"] == st.st_mtime_ns // 10**9
    assert blank["mtimeus"] == st.st_mtime_ns // 1000
    assert blank["access"] == ACCESS_READ | ACCESS_WRITE | ACCESS_EXECUTE
    assert blank["hash"] == ""


def test_unsandboxed_view_is_one_root_at_slash(mode: str, data: Path) -> None:
    (data / "f.txt").write_bytes(b"abc")
    with FileSystemView(None) as fs:
        assert [entry["name"] for entry in fs.ls_roots()["files"]] == ["/"]
        listing = fs.ls(str(data))
        assert _names(listing) == {"f.txt"}
        # Absolute links are normal outside a sandbox: they resolve from the real root.
        (data / "abs").symlink_to(data)
        assert _names(fs.ls(str(data / "abs"))) == {"f.txt", "abs"}
        with pytest.raises(CommandError, match="unknown sandbox"):
            fs.ls("other:/")


def test_missing_root_is_left_out_and_reported_unavailable(mode: str, data: Path) -> None:
    with FileSystemView({"": str(data), "gone": str(data / "nope")}) as fs:
        assert [entry["name"] for entry in fs.ls_roots()["files"]] == ["/"]
        with pytest.raises(CommandError, match="'gone' is unavailable") as info:
            fs.ls("gone:/")
        assert str(data) not in str(info.value)


@pytest.mark.parametrize("name", ["a:b", "a/b", "bad\x00", "tab\there", "x" * 256, 7])
def test_bad_sandbox_names_are_refused(data: Path, name: object) -> None:
    with pytest.raises(CommandError):
        FileSystemView({name: str(data)})  # type: ignore[dict-item]


@pytest.mark.parametrize("directory", ["relative/dir", "", 5, "/with\x00nul"])
def test_bad_root_directories_are_refused(directory: object) -> None:
    with pytest.raises(CommandError, match="absolute directory"):
        FileSystemView({"x": directory})  # type: ignore[dict-item]


def test_no_roots_at_all(mode: str) -> None:
    with FileSystemView({}) as fs:
        assert fs.ls_roots() == {"path": "", "files": []}
        with pytest.raises(CommandError, match="no sandbox roots"):
            fs.ls("/")


def test_kernel_without_openat2_falls_back_to_the_walk(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSYS (old kernel, seccomp) from the probe switches to the walk, still confined."""

    def no_openat2(dir_fd: int, path: str, flags: int, resolve: int) -> int:
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))

    monkeypatch.setattr(fsview, "_openat2", no_openat2)
    monkeypatch.setattr(fsview, "_openat2_works", None)
    monkeypatch.setattr(fsview, "USE_OPENAT2", True)
    (data / "f").write_bytes(b"inside")
    (data / "out").symlink_to(tmp_path / "outside")
    with FileSystemView({"": str(data)}) as fs:
        assert _names(fs.ls("/")) == {"f", "out"}
        with pytest.raises(CommandError, match="outside the sandbox"):
            fs.open_read("/out/secret.txt")
    assert fsview.openat2_available() is False


def test_stray_os_errors_become_command_errors_without_real_names(
    view: FileSystemView, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> int:
        raise OSError(errno.EIO, "Input/output error", str(data / "real-name"))

    monkeypatch.setattr(FileSystemView, "_makedirs", broken)
    with pytest.raises(CommandError, match="mkdir failed: Input/output error") as info:
        view.mkdir("/x")
    assert str(data) not in str(info.value)

    def no_space(fd: int, size: int, fill_random: bool) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(data / "real-name"))

    monkeypatch.setattr(fsview, "_fill", no_space)
    with pytest.raises(CommandError, match="cannot create file /f: No space left") as info:
        view.mkfile("/f", 10)
    assert str(data) not in str(info.value)
    assert os.listdir(data) == []  # the temporary file was removed


def test_close_is_idempotent_and_releases_descriptors(mode: str, data: Path) -> None:
    before = _open_fds()
    fs = FileSystemView({"": str(data), "o": str(data)})
    assert _open_fds() == before + 2
    fs.close()
    fs.close()
    assert _open_fds() == before
    with pytest.raises(CommandError, match="closed"):
        fs.ls("/")
    with pytest.raises(CommandError, match="closed"):
        fs.ls_roots()


def test_close_during_a_call_waits_for_it(mode: str, data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A session may end while a worker thread is still inside a call: the root descriptors
    must stay valid (not be closed and their numbers reused) until that call returns."""
    (data / "d" / "e").mkdir(parents=True)
    (data / "d" / "e" / "f").write_bytes(b"12345")
    before = _open_fds()
    fs = FileSystemView({"": str(data)})
    real_scan = fsview._scan

    def scan_then_close(level: fsview._Level, remove: bool) -> int:
        fs.close()
        # Root descriptor still open: the number cannot have been handed to anyone else.
        assert _open_fds() > before
        return real_scan(level, remove)

    monkeypatch.setattr(fsview, "_scan", scan_then_close)
    assert fs.du("/d") == {"du": 5}
    assert _open_fds() == before
    with pytest.raises(CommandError, match="closed"):
        fs.du("/d")


# -- ls -----------------------------------------------------------------------------------


def test_ls_directory_entries(view: FileSystemView, data: Path) -> None:
    (data / "file.bin").write_bytes(b"x" * 1234)
    (data / "dir").mkdir()
    (data / "link").symlink_to("file.bin")
    os.mkfifo(data / "fifo")  # not one of the seed's types: left out
    os.utime(data / "file.bin", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    listing = view.ls("/")
    assert listing["path"] == "/"
    entries = {entry["name"]: entry for entry in listing["files"]}
    assert set(entries) == {"file.bin", "dir", "link"}
    assert entries["file.bin"] == {
        "name": "file.bin",
        "type": LS_TYPE_REGULAR,
        "size": 1234,
        "mtime": 1_600_000_000,
        "mtimeus": 1_600_000_000_123_456,
        "access": ACCESS_READ | ACCESS_WRITE,
        "hash": "",
    }
    assert entries["dir"]["type"] == LS_TYPE_DIRECTORY
    assert entries["dir"]["size"] == 0
    assert entries["link"]["type"] == LS_TYPE_SYMLINK
    assert entries["link"]["size"] == 0


def test_ls_echoes_the_path_and_lists_a_subdirectory(view: FileSystemView, data: Path) -> None:
    (data / "a" / "b").mkdir(parents=True)
    (data / "a" / "b" / "c.txt").write_text("c")
    assert view.ls("/a/b") == {"path": "/a/b", "files": [view.ls("/a/b/c.txt")["files"][0]]}
    assert _names(view.ls("a/./b/")) == {"c.txt"}
    assert _names(view.ls("/a/x/../b")) == {"c.txt"}  # ".." applied lexically inside


def test_ls_of_a_file_gives_its_entry(view: FileSystemView, data: Path) -> None:
    (data / "f").write_bytes(b"12345")
    listing = view.ls("/f")
    assert listing["path"] == "/f"
    assert [(e["name"], e["type"], e["size"]) for e in listing["files"]] == [("f", LS_TYPE_REGULAR, 5)]


def test_ls_directory_flag_describes_the_path_itself(view: FileSystemView, data: Path) -> None:
    (data / "d").mkdir()
    (data / "d" / "inner").write_text("i")
    (data / "ld").symlink_to("d")
    own = view.ls("/d", directory=True)["files"]
    assert [(e["name"], e["type"]) for e in own] == [("d", LS_TYPE_DIRECTORY)]
    # Not followed: the link itself is described.
    assert view.ls("/ld", directory=True)["files"][0]["type"] == LS_TYPE_SYMLINK
    # ...while a plain ls of a link to a directory lists the directory.
    assert _names(view.ls("/ld")) == {"inner"}
    root_entry = view.ls("/", directory=True)["files"][0]
    assert root_entry["name"] == "/"
    assert root_entry["type"] == LS_TYPE_DIRECTORY
    assert view.ls("other:/", directory=True)["files"][0]["name"] == "other"


def test_ls_missing_path_names_the_virtual_path_only(view: FileSystemView, data: Path) -> None:
    with pytest.raises(CommandError, match="no such file") as info:
        view.ls("/missing/thing")
    assert "/missing/thing" in str(info.value)
    assert str(data) not in str(info.value)


def test_ls_through_a_file_component(view: FileSystemView, data: Path) -> None:
    (data / "f").write_text("x")
    with pytest.raises(CommandError, match="not a directory"):
        view.ls("/f/inside")


def test_access_matches_faccessat_for_the_current_user(view: FileSystemView, data: Path) -> None:
    modes = [0o000, 0o400, 0o200, 0o100, 0o600, 0o644, 0o755, 0o700, 0o070, 0o007]
    for mode in modes:
        path = data / f"m{mode:03o}"
        path.write_text("x")
        path.chmod(mode)
    (data / "dir").mkdir(mode=0o500)
    got = {entry["name"]: entry["access"] for entry in view.ls("/")["files"]}
    for name, bits in got.items():
        want = 0
        for flag, bit in ((os.R_OK, ACCESS_READ), (os.W_OK, ACCESS_WRITE), (os.X_OK, ACCESS_EXECUTE)):
            if os.access(data / name, flag, effective_ids=True):
                want |= bit
        assert bits == want, name


_ACCESS_CHILD = """
import json, os, sys
from jettui.server.fsview import FileSystemView
root = sys.argv[1]
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
fs = FileSystemView({"": root})
got = {e["name"]: e["access"] for e in fs.ls("/")["files"]}
want = {}
for name in got:
    bits = 0
    for flag, bit in ((os.R_OK, 4), (os.W_OK, 2), (os.X_OK, 1)):
        if os.access(os.path.join(root, name), flag, effective_ids=True, follow_symlinks=False):
            bits |= bit
    want[name] = bits
print(json.dumps({"got": got, "want": want}))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to another user")
def test_access_for_an_unprivileged_user_uses_faccessat(mode: str) -> None:
    # A world-traversable directory, because tmp_path is private to root.
    base = tempfile.mkdtemp(prefix="jettui-access-")
    try:
        os.chmod(base, 0o755)
        for index, mode_bits in enumerate([0o644, 0o600, 0o604, 0o606, 0o755, 0o750, 0o705, 0o000]):
            for owner in ("root", "nobody"):
                path = os.path.join(base, f"{owner}-{index}")
                with open(path, "w") as handle:
                    handle.write("x")
                os.chmod(path, mode_bits)
                if owner == "nobody":
                    os.chown(path, 65534, 65534)
        os.mkdir(os.path.join(base, "dir-root"), 0o751)
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
        if mode == "walk":
            code = "import jettui.server.fsview as m; m.USE_OPENAT2 = False\n" + _ACCESS_CHILD
        else:
            code = _ACCESS_CHILD
        out = subprocess.run(
            [sys.executable, "-c", code, base],
            capture_output=True,
            text=True,
            env=env,
            check=True,
            timeout=30,
        )
        result = json.loads(out.stdout)
        assert len(result["got"]) == 17
        assert result["got"] == result["want"]
        assert result["got"]["nobody-1"] == ACCESS_READ | ACCESS_WRITE  # owner bits
        assert result["got"]["root-1"] == 0  # 0600 of another user
        assert result["got"]["root-2"] == ACCESS_READ  # "other" bits
    finally:
        shutil.rmtree(base)


# -- hashes -------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 8 * MiB - 1, 8 * MiB, 8 * MiB + 1, 17 * MiB + 5])
def test_hashes_match_hashlib(view: FileSystemView, data: Path, size: int) -> None:
    payload = os.urandom(size)
    (data / "blob").write_bytes(payload)
    (data / "sub").mkdir()
    md5 = {e["name"]: e["hash"] for e in view.ls("/", hash_type="MD5")["files"]}
    assert md5 == {"blob": hashlib.md5(payload).hexdigest(), "sub": ""}
    s3 = view.ls("/blob", hash_type="S3")["files"][0]["hash"]
    assert s3 == _s3_etag(payload)
    if size > 8 * MiB:
        assert s3.endswith("-3" if size > 16 * MiB else "-2")
    else:
        assert s3 == hashlib.md5(payload).hexdigest()


def test_hash_types_are_checked(view: FileSystemView, data: Path) -> None:
    (data / "f").write_bytes(b"abc")
    with pytest.raises(CommandError, match="MD5, S3"):
        view.ls("/", hash_type="SHA1")
    with pytest.raises(CommandError, match="MD5, S3"):
        view.ls_list(["/"], hash_type=5)  # type: ignore[arg-type]
    assert view.ls("/f", hash_type="md5")["files"][0]["hash"] == hashlib.md5(b"abc").hexdigest()
    assert view.ls("/f", hash_type="")["files"][0]["hash"] == ""


def test_hash_of_links_and_unreadable_files_is_empty(view: FileSystemView, data: Path) -> None:
    (data / "f").write_bytes(b"abc")
    (data / "l").symlink_to("f")
    hashes = {e["name"]: e["hash"] for e in view.ls("/", hash_type="MD5")["files"]}
    assert hashes == {"f": hashlib.md5(b"abc").hexdigest(), "l": ""}


# -- ls_list ------------------------------------------------------------------------------


def test_ls_list_maps_each_path_in_order(view: FileSystemView, data: Path) -> None:
    (data / "d").mkdir()
    (data / "d" / "x").write_bytes(b"xx")
    (data / "f").write_bytes(b"f")
    result = view.ls_list(["/d", "/f", "other:/"])
    assert [item["path"] for item in result] == ["/d", "/f", "other:/"]
    assert _names(result[0]) == {"x"}
    assert _names(result[1]) == {"f"}
    assert result[2]["files"] == []
    stat_only = view.ls_list(["/d"], stat_only=True, hash_type="MD5")
    assert [(e["name"], e["type"]) for e in stat_only[0]["files"]] == [("d", LS_TYPE_DIRECTORY)]
    hashed = view.ls_list(["/d"], hash_type="MD5")
    assert hashed[0]["files"][0]["hash"] == hashlib.md5(b"xx").hexdigest()


def test_ls_list_refuses_bad_arguments(view: FileSystemView) -> None:
    with pytest.raises(CommandError, match="list of paths"):
        view.ls_list("/")  # type: ignore[arg-type]
    with pytest.raises(CommandError, match="must be a string"):
        view.ls_list(["/", 3])  # type: ignore[list-item]
    with pytest.raises(CommandError, match="no such file"):
        view.ls_list(["/", "/nope"])


# -- mkdir --------------------------------------------------------------------------------


def test_mkdir_creates_parents_and_accepts_existing(view: FileSystemView, data: Path) -> None:
    view.mkdir("/a/b/c")
    assert (data / "a" / "b" / "c").is_dir()
    view.mkdir("/a/b/c")
    view.mkdir("/a")
    view.mkdir("/")
    view.mkdir("other:/x/y")
    assert (data.parent / "other" / "x" / "y").is_dir()


def test_mkdir_over_a_file_fails(view: FileSystemView, data: Path) -> None:
    (data / "f").write_text("keep")
    with pytest.raises(CommandError, match="exists and is not a directory"):
        view.mkdir("/f")
    with pytest.raises(CommandError, match="/f"):
        view.mkdir("/f/sub")
    assert (data / "f").read_text() == "keep"


def test_mkdir_through_an_inside_link(view: FileSystemView, data: Path) -> None:
    (data / "real").mkdir()
    (data / "alias").symlink_to("real")
    view.mkdir("/alias/new/deeper")
    assert (data / "real" / "new" / "deeper").is_dir()
    (data / "dangling").symlink_to("nowhere")
    with pytest.raises(CommandError, match="exists and is not a directory"):
        view.mkdir("/dangling")


# -- mkfile -------------------------------------------------------------------------------


def test_mkfile_creates_zero_filled_and_random_files(view: FileSystemView, data: Path) -> None:
    view.mkfile("/zeros", 100_000)
    assert (data / "zeros").read_bytes() == bytes(100_000)
    view.mkfile("/random", 3 * MiB + 7, fill_random=True)
    payload = (data / "random").read_bytes()
    assert len(payload) == 3 * MiB + 7
    assert payload.count(0) < len(payload) // 100
    view.mkfile("/empty", 0)
    assert (data / "empty").read_bytes() == b""
    assert sorted(os.listdir(data)) == ["empty", "random", "zeros"]  # no temporary left


def test_mkfile_existing_without_modify_succeeds_unchanged(view: FileSystemView, data: Path) -> None:
    (data / "f").write_bytes(b"original")
    before = (data / "f").stat()
    view.mkfile("/f", 5, fill_random=True)
    assert (data / "f").read_bytes() == b"original"
    assert (data / "f").stat().st_ino == before.st_ino
    (data / "d").mkdir()
    view.mkfile("/d", 5)  # "otherwise return success", whatever is there
    assert (data / "d").is_dir()


def test_mkfile_modify_existing_replaces(view: FileSystemView, data: Path) -> None:
    (data / "f").write_bytes(b"original")
    view.mkfile("/f", 3, modify_existing=True)
    assert (data / "f").read_bytes() == bytes(3)
    (data / "d").mkdir()
    with pytest.raises(CommandError, match="is a directory"):
        view.mkfile("/d", 3, modify_existing=True)


def test_mkfile_replaces_a_link_instead_of_writing_through_it(view: FileSystemView, data: Path) -> None:
    (data / "target").write_bytes(b"target")
    (data / "l").symlink_to("target")
    view.mkfile("/l", 2, modify_existing=True)
    assert (data / "target").read_bytes() == b"target"
    assert not (data / "l").is_symlink()
    assert (data / "l").read_bytes() == bytes(2)


@pytest.mark.parametrize("size", [-1, True, 1.5, "10", None])
def test_mkfile_refuses_bad_sizes(view: FileSystemView, data: Path, size: object) -> None:
    with pytest.raises(CommandError, match="non-negative integer"):
        view.mkfile("/f", size)  # type: ignore[arg-type]
    assert not (data / "f").exists()


def test_mkfile_needs_its_parent_and_refuses_the_root(view: FileSystemView) -> None:
    with pytest.raises(CommandError, match="no such file"):
        view.mkfile("/missing/f", 1)
    with pytest.raises(CommandError, match="sandbox root"):
        view.mkfile("/", 1)


# -- mv -----------------------------------------------------------------------------------


@pytest.fixture(params=[True, False], ids=["renameat2", "check-then-rename"])
def renameat2(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    monkeypatch.setattr(fsview, "USE_RENAMEAT2", request.param)
    return bool(request.param)


def test_mv_renames_and_moves(view: FileSystemView, data: Path, renameat2: bool) -> None:
    (data / "a").write_bytes(b"a")
    (data / "d").mkdir()
    view.mv("/a", "/d/b")
    assert (data / "d" / "b").read_bytes() == b"a"
    assert not (data / "a").exists()
    view.mv("/d", "other:/moved")
    assert (data.parent / "other" / "moved" / "b").read_bytes() == b"a"


def test_mv_never_clobbers(view: FileSystemView, data: Path, renameat2: bool) -> None:
    (data / "a").write_bytes(b"a")
    (data / "b").write_bytes(b"b")
    (data / "d").mkdir()
    (data / "e").mkdir()
    with pytest.raises(CommandError, match="destination exists"):
        view.mv("/a", "/b")
    with pytest.raises(CommandError, match="destination exists"):
        view.mv("/d", "/e")
    with pytest.raises(CommandError, match="destination exists"):
        view.mv("/a", "/a")
    assert (data / "a").read_bytes() == b"a"
    assert (data / "b").read_bytes() == b"b"


def test_mv_moves_a_link_not_its_target(view: FileSystemView, data: Path, renameat2: bool) -> None:
    (data / "t").write_bytes(b"t")
    (data / "l").symlink_to("t")
    view.mv("/l", "/l2")
    assert os.readlink(data / "l2") == "t"
    assert (data / "t").read_bytes() == b"t"


def test_mv_errors(view: FileSystemView, data: Path, renameat2: bool) -> None:
    (data / "d" / "sub").mkdir(parents=True)
    with pytest.raises(CommandError, match="does not exist"):
        view.mv("/nope", "/x")
    with pytest.raises(CommandError, match="no such file"):
        view.mv("/d", "/missing/x")
    with pytest.raises(CommandError, match="into itself"):
        view.mv("/d", "/d/sub/d")
    with pytest.raises(CommandError, match="sandbox root"):
        view.mv("/", "/x")
    with pytest.raises(CommandError, match="sandbox root"):
        view.mv("/d", "other:/")
    assert (data / "d" / "sub").is_dir()


# -- rm -----------------------------------------------------------------------------------


def test_rm_file_link_and_tree(view: FileSystemView, data: Path, tmp_path: Path) -> None:
    (data / "f").write_text("f")
    (data / "t").write_text("t")
    (data / "l").symlink_to("t")
    (data / "tree" / "a" / "b").mkdir(parents=True)
    (data / "tree" / "a" / "b" / "x").write_text("x")
    (data / "tree" / "out").symlink_to(tmp_path / "outside")  # removed, never followed
    (data / "tree" / "loop").symlink_to(".")
    view.rm("/f")
    view.rm("/l")
    view.rm("/tree")
    assert sorted(os.listdir(data)) == ["t"]
    assert (tmp_path / "outside" / "secret.txt").read_bytes() == b"outside secret"


def test_rm_refuses_root_and_missing(view: FileSystemView) -> None:
    with pytest.raises(CommandError, match="sandbox root"):
        view.rm("/")
    with pytest.raises(CommandError, match="sandbox root"):
        view.rm("other:/a/..")
    with pytest.raises(CommandError, match="no such file"):
        view.rm("/nope")


def _deep_tree(base: Path, depth: int) -> Path:
    """A chain of ``depth`` directories, made relative to descriptors (the full path is
    longer than PATH_MAX)."""
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for level in range(depth):
            os.mkdir("d", dir_fd=fd)
            with open(os.open(f"f{level}", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "wb") as handle:
                handle.write(b"12")
            nxt = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nxt
    finally:
        os.close(fd)
    return base


def test_rm_and_du_of_a_very_deep_tree(view: FileSystemView, data: Path) -> None:
    (data / "deep").mkdir()
    depth = 2 * fsview.FD_WINDOW + 40  # deep enough to close and re-enter ancestors
    _deep_tree(data / "deep", depth)
    before = _open_fds()
    # Leave Python far less stack than the tree is deep: a recursive walk would fail.
    old_limit = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack()) + 40)
    try:
        total = view.du("/deep")
        view.rm("/deep")
    finally:
        sys.setrecursionlimit(old_limit)
    assert total == {"du": 2 * depth}
    assert not (data / "deep").exists()
    assert _open_fds() == before


def test_tree_walk_stops_when_an_ancestor_is_moved(
    view: FileSystemView, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Re-entering a closed ancestor through ".." must land where we left it."""
    monkeypatch.setattr(fsview, "FD_WINDOW", 2)
    chain = data / "t" / "a" / "b" / "c" / "d"
    chain.mkdir(parents=True)
    real_scan = fsview._scan

    def scan_and_move(level: fsview._Level, remove: bool) -> int:
        if level.name == "d":  # deepest: move "b" (a closed ancestor) elsewhere
            os.rename(data / "t" / "a" / "b", data / "moved-b")
        return real_scan(level, remove)

    monkeypatch.setattr(fsview, "_scan", scan_and_move)
    before = _open_fds()
    with pytest.raises(CommandError, match="moved while it was being walked"):
        view.rm("/t")
    assert _open_fds() == before  # nothing leaked on the way out
    # "b" was followed as the directory we had entered (same inode, new name); "a", whose
    # ".." no longer matched, stopped the walk before anything else was removed.
    assert (data / "moved-b").is_dir()
    assert (data / "t" / "a").is_dir()


def test_rm_of_a_wide_tree(view: FileSystemView, data: Path) -> None:
    for i in range(30):
        sub = data / "wide" / f"d{i}"
        sub.mkdir(parents=True)
        for j in range(20):
            (sub / f"f{j}").write_bytes(b"x")
    assert view.du("/wide") == {"du": 600}
    view.rm("/wide")
    assert os.listdir(data) == []


# -- du -----------------------------------------------------------------------------------


def test_du_sums_regular_files_without_following_links(view: FileSystemView, data: Path, tmp_path: Path) -> None:
    (data / "a").write_bytes(b"x" * 100)
    (data / "d" / "e").mkdir(parents=True)
    (data / "d" / "e" / "b").write_bytes(b"x" * 23)
    (data / "d" / "big-out").symlink_to(tmp_path / "outside" / "secret.txt")
    (data / "d" / "loop").symlink_to("..")
    (data / "ld").symlink_to("d")
    assert view.du("/") == {"du": 123}
    assert view.du("/d") == {"du": 23}
    assert view.du("/a") == {"du": 100}
    assert view.du("/ld") == {"du": 0}  # the link itself is not followed
    assert view.du("other:/") == {"du": 0}
    with pytest.raises(CommandError, match="no such file"):
        view.du("/nope")


# -- open_read / open_dir_for_write ----------------------------------------------------


def test_open_read(view: FileSystemView, data: Path) -> None:
    (data / "f").write_bytes(b"content")
    (data / "l").symlink_to("f")
    for path in ("/f", "/l"):
        fd = view.open_read(path)
        try:
            assert os.read(fd, 100) == b"content"
            assert os.get_blocking(fd)
            assert os.get_inheritable(fd) is False
        finally:
            os.close(fd)
    (data / "d").mkdir()
    with pytest.raises(CommandError, match="not a regular file"):
        view.open_read("/d")
    with pytest.raises(CommandError, match="not a regular file"):
        view.open_read("/")
    os.mkfifo(data / "fifo")  # must not hang waiting for a writer
    with pytest.raises(CommandError, match="not a regular file"):
        view.open_read("/fifo")


def test_open_dir_for_write(view: FileSystemView, data: Path) -> None:
    fd = view.open_dir_for_write("/incoming/x")
    try:
        with open(os.open("f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "wb") as handle:
            handle.write(b"w")
        os.fsync(fd)
    finally:
        os.close(fd)
    assert (data / "incoming" / "x" / "f").read_bytes() == b"w"
    fd = view.open_dir_for_write("/incoming", create=False)
    os.close(fd)
    with pytest.raises(CommandError, match="no such file"):
        view.open_dir_for_write("/absent", create=False)
    (data / "file").write_text("f")
    with pytest.raises(CommandError, match="not a directory"):
        view.open_dir_for_write("/file")
    with pytest.raises(CommandError, match="not a directory"):
        view.open_dir_for_write("/file", create=False)


# -- display and path rules -----------------------------------------------------------------


def test_display(view: FileSystemView) -> None:
    assert view.display("") == "/"
    assert view.display("a//b/./c/") == "/a/b/c"
    assert view.display("/a/../b") == "/b"
    assert view.display("other:") == "other:/"
    assert view.display("other:x/y") == "other:/x/y"
    assert view.display(":/x") == "/x"
    assert view.display("/a:b") == "/a:b"
    with pytest.raises(CommandError, match="unknown sandbox"):
        view.display("a:b")
    with pytest.raises(CommandError, match="leaves the sandbox"):
        view.display("other:/..")


def test_parse_path_rules() -> None:
    roots = {"", "n"}
    assert parse_path("n:/a/b", roots) == VirtualPath("n", ("a", "b"))
    assert parse_path("a\\..\\b", roots) == VirtualPath("", ("a\\..\\b",))
    assert parse_path("x" * MAX_NAME_BYTES, roots).parts == ("x" * MAX_NAME_BYTES,)
    with pytest.raises(CommandError, match="longer than 255"):
        parse_path("é" * 128, roots)  # 256 bytes in UTF-8
    with pytest.raises(CommandError, match="longer than 4095"):
        parse_path("/a" * 2048, roots)
    with pytest.raises(CommandError, match="needs a sandbox name"):
        parse_path("/x", {"n"})
    with pytest.raises(CommandError, match="cannot be encoded"):
        parse_path("\ud800", roots)
    assert check_sandbox_name("") == ""
    long_message = str(pytest.raises(CommandError, parse_path, "\x00" + "z" * 10_000, roots).value)
    assert len(long_message) < 300


# -- performance ---------------------------------------------------------------------------


def _bare_listing_seconds(directory: Path) -> float:
    """The floor: scandir plus one lstat per entry, nothing else."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        start = time.perf_counter()
        with os.scandir(fd) as entries:
            for entry in entries:
                entry.stat(follow_symlinks=False)
        return time.perf_counter() - start
    finally:
        os.close(fd)


def _make_entries(directory: Path, count: int) -> Path:
    directory.mkdir()
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in range(count):
            os.close(os.open(f"file-{i:06d}", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
    finally:
        os.close(fd)
    return directory


def _check_ls_speed(directory: Path, count: int) -> tuple[float, float]:
    with FileSystemView({"": str(directory)}) as view:
        # Alternate the two and keep the best of each, so a busy machine hurts both alike.
        spent = floor = float("inf")
        for _ in range(5):
            spent = min(spent, _timed_ls(view, "/", count))
            floor = min(floor, _bare_listing_seconds(directory))
    print(f"ls of {count} entries: {spent:.3f} s (scandir+lstat alone: {floor:.3f} s)")
    return spent, floor


def _timed_ls(view: FileSystemView, path: str, count: int) -> float:
    start = time.perf_counter()
    listing = view.ls(path)
    spent = time.perf_counter() - start
    assert len(listing["files"]) == count
    return spent


def _scratch_dir(tmp_path: Path) -> Path:
    # Creating the entries is the slow part on a busy disk; tmpfs when there is one.
    if os.access("/dev/shm", os.W_OK):
        return Path(tempfile.mkdtemp(prefix="jettui-ls-speed-", dir="/dev/shm"))
    return Path(tempfile.mkdtemp(prefix="jettui-ls-speed-", dir=tmp_path))


@pytest.fixture(scope="module")
def big_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    base = _scratch_dir(tmp_path_factory.mktemp("ls-speed"))
    try:
        yield _make_entries(base / "big", 10_000)
    finally:
        shutil.rmtree(base)


def test_ls_has_little_overhead_over_lstat(mode: str, big_dir: Path) -> None:
    spent, floor = _check_ls_speed(big_dir, 10_000)
    # An extra system call or a Python function call per entry would double the floor.
    assert spent < 1.8 * floor + 0.02


@pytest.mark.slow
def test_ls_of_100k_entries_is_fast(mode: str, tmp_path: Path) -> None:
    base = _scratch_dir(tmp_path)
    try:
        spent, floor = _check_ls_speed(_make_entries(base / "big", 100_000), 100_000)
    finally:
        shutil.rmtree(base)
    assert spent < 1.8 * floor + 0.02
    # The target on an ordinary machine; a VM where one lstat costs 4 µs has no room.
    assert spent < 0.5 or floor > 0.3


def test_every_public_method_waits_for_close() -> None:
    """Each public call is counted in flight (_in_use), so close() defers closing the roots
    until it returns; exactly once, or a call would count itself twice."""
    methods = {name: getattr(FileSystemView, name) for name in vars(FileSystemView) if not name.startswith("_")}
    methods.pop("close")
    for name, method in methods.items():
        assert hasattr(method, "__wrapped__"), f"{name} is not guarded by _in_use"
        assert not hasattr(method.__wrapped__, "__wrapped__"), f"{name} is guarded twice"
