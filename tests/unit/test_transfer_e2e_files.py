"""Real files end to end: FileSource → Sender → lossy simulated link → Receiver → FileWriter,
between two sandboxed tmp trees; and the crash matrix: a writer killed with SIGKILL at each
named fault point, then resumed by a new writer.

The crash runs use a subprocess per kill (``JETTUI_FAULT`` is read at import).  The short
matrix runs in CI; the long one with random hit numbers and block orders is ``slow``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jettui.constants import (
    FILETYPE_REGULAR_FILE,
    OVERWRITE_ALWAYS,
    OVERWRITE_NEVER,
    OVERWRITE_VERSIONED,
    TRANSFER_FLAG_READ_WRITE,
    TRANSFER_FLAG_WRITE_MTIME,
)
from jettui.server.fsview import FileSystemView
from jettui.transfer import (
    FileReceived,
    ReceiverState,
    SenderState,
    StaticKey,
    TransferCompleted,
    TransferConfig,
    TransferFailed,
    TransferRequested,
)
from jettui.transfer.digest import digest_of
from jettui.transfer.faults import FAULT_POINTS
from jettui.transfer.manifest import FileEntry, block_count
from jettui.transfer.ranges import RangeSet
from jettui.transfer.receiver import Receiver
from jettui.transfer.sender import Sender
from jettui.transfer.simulation import Link, Simulation
from jettui.transfer.source import FileSource, build_manifest
from jettui.transfer.writer import FileWriter

REPO = Path(__file__).resolve().parents[2]
RECOGNISABLE = (".jetpart", ".jetpart.ckpt", ".jetpart.ckpt.tmp", ".jetbak")


# -- end to end over the simulated link -------------------------------------------------------------


class _Sink:
    """The receiver's sink until the request is accepted and the writer exists."""

    def __init__(self) -> None:
        self.target: FileWriter | None = None

    def write(self, file_index: int, offset: int, data: memoryview) -> None:
        assert self.target is not None
        self.target.write(file_index, offset, data)


class FileSimulation(Simulation):
    """Simulation whose receiver side is a FileWriter, answering events as the server does."""

    def __init__(
        self,
        sender: Sender,
        receiver: Receiver,
        sink: _Sink,
        make_writer: Callable[..., FileWriter],
        seed: int,
        loss: float,
    ) -> None:
        forward = Link(random.Random(seed), loss=loss)
        backward = Link(random.Random(seed + 1), loss=loss)
        super().__init__(sender, receiver, sink, forward, backward)  # type: ignore[arg-type]
        self.proxy = sink
        self.make_writer = make_writer
        self.writer: FileWriter | None = None
        self.present: dict[int, RangeSet] = {}  # type: ignore[assignment]

    def _events(self) -> None:
        while (event := self.sender.next_event()) is not None:
            self.sender_events.append(event)
        receiver = self.receiver
        while (event := receiver.next_event()) is not None:
            self.receiver_events.append(event)
            if isinstance(event, TransferRequested):
                self.writer = self.make_writer(event)
                self.proxy.target = self.writer
                self.present, skip = self.writer.plan()
                receiver.accept(self.present, skip)
            elif isinstance(event, FileReceived):
                assert self.writer is not None
                ok, message = self.writer.finish_file(event.file_index)
                receiver.file_verified(event.file_index, ok, message)


def _make_tree(src: Path, seed: int) -> dict[str, bytes]:
    rng = random.Random(seed)
    files = {
        "big.bin": rng.randbytes(1_500_000),
        "zero": b"",
        "one": b"1",
        "ü/日本語.txt": rng.randbytes(5000),
    }
    for i in range(25):
        files[f"many/{i:02d}"] = rng.randbytes(rng.randrange(0, 9000))
    for rel, data in files.items():
        (src / "tree" / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / "tree" / rel).write_bytes(data)
    (src / "tree" / "empty" / "dir").mkdir(parents=True)
    return files


