"""Staged directories (FileWriter's ``stage_tag``): a directory the transfer creates is built
beside its final place and appears whole when its last entry is finished; a resume adopts
the stage; a final name that appears meanwhile is merged into as the overwrite mode says.

Same layout as test_transfer_writer.py: ``tmp/dst`` is the sandbox root, ``/in`` exists.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgpack
import pytest

from jettui.constants import (
    FILETYPE_DIRECTORY,
    OVERWRITE_ALWAYS,
    OVERWRITE_IN_PLACE_SAME_SIZE,
    OVERWRITE_NEVER,
    OVERWRITE_VERSIONED,
)
from jettui.server.fsview import FileSystemView
from jettui.transfer.digest import digest_of
from jettui.transfer.manifest import FileEntry
from jettui.transfer.ranges import RangeSet
from jettui.transfer.writer import FileWriter
from tests.unit.test_transfer_writer import BS, MTIME, canary_intact, entry, send

TAG = "0123456789ab"
STAGE = f"new.{TAG}.jetpart"
AUX = (".jetpart", ".ckpt", ".tmp", ".jetbak")


def staged(fs: FileSystemView, entries: list[FileEntry], overwrite: int = OVERWRITE_ALWAYS, **kw: object) -> FileWriter:
    return FileWriter(fs, "/in", entries, overwrite, 3, block_size=BS, stage_tag=TAG, **kw)  # type: ignore[arg-type]


def tree() -> tuple[list[FileEntry], list[bytes]]:
    """Held small files (one block each), a file of several blocks, an empty file and an
    empty directory, all in the new directory ``new``, and one file in ``/in`` itself."""
    datas = [os.urandom(3000), os.urandom(BS), os.urandom(3 * BS + 10), b"", b"", os.urandom(100)]
    entries = [entry("new/a/s", datas[0]), entry("new/a/b/t", datas[1]), entry("new/big", datas[2]),
               entry("new/zero", datas[3]), FileEntry("new/empty", 0, MTIME, FILETYPE_DIRECTORY),
               entry("top", datas[5])]  # fmt: skip
    return entries, datas


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def expected(entries: list[FileEntry], datas: list[bytes]) -> dict[str, bytes]:
    return {e.path.removeprefix("new/"): d for e, d in zip(entries, datas, strict=True)
            if e.path.startswith("new/") and e.kind != FILETYPE_DIRECTORY}  # fmt: skip


def no_aux(root: Path) -> None:
    assert not [p for p in root.rglob("*") if p.name.endswith(AUX)], list(root.rglob("*"))


def test_missing_top(fs: FileSystemView, dst: Path) -> None:
    assert fs.missing_top("/in") is None
    assert fs.missing_top("/in/a/b/c") == ("/in/a", "/in", "a")
    assert fs.missing_top("/x") == ("/x", "/", "x")
    (dst / "in/file").write_bytes(b"")
    assert fs.missing_top("/in/file/b") is None  # not a missing name: the creation says what


def test_a_new_directory_appears_whole_when_its_last_entry_is_finished(fs: FileSystemView, dst: Path) -> None:
    entries, datas = tree()
    w = staged(fs, entries)
    assert w.plan() == ({}, {})
    assert (dst / "in" / STAGE).is_dir() and not (dst / "in/new").exists()
    for i, data in enumerate(datas):
        send(w, i, data)
    assert w.finish_files([5, 0, 1], [b""] * 3) == [(True, "")] * 3
    assert (dst / "in/top").read_bytes() == datas[5]  # an existing directory: in place at once
    # Held files are in the stage under their own names; nothing is under the final name.
    assert (dst / "in" / STAGE / "a/s").read_bytes() == datas[0]
    assert (dst / "in" / STAGE / "a/b/t").read_bytes() == datas[1]
    assert not (dst / "in/new").exists()
    assert w.finish_files([2, 3], [b""] * 2) == [(True, "")] * 2
    assert not (dst / "in/new").exists()
    assert w.finish_file(4) == (True, "")  # the last entry in it: published
    w.close()
    assert files_under(dst / "in/new") == expected(entries, datas)
    assert (dst / "in/new/empty").is_dir()
    assert sorted(p.name for p in (dst / "in").iterdir()) == ["new", "top"]
    assert (dst / "in/new/a/s").stat().st_mode & 0o777 == 0o644
    no_aux(dst)
    canary_intact(dst)


def bare(entries: list[FileEntry]) -> list[FileEntry]:
    """The entries without digests, as the server's manifests are (digests go with the data)."""
    return [FileEntry(e.path, e.size, e.mtime_ns, e.kind, mode=e.mode) for e in entries]


