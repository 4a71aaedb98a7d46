"""FileWriter on real directories through real (sandboxed) FileSystemViews.

Layout of every test: ``tmp/dst`` is the receiver's sandbox root, files land under
``/in`` (the transfer's destinationPath), and ``tmp/outside`` holds a canary that must
never change.  The hostile-path tests run through openat2(2) and through fsview's fallback.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from jettui.constants import (
    FILETYPE_DIRECTORY,
    OVERWRITE_ALWAYS,
    OVERWRITE_IN_PLACE_SAME_SIZE,
    OVERWRITE_NEVER,
    OVERWRITE_VERSIONED,
    TRANSFER_FLAG_READ,
    TRANSFER_FLAG_READ_WRITE,
    TRANSFER_FLAG_WRITE,
    TRANSFER_FLAG_WRITE_MTIME,
    TRANSFER_FLAG_WRITE_ONLY_NEWER,
)
from jettui.errors import CommandError
from jettui.server import fsview
from jettui.server.fsview import FileSystemView
from jettui.transfer import faults
from jettui.transfer.digest import digest_of, new_hasher
from jettui.transfer.manifest import FileEntry
from jettui.transfer.ranges import RangeSet
from jettui.transfer.writer import SIDECAR_MAGIC, FileWriter, bytes_to_blocks, part_names
from tests.unit.conftest import SECRET

BS = 4096
MTIME = 1_600_000_000_000_000_000
GiB = 1 << 30
ALL_MODES = [OVERWRITE_ALWAYS, OVERWRITE_VERSIONED, OVERWRITE_NEVER, OVERWRITE_IN_PLACE_SAME_SIZE]


@pytest.fixture(params=["openat2", "walk"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "openat2" and not fsview.openat2_available():
        pytest.skip("this kernel has no openat2(2)")
    monkeypatch.setattr(fsview, "USE_OPENAT2", request.param == "openat2")
    return str(request.param)


def entry(path: str, data: bytes, mtime: int = MTIME, mode: int = 0o644) -> FileEntry:
    return FileEntry(path, len(data), mtime, digest=digest_of(data), mode=mode)


def writer(
    fs: FileSystemView, entries: list[FileEntry], overwrite: int = OVERWRITE_ALWAYS, flags: int = 3, **kw: object
):
    return FileWriter(fs, "/in", entries, overwrite, flags, None, block_size=BS, **kw)  # type: ignore[arg-type]


def send(w: FileWriter, index: int, data: bytes, blocks: list[int] | None = None) -> None:
    """Write blocks of ``data`` (all, or those listed) as the receiver machine would."""
    view = memoryview(data)
    count = -(-len(data) // BS)
    for b in range(count) if blocks is None else blocks:
        w.write(index, b * BS, view[b * BS : (b + 1) * BS])


def run(w: FileWriter, datas: list[bytes]) -> tuple[dict[int, RangeSet], dict[int, str], list[tuple[bool, str]]]:
    """plan, send what is missing, finish every planned file."""
    present, skip = w.plan()
    results = []
    for i, data in enumerate(datas):
        if i in skip:
            results.append(w.finish_file(i))
            continue
        have = present.get(i, RangeSet())
        count = -(-len(data) // BS)
        send(w, i, data, [b for b in range(count) if b not in have])
        results.append(w.finish_file(i))
    w.close()
    return present, skip, results


def leftovers(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir() if p.name.endswith((".jetpart", ".ckpt", ".tmp", ".jetbak"))}


def canary_intact(dst: Path) -> None:
    outside = dst.parent / "outside"
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert (outside / "secret.txt").read_bytes() == SECRET


# -- the basic path -------------------------------------------------------------------------------


def test_new_files_zero_bytes_nested_and_empty_directories(fs: FileSystemView, dst: Path) -> None:
    datas = [os.urandom(3 * BS + 100), b"", os.urandom(BS)]
    entries = [entry("a/b/one", datas[0]), entry("zero", datas[1]), entry("/abs/x", datas[2])]
    entries.append(FileEntry("empty/dir", 0, MTIME, FILETYPE_DIRECTORY))
    present, skip, results = run(writer(fs, entries), [*datas, b""])
    assert (present, skip) == ({}, {})
    assert results == [(True, "")] * 4
    assert (dst / "in/a/b/one").read_bytes() == datas[0]
    assert (dst / "in/zero").read_bytes() == b""
    assert (dst / "in/abs/x").read_bytes() == datas[2]  # absolute entry paths are re-rooted
    assert (dst / "in/empty/dir").is_dir()
    assert not leftovers(dst / "in") | leftovers(dst / "in/a/b")
    assert (dst / "in/a/b/one").stat().st_mode & 0o777 == 0o644


def test_part_file_is_created_at_the_declared_size_and_named_next_to_the_target(fs: FileSystemView, dst: Path) -> None:
    data = os.urandom(10 * BS)
    w = writer(fs, [entry("f", data)])
    w.plan()
    send(w, 0, data, [3])
    part = dst / "in/f.jetpart"
    assert part.stat().st_size == len(data)  # ftruncate up front: sparse, never larger
    assert not (dst / "in/f").exists()
    send(w, 0, data, [b for b in range(10) if b != 3])
    assert w.finish_file(0) == (True, "")
    assert (dst / "in/f").read_bytes() == data
    assert not part.exists()
    w.close()


def test_mode_bits_are_applied_without_setuid(fs: FileSystemView, dst: Path) -> None:
    data = b"#!/bin/sh\n"
    _, _, results = run(writer(fs, [entry("run.sh", data, mode=0o4755)]), [data])
    assert results == [(True, "")]
    assert (dst / "in/run.sh").stat().st_mode & 0o7777 == 0o755 & ~_umask()


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


# -- overwrite modes × existing target -------------------------------------------------------------


@pytest.mark.parametrize("overwrite", ALL_MODES)
@pytest.mark.parametrize("existing", ["none", "same_size", "other_size", "empty"])
def test_overwrite_modes(fs: FileSystemView, dst: Path, overwrite: int, existing: str) -> None:
    new = os.urandom(5 * BS + 7)
    old = {"none": None, "same_size": os.urandom(len(new)), "other_size": b"old!", "empty": b""}[existing]
    target = dst / "in/f"
    if old is not None:
        target.write_bytes(old)
        os.utime(target, ns=(1, MTIME - 10))  # older than the source
    ino = target.stat().st_ino if old is not None else None
    present, skip, results = run(writer(fs, [entry("f", new)], overwrite), [new])
    replaced = old is None or overwrite in (OVERWRITE_ALWAYS, OVERWRITE_VERSIONED)
    if overwrite == OVERWRITE_IN_PLACE_SAME_SIZE and existing in ("same_size", "empty"):
        assert results == [(True, "")]
        assert target.read_bytes() == new
        assert target.stat().st_ino == ino  # written in place: same file
    elif overwrite == OVERWRITE_IN_PLACE_SAME_SIZE and existing == "other_size":
        assert list(skip) == [0] and "IN_PLACE_SAME_SIZE" in skip[0] and "/in/f" in skip[0]
        assert results[0][0] is False
        assert target.read_bytes() == old
    elif overwrite == OVERWRITE_NEVER and old is not None:
        assert skip == {0: "/in/f exists and overwrite mode is NEVER"}
        assert target.read_bytes() == old
    else:
        assert replaced or overwrite == OVERWRITE_IN_PLACE_SAME_SIZE
        assert results == [(True, "")]
        assert target.read_bytes() == new
        if old is not None:
            assert target.stat().st_ino != ino  # a part-file renamed over it
    backup = dst / "in/f.jetbak"
    if overwrite == OVERWRITE_VERSIONED and old is not None:
        assert backup.read_bytes() == old
        assert leftovers(dst / "in") == {"f.jetbak"}
    else:
        assert leftovers(dst / "in") == set()


def test_versioned_replaces_an_older_backup(fs: FileSystemView, dst: Path) -> None:
    target = dst / "in/f"
    versions = [b"v1", b"v2 longer", b"v3 " * 3000]
    target.write_bytes(versions[0])
    for previous, new in zip(versions, versions[1:], strict=False):
        _, _, results = run(writer(fs, [entry("f", new)], OVERWRITE_VERSIONED), [new])
        assert results == [(True, "")]
        assert target.read_bytes() == new
        assert (dst / "in/f.jetbak").read_bytes() == previous


def test_never_leaves_the_part_file_when_the_target_appears_meanwhile(fs: FileSystemView, dst: Path) -> None:
    data = os.urandom(2 * BS)
    w = writer(fs, [entry("f", data)], OVERWRITE_NEVER)
    assert w.plan() == ({}, {})
    send(w, 0, data)
    (dst / "in/f").write_bytes(b"someone else's")
    ok, message = w.finish_file(0)
    assert not ok and "overwrite mode is NEVER" in message and "f.jetpart" in message
    assert (dst / "in/f").read_bytes() == b"someone else's"
    assert (dst / "in/f.jetpart").read_bytes() == data


def test_directory_and_file_kind_conflicts_are_skipped(fs: FileSystemView, dst: Path) -> None:
    (dst / "in/isdir").mkdir()
    (dst / "in/isfile").write_bytes(b"x")
    entries = [entry("isdir", b"data"), FileEntry("isfile", 0, MTIME, FILETYPE_DIRECTORY), entry("isfile/sub", b"d")]
    w = writer(fs, entries)
    present, skip = w.plan()
    assert "is a directory" in skip[0]
    assert "not a directory" in skip[1]
    assert 2 in skip
    assert w.finish_file(0) == (False, skip[0])
    assert (dst / "in/isfile").read_bytes() == b"x"


# -- transfer flags -----------------------------------------------------------------------------------


def test_without_write_flag_everything_is_accepted_and_discarded(fs: FileSystemView, dst: Path) -> None:
    data = os.urandom(3 * BS)
    (dst / "in/exists").write_bytes(b"keep")
    entries = [entry("new", data), entry("exists", data), FileEntry("d", 0, MTIME, FILETYPE_DIRECTORY)]
    w = writer(fs, entries, OVERWRITE_NEVER, TRANSFER_FLAG_READ)
    assert w.plan() == ({}, {})  # nothing skipped: nothing is written anyway
    send(w, 0, data)
    send(w, 1, data)
    assert [w.finish_file(i)[0] for i in range(3)] == [True, True, True]
    assert w.bytes_written == 2 * len(data)
    with pytest.raises(CommandError, match="past its declared size"):
        w.write(0, 3 * BS, memoryview(b"x"))
    assert sorted(p.name for p in (dst / "in").iterdir()) == ["exists"]
    assert (dst / "in/exists").read_bytes() == b"keep"


def test_without_read_flag_the_sender_sends_zeros_and_they_verify(fs: FileSystemView, dst: Path) -> None:
    data = os.urandom(2 * BS)  # the manifest digest is the real file's
    w = writer(fs, [entry("z", data), entry("bad", data)], flags=TRANSFER_FLAG_WRITE)
    w.plan()
    send(w, 0, bytes(len(data)))
    assert w.finish_file(0) == (True, "")
    assert (dst / "in/z").read_bytes() == bytes(len(data))
    send(w, 1, b"\1" * len(data))
    ok, message = w.finish_file(1)
    assert not ok and "expected zeros" in message and not (dst / "in/bad").exists()


def test_write_mtime_sets_the_source_time(fs: FileSystemView, dst: Path) -> None:
    data = b"timed"
    entries = [entry("t", data), FileEntry("dd", 0, MTIME + 5, FILETYPE_DIRECTORY)]
    run(writer(fs, entries, flags=TRANSFER_FLAG_READ_WRITE | TRANSFER_FLAG_WRITE_MTIME), [data, b""])
    assert (dst / "in/t").stat().st_mtime_ns == MTIME
    assert (dst / "in/dd").stat().st_mtime_ns == MTIME + 5
    run(writer(fs, [entry("u", data)]), [data])
    assert (dst / "in/u").stat().st_mtime_ns != MTIME


@pytest.mark.parametrize("overwrite", [OVERWRITE_ALWAYS, OVERWRITE_IN_PLACE_SAME_SIZE])
def test_write_only_newer(fs: FileSystemView, dst: Path, overwrite: int) -> None:
    data = os.urandom(100)
    (dst / "in/newer").write_bytes(bytes(100))
    os.utime(dst / "in/newer", ns=(1, MTIME + 1))
    (dst / "in/older").write_bytes(bytes(100))
    os.utime(dst / "in/older", ns=(1, MTIME - 1))
    (dst / "in/same").write_bytes(bytes(100))
    os.utime(dst / "in/same", ns=(1, MTIME))
    flags = TRANSFER_FLAG_READ_WRITE | TRANSFER_FLAG_WRITE_ONLY_NEWER
    entries = [entry("newer", data), entry("older", data), entry("same", data)]
    _, skip, results = run(writer(fs, entries, overwrite, flags), [data] * 3)
    assert list(skip) == [0] and "newer than the source" in skip[0]
    assert (dst / "in/newer").read_bytes() == bytes(100)
    assert (dst / "in/older").read_bytes() == data == (dst / "in/same").read_bytes()
    assert results[1:] == [(True, "")] * 2


# -- verification ----------------------------------------------------------------------------------


def test_digest_mismatch_is_not_renamed_and_leaves_nothing_to_resume(fs: FileSystemView, dst: Path) -> None:
    data = os.urandom(4 * BS)
    (dst / "in/f").write_bytes(b"the old file")
    w = writer(fs, [entry("f", data)])
    w.plan()
    send(w, 0, data[:-1] + bytes([data[-1] ^ 1]))  # one wrong byte (a fixed one matched 1 run in 256)
    w.checkpoint()
    ok, message = w.finish_file(0)
    assert not ok and "BLAKE3 digest differs" in message
    assert (dst / "in/f").read_bytes() == b"the old file"
    assert leftovers(dst / "in") == set()  # a retry starts clean, never from bad data
    w.close()


def test_missing_digest_fails_verification(fs: FileSystemView, dst: Path) -> None:
    w = writer(fs, [FileEntry("f", 5, MTIME)])
    w.plan()
    w.write(0, 0, memoryview(b"hello"))
    assert w.finish_file(0) == (False, "/in/f failed verification (the manifest carries no digest for it); "
                                "the part-file was removed")  # fmt: skip


def test_write_past_the_declared_size_is_refused(fs: FileSystemView, dst: Path) -> None:
    data = os.urandom(2 * BS + 10)
    w = writer(fs, [entry("f", data)])
    w.plan()
    send(w, 0, data, [0])
    for offset, length in [(2 * BS, BS), (len(data), 1), (1 << 40, 10), (-1, 2)]:
        with pytest.raises(CommandError, match="past its declared size"):
            w.write(0, offset, memoryview(bytes(length)))
        assert (dst / "in/f.jetpart").stat().st_size == len(data)
    send(w, 0, data, [1, 2])
    assert w.finish_file(0) == (True, "")
    with pytest.raises(CommandError, match="no longer open"):
        w.write(0, 0, memoryview(b"x"))
    assert w.finish_file(0)[0] is False
    assert (dst / "in/f").read_bytes() == data


# -- resume -------------------------------------------------------------------------------------------


def _interrupted(fs: FileSystemView, data: bytes, blocks: list[int], **kw: object) -> FileWriter:
    w = writer(fs, [entry("f", data)], **kw)
    w.plan()
    send(w, 0, data, blocks)
    assert w.checkpoint() == 1
    w.abort()
    return w


def test_resume_reports_exactly_the_checkpointed_blocks(fs: FileSystemView, dst: Path) -> None:
    data = os.urandom(20 * BS + 123)
    _interrupted(fs, data, [0, 1, 2, 5, 9, 10, 20])
    sidecar = (dst / "in/f.jetpart.ckpt").read_bytes()
    assert sidecar.startswith(SIDECAR_MAGIC)
    w = writer(fs, [entry("f", data)])
    present, skip = w.plan()
    assert skip == {}
    assert list(present[0]) == [(0, 3), (5, 6), (9, 11), (20, 21)]
    send(w, 0, data, [b for b in range(21) if b not in present[0]])
    assert w.finish_file(0) == (True, "")
    assert (dst / "in/f").read_bytes() == data
    assert leftovers(dst / "in") == set()


def test_blocks_written_after_the_last_checkpoint_are_resent(fs: FileSystemView, dst: Path) -> None:
    data = os.urandom(8 * BS)
    w = writer(fs, [entry("f", data)])
    w.plan()
    send(w, 0, data, [0, 1])
    w.checkpoint()
    send(w, 0, data, [2, 3])  # not checkpointed: a crash now loses the claim, not the file
    w.abort()
    w2 = writer(fs, [entry("f", data)])
    present, _ = w2.plan()
    assert list(present[0]) == [(0, 2)]


def test_contiguous_blocks_are_gathered_into_few_writes_and_claimed_once_written(
    fs: FileSystemView, dst: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jettui.transfer.writer import COALESCE

    data = os.urandom(4 * COALESCE + 100)
    count = -(-len(data) // BS)
    sizes: list[int] = []
    real_pwrite = os.pwrite
    monkeypatch.setattr(os, "pwrite", lambda fd, buf, at: sizes.append(len(buf)) or real_pwrite(fd, buf, at))
    w = writer(fs, [entry("f", data)])
    w.plan()
    send(w, 0, data, [0, 1, 2])
    assert sizes == []  # gathered, and not claimed by anything yet
    w.checkpoint()
    assert sizes[0] == 3 * BS  # one write, then the sidecar claiming it
    del sizes[:]
    send(w, 0, data, [5, 6, *range(3, 5), *range(7, count)])  # one hole filled late
    assert w.finish_file(0) == (True, "")
    assert (dst / "in/f").read_bytes() == data
    assert len(sizes) <= 8 and sum(sizes) == len(data) - 3 * BS
    w.close()
    # Gathered blocks that were never written are never claimed: a resume asks for them.
    w = writer(fs, [entry("g", data)])
    w.plan()
    send(w, 0, data, [0, 1])
    w.checkpoint()
    send(w, 0, data, [2, 3])
    w.abort()
    assert (dst / "in/g.jetpart").read_bytes()[2 * BS : 4 * BS] == bytes(2 * BS)
    present, _ = writer(fs, [entry("g", data)]).plan()
    assert list(present[0]) == [(0, 2)]


def test_resume_without_block_size_uses_the_sidecar_or_the_first_block(fs: FileSystemView, dst: Path) -> None:
    data = os.urandom(6 * BS)
    w = FileWriter(fs, "/in", [entry("f", data)], OVERWRITE_ALWAYS, 3)  # block size never given
    w.plan()
    send(w, 0, data, [0, 1, 4])
    w.checkpoint()
    w.abort()
    w2 = FileWriter(fs, "/in", [entry("f", data)], OVERWRITE_ALWAYS, 3)
    present, _ = w2.plan()
    assert list(present[0]) == [(0, 2), (4, 5)]
    # A session with another block size gets the blocks wholly inside the saved bytes.
    w3 = FileWriter(fs, "/in", [entry("f", data)], OVERWRITE_ALWAYS, 3, block_size=2 * BS)
    assert list(w3.plan()[0][0]) == [(0, 1)]


def test_bytes_to_blocks() -> None:
    have = RangeSet([(0, 10), (15, 35), (40, 47)])
    assert list(bytes_to_blocks(have, 47, 5)) == [(0, 2), (3, 7), (8, 10)]
    assert list(bytes_to_blocks(RangeSet([(1, 9)]), 100, 5)) == []


@pytest.mark.parametrize(
    "damage", ["missing", "truncated", "flipped", "garbage", "other_digest", "other_mtime", "replaced_part", "dir"]
)
def test_bad_sidecar_means_starting_over(fs: FileSystemView, dst: Path, damage: str) -> None:
    data = os.urandom(8 * BS)
    _interrupted(fs, data, [0, 1, 2, 3])
    sidecar = dst / "in/f.jetpart.ckpt"
    raw = sidecar.read_bytes()
    the_entry = entry("f", data)
    if damage == "missing":
        sidecar.unlink()
    elif damage == "truncated":
        sidecar.write_bytes(raw[:-5])
    elif damage == "flipped":
        sidecar.write_bytes(raw[:20] + bytes([raw[20] ^ 1]) + raw[21:])
    elif damage == "garbage":
        sidecar.write_bytes(SIDECAR_MAGIC + os.urandom(100))
    elif damage == "other_digest":
        the_entry = entry("f", data[:-1] + bytes([data[-1] ^ 1]))  # the source changed: another digest
    elif damage == "other_mtime":
        the_entry = entry("f", data, mtime=MTIME + 1)
    elif damage == "replaced_part":
        part = dst / "in/f.jetpart"
        shutil.copy(part, dst / "copy")
        part.unlink()
        os.rename(dst / "copy", part)
    elif damage == "dir":
        sidecar.unlink()
        sidecar.mkdir()
    w = FileWriter(fs, "/in", [the_entry], OVERWRITE_ALWAYS, 3, block_size=BS)
    present, skip = w.plan()
    if damage == "dir":
        # Something we must not delete sits where the sidecar goes: decline, clearly.
        assert skip == {0: "cannot write /in/f: 'f.jetpart.ckpt' is in the way and cannot be removed (Is a directory)"}
        return
    assert (present, skip) == ({}, {})
    assert not sidecar.exists()
    new = data if damage != "other_digest" else data[:-1] + bytes([data[-1] ^ 1])
    send(w, 0, new, [7])
    # Started over: the part-file holds nothing but the new block (no splicing).
    assert (dst / "in/f.jetpart").read_bytes() == bytes(7 * BS) + new[7 * BS :]
    send(w, 0, new, list(range(7)))
    assert w.finish_file(0) == (True, "")
    assert (dst / "in/f").read_bytes() == new


def test_sidecars_in_the_state_directory(fs: FileSystemView, dst: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    sfd = os.open(state, os.O_RDONLY | os.O_DIRECTORY)
    try:
        data = os.urandom(6 * BS)
        w = FileWriter(fs, "/in", [entry("f", data)], OVERWRITE_ALWAYS, 3, sfd, block_size=BS)
        w.plan()
        send(w, 0, data, [0, 1, 2])
        w.checkpoint()
        w.abort()
        assert leftovers(dst / "in") == {"f.jetpart"}
        assert [p.name.endswith(".jetpart.ckpt") for p in state.iterdir()] == [True]
        w2 = FileWriter(fs, "/in", [entry("f", data)], OVERWRITE_ALWAYS, 3, sfd, block_size=BS)
        present, _ = w2.plan()
        assert list(present[0]) == [(0, 3)]
        send(w2, 0, data, [3, 4, 5])
        assert w2.finish_file(0) == (True, "")
        assert list(state.iterdir()) == []
    finally:
        os.close(sfd)


def test_in_place_resume_keeps_going_despite_the_new_mtime(fs: FileSystemView, dst: Path) -> None:
    data = os.urandom(6 * BS)
    target = dst / "in/f"
    target.write_bytes(bytes(len(data)))
    os.utime(target, ns=(1, MTIME - 100))
    flags = TRANSFER_FLAG_READ_WRITE | TRANSFER_FLAG_WRITE_ONLY_NEWER
    w = writer(fs, [entry("f", data)], OVERWRITE_IN_PLACE_SAME_SIZE, flags)
    w.plan()
    send(w, 0, data, [0, 1])
    w.checkpoint()
    w.abort()
    assert target.stat().st_mtime_ns > MTIME  # our writes made it "newer" than the source
    w2 = writer(fs, [entry("f", data)], OVERWRITE_IN_PLACE_SAME_SIZE, flags)
    present, skip = w2.plan()
    assert skip == {} and list(present[0]) == [(0, 2)]
    send(w2, 0, data, [2, 3, 4, 5])
    assert w2.finish_file(0) == (True, "")
    assert target.read_bytes() == data
    assert leftovers(dst / "in") == set()


def test_checkpoint_runs_safely_beside_writes(fs: FileSystemView, dst: Path) -> None:
    data = os.urandom(400 * BS)
    w = writer(fs, [entry("f", data)], max_open=1)
    w.plan()
    stop = threading.Event()
    errors: list[BaseException] = []

    def checkpoints() -> None:
        while not stop.is_set():
            try:
                w.checkpoint()
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

    thread = threading.Thread(target=checkpoints)
    thread.start()
    try:
        send(w, 0, data, list(range(0, 400, 2)))
    finally:
        stop.set()
        thread.join()
    assert not errors
    w.checkpoint()
    w.abort()
    present, _ = writer(fs, [entry("f", data)]).plan()
    assert present[0].count == 200 and all(b % 2 == 0 for s, e in present[0] for b in range(s, e))


def test_many_files_through_a_small_descriptor_cache(fs: FileSystemView, dst: Path) -> None:
    datas = [os.urandom(3 * BS + i) for i in range(20)]
    w = writer(fs, [entry(f"d{i % 3}/f{i}", d) for i, d in enumerate(datas)], max_open=3)
    w.plan()
    before = len(os.listdir("/proc/self/fd"))
    for b in range(4):  # interleaved: every file is reopened many times
        for i, d in enumerate(datas):
            send(w, i, d, [b])
        assert len(os.listdir("/proc/self/fd")) - before <= 3 + 3
    w.checkpoint()
    assert [w.finish_file(i) for i in range(20)] == [(True, "")] * 20
    w.close()
    for i, d in enumerate(datas):
        assert (dst / f"in/d{i % 3}/f{i}").read_bytes() == d


def test_long_names_get_shortened_part_names(fs: FileSystemView, dst: Path) -> None:
    name = "é" * 127  # 254 bytes: the longest suffix cannot be appended
    part, ckpt, bak = part_names(name)
    assert all(len(n.encode()) <= 255 for n in (part, ckpt + ".tmp", bak))
    assert part.endswith(".jetpart") and ckpt == part + ".ckpt" and bak.endswith(".jetbak")
    assert part_names("x") == ("x.jetpart", "x.jetpart.ckpt", "x.jetbak")
    # Around the limit, with 1- to 4-byte characters (the short path skips the encoding).
    for char in ("a", "é", "日", "\U0001f600"):
        for count in range(50, 256):
            long_name = char * count
            if len(long_name.encode()) > 255:
                break
            shortened = part_names(long_name)
            assert all(len(n.encode()) <= 255 for n in (shortened[0], shortened[1] + ".tmp", shortened[2]))
            fits = len(long_name.encode()) + len(".jetpart.ckpt.tmp") <= 255
            assert (shortened[0] == long_name + ".jetpart") == fits
    data = os.urandom(3 * BS)
    (dst / "in" / name).write_bytes(b"old")
    w = writer(fs, [entry(name, data)], OVERWRITE_VERSIONED)
    w.plan()
    send(w, 0, data, [0])
    w.checkpoint()
    assert (dst / "in" / ckpt).exists()
    send(w, 0, data, [1, 2])
    assert w.finish_file(0) == (True, "")
    assert (dst / "in" / name).read_bytes() == data and (dst / "in" / bak).read_bytes() == b"old"


# -- sparse and huge ----------------------------------------------------------------------------------


def _sparse_case(fs: FileSystemView, dst: Path, with_digest: bool) -> tuple[FileWriter, FileEntry, dict[int, bytes]]:
    size = 5 * GiB + 12345
    blocks = {0: os.urandom(BS), (4 * GiB + 7 * BS) // BS: os.urandom(BS), size // BS: os.urandom(size % BS)}
    if not with_digest:  # hashing 5 GiB of zeros takes seconds: only the slow test does
        the_entry = FileEntry("huge", size, MTIME, digest=b"\1" * 32)
        return writer(fs, [the_entry]), the_entry, blocks
    digest = new_hasher()
    zero = bytes(1 << 20)
    position = 0
    for b in sorted(blocks):  # the digest of the sparse content, computed independently
        gap = b * BS - position
        while gap:
            step = min(gap, len(zero))
            digest.update(zero[:step])
            gap -= step
        digest.update(blocks[b])
        position = b * BS + len(blocks[b])
    the_entry = FileEntry("huge", size, MTIME, digest=digest.digest())
    return writer(fs, [the_entry]), the_entry, blocks


def test_sparse_file_beyond_4_gib_writes_and_resumes(fs: FileSystemView, dst: Path) -> None:
    w, the_entry, blocks = _sparse_case(fs, dst, with_digest=False)
    w.plan()
    for b, data in blocks.items():
        w.write(0, b * BS, memoryview(data))
    part = dst / "in/huge.jetpart"
    st = part.stat()
    assert st.st_size == the_entry.size and st.st_blocks * 512 < 1 << 20  # sparse: ~12 KiB on disk
    with pytest.raises(CommandError, match="past its declared size"):
        w.write(0, the_entry.size - 10, memoryview(bytes(BS)))
    assert part.stat().st_size == the_entry.size
    w.checkpoint()
    w.abort()
    present, _ = writer(fs, [the_entry]).plan()
    assert list(present[0]) == [(b, b + 1) for b in sorted(blocks)]
    with open(part, "rb") as handle:
        handle.seek(4 * GiB + 7 * BS)
        assert handle.read(BS) == blocks[(4 * GiB + 7 * BS) // BS]


@pytest.mark.slow
def test_sparse_file_beyond_4_gib_finishes(fs: FileSystemView, dst: Path) -> None:
    w, the_entry, blocks = _sparse_case(fs, dst, with_digest=True)
    w.plan()
    for b, data in blocks.items():
        w.write(0, b * BS, memoryview(data))
    # The blocks never written are holes, i.e. zeros, which the digest covers.
    assert w.finish_file(0) == (True, "")
    assert (dst / "in/huge").stat().st_size == the_entry.size


# -- hostile entry paths and destination trees ----------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("../x", r"'\.\.'"),
        ("a/../../x", r"'\.\.'"),
        ("a\x00b", "NUL"),
        ("n" * 256, "longer than 255"),
        ("/", "names no"),
    ],
)
def test_hostile_entry_paths_refuse_the_transfer(
    mode: str, fs: FileSystemView, dst: Path, path: str, message: str
) -> None:
    with pytest.raises(CommandError, match=message):
        writer(fs, [entry("ok", b"1"), FileEntry(path, 1, MTIME, digest=b"x" * 32)])
    canary_intact(dst)


def test_duplicate_and_colliding_entries_are_refused(fs: FileSystemView) -> None:
    with pytest.raises(CommandError, match="both write 'a/b'"):
        writer(fs, [entry("a/b", b"1"), entry("/a//b/", b"2")])
    with pytest.raises(CommandError, match="part-file or backup"):
        writer(fs, [entry("a/b", b"1"), entry("a/b.jetpart", b"2")])
    with pytest.raises(CommandError, match="unknown overwrite mode"):
        FileWriter(fs, "/in", [], 9, 3)
    with pytest.raises(CommandError, match="unknown sandbox"):
        FileWriter(fs, "nope:/x", [], OVERWRITE_ALWAYS, 3)


def test_absolute_entry_paths_are_re_rooted_under_the_destination(mode: str, fs: FileSystemView, dst: Path) -> None:
    data = b"not really passwd"
    _, _, results = run(writer(fs, [entry(str(dst.parent / "outside/secret.txt"), data)]), [data])
    assert results == [(True, "")]
    assert (dst / "in" / str(dst.parent / "outside/secret.txt").lstrip("/")).read_bytes() == data
    canary_intact(dst)


@pytest.mark.parametrize("link", ["absolute", "relative"])
def test_symlinked_directory_leading_out_is_refused(mode: str, fs: FileSystemView, dst: Path, link: str) -> None:
    outside = dst.parent / "outside"
    (dst / "in/evil").symlink_to(outside if link == "absolute" else "../../outside")
    data = b"escape attempt"
    entries = [entry("evil/secret.txt", data), entry("evil/new.txt", data), entry("fine.txt", data)]
    present, skip, results = run(writer(fs, entries), [data] * 3)
    assert set(skip) == {0, 1}
    assert all("outside the sandbox" in reason for reason in skip.values())
    assert results[2] == (True, "")
    canary_intact(dst)


def test_symlinked_directory_inside_the_sandbox_is_followed(mode: str, fs: FileSystemView, dst: Path) -> None:
    (dst / "real").mkdir()
    (dst / "in/alias").symlink_to("../real")
    data = b"via an inside link"
    _, _, results = run(writer(fs, [entry("alias/f", data)]), [data])
    assert results == [(True, "")]
    assert (dst / "real/f").read_bytes() == data


@pytest.mark.parametrize("overwrite", ALL_MODES)
def test_symlink_at_the_target_name_is_never_written_through(
    mode: str, fs: FileSystemView, dst: Path, overwrite: int
) -> None:
    (dst / "in/f").symlink_to(dst.parent / "outside/secret.txt")
    data = os.urandom(2 * BS)
    _, skip, results = run(writer(fs, [entry("f", data)], overwrite), [data])
    if overwrite in (OVERWRITE_ALWAYS, OVERWRITE_VERSIONED):
        assert results == [(True, "")]
        assert not (dst / "in/f").is_symlink() and (dst / "in/f").read_bytes() == data
    else:
        assert 0 in skip  # NEVER: it exists; IN_PLACE: not a regular file
        assert (dst / "in/f").is_symlink()
    if overwrite == OVERWRITE_VERSIONED:
        assert (dst / "in/f.jetbak").is_symlink()  # the link itself was kept, not its target
    canary_intact(dst)


def test_planted_links_at_part_and_sidecar_names_are_not_followed(mode: str, fs: FileSystemView, dst: Path) -> None:
    secret = dst.parent / "outside/secret.txt"
    (dst / "in/f.jetpart").symlink_to(secret)
    (dst / "in/f.jetpart.ckpt").symlink_to(secret)
    (dst / "in/f.jetpart.ckpt.tmp").symlink_to(secret)
    data = os.urandom(3 * BS)
    w = writer(fs, [entry("f", data)])
    assert w.plan() == ({}, {})
    send(w, 0, data, [0])
    w.checkpoint()
    assert not (dst / "in/f.jetpart").is_symlink() and not (dst / "in/f.jetpart.ckpt").is_symlink()
    send(w, 0, data, [1, 2])
    assert w.finish_file(0) == (True, "")
    canary_intact(dst)


def test_hard_link_planted_at_the_part_name_is_not_truncated(fs: FileSystemView, dst: Path) -> None:
    precious = dst / "precious"
    precious.write_bytes(b"precious data")
    os.link(precious, dst / "in/f.jetpart")
    data = os.urandom(BS)
    _, _, results = run(writer(fs, [entry("f", data)]), [data])
    assert results == [(True, "")]
    assert precious.read_bytes() == b"precious data"


# -- disk full (a 1 MiB tmpfs in a private mount namespace) ------------------------------------------------

_DISK_FULL_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from jettui.errors import CommandError
    from jettui.server.fsview import FileSystemView
    from jettui.transfer.manifest import FileEntry
    from jettui.transfer.digest import digest_of
    from jettui.transfer.writer import FileWriter

    root = sys.argv[1]
    os.makedirs(f"{root}/in")
    with open(f"{root}/in/f", "wb") as handle:
        handle.write(b"old content" * 1000)
    data = os.urandom(4 << 20)
    entry = FileEntry("f", len(data), 1, digest=digest_of(data))
    out = {}
    with FileSystemView({"": root}) as fs:
        w = FileWriter(fs, "/in", [entry], 4, 3, block_size=65536)
        out["plan"] = repr(w.plan())
        try:
            for offset in range(0, len(data), 65536):
                w.write(0, offset, memoryview(data)[offset : offset + 65536])
        except CommandError as exc:
            out["error"] = exc.message
            out["offset"] = offset
        try:
            w.checkpoint()
            out["checkpoint"] = "ok"
        except CommandError as exc:
            out["checkpoint"] = exc.message
        w.abort()
    out["target"] = open(f"{root}/in/f", "rb").read() == b"old content" * 1000
    out["part_size"] = os.stat(f"{root}/in/f.jetpart").st_size
    out["declared"] = len(data)
    print(json.dumps(out))
    """
)