def _session(
    src_fs: FileSystemView,
    dst_fs: FileSystemView,
    flags: int,
    seed: int,
    loss: float,
    *,
    overwrite: int = 4,
    stage_tag: str | None = None,
) -> tuple[FileSimulation, FileSource]:
    manifest = build_manifest(src_fs, {"/": "/tree"})
    source = FileSource(src_fs, manifest, manifest.sources, flags, recheck_bytes=256 * 1024)
    skey, rkey = StaticKey.generate(), StaticKey.generate()
    config = TransferConfig(initial_rate=50e6, max_rate=50e6)
    sender = Sender(config, manifest, source, static_key=skey, peer_public_key=rkey.public_bytes, transfer_id="t",
                    params={"destinationPath": "/in", "overwrite": overwrite, "transferFlags": flags})  # fmt: skip
    sink = _Sink()
    receiver = Receiver(TransferConfig(), sink, static_key=rkey)

    def make_writer(event: TransferRequested) -> FileWriter:
        p = event.params
        return FileWriter(dst_fs, p["destinationPath"], list(event.files), p["overwrite"], p["transferFlags"], None,
                          block_size=event.block_size, stage_tag=stage_tag)  # fmt: skip

    return FileSimulation(sender, receiver, sink, make_writer, seed, loss), source


@pytest.fixture
def trees(tmp_path: Path) -> tuple[Path, Path, FileSystemView, FileSystemView]:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    src_fs, dst_fs = FileSystemView({"": str(src)}), FileSystemView({"": str(dst)})
    yield src, dst, src_fs, dst_fs  # type: ignore[misc]
    src_fs.close()
    dst_fs.close()


def _assert_identical(src: Path, dst: Path) -> None:
    def listing(root: Path) -> dict[str, bytes | None]:
        return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in root.rglob("*")}

    assert listing(dst) == listing(src)


@pytest.mark.parametrize("stage_tag", [None, "c0ffee000001"])
def test_tree_over_a_lossy_link_ends_byte_identical(
    trees: tuple[Path, Path, FileSystemView, FileSystemView], stage_tag: str | None
) -> None:
    """Into /in, which the transfer creates: in place, or in a stage (with a tag)."""
    src, dst, src_fs, dst_fs = trees
    _make_tree(src, 1)
    flags = TRANSFER_FLAG_READ_WRITE | TRANSFER_FLAG_WRITE_MTIME
    sim, source = _session(src_fs, dst_fs, flags, seed=7, loss=0.05, stage_tag=stage_tag)
    sim.run(until=120)
    assert sim.sender.state is SenderState.COMPLETE, sim.sender_events
    assert sim.receiver.state is ReceiverState.CLOSED, sim.receiver_events
    assert isinstance(sim.sender_events[-1], TransferCompleted) and sim.sender_events[-1].failed == ()
    assert sim.sender.stats.blocks_retransmitted > 0  # the loss really hit data
    _assert_identical(src / "tree", dst / "in")
    assert [p.name for p in dst.iterdir()] == ["in"]
    big = (src / "tree" / "big.bin").stat()
    assert (dst / "in" / "big.bin").stat().st_mtime_ns == big.st_mtime_ns
    source.close()


def test_interrupted_transfer_resumes_with_only_the_missing_blocks(
    trees: tuple[Path, Path, FileSystemView, FileSystemView],
) -> None:
    src, dst, src_fs, dst_fs = trees
    files = _make_tree(src, 2)
    first, source = _session(src_fs, dst_fs, TRANSFER_FLAG_READ_WRITE, seed=3, loss=0.02)

    def stop_half_way(sim: Simulation) -> None:
        if sim.receiver.stats.blocks_received > 600 and sim.now < 1e6:  # type: ignore[attr-defined]
            sim.now = 1e6  # ends run(): the "process" dies here

    first.on_step = stop_half_way
    first.run(until=1e5)
    assert first.writer is not None and first.sender.state is SenderState.SENDING
    first.writer.checkpoint()
    first.writer.abort()  # a new session, with no sender checkpoint: the receiver's sidecars count
    source.close()
    assert (dst / "in" / "big.bin.jetpart.ckpt").exists()

    second, source = _session(src_fs, dst_fs, TRANSFER_FLAG_READ_WRITE, seed=4, loss=0.02)
    second.run(until=120)
    assert second.sender.state is SenderState.COMPLETE, second.sender_events
    resumed = sum(rs.count for rs in second.present.values())
    total = sum(block_count(len(d), second.sender.block_size) for d in files.values())
    assert resumed >= 500
    assert second.receiver.stats.blocks_received == total - resumed
    _assert_identical(src / "tree", dst / "in")
    source.close()


