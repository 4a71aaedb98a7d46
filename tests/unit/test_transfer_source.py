"""build_manifest and FileSource on real trees through real (sandboxed) FileSystemViews.

The confinement tests run twice, through openat2(2) and through fsview's
component-by-component fallback, because the server may run on either kind of kernel.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from jettui.constants import (
    FILETYPE_DIRECTORY,
    FILETYPE_REGULAR_FILE,
    SYMLINKS_FOLLOW,
    SYMLINKS_IGNORE,
    TRANSFER_FLAG_READ,
    TRANSFER_FLAG_READ_WRITE,
    TRANSFER_FLAG_WRITE,
)
from jettui.errors import CommandError
from jettui.server import fsview
from jettui.server.fsview import FileSystemView
from jettui.transfer.digest import digest_of
from jettui.transfer.source import FileSource, SourceChanged, build_manifest, normalize_dest_path

SECRET = b"outside the sandbox: must never be read"


@pytest.fixture(params=["openat2", "walk"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "openat2" and not fsview.openat2_available():
        pytest.skip("this kernel has no openat2(2)")
    monkeypatch.setattr(fsview, "USE_OPENAT2", request.param == "openat2")
    return str(request.param)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_bytes(SECRET)
    data = tmp_path / "src"
    data.mkdir()
    return data


@pytest.fixture
def fs(root: Path) -> Iterator[FileSystemView]:
    view = FileSystemView({"": str(root)})
    yield view
    view.close()


def _digest(data: bytes) -> bytes:
    return digest_of(data)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# -- build_manifest ------------------------------------------------------------------------------


def test_single_file_records_size_mtime_mode_and_digest(fs: FileSystemView, root: Path) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 17)  # more than one hashing chunk
    path = root / "data.bin"
    path.write_bytes(payload)
    path.chmod(0o750)
    os.utime(path, ns=(1, 1_700_000_000_123_456_789))
    manifest = build_manifest(fs, {"/docs/readme.bin": "/data.bin"})
    assert len(manifest) == 1
    entry = manifest[0]
    assert entry.path == "docs/readme.bin"  # absolute destinations are re-rooted: relative
    assert (entry.size, entry.kind, entry.mode) == (len(payload), FILETYPE_REGULAR_FILE, 0o750)
    assert entry.mtime_ns == 1_700_000_000_123_456_789
    assert entry.digest == _digest(payload)
    assert manifest.sources == ["/data.bin"] == manifest.src_paths
    assert manifest.total_size == len(payload)


def test_tree_of_1000_small_files_and_empty_directories(fs: FileSystemView, root: Path) -> None:
    expected: dict[str, bytes] = {}
    for i in range(1000):
        rel = f"d{i % 10}/s{i % 7}/f{i:04d}.txt"
        (root / "tree" / rel).parent.mkdir(parents=True, exist_ok=True)
        body = f"file {i}\n".encode() * (i % 5)  # includes zero-byte files
        (root / "tree" / rel).write_bytes(body)
        expected[f"out/{rel}"] = body
    (root / "tree" / "empty" / "deeper").mkdir(parents=True)
    (root / "tree" / "lonely").mkdir()
    before = _open_fds()
    manifest = build_manifest(fs, {"out": "/tree"})
    assert _open_fds() == before
    files = {e.path: e for e in manifest if e.kind == FILETYPE_REGULAR_FILE}
    dirs = {e.path for e in manifest if e.kind == FILETYPE_DIRECTORY}
    assert set(files) == set(expected)
    for path, body in expected.items():
        assert files[path].size == len(body)
        assert files[path].digest == _digest(body)
    # Only directories with nothing below them are entries; "empty" has a subdirectory.
    assert dirs == {"out/empty/deeper", "out/lonely"}
    for entry, src in zip(manifest, manifest.sources, strict=True):
        assert src == "/tree/" + entry.path.removeprefix("out/")


def test_symlinks_inside_the_sandbox_followed_or_ignored(fs: FileSystemView, root: Path) -> None:
    (root / "t" / "real").mkdir(parents=True)
    (root / "t" / "real" / "a.txt").write_bytes(b"alpha")
    (root / "t" / "file_link").symlink_to("real/a.txt")
    (root / "t" / "dir_link").symlink_to("real")
    (root / "t" / "only_links").mkdir()
    (root / "t" / "only_links" / "l").symlink_to("../real/a.txt")

    followed = build_manifest(fs, {"": "/t"}, SYMLINKS_FOLLOW)
    by_path = {e.path: e for e in followed}
    assert set(by_path) == {"real/a.txt", "file_link", "dir_link/a.txt", "only_links/l"}
    assert by_path["file_link"].digest == _digest(b"alpha") == by_path["dir_link/a.txt"].digest
    assert followed.sources[followed.index(by_path["dir_link/a.txt"])] == "/t/dir_link/a.txt"

    ignored = build_manifest(fs, {"": "/t"}, SYMLINKS_IGNORE)
    by_path = {e.path: e for e in ignored}
    # A directory whose only content is ignored links is still created, as an empty one.
    assert set(by_path) == {"real/a.txt", "only_links"}
    assert by_path["only_links"].kind == FILETYPE_DIRECTORY
    assert sorted(ignored.skipped) == ["/t/dir_link", "/t/file_link", "/t/only_links/l"]


@pytest.mark.parametrize("target", ["abs_dir", "rel_dir", "abs_file", "rel_file", "proc"])
def test_symlink_leading_out_of_the_sandbox_is_refused(mode: str, fs: FileSystemView, root: Path, target: str) -> None:
    outside = root.parent / "outside"
    link = {
        "abs_dir": str(outside),
        "rel_dir": "../../outside",
        "abs_file": str(outside / "secret.txt"),
        "rel_file": "../../outside/secret.txt",
        "proc": f"/proc/self/root{outside}",
    }[target]
    (root / "t").mkdir()
    (root / "t" / "ok.txt").write_bytes(b"ok")
    (root / "t" / "evil").symlink_to(link)
    with pytest.raises(CommandError, match="outside the sandbox|symbolic link") as info:
        build_manifest(fs, {"x": "/t"}, SYMLINKS_FOLLOW)
    assert str(root) not in info.value.message  # messages name virtual paths only
    # Ignoring links is the way to send such a tree; nothing from outside is read.
    manifest = build_manifest(fs, {"x": "/t"}, SYMLINKS_IGNORE)
    assert [e.path for e in manifest] == ["x/ok.txt"]
    assert all(e.digest != _digest(SECRET) for e in manifest)
    # Naming the link itself as the source is refused too.
    with pytest.raises(CommandError):
        build_manifest(fs, {"x": "/t/evil"})


def test_symlink_loop_is_refused_not_expanded_forever(fs: FileSystemView, root: Path) -> None:
    (root / "loop" / "sub").mkdir(parents=True)
    (root / "loop" / "sub" / "f").write_bytes(b"f")
    (root / "loop" / "sub" / "up").symlink_to("..")
    with pytest.raises(CommandError, match="symbolic link loop"):
        build_manifest(fs, {"x": "/loop"}, SYMLINKS_FOLLOW)
    assert [e.path for e in build_manifest(fs, {"x": "/loop"}, SYMLINKS_IGNORE)] == ["x/sub/f"]


def test_max_files_is_enforced_with_the_limit_named(fs: FileSystemView, root: Path) -> None:
    (root / "many").mkdir()
    for i in range(30):
        (root / "many" / f"{i}").write_bytes(b"")
    assert len(build_manifest(fs, {"m": "/many"}, max_files=30)) == 30
    with pytest.raises(CommandError, match="more than 29 files"):
        build_manifest(fs, {"m": "/many"}, max_files=29)


@pytest.mark.parametrize(
    ("raw", "normal"),
    [("/a/./b//c", "a/b/c"), ("a/b/", "a/b"), ("ü/日本/\\x", "ü/日本/\\x"), ("a:b/c", "a:b/c")],
)
def test_destination_paths_are_normalised(raw: str, normal: str) -> None:
    assert normalize_dest_path(raw) == normal


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("a/../b", r"contains '\.\.'"),
        ("../x", r"contains '\.\.'"),
        ("a\x00b", "NUL"),
        ("x" * 256, "longer than 255 bytes"),
        ("é" * 128, "longer than 255 bytes"),  # 256 bytes in UTF-8
        ("/", "names no file"),
        ("bad\udcffname", "not valid UTF-8"),
        (5, "must be a string"),
    ],
)
def test_hostile_destination_paths_are_refused(raw: object, message: str) -> None:
    with pytest.raises(CommandError, match=message):
        normalize_dest_path(raw)


def test_hostile_destinations_in_mappings_are_refused(fs: FileSystemView, root: Path) -> None:
    (root / "f").write_bytes(b"1")
    for dest in ("../escape", "a/../../b", "n\x00ul", "y" * 300):
        with pytest.raises(CommandError):
            build_manifest(fs, {dest: "/f"})
    with pytest.raises(CommandError, match="name it"):
        build_manifest(fs, {"/": "/f"})  # a file cannot become the destination directory


def test_mapping_items_with_type_and_bad_values(fs: FileSystemView, root: Path) -> None:
    (root / "f").write_bytes(b"1")
    (root / "d").mkdir()
    (root / "d" / "g").write_bytes(b"2")
    ok = build_manifest(fs, {"a": {"srcPath": "/f", "type": FILETYPE_REGULAR_FILE}, "b": {"srcPath": "/d"}})
    assert [e.path for e in ok] == ["a", "b/g"]
    with pytest.raises(CommandError, match="not a directory"):
        build_manifest(fs, {"a": {"srcPath": "/f", "type": FILETYPE_DIRECTORY}})
    with pytest.raises(CommandError, match="not a regular file"):
        build_manifest(fs, {"a": {"srcPath": "/d", "type": FILETYPE_REGULAR_FILE}})
    with pytest.raises(CommandError, match="mapping type"):
        build_manifest(fs, {"a": {"srcPath": "/f", "type": 99}})
    with pytest.raises(CommandError, match="must be a string"):
        build_manifest(fs, {"a": 5})  # type: ignore[dict-item]
    with pytest.raises(CommandError, match="non-empty"):
        build_manifest(fs, {})
    with pytest.raises(CommandError, match="no such file"):
        build_manifest(fs, {"a": "/missing"})
    with pytest.raises(CommandError, match="unknown symlinks mode"):
        build_manifest(fs, {"a": "/f"}, symlinks=7)


def test_conflicting_destinations_are_refused(fs: FileSystemView, root: Path) -> None:
    (root / "f").write_bytes(b"1")
    (root / "d").mkdir()
    (root / "d" / "f").write_bytes(b"2")
    with pytest.raises(CommandError, match="mapped more than once"):
        build_manifest(fs, {"x/f": "/f", "x": "/d"})
    with pytest.raises(CommandError, match="is a file but"):
        build_manifest(fs, {"x": "/f", "x/y": "/f"})
    # The file comes after a tree that already had its parents checked (x/d, x): still seen.
    with pytest.raises(CommandError, match="'x/d' is a file but 'x/d/g' needs it"):
        build_manifest(fs, {"x/e": "/d", "x/d": "/f", "x/d/g": "/f"})
    with pytest.raises(CommandError, match="'x/d/g' is a file but 'x/d/g/h' needs it"):
        build_manifest(fs, {"x/e": "/d", "x/d/e": "/d", "x/d/g/h": "/f", "x/d/g": "/f"})


def test_special_files_and_non_utf8_names(fs: FileSystemView, root: Path) -> None:
    (root / "s").mkdir()
    os.mkfifo(root / "s" / "fifo")
    (root / "s" / "plain").write_bytes(b"p")
    manifest = build_manifest(fs, {"o": "/s"})  # a FIFO must not hang the build
    assert [e.path for e in manifest] == ["o/plain"]
    assert manifest.skipped == ["/s/fifo"]
    with open(os.open(bytes(root / "s") + b"/bad\xff", os.O_CREAT | os.O_WRONLY, 0o644), "wb"):
        pass
    with pytest.raises(CommandError, match="not valid UTF-8"):
        build_manifest(fs, {"o": "/s"})


def test_named_sandbox_roots_and_source_paths(tmp_path: Path) -> None:
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "clip.mov").write_bytes(b"clip")
    with FileSystemView({"media": str(tmp_path / "media")}) as view:
        manifest = build_manifest(view, {"in/clip.mov": "media:/clip.mov", "all": "media:/"})
        assert [e.path for e in manifest] == ["in/clip.mov", "all/clip.mov"]
        assert manifest.sources == ["media:/clip.mov", "media:/clip.mov"]


# -- FileSource ---------------------------------------------------------------------------------


def _tree(root: Path, count: int, size: int) -> list[bytes]:
    (root / "s").mkdir(exist_ok=True)
    bodies = [os.urandom(size + i) for i in range(count)]
    for i, body in enumerate(bodies):
        (root / "s" / f"f{i:02d}").write_bytes(body)
    return bodies


def test_file_source_reads_exact_blocks(fs: FileSystemView, root: Path) -> None:
    bodies = _tree(root, 3, 10_000)
    manifest = build_manifest(fs, {"o": "/s"})
    with FileSource(fs, manifest, manifest.sources, TRANSFER_FLAG_READ_WRITE) as source:
        for i, body in enumerate(bodies):
            for offset in range(0, len(body), 4096):
                length = min(4096, len(body) - offset)
                assert source.read(i, offset, length) == body[offset : offset + length]
        with pytest.raises(ValueError, match="past the end"):
            source.read(0, 9_000, 2_000)
        assert source.bytes_read == sum(map(len, bodies))
    with pytest.raises(CommandError, match="closed"):
        source.read(0, 0, 1)


def test_file_source_keeps_a_bounded_lru_of_descriptors(fs: FileSystemView, root: Path) -> None:
    bodies = _tree(root, 12, 100)
    manifest = build_manifest(fs, {"o": "/s"})
    before = _open_fds()
    source = FileSource(fs, manifest, manifest.sources, TRANSFER_FLAG_READ_WRITE, max_open=4)
    for _ in range(2):
        for i, body in enumerate(bodies):
            assert source.read(i, 10, 20) == body[10:30]
            assert _open_fds() - before <= 4 + 1  # and the descriptor of their directory
    source.close()
    assert _open_fds() == before


def test_without_read_flag_nothing_is_read(fs: FileSystemView, root: Path) -> None:
    _tree(root, 2, 5000)
    manifest = build_manifest(fs, {"o": "/s"})
    for path in (root / "s").iterdir():
        path.unlink()  # benchmark mode must not even open them
    source = FileSource(fs, manifest, manifest.sources, TRANSFER_FLAG_WRITE)
    assert source.read(1, 1000, 3000) == bytes(3000)
    assert source.bytes_read == 0


def test_source_changed_before_the_transfer_is_detected_on_open(fs: FileSystemView, root: Path) -> None:
    _tree(root, 1, 5000)
    manifest = build_manifest(fs, {"o": "/s"})
    os.utime(root / "s" / "f00", ns=(1, 2))  # same size, other mtime
    source = FileSource(fs, manifest, manifest.sources, TRANSFER_FLAG_READ)
    with pytest.raises(SourceChanged, match="changed during the transfer") as info:
        source.read(0, 0, 100)
    assert source.changed is info.value
    assert info.value.path == "/s/f00"


def test_source_changed_during_the_transfer_is_detected(fs: FileSystemView, root: Path) -> None:
    body = _tree(root, 1, 256 * 1024)[0]
    manifest = build_manifest(fs, {"o": "/s"})
    source = FileSource(fs, manifest, manifest.sources, TRANSFER_FLAG_READ, recheck_bytes=64 * 1024)
    assert source.read(0, 0, 4096) == body[:4096]
    with open(root / "s" / "f00", "r+b") as handle:  # rewritten in place: size unchanged
        handle.seek(100_000)
        handle.write(b"new data")
    os.utime(root / "s" / "f00", ns=(1, manifest[0].mtime_ns + 1_000_000))
    with pytest.raises(SourceChanged):
        for offset in range(4096, len(body), 4096):
            source.read(0, offset, 4096)
    assert source.changed is not None


def test_source_truncated_during_the_transfer_is_detected(fs: FileSystemView, root: Path) -> None:
    _tree(root, 1, 100_000)
    manifest = build_manifest(fs, {"o": "/s"})
    source = FileSource(fs, manifest, manifest.sources, TRANSFER_FLAG_READ)
    source.read(0, 0, 10)
    os.truncate(root / "s" / "f00", 50_000)
    with pytest.raises(SourceChanged, match="shorter"):
        source.read(0, 60_000, 4096)


def test_source_changed_at_the_last_block_is_detected(fs: FileSystemView, root: Path) -> None:
    _tree(root, 1, 10_000)
    manifest = build_manifest(fs, {"o": "/s"})
    source = FileSource(fs, manifest, manifest.sources, TRANSFER_FLAG_READ)  # default recheck: 64 MiB
    source.read(0, 0, 4096)
    with open(root / "s" / "f00", "ab") as handle:
        handle.write(b"grown")
    with pytest.raises(SourceChanged, match="size"):
        source.read(0, 4096, 10_000 - 4096)  # reaching the end re-checks


def test_a_file_read_whole_is_hashed_checked_and_closed(fs: FileSystemView, root: Path) -> None:
    bodies = _tree(root, 3, 4096)
    manifest = build_manifest(fs, {"o": "/s"}, digests=False)
    before = _open_fds()
    with FileSource(fs, manifest, manifest.sources, TRANSFER_FLAG_READ_WRITE) as source:
        assert source.read(0, 0, 4096) == bodies[0]
        assert _open_fds() - before <= 1  # the directory's descriptor only: the file is closed
        assert source.digest(0) == _digest(bodies[0]) and source.bytes_read == 4096
        assert source.read(0, 0, 4096) == bodies[0]  # a resend reads it again
        # Grown or shrunk with the manifest's mtime put back.
        for index, delta in ((1, 1), (2, -1)):
            path = root / "s" / f"f{index:02d}"
            size = manifest[index].size
            os.truncate(path, size + delta)
            os.utime(path, ns=(1, manifest[index].mtime_ns))
            with pytest.raises(SourceChanged, match=f"size {size + delta}, manifest {size}"):
                source.read(index, 0, size)
    assert _open_fds() == before


def test_a_file_read_whole_that_was_replaced_or_touched_is_refused(fs: FileSystemView, root: Path) -> None:
    """The whole-file read checks once, after its read: a directory or FIFO put in the
    file's place is named (the read fails, nothing hangs), a touched file is a change."""
    _tree(root, 3, 4096)
    manifest = build_manifest(fs, {"o": "/s"}, digests=False)
    (root / "s" / "f00").unlink()
    (root / "s" / "f00").mkdir()
    (root / "s" / "f01").unlink()
    os.mkfifo(root / "s" / "f01")
    os.utime(root / "s" / "f02", ns=(1, manifest[2].mtime_ns + 1))
    with FileSource(fs, manifest, manifest.sources, TRANSFER_FLAG_READ_WRITE) as source:
        whole = source._read_whole
        calls: list[int] = []
        source._read_whole = lambda index, entry: calls.append(index) or whole(index, entry)  # type: ignore[method-assign]
        for index in (0, 1):
            with pytest.raises(CommandError, match="not a regular file"):
                source.read(index, 0, manifest[index].size)
        with pytest.raises(SourceChanged, match="modification time"):
            source.read(2, 0, manifest[2].size)
        assert calls == [0, 1, 2]  # each went through the whole-file read