def test_disk_full_is_a_clear_error_and_the_target_is_untouched(tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) to mount a small tmpfs in a private mount namespace")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    shell = 'mount -t tmpfs -o size=1m jettui-test "$1" || exit 77; exec "$2" -c "$3" "$1"'
    proc = subprocess.run(
        ["unshare", "-m", "sh", "-c", shell, "sh", str(mnt), sys.executable, _DISK_FULL_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    if proc.returncode == 77 or "unshare failed" in proc.stderr:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["error"] == "receiver disk full while writing /in/f"
    assert 0 < out["offset"] < out["declared"]
    assert out["target"] is True  # nothing under the final name was touched
    assert out["part_size"] == out["declared"]  # sparse at its declared size, never larger
    assert out["checkpoint"] in ("ok", "receiver disk full while checkpointing /in/f")
    assert list(mnt.iterdir()) == []  # the tmpfs lived only in the child's namespace


# -- fault points ---------------------------------------------------------------------------------------


def test_fault_point_parsing() -> None:
    assert faults.parse_fault(None) is None
    assert faults.parse_fault("") is None
    assert faults.parse_fault("before-rename") == ("before-rename", 1)
    assert faults.parse_fault("checkpoint-write:7") == ("checkpoint-write", 7)
    with pytest.raises(ValueError, match="unknown fault point"):
        faults.parse_fault("nowhere")
    with pytest.raises(ValueError, match="at least 1"):
        faults.parse_fault("block-write:0")
    assert faults.FAULT is None  # the suite itself never runs armed
    faults.fault_point("block-write")  # unarmed: returns


def test_finish_files_batches_mixed_outcomes_in_order(fs: FileSystemView, dst: Path) -> None:
    good = [os.urandom(BS + i) for i in range(5)]
    (dst / "in/exists").write_bytes(b"keep")
    entries = [entry(f"g{i}", d) for i, d in enumerate(good)]
    entries += [entry("bad", b"right"), entry("exists", b"x"), FileEntry("d", 0, MTIME, FILETYPE_DIRECTORY)]
    w = writer(fs, entries, OVERWRITE_NEVER)
    _, skip = w.plan()
    assert list(skip) == [6]
    for i, d in enumerate(good):
        send(w, i, d)
    w.write(5, 0, memoryview(b"wrong"))
    results = w.finish_files([7, 6, 5, 4, 3, 2, 1, 0])
    assert results[0] == (True, "") and results[1] == (False, skip[6])
    assert results[2][0] is False and "BLAKE3 digest differs" in results[2][1]
    assert results[3:] == [(True, "")] * 5
    assert w.finish_files([0]) == [(False, "/in/g0 was already finished")]
    for i, d in enumerate(good):
        assert (dst / f"in/g{i}").read_bytes() == d
    assert not (dst / "in/bad").exists() and (dst / "in/d").is_dir()
    assert (dst / "in/exists").read_bytes() == b"keep" and leftovers(dst / "in") == set()
    w.close()


def test_a_batch_larger_than_the_descriptor_limit_finishes(fs: FileSystemView, dst: Path) -> None:
    """A batch holds no descriptor per file: 600 files (multi-block ones, written to their
    part-files, and small ones held in memory) finish under a limit of ~200 descriptors
    (40,000 small files once failed with EMFILE when they were finished in one batch)."""
    import resource

    datas = [os.urandom(BS * 2 + i) if i % 2 else os.urandom(100 + i) for i in range(600)]
    w = writer(fs, [entry(f"d{i % 3}/f{i}", d) for i, d in enumerate(datas)])
    w.plan()
    for i, d in enumerate(datas):
        send(w, i, d)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 200, hard))
    try:
        results = w.finish_files(list(range(len(datas))))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    w.close()
    assert results == [(True, "")] * len(datas)
    for i, d in enumerate(datas):
        assert (dst / f"in/d{i % 3}/f{i}").read_bytes() == d
    assert all(leftovers(dst / f"in/d{k}") == set() for k in range(3))