def test_source_changed_mid_transfer_fails_without_splicing(
    trees: tuple[Path, Path, FileSystemView, FileSystemView],
) -> None:
    src, dst, src_fs, dst_fs = trees
    _make_tree(src, 3)
    sim, source = _session(src_fs, dst_fs, TRANSFER_FLAG_READ_WRITE, seed=5, loss=0.0)
    changed = False

    def change_the_source(s: Simulation) -> None:
        nonlocal changed
        if not changed and s.receiver.stats.blocks_received > 100:  # type: ignore[attr-defined]
            with open(src / "tree" / "big.bin", "r+b") as handle:
                handle.seek(1_200_000)
                handle.write(b"edited!")
            os.utime(src / "tree" / "big.bin", ns=(1, 1_000_000_000))
            changed = True

    sim.on_step = change_the_source
    sim.run(until=60)
    assert sim.sender.state is SenderState.FAILED
    failure = [e for e in sim.sender_events if isinstance(e, TransferFailed)]
    assert failure and "changed during the transfer" in failure[0].message
    assert source.changed is not None and source.changed.path == "/tree/big.bin"
    assert not (dst / "in" / "big.bin").exists()  # nothing half-old, half-new under the final name
    source.close()


# -- crash matrix -------------------------------------------------------------------------------------

BS = 4096


def writer_job(cfg: dict[str, Any], check_present: Callable[[int, RangeSet], None] | None = None) -> dict[int, int]:
    """Receive cfg's files with a FileWriter as the driver would (plan, blocks in a seeded
    order, a checkpoint every few blocks, finish); returns the blocks resumed per file.
    Run in a subprocess with JETTUI_FAULT armed, and in-process to resume."""
    entries = [
        FileEntry(p, size, mtime, FILETYPE_REGULAR_FILE, bytes.fromhex(d)) for p, size, mtime, d in cfg["entries"]
    ]
    rng = random.Random(cfg["seed"])
    with FileSystemView({"": cfg["root"]}) as fs:
        w = FileWriter(fs, cfg.get("dest", "/in"), entries, cfg["overwrite"], TRANSFER_FLAG_READ_WRITE, block_size=BS,
                       stage_tag=cfg.get("tag"))  # fmt: skip
        present, skip = w.plan()
        writes = 0
        for i, entry in enumerate(entries):
            if i in skip:  # NEVER after a kill that came after this file was installed
                assert cfg["overwrite"] == OVERWRITE_NEVER and "overwrite mode is NEVER" in skip[i]
                continue
            have = present.get(i, RangeSet())
            if check_present is not None:
                check_present(i, have)
            data = memoryview(Path(cfg["sources"][i]).read_bytes())
            missing = [b for b in range(block_count(entry.size, BS)) if b not in have]
            if cfg["shuffle"]:
                rng.shuffle(missing)
            for b in missing:
                w.write(i, b * BS, data[b * BS : (b + 1) * BS])
                writes += 1
                if writes % cfg["every"] == 0:
                    w.checkpoint()
            if not cfg.get("batch"):
                ok, message = w.finish_file(i)
                assert ok, message
        if cfg.get("batch"):  # one finish_files call, as the server does (small files: held in memory)
            outcomes = w.finish_files([i for i in range(len(entries)) if i not in skip])
            assert all(ok for ok, _ in outcomes), outcomes
        w.close()
    return {i: rs.count for i, rs in present.items()}


_JOB = (
    "import json, sys; from tests.unit.test_transfer_e2e_files import writer_job; writer_job(json.loads(sys.argv[1]))"
)