def test_a_resume_adopts_the_stage_and_rewrites_what_is_not_whole(fs: FileSystemView, dst: Path) -> None:
    """The first session finishes three held files (verified against the digests that came
    with their data, as the server's manifests carry none), checkpoints a block of the big
    one, fails one file's verification and stops.  A crash spoilt two of the finished files
    (nothing syncs a stage's files before its publication): one cut short, one the right
    size but zeros.  The resume reports the whole file (its journal record and content
    agree) and the checkpointed block as present, writes the rest again, and the tree
    appears whole."""
    entries, datas = tree()
    for name in ("u", "v"):
        datas.append(os.urandom(2000))
        entries.append(entry(f"new/a/{name}", datas[-1]))
    digests = [e.digest for e in entries]
    entries = bare(entries)
    w = staged(fs, entries)
    w.plan()
    for i in (0, 1, 6, 7):
        send(w, i, datas[i])
    send(w, 2, datas[2], [0])
    assert w.finish_files([0, 1, 6], [digests[0], digests[1], digests[6]]) == [(True, "")] * 3
    assert w.finish_file(7, digest_of(b"something else"))[0] is False
    assert w.checkpoint() == 1
    w.abort()
    assert (dst / "in" / f"{STAGE}.ckpt").is_file()  # the journal
    with open(dst / "in" / STAGE / "a/b/t", "r+b") as torn:
        torn.truncate(100)
    (dst / "in" / STAGE / "a/s").write_bytes(bytes(len(datas[0])))
    w2 = staged(fs, entries)
    present, skip = w2.plan()
    assert skip == {}
    assert present == {6: RangeSet([(0, 1)]), 2: RangeSet([(0, 1)])}
    assert not (dst / "in" / STAGE / "a/b/t").exists()  # not whole: removed, sent again
    assert not (dst / "in" / STAGE / "a/s").exists()
    for i, data in enumerate(datas):
        count = -(-len(data) // BS)
        send(w2, i, data, [b for b in range(count) if b not in present.get(i, RangeSet())])
    assert w2.finish_files(list(range(len(datas))), digests) == [(True, "")] * len(datas)
    w2.close()
    assert files_under(dst / "in/new") == expected(entries, datas)
    assert sorted(p.name for p in (dst / "in").iterdir()) == ["new", "top"]  # no stage, no journal
    no_aux(dst)


def test_an_adopted_stage_keeps_only_what_its_journal_vouches_for(fs: FileSystemView, dst: Path) -> None:
    """A file of an earlier manifest, a file the journal has another mtime for, and a link are
    removed from an adopted stage; part-files stay for their sidecars; a journal cut short
    in its last record still vouches for the records before it."""
    a, b, c = os.urandom(3000), os.urandom(3000), os.urandom(3000)
    stage = dst / "in" / STAGE  # as an earlier session left it
    stage.mkdir()
    for name, data in (("a", a), ("b", b), ("old", c), ("stray.jetpart", b"part")):
        (stage / name).write_bytes(data)
    (stage / "link").symlink_to("a")
    records = [("new/a", MTIME, a), ("new/b", MTIME + 1, b), ("new/old", MTIME, c)]
    journal = msgpack.packb([[p, 3000, m, digest_of(d)] for p, m, d in records[:2]])  # two appends
    journal += msgpack.packb([[p, 3000, m, digest_of(d)] for p, m, d in records[2:]])
    (dst / "in" / f"{STAGE}.ckpt").write_bytes(journal + msgpack.packb([["new/z", 1, 2, b"x"]])[:-2])
    w2 = staged(fs, [entry("new/a", a), entry("new/b", b)])
    present, skip = w2.plan()
    assert (present, skip) == ({0: RangeSet([(0, 1)])}, {})
    assert sorted(p.name for p in stage.iterdir()) == ["a", "stray.jetpart"]
    send(w2, 1, b)
    assert w2.finish_files([0, 1], [b""] * 2) == [(True, "")] * 2
    w2.close()
    assert files_under(dst / "in/new") == {"a": a, "b": b, "stray.jetpart": b"part"}


def test_a_stage_is_published_when_every_entry_has_its_verdict(fs: FileSystemView, dst: Path) -> None:
    """A file that fails verification is absent from the published tree, as it would be
    without a stage; the others are in place."""
    a, b = os.urandom(3000), os.urandom(3000)
    w = staged(fs, [entry("new/a", a), entry("new/b", b)])
    w.plan()
    send(w, 0, a)
    send(w, 1, b)
    assert w.finish_file(0) == (True, "")
    assert w.finish_file(1, digest_of(b"not it"))[0] is False
    w.close()
    assert files_under(dst / "in/new") == {"a": a}
    assert sorted(p.name for p in (dst / "in").iterdir()) == ["new"]


@pytest.mark.parametrize(
    "overwrite", [OVERWRITE_ALWAYS, OVERWRITE_VERSIONED, OVERWRITE_NEVER, OVERWRITE_IN_PLACE_SAME_SIZE]
)
def test_a_final_name_that_appears_meanwhile_is_merged_into(fs: FileSystemView, dst: Path, overwrite: int) -> None:
    entries, datas = tree()
    w = staged(fs, entries, overwrite)
    w.plan()
    for i, data in enumerate(datas):
        send(w, i, data)
    assert w.finish_files([0, 1, 2, 3, 5], [b""] * 5) == [(True, "")] * 5
    # Someone makes the directory, with a file the transfer also writes and one of their own.
    old = os.urandom(3000)
    (dst / "in/new/a").mkdir(parents=True)
    (dst / "in/new/a/s").write_bytes(old)
    (dst / "in/new/theirs").write_bytes(b"theirs")
    ok, message = w.finish_file(4)
    w.close()
    assert (dst / "in/new/theirs").read_bytes() == b"theirs"
    want = expected(entries, datas) | {"theirs": b"theirs"}
    if overwrite == OVERWRITE_NEVER:
        assert not ok
        assert message.startswith("/in/new appeared during the transfer; 3 received entries were moved into it, "
                                  f"the rest stay in /in/{STAGE}: /in/new/a/s appeared during the transfer and "
                                  "overwrite mode is NEVER")  # fmt: skip
        assert (dst / "in" / STAGE / "a/s").read_bytes() == datas[0]
        assert files_under(dst / "in/new") == want | {"a/s": old}
        return
    assert (ok, message) == (True, "")
    assert not (dst / "in" / STAGE).exists()
    if overwrite == OVERWRITE_VERSIONED:
        assert files_under(dst / "in/new") == want | {"a/s.jetbak": old}
    else:
        assert files_under(dst / "in/new") == want
        no_aux(dst)


def test_a_merge_moves_what_it_can(fs: FileSystemView, dst: Path) -> None:
    """An entry that cannot be merged (a file where its directory should be) fails alone."""
    data = os.urandom(3000)
    w = staged(fs, [FileEntry("new/empty", 0, MTIME, FILETYPE_DIRECTORY), entry("new/f", data)])
    w.plan()
    send(w, 1, data)
    assert w.finish_file(0) == (True, "")
    (dst / "in/new").mkdir()
    (dst / "in/new/empty").write_bytes(b"a file")
    ok, message = w.finish_file(1)
    w.close()
    assert not ok
    assert message == (
        f"/in/new appeared during the transfer; 1 received entries were moved into it, the rest stay in /in/{STAGE}: "
        "cannot create directory /in/new/empty: it exists and is not a directory"
    )
    assert files_under(dst / "in/new") == {"f": data, "empty": b"a file"}
    assert not (dst / "in" / STAGE).exists()  # nothing was left in it: removed


def test_staging_is_off_without_a_tag_or_when_a_name_could_clash(fs: FileSystemView, dst: Path) -> None:
    data = os.urandom(3000)
    cases = [
        (FileWriter(fs, "/in", [entry("n1/f", data)], OVERWRITE_ALWAYS, 3, block_size=BS), "n1"),
        (staged(fs, [entry("n2/f", data), entry("n2/x.jetpart.d/g", data)]), "n2"),
    ]
    (dst / "in" / f"n3.{TAG}.jetpart").write_bytes(b"in the way")
    cases.append((staged(fs, [entry("n3/f", data)]), "n3"))
    for w, name in cases:
        w.plan()
        assert (dst / "in" / name).is_dir()  # created in place, at once
        send(w, 0, data)
        assert w.finish_file(0) == (True, "")
        w.close()
        assert (dst / "in" / name / "f").read_bytes() == data
    assert (dst / "in" / f"n3.{TAG}.jetpart").read_bytes() == b"in the way"
    assert sorted(p.name for p in (dst / "in").iterdir()) == ["n1", "n2", "n3", f"n3.{TAG}.jetpart"]


def test_a_stage_in_a_named_sandbox(tmp_path: Path) -> None:
    """Virtual paths of a named sandbox (``data:/...``): the stage goes in the root itself."""
    root = tmp_path / "root"
    root.mkdir()
    data = os.urandom(3000)
    with FileSystemView({"data": str(root)}) as fs:
        w = FileWriter(fs, "data:/new", [entry("a/f", data)], OVERWRITE_ALWAYS, 3, block_size=BS, stage_tag=TAG)
        w.plan()
        assert sorted(p.name for p in root.iterdir()) == [STAGE]
        send(w, 0, data)
        assert w.finish_file(0) == (True, "")
        w.close()
    assert files_under(root) == {"new/a/f": data}