def test_without_manifest_digests_the_source_hashes_what_it_sends(fs: FileSystemView, root: Path) -> None:
    bodies = _tree(root, 3, 10_000)
    manifest = build_manifest(fs, {"o": "/s"}, digests=False)
    assert all(e.digest == b"" for e in manifest)
    with FileSource(fs, manifest, manifest.sources, TRANSFER_FLAG_READ_WRITE) as source:
        for offset in range(0, len(bodies[0]), 4096):  # file 0 in order: hashed as it is read
            source.read(0, offset, min(4096, len(bodies[0]) - offset))
        source.read(0, 0, 4096)  # a resend changes nothing
        source.read(1, 8192, len(bodies[1]) - 8192)  # file 1 from a resume: only its tail is read
        assert source._digests.keys() == {0}
        assert [source.digest(i) for i in range(3)] == [_digest(b) for b in bodies]
        path = root / "s" / sorted(p.name for p in (root / "s").iterdir())[2]
        os.utime(path, ns=(1, 1))
        source._digests.pop(2)
        with pytest.raises(SourceChanged):
            source.digest(2)
        assert source.changed is not None


def test_large_files_are_hashed_on_the_worker_in_order(fs: FileSystemView, root: Path) -> None:
    (root / "s").mkdir()
    body = os.urandom(9 * 1024 * 1024 + 123)  # above HASH_THREAD_MIN: the worker hashes it
    (root / "s" / "big").write_bytes(body)
    manifest = build_manifest(fs, {"o": "/s"}, digests=False)
    with FileSource(fs, manifest, manifest.sources, TRANSFER_FLAG_READ_WRITE) as source:
        for offset in range(0, len(body), 60_000):
            assert source.read(0, offset, min(60_000, len(body) - offset)) == body[offset : offset + 60_000]
        assert source.digest(0) == _digest(body)


def test_check_empty_sees_content_not_a_new_empty_file(fs: FileSystemView, root: Path) -> None:
    """An empty file with content now is a change; replaced by another empty file (what a
    transfer onto its own source does) it is not."""
    (root / "e").write_bytes(b"")
    (root / "f").write_bytes(b"data")
    manifest = build_manifest(fs, {"e": "/e", "f": "/f"})
    source = FileSource(fs, manifest, manifest.sources, TRANSFER_FLAG_READ)
    source.check_empty()
    (root / "e.new").write_bytes(b"")
    os.utime(root / "e.new", ns=(1, 1))
    os.replace(root / "e.new", root / "e")
    source.check_empty()  # still empty: no change, whatever its mtime
    (root / "e").write_bytes(b"late")
    with pytest.raises(SourceChanged, match="size 4, manifest 0"):
        source.check_empty()
    assert isinstance(source.changed, SourceChanged)
    source.close()