def _crash_case(
    tmp: Path, overwrite: int, seed: int, small: bool = False
) -> tuple[dict[str, Any], dict[str, bytes], dict[str, bytes]]:
    """Files to receive (``small``: six of one block each, which the writer holds in memory
    and creates in one finish_files batch), the old versions beside them, and the job."""
    rng = random.Random(seed)
    root = tmp / "dst"
    (root / "in").mkdir(parents=True)
    (tmp / "src").mkdir()
    if small:
        new = {f"f{i}": rng.randbytes(rng.randint(1, BS)) for i in range(6)}
        old = {"f0": rng.randbytes(100), "f3": rng.randbytes(BS)}
    else:
        new = {"f0": rng.randbytes(40 * BS + 100), "f1": rng.randbytes(25 * BS), "f2": b""}
        old = {"f0": rng.randbytes(33 * BS)}
    if overwrite == OVERWRITE_NEVER:
        old = {}
    for name, data in old.items():
        (root / "in" / name).write_bytes(data)
    entries = []
    for name, data in new.items():
        (tmp / "src" / name).write_bytes(data)
        entries.append([name, len(data), 1_700_000_000_000_000_000, digest_of(data).hex()])
    cfg = {
        "root": str(root),
        "entries": entries,
        "sources": [str(tmp / "src" / n) for n in new],
        "overwrite": overwrite,
        "seed": seed,
        "shuffle": True,
        "every": 8,
        "batch": small,
    }
    return cfg, new, old