def _wait_hashed(w: FileWriter, index: int, at_least: int) -> int:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with w._lock:
            f = w._files[index]
            if f.hashed >= at_least and not f.hash_queued:
                return f.hashed
        time.sleep(0.005)
    return w._files[index].hashed


def test_large_files_are_hashed_while_they_arrive(fs: FileSystemView, dst: Path) -> None:
    """The hasher thread follows the contiguous prefix, out-of-order blocks included, and the
    finish only hashes the tail: the file verifies, and a wrong block still fails it."""
    from jettui.transfer.writer import HASH_AHEAD

    data = os.urandom(HASH_AHEAD * 2 + 12345)
    count = -(-len(data) // BS)
    w = writer(fs, [entry("big", data), entry("bad", data)])
    w.plan()
    half = (HASH_AHEAD + BS) // BS
    send(w, 0, data, list(range(half, 0, -1)))  # block 0 last: nothing contiguous until then
    assert w._files[0].hashed == 0
    send(w, 0, data, [0])
    w.checkpoint()  # block 0 alone is gathered (COALESCE) until a later write or a checkpoint
    assert _wait_hashed(w, 0, HASH_AHEAD) >= HASH_AHEAD
    send(w, 0, data, list(range(half + 1, count)))
    bad = bytearray(data)
    bad[HASH_AHEAD // 2] ^= 1  # inside the prefix the hasher reads
    send(w, 1, bytes(bad))
    assert _wait_hashed(w, 1, HASH_AHEAD) >= HASH_AHEAD
    assert w.finish_file(0) == (True, "")
    ok, message = w.finish_file(1)
    w.close()
    assert not ok and "BLAKE3 digest differs" in message
    assert (dst / "in" / "big").read_bytes() == data
    assert not (dst / "in" / "bad").exists()


def test_small_whole_files_are_written_by_finish_not_by_write(fs: FileSystemView, dst: Path) -> None:
    """A small file that arrives in one block is held in memory and created by finish_files:
    nothing of it is on disk or claimed by a checkpoint before, and an abort leaves nothing."""
    small, other = os.urandom(3000), os.urandom(2000)
    w = writer(fs, [entry("a/s", small), entry("a/t", other)])
    assert w.plan() == ({}, {})
    w.write(0, 0, memoryview(small))
    w.write(1, 0, memoryview(other))
    assert not (dst / "in" / "a" / part_names("s")[0]).exists()
    assert w.checkpoint() == 0
    assert w.finish_files([0], [b""]) == [(True, "")]  # an empty digest: the manifest's
    assert (dst / "in" / "a" / "s").read_bytes() == small
    w.abort()
    assert sorted(p.name for p in (dst / "in" / "a").iterdir()) == ["s"]
    w2 = writer(fs, [entry("a/s", small), entry("a/t", other)])
    w2.plan()
    w2.write(1, 0, memoryview(other))
    assert w2.finish_files([1], [digest_of(b"not it")]) == [
        (False, "/in/a/t failed verification (BLAKE3 digest differs from the sender's); the part-file was removed")
    ]
    assert sorted(p.name for p in (dst / "in" / "a").iterdir()) == ["s"]


def test_a_held_file_whose_part_name_was_taken_after_plan_is_written_anew(fs: FileSystemView, dst: Path) -> None:
    """finish_files creates a small held file with O_EXCL|O_NOFOLLOW: a link planted at its
    part-file name after plan() (which saw nothing there) is replaced, never written through."""
    small = os.urandom(3000)
    w = writer(fs, [entry("f", small)])
    assert w.plan() == ({}, {})
    w.write(0, 0, memoryview(small))
    secret = dst.parent / "outside/secret.txt"
    (dst / "in/f.jetpart").symlink_to(secret)
    assert w.finish_files([0], [b""]) == [(True, "")]
    assert (dst / "in/f").read_bytes() == small
    assert not (dst / "in/f.jetpart").exists() and not (dst / "in/f.jetpart").is_symlink()
    canary_intact(dst)