def _killed_at(cfg: dict[str, Any], point: str, hit: int) -> None:
    """Run writer_job(cfg) in a process that JETTUI_FAULT kills at ``point:hit``."""
    env = dict(os.environ, JETTUI_FAULT=f"{point}:{hit}")
    proc = subprocess.run([sys.executable, "-c", _JOB, json.dumps(cfg)], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, f"{point}:{hit} was not reached: rc={proc.returncode} {proc.stderr}"


def _crash_and_resume(
    tmp: Path, point: str, hit: int, overwrite: int, seed: int, small: bool = False
) -> dict[int, int]:
    cfg, new, old = _crash_case(tmp, overwrite, seed, small)
    _killed_at(cfg, point, hit)
    directory = Path(cfg["root"]) / "in"
    # After the kill: old-or-new complete under every final name, only recognisable leftovers.
    for name, data in new.items():
        target = directory / name
        if target.exists():
            assert target.read_bytes() in (old.get(name), data), f"{name} is a mix after {point}:{hit}"
        else:
            assert name not in old, f"{name} vanished after {point}:{hit}"
    for path in directory.iterdir():
        assert path.name in new or path.name.endswith(RECOGNISABLE), path.name

    def check_present(index: int, have: RangeSet) -> None:
        # A sidecar never claims a block that is not on disk with the new content.
        name = cfg["entries"][index][0]
        if not have:
            return
        part = (directory / f"{name}.jetpart").read_bytes()
        for s, e in have:
            assert part[s * BS : e * BS] == new[name][s * BS : e * BS], f"{name} blocks {s}-{e} claimed wrongly"

    resumed = writer_job(cfg, check_present)
    for name, data in new.items():
        assert (directory / name).read_bytes() == data
    left = {p.name for p in directory.iterdir()} - set(new)
    if overwrite == OVERWRITE_VERSIONED:
        # f0 had an old version; a file installed before the kill is versioned again by the
        # resumed transfer, so its backup is the (identical) new content.
        assert "f0.jetbak" in left and left <= {f"{name}.jetbak" for name in new}
        for backup in left:
            name = backup.removesuffix(".jetbak")
            assert (directory / backup).read_bytes() in (old.get(name), new[name])
    else:
        assert left == set()
    return resumed


@pytest.mark.parametrize(
    ("point", "hit", "overwrite"),
    [
        ("block-write", 30, OVERWRITE_ALWAYS),
        ("before-fsync", 1, OVERWRITE_ALWAYS),
        ("before-rename", 1, OVERWRITE_VERSIONED),
        ("before-dir-fsync", 2, OVERWRITE_ALWAYS),
        ("backup-rename", 1, OVERWRITE_VERSIONED),
        ("backup-rename", 2, OVERWRITE_VERSIONED),
        ("checkpoint-write", 4, OVERWRITE_ALWAYS),
        ("before-rename", 2, OVERWRITE_NEVER),
    ],
)
def test_crash_at_each_fault_point_then_resume(tmp_path: Path, point: str, hit: int, overwrite: int) -> None:
    resumed = _crash_and_resume(tmp_path, point, hit, overwrite, seed=11)
    if point in ("block-write", "checkpoint-write"):
        assert resumed.get(0, 0) >= 8  # the checkpoints before the kill were used


@pytest.mark.parametrize(
    ("point", "hit", "overwrite"),
    [
        ("block-write", 4, OVERWRITE_ALWAYS),
        ("before-fsync", 1, OVERWRITE_ALWAYS),
        ("before-rename", 3, OVERWRITE_ALWAYS),
        ("before-rename", 4, OVERWRITE_NEVER),
        ("before-dir-fsync", 1, OVERWRITE_VERSIONED),
        ("backup-rename", 3, OVERWRITE_VERSIONED),
    ],
)
def test_crash_in_a_batch_of_small_files_then_resume(tmp_path: Path, point: str, hit: int, overwrite: int) -> None:
    """Small files are created by finish_files from memory, a batch at a time, with the
    same steps and fault points as part-files written block by block."""
    _crash_and_resume(tmp_path, point, hit, overwrite, seed=5, small=True)


@pytest.mark.parametrize(
    ("point", "hit", "small"),
    [
        ("block-write", 30, False),
        ("before-rename", 1, False),
        ("before-rename", 4, False),
        ("checkpoint-write", 4, False),
        ("block-write", 4, True),
        ("before-fsync", 1, True),
        ("before-rename", 1, True),
        ("before-dir-fsync", 1, True),
    ],
)
def test_crash_in_a_staged_directory_then_resume(tmp_path: Path, point: str, hit: int, small: bool) -> None:
    """Into a directory the transfer creates (a stage, writer docstring): after the kill the
    directory is absent or whole; the resume adopts the stage and the directory appears whole."""
    cfg, new, old = _crash_case(tmp_path, OVERWRITE_ALWAYS, seed=9, small=small)
    tag = "feedc0de0001"
    cfg.update(dest="/in/new", tag=tag)
    _killed_at(cfg, point, hit)
    directory = Path(cfg["root"]) / "in"
    final = directory / "new"
    if final.exists():  # killed after the stage's rename
        assert {p.name: p.read_bytes() for p in final.iterdir()} == new
    assert {p.name for p in directory.iterdir()} <= {*old, "new", f"new.{tag}.jetpart", f"new.{tag}.jetpart.ckpt"}
    writer_job(cfg)
    assert {p.name: p.read_bytes() for p in final.iterdir()} == new
    assert {p.name for p in directory.iterdir()} == {*old, "new"}


def test_every_fault_point_is_in_the_matrix() -> None:
    covered = {"block-write", "before-fsync", "before-rename", "before-dir-fsync", "backup-rename", "checkpoint-write"}
    assert covered == set(FAULT_POINTS)


@pytest.mark.slow
@pytest.mark.parametrize("point", FAULT_POINTS)
@pytest.mark.parametrize("overwrite", [OVERWRITE_ALWAYS, OVERWRITE_VERSIONED])
def test_crash_matrix_random_offsets(tmp_path: Path, point: str, overwrite: int) -> None:
    """Many kills per point at random hit numbers and random block orders."""
    limits = {
        # A pwrite per block of f0 and f1 (66), less where a shuffled block happens to follow
        # the one before it (they are gathered into one pwrite) or a resume happened.
        "block-write": 50,
        "before-fsync": 3,
        "before-rename": 3,
        "before-dir-fsync": 3,
        "backup-rename": 2,  # only f0 had an old version
        "checkpoint-write": 8,
    }
    rng = random.Random(f"{point}-{overwrite}")
    if point == "backup-rename" and overwrite != OVERWRITE_VERSIONED:
        pytest.skip("backup-rename is only reached with OVERWRITE_VERSIONED")
    for iteration in range(12):
        case = tmp_path / str(iteration)
        case.mkdir()
        _crash_and_resume(case, point, rng.randint(1, limits[point]), overwrite, seed=rng.randrange(1 << 30))
