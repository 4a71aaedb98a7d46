"""The receiver's file side of the data plane: part-files, resume sidecars, overwrite modes.

Where files land: ``<sandbox root>/<destinationPath>/<entry path>`` (spec §5.3).  Entry
paths are normalised like manifest destinations (absolute ones re-rooted; ``..``, NUL,
over-long names refused for the whole transfer).  Every directory is opened through the
user's :class:`~jettui.server.fsview.FileSystemView` (openat2 ``RESOLVE_BENEATH``: a
symbolic link in the destination tree that leads out of the sandbox is refused by the
kernel), and every file inside it with ``dir_fd=`` relative, ``O_NOFOLLOW`` calls.

Files on disk, next to the target ``<name>`` (visible, not hidden, so that a user can see
an unfinished transfer and what OVERWRITE_NEVER left behind):

* ``<name>.jetpart``: the data being received, created at the declared size with
  ``ftruncate`` (sparse; never larger, writes past it are refused).
* ``<name>.jetpart.ckpt``: the resume sidecar (format in :func:`_encode_sidecar`), written
  as ``<name>.jetpart.ckpt.tmp`` then renamed over, always after the part-file's fsync,
  so it never claims bytes that are not on disk.
* ``<name>.jetbak``: OVERWRITE_VERSIONED's copy of the previous file.

When ``<name>`` plus the longest suffix (``.jetpart.ckpt.tmp``) would pass 255 bytes,
these use a shortened stem: the first bytes of the name, ``~`` and 16 hex digits of the
name's SHA-256.  With ``state_dir_fd``, sidecars live in that directory instead (named by
a hash of the part-file's directory and name) so users' directories hold only part-files.

Staged directories: a directory the transfer creates (the topmost one missing on a path)
is built as ``<name>.<tag>.jetpart`` beside its final place, ``<tag>`` being the transfer's
(``stage_tag``), and renamed into place with RENAME_NOREPLACE once every entry inside it is
finished: after one ``syncfs``, and followed by an fsync of its parent.  Nothing under the
final name exists before then, so the small files held in memory (below) go into a stage
under their final names with one create and one ``pwrite`` each, without a part-file of
their own, a rename, a sync or a directory fsync (three system calls a file instead of
four, a batch's syncfs and its directory fsyncs: 13.2 -> 8.5 us a file on tmpfs, measured).
Larger files go through part-files inside the stage as anywhere else.  Each batch of
verified files is appended to the stage's journal, ``<name>.<tag>.jetpart.ckpt`` beside
it: entry path, size, mtime and the digest they were verified against.  A transfer that
stops keeps its stage and journal, and its resume (the same tag) adopts them: a file in the
stage is kept when the journal has it and its content has that digest (neither the files
nor the journal are synced before the publication, so a crash may have cut either short),
and everything else there that is not a part-file or sidecar is removed.  A stage is
published when every entry in it has its verdict, good or not: a file that failed is
absent, as it would be without a stage.  If the final name appears meanwhile, the finished
entries are moved into it one by one (:meth:`FileWriter._merge`: NEVER keeps what is
there, VERSIONED keeps it as a backup, the other modes replace it, as for a target that
appears during any transfer).  As with ``rsync --delay-updates``, a new tree appears
whole, at the end.

Overwrite modes (constants.OVERWRITE_*), decided per file by :meth:`FileWriter.plan`:

* ALWAYS: part-file, renamed over the target when complete and verified.
* VERSIONED: as ALWAYS, but first the existing target is hard-linked as ``.jetbak``
  (an older ``.jetbak`` is replaced), so the final name always holds a complete file.
* NEVER: an existing target (of any kind) skips the file; if one appears while the data
  flows, the rename refuses to replace it and the complete part-file is left in place.
* IN_PLACE_SAME_SIZE: an existing regular target of the same size, or empty, is written in
  place (no part-file; the crash guarantee below does not hold for it, which is what the
  mode means); a target of another size skips the file; no target: a part-file, as ALWAYS.

Crash guarantee (every mode but in-place): the final name holds the complete old file or
the complete new file at every instant, and the only leftovers are the names above.  The
sequence is: blocks → part-file; verify the digest of the whole part-file against the
manifest; chmod/utime; fsync; rename (link to ``.jetbak`` first for VERSIONED); fsync the
directory; remove the sidecar.

Blocks that continue the one before are gathered in memory up to ``COALESCE`` bytes and
written together; gathered bytes are not in the file's written ranges until their
``pwrite`` returns, so no checkpoint claims them (a checkpoint, a finish, or the
descriptor's eviction writes them; an abort drops them and a resume asks for them again).

A small new file that arrives whole in one block is held in memory by :meth:`write` and
created by :meth:`finish_files`: its bytes are verified there, in memory, and written in
one ``pwrite`` before the same metadata, sync and rename steps.

Hashing follows the data: a background thread reads back each large part-file's
contiguous prefix (what ``pwrite`` has put in it, from the page cache) into the file's
digest while later blocks still arrive, so finishing hashes only the tail instead of
reading the whole file a second time after the last block (~1 s per GiB, measured, at the
end of every big transfer).  It is still the part-file's content that is verified, read
back after it was written.

:meth:`FileWriter.finish_files` does the same for a batch with one ``syncfs`` per filesystem
and one fsync per directory (small files: two journal commits per batch, not per file).
Named fault points (:mod:`jettui.transfer.faults`, ``JETTUI_FAULT``): ``block-write``,
``before-fsync``, ``before-rename``, ``backup-rename``, ``before-dir-fsync``,
``checkpoint-write``.

Threads: :meth:`write` is called on the event loop (inside the receiver machine);
:meth:`plan`, :meth:`checkpoint` and :meth:`finish_file` block and may run in worker
threads at the same time.  One lock guards the shared tables (held around the ``pwrite``
too, which only copies into the page cache); slow work (hashing, fsync, renames) happens
outside it, on descriptors the worker owns.  A checkpoint holds a per-file lock while it
writes a file's sidecar and a finish waits that out after marking the file finishing, so a
sidecar can never reappear after the finish removed it.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import errno
import hashlib
import os
import stat
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from ..constants import (
    BACKUP_SUFFIX,
    FILETYPE_DIRECTORY,
    OVERWRITE_IN_PLACE_SAME_SIZE,
    OVERWRITE_NAMES,
    OVERWRITE_NEVER,
    OVERWRITE_VERSIONED,
    PARTFILE_SUFFIX,
    TRANSFER_FLAG_READ,
    TRANSFER_FLAG_WRITE,
    TRANSFER_FLAG_WRITE_MTIME,
    TRANSFER_FLAG_WRITE_ONLY_NEWER,
)
from ..errors import CommandError
from ..server import fsview
from ..server.fsview import FileSystemView
from ..server.sandbox import MAX_NAME_BYTES
from . import faults
from .digest import DIGEST_NAME, DIGEST_SIZE, FileHasher, digest_of, new_hasher
from .faults import fault_point
from .manifest import FileEntry, block_count
from .ranges import NO_RANGES, RangeSet
from .source import normalize_dest_path

__all__ = ["CKPT_SUFFIX", "FileWriter", "part_name", "part_names"]

#: Suffix of the resume sidecar (after the part-file's name).
CKPT_SUFFIX = PARTFILE_SUFFIX + ".ckpt"
_TMP_SUFFIX = ".tmp"
_LONGEST_SUFFIX = len((CKPT_SUFFIX + _TMP_SUFFIX).encode())
_AUX_SUFFIXES = (PARTFILE_SUFFIX, CKPT_SUFFIX, CKPT_SUFFIX + _TMP_SUFFIX, BACKUP_SUFFIX)

#: Sidecar layout version 1: magic, msgpack body, SHA-256 of magic + body.
SIDECAR_MAGIC = b"JETCKPT\x01"
#: Largest sidecar read back (a very lossy multi-TiB file has a few MiB of ranges).
MAX_SIDECAR_BYTES = 64 * 1024 * 1024
#: Descriptors kept open for writing, and directory descriptors kept for opening them.
MAX_OPEN_FILES = 64
MAX_OPEN_DIRS = 64
_HASH_CHUNK = 1024 * 1024
_ZEROS = bytes(_HASH_CHUNK)
_ZEROS_VIEW = memoryview(_ZEROS)
_STRIPES = 64
#: The hasher thread reads a part-file's prefix once this many new contiguous bytes are in
#: it.  Smaller files are hashed at finish: a thread wake-up would cost more than it saves.
HASH_AHEAD = 8 * 1024 * 1024
#: Directories plan() lists once instead of looking each name up.
MAX_LISTINGS = 4096
#: A new file that arrives whole in one block at most this big is kept in memory and
#: created, written and verified by finish_files in its worker thread: the receiving loop
#: does no open/ftruncate/pwrite/close for it (the per-file syscalls of 10,000 small files
#: held the loop ~100 us each, and the sender's rate control backs off from a busy loop).
SMALL_FILE = 256 * 1024
#: Most bytes held that way at once; past it small files are written at once like others.
MAX_STASHED = 64 * 1024 * 1024
#: Blocks that continue the previous one are gathered up to this many bytes and written in
#: one ``pwrite``: a ``pwrite`` per 1.4 kB block into tmpfs cost 2.4-3.5 us (1 s per 512 MB,
#: measured), one per 64 KiB 0.3 s, and the receiving loop is the loopback bottleneck.
COALESCE = 64 * 1024

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_RW = os.O_RDWR | os.O_NOFOLLOW | _CLOEXEC
_O_NEW = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _CLOEXEC
_O_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | _CLOEXEC
_O_LOG = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | _CLOEXEC
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_NO_HARDLINKS = {errno.EPERM, errno.EMLINK, errno.EXDEV, getattr(errno, "ENOTSUP", -1), errno.EOPNOTSUPP}


class _Mode(enum.Enum):
    SKIP = "skip"  # declined (reason in _File.reason)
    DONE = "done"  # whole in its stage since an earlier session (digest checked by plan())
    DISCARD = "discard"  # TRANSFER_FLAG_WRITE off: accept, count, drop
    DIR = "dir"  # an (empty) directory entry: created at finish
    PART = "part"  # write a part-file, rename into place
    INPLACE = "inplace"  # IN_PLACE_SAME_SIZE onto an existing file


class _State(enum.IntEnum):
    OPEN = 0
    FINISHING = 1
    FINISHED = 2


class _File:
    """What the writer knows of one entry.

    Slots with a hand-written __init__: the dataclass one (a default factory's RangeSet per
    file among twenty fields) made 10,000 of them cost 6.2 ms instead of 4, on the
    receiver's path from the manifest to its accept; class-level defaults (1.9 ms) only
    moved the cost into plan(), whose first assignments then grew each instance's dict
    (measured)."""

    __slots__ = (
        "index", "entry", "vparent", "name", "part", "mode", "reason", "fresh", "target_id", "have", "dirty",
        "state", "sidecar", "stale_part", "hasher", "hashed", "hash_queued", "stash", "stash_digest", "pending",
        "pending_at", "stage",
    )  # fmt: skip

    def __init__(self, index: int, entry: FileEntry, vparent: str, name: str, part: str) -> None:
        self.index = index
        self.entry = entry
        self.vparent = vparent  # virtual path of the directory the file goes in (shared by its siblings)
        self.name = name  # last component ("" for a directory entry naming destinationPath itself)
        self.part = part  # part-file name (the data's name; the target's own name in place)
        self.mode = _Mode.PART
        self.reason = ""
        self.fresh = True  # the part-file must be created anew on first open
        self.target_id: tuple[int, int] | None = None  # (dev, ino) planned for in-place writing
        # Bytes written (durable up to the last checkpoint): the shared empty set until the first write.
        self.have: RangeSet = NO_RANGES
        self.dirty = False
        self.state = _State.OPEN
        self.sidecar = True  # a sidecar may exist (False once plan() removed it and none was written)
        self.stale_part = True  # something may sit at the part-file name (False once plan() saw nothing)
        # Incremental verification (module docstring): the digest of bytes [0, hashed) of the data.
        self.hasher: FileHasher | None = None
        self.hashed = 0
        self.hash_queued = False
        self.stash: bytes | None = None  # a small file's whole content, written by finish_files
        self.stash_digest = b""  # its digest, computed by write() (set with every stash)
        # Contiguous blocks not yet written (COALESCE): not in ``have``, so never claimed.
        self.pending: bytearray | None = None
        self.pending_at = 0
        self.stage: _Stage | None = None  # the staged directory it is written in, if any

    # Derived on demand: most files of a big tree never need them, and building them for
    # every entry was a fifth of the receiver's set-up of 10,000 files.
    @property
    def display(self) -> str:
        """Virtual path of the target, for messages."""
        if not self.name:
            return self.vparent
        return self.vparent + self.name if self.vparent.endswith("/") else f"{self.vparent}/{self.name}"

    @property
    def ckpt(self) -> str:
        """Sidecar name in the directory the sidecar lives in ("" for a directory entry)."""
        return self.part + ".ckpt" if self.part else ""

    @property
    def bak(self) -> str:
        return self.part[: -len(PARTFILE_SUFFIX)] + BACKUP_SUFFIX if self.part else ""

    @property
    def data_name(self) -> str:
        """The name the data is written under: the target itself in place, else the part-file."""
        return self.name if self.mode is _Mode.INPLACE else self.part


class _Stage:
    """A directory the transfer creates, built under a staging name (module docstring)."""

    __slots__ = ("top", "parent", "name", "staged_name", "staged", "dirs", "left", "adopted", "journal", "log_fd")

    def __init__(self, top: str, parent: str, name: str, staged_name: str) -> None:
        self.top = top  # virtual path of the directory
        self.parent = parent  # ... of the existing directory it goes in
        self.name = name
        self.staged_name = staged_name
        self.staged = _join(parent, staged_name)  # virtual path it is built at
        self.dirs: list[str] = []  # virtual paths of the directories planned inside it
        self.left = 0  # entries inside it without a verdict yet
        self.adopted = False  # it was there already: an earlier session's
        # The earlier sessions' journal: entry path -> (size, mtime, digest) of files finished.
        self.journal: dict[str, tuple[int, int, bytes]] = {}
        self.log_fd: int | None = None  # this session's appends to the journal

    @property
    def log_name(self) -> str:
        """The journal's name, beside the stage (a sidecar's suffix: a recognisable leftover)."""
        return self.staged_name + ".ckpt"

    def where(self, vpath: str) -> str:
        """Where directory ``vpath`` (the top or inside it) is while it is staged."""
        return self.staged + vpath[len(self.top) :]


def _join(parent: str, name: str) -> str:
    return parent + name if parent.endswith("/") else f"{parent}/{name}"


def _split(vpath: str) -> tuple[str, str]:
    """(parent, name) of a virtual path below a root (``/a/b``, ``name:/a/b``)."""
    head, _, name = vpath.rpartition("/")
    return (head + "/" if not head or head.endswith(":") else head), name


@dataclass(slots=True, eq=False)
class _Ready:
    """A verified file between its checks and its rename (finish_files' working set)."""

    file: _File
    fd: int | None  # the data, owned; None in a batch (syncfs reaches it through ``parent``)
    dev: int
    parent: int  # directory descriptor, owned by finish_files
    cdir: int
    cname: str


def _load_syncfs() -> Any:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        func = libc.syncfs
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int]
    func.restype = ctypes.c_int
    return func


_syncfs = _load_syncfs()


def _syncfs_raising(fd: int) -> None:
    """Flush every dirty page and inode of the filesystem that ``fd`` is on."""
    if _syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _utf8_cut(name: str, limit: int) -> str:
    raw = name.encode("utf-8")[:limit]
    return raw.decode("utf-8", "ignore")  # drop a character cut in half


def part_names(name: str) -> tuple[str, str, str]:
    """(part-file, sidecar, backup) names for a target named ``name``."""
    part = part_name(name)
    return part, part + ".ckpt", part[: -len(PARTFILE_SUFFIX)] + BACKUP_SUFFIX


def part_name(name: str) -> str:
    """The part-file name for a target named ``name`` (see the module docstring)."""
    # A character is at most 4 UTF-8 bytes: short names skip the encoding.
    room = MAX_NAME_BYTES - _LONGEST_SUFFIX
    if len(name) * 4 <= room or len(name.encode("utf-8")) <= room:
        return name + PARTFILE_SUFFIX
    tag = "~" + hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return _utf8_cut(name, MAX_NAME_BYTES - _LONGEST_SUFFIX - len(tag)) + tag + PARTFILE_SUFFIX


def _read_umask() -> int:
    """The process umask without the racy set-and-restore of os.umask (Linux ≥ 4.7)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def _close(fd: int | None) -> None:
    if fd is not None and fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass


def _unlink(dir_fd: int, name: str) -> bool:
    try:
        os.unlink(name, dir_fd=dir_fd)
        return True
    except FileNotFoundError:
        return False


def _lstat(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _pwrite_all(fd: int, data: memoryview | bytes, offset: int) -> None:
    if not data:
        return
    n = os.pwrite(fd, data, offset)
    if n == len(data):
        return  # the usual case, without a view
    view = memoryview(data)[n:]
    offset += n
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def _encode_sidecar(entry: FileEntry, part_id: tuple[int, int], block_size: int, have: RangeSet) -> bytes:
    """Sidecar v1: ``b"JETCKPT\\x01"``, a msgpack map, then SHA-256 of the two.

    The map: ``path`` (manifest path), ``size``, ``mtime`` (ns), ``digest`` (the manifest
    identity: a different source means start over), ``part`` ([st_dev, st_ino] of the file
    the ranges are in: a replaced part-file means start over), ``blockSize`` (of the session
    that wrote it, 0 if unknown) and ``ranges``: the byte ranges on disk,
    :meth:`RangeSet.to_bytes` form (byte ranges, so a new session may use another block size).
    """
    body = msgpack.packb(
        {
            "path": entry.path,
            "size": entry.size,
            "mtime": entry.mtime_ns,
            "digest": entry.digest,
            "part": list(part_id),
            "blockSize": block_size,
            "ranges": have.to_bytes(),
        },
        use_bin_type=True,
    )
    head = SIDECAR_MAGIC + body
    return head + hashlib.sha256(head).digest()


def _decode_sidecar(data: bytes, entry: FileEntry, part_id: tuple[int, int]) -> tuple[RangeSet, int] | None:
    """(byte ranges, block size) when ``data`` is an intact sidecar for exactly this entry
    and part-file; None otherwise (corrupt, truncated, another source, another file)."""
    if len(data) < len(SIDECAR_MAGIC) + 32 or not data.startswith(SIDECAR_MAGIC):
        return None
    head, tag = data[:-32], data[-32:]
    if hashlib.sha256(head).digest() != tag:
        return None
    try:
        body = msgpack.unpackb(
            head[len(SIDECAR_MAGIC) :],
            raw=False,
            max_bin_len=MAX_SIDECAR_BYTES,
            max_str_len=1 << 16,
            max_array_len=16,
            max_map_len=16,
            max_ext_len=0,
        )
    except Exception:  # any damage at all means "no usable sidecar", never a crash
        return None
    if not isinstance(body, dict):
        return None
    identity = (body.get("path"), body.get("size"), body.get("mtime"), body.get("digest"), body.get("part"))
    if identity != (entry.path, entry.size, entry.mtime_ns, entry.digest, list(part_id)):
        return None
    block_size = body.get("blockSize")
    ranges = body.get("ranges")
    if not isinstance(block_size, int) or block_size < 0 or not isinstance(ranges, bytes):
        return None
    try:
        return RangeSet.from_bytes(ranges, limit=entry.size), block_size
    except ValueError:
        return None


def _next_data(fd: int, offset: int, size: int) -> tuple[int, int]:
    """The next data region ``[start, end)`` at or after ``offset`` (``(size, size)`` if
    only a hole is left); the whole rest when the filesystem cannot say."""
    try:
        start = os.lseek(fd, offset, os.SEEK_DATA)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            return size, size
        return offset, size
    try:
        end = os.lseek(fd, start, os.SEEK_HOLE)
    except OSError:
        end = size
    return min(start, size), min(end, size)


def bytes_to_blocks(have: RangeSet, size: int, block_size: int) -> RangeSet:
    """The blocks wholly inside ``have`` (byte ranges of a file of ``size`` bytes)."""
    blocks = RangeSet()
    nblocks = block_count(size, block_size)
    for start, end in have:
        first = -(-start // block_size)
        last = nblocks if end >= size else end // block_size
        if first < last:
            blocks.add(first, last)
    return blocks


class FileWriter:
    """BlockSink onto real files for one received transfer.  See the module docstring.

    ``block_size`` (keyword) is the session's block size, used to report resumable blocks;
    without it the writer uses the size recorded in the sidecar, or the length of the
    first full block written.  ``stage_tag`` (keyword; letters and digits) names this
    transfer's staged directories, the same for every session of the transfer; without it
    directories are created in place.
    """

    def __init__(
        self,
        fs: FileSystemView,
        destination_path: str | None,
        entries: Sequence[FileEntry],
        overwrite: int,
        flags: int,
        state_dir_fd: int | None = None,
        *,
        block_size: int | None = None,
        max_open: int = MAX_OPEN_FILES,
        stage_tag: str | None = None,
    ) -> None:
        if overwrite not in OVERWRITE_NAMES:
            raise CommandError(f"unknown overwrite mode {overwrite!r}")
        self._fs = fs
        self._overwrite = overwrite
        self._flags = flags
        self._write = bool(flags & TRANSFER_FLAG_WRITE)
        self._state_dir = state_dir_fd
        self._block_size = block_size
        self._max_open = max(1, max_open)
        self._umask = _read_umask()
        self._lock = threading.Lock()
        self._stripes = [threading.Lock() for _ in range(_STRIPES)]
        self._fds: OrderedDict[int, int] = OrderedDict()  # file index -> descriptor
        self._dirs: OrderedDict[str, int] = OrderedDict()  # virtual directory -> descriptor
        self._dirty: set[int] = set()  # files written since their last checkpoint
        self._closed = False
        # Incremental hashing; off when the data must be zeros (TRANSFER_FLAG_READ off).
        self._hash_ahead = bool(flags & TRANSFER_FLAG_READ)
        self._hash_cv = threading.Condition(self._lock)
        self._hash_queue: deque[int] = deque()
        self._hasher: threading.Thread | None = None
        self._listings: dict[str, set[str]] = {}  # plan(): names in each destination directory
        self._stashed = 0  # bytes of small files held for finish_files (see write())
        self.bytes_written = 0
        # Staging needs syncfs: it is what makes a stage's files durable before the rename.
        self._stage_tag = stage_tag if self._write and _syncfs is not None else None
        self._stages: dict[str, _Stage | None] = {}  # top -> its stage (None: created in place)
        self._stage_of: dict[str, _Stage | None] = {}  # directory planned -> the stage it is in
        self._real: dict[str, str] = {}  # staged directory -> where it is meanwhile
        base = fs.display(destination_path if destination_path else "/")
        self.destination = base
        self._files = self._make_files(base, entries)

    # -- set-up ------------------------------------------------------------------------------------
    def _make_files(self, base: str, entries: Sequence[FileEntry]) -> list[_File]:
        files: list[_File] = []
        seen: dict[str, int] = {}
        parents: dict[str, str] = {"": base}  # relative directory -> its virtual path
        for index, entry in enumerate(entries):
            try:
                rel = normalize_dest_path(entry.path, allow_empty=entry.kind == FILETYPE_DIRECTORY)
            except CommandError as exc:
                raise CommandError(f"manifest entry {index} refused: {exc.message}")
            if rel in seen:
                raise CommandError(f"manifest entries {seen[rel]} and {index} both write {rel!r}")
            seen[rel] = index
            head, _, name = rel.rpartition("/")
            vparent = parents.get(head)
            if vparent is None:
                vparent = parents[head] = base + head if base.endswith("/") else f"{base}/{head}"
            files.append(_File(index, entry, vparent, name, part_name(name) if name else ""))
        # Every part-file, sidecar or backup name ends with one of these suffixes: only an
        # entry named so can clash with another entry's (none, in nearly every manifest).
        if any(rel.endswith(_AUX_SUFFIXES) for rel in seen):
            aux: set[str] = set()
            for rel, index in seen.items():
                f = files[index]
                if f.name:
                    prefix = rel[: len(rel) - len(f.name)]
                    aux.update((prefix + f.part, prefix + f.ckpt, prefix + f.ckpt + _TMP_SUFFIX, prefix + f.bak))
            clash = aux.intersection(seen)
            if clash:
                raise CommandError(f"manifest entry {min(clash)!r} has the name of another entry's part-file or backup")
        if self._stage_tag is not None and any(PARTFILE_SUFFIX in rel for rel in seen):
            self._stage_tag = None  # an entry could have a staging name: no staging at all
        return files

    @property
    def files(self) -> int:
        return len(self._files)

    def target_path(self, index: int) -> str:
        """The virtual path file ``index`` is written to."""
        return self._files[index].display

    # -- planning --------------------------------------------------------------------------------------
    def plan(self, block_size: int | None = None) -> tuple[dict[int, RangeSet], dict[int, str]]:
        """Decide every file before data flows: ``(present, skip)`` for ``Receiver.accept``.

        ``present`` maps a file to the blocks a valid sidecar says are already on disk;
        ``skip`` maps a declined file to the reason.  Creates the destination directories
        (so permission problems show up now, per file).  Blocking.
        """
        if block_size is not None:
            self._block_size = block_size
        present: dict[int, RangeSet] = {}
        skip: dict[int, str] = {}
        if not self._write:
            for f in self._files:
                f.mode = _Mode.DISCARD
            return present, skip
        dirs: OrderedDict[str, int] = OrderedDict()
        self._listings = {}
        try:
            for f in self._files:
                try:
                    self._plan_one(f, dirs)
                except CommandError as exc:
                    f.mode, f.reason = _Mode.SKIP, exc.message
                except OSError as exc:
                    f.mode, f.reason = _Mode.SKIP, f"cannot write {f.display}: {os.strerror(exc.errno or errno.EIO)}"
                if f.mode is _Mode.SKIP:
                    skip[f.index] = f.reason
                    continue
                if f.stage is not None:
                    f.stage.left += 1
                if f.have:
                    bs = self._block_size
                    if bs:
                        blocks = bytes_to_blocks(f.have, f.entry.size, bs)
                        if blocks:
                            present[f.index] = blocks
        finally:
            self._listings = {}
            for fd in dirs.values():
                _close(fd)
        for stage in self._stages.values():
            if stage is not None and stage.adopted:
                self._clean_stage(stage)
            if stage is not None and not stage.left:
                self._publish(stage)  # every entry in it declined: no finish will come
        return present, skip

    def _clean_stage(self, stage: _Stage) -> None:
        """Remove from an adopted stage every file that plan() did not find whole (DONE) and
        that is not a part-file or sidecar: a file of an earlier manifest, or one plan()
        skipped, would otherwise be published unverified."""
        keep = {(stage.where(f.vparent), f.name) for f in self._files if f.stage is stage and f.mode is _Mode.DONE}
        todo = [stage.staged]
        while todo:
            vdir = todo.pop()
            try:
                fd = self._fs.open_dir_for_write(vdir, create=False)
            except CommandError:
                continue
            try:
                with os.scandir(fd) as listing:
                    found = [(e.name, e.is_dir(follow_symlinks=False)) for e in listing]
                for name, is_dir in found:
                    if is_dir:
                        todo.append(_join(vdir, name))
                    elif not name.endswith(_AUX_SUFFIXES) and (vdir, name) not in keep:
                        with contextlib.suppress(OSError):
                            _unlink(fd, name)
            finally:
                os.close(fd)

    def _place(self, vpath: str) -> _Stage | None:
        """Decide whether directory ``vpath`` is built in a stage (plan() only): yes when it
        is or is inside a directory that does not exist yet."""
        if vpath in self._stage_of:
            return self._stage_of[vpath]
        stage = None
        if self._stage_tag is not None:
            probe, known = vpath, False
            while probe:  # inside a stage already decided?
                if probe in self._stages:
                    stage, known = self._stages[probe], True
                    break
                probe = probe[: max(probe.rfind("/"), 0)]
            if not known:
                missing = self._fs.missing_top(vpath)
                if missing is not None:
                    stage = self._stages[missing[0]] = self._new_stage(*missing)
        self._stage_of[vpath] = stage
        if stage is not None:
            stage.dirs.append(vpath)
            self._real[vpath] = stage.where(vpath)
        return stage

    def _new_stage(self, top: str, parent: str, name: str) -> _Stage | None:
        """The stage of new directory ``top``: None when something other than a directory
        has its staging name (it is created in place then).  An existing directory of that
        name is this transfer's, left by an earlier session: it is adopted."""
        staged_name = part_name(f"{name}.{self._stage_tag}")
        try:
            pfd = self._fs.open_dir_for_write(parent, create=False)
        except CommandError:
            return None  # (the directory's creation reports the problem)
        try:
            st = _lstat(pfd, staged_name)
        finally:
            os.close(pfd)
        if st is not None and not stat.S_ISDIR(st.st_mode):
            return None
        stage = _Stage(top, parent, name, staged_name)
        if st is not None:
            stage.adopted = True
            stage.journal = self._read_journal(parent, stage.log_name)
        return stage

    def _read_journal(self, parent: str, name: str) -> dict[str, tuple[int, int, bytes]]:
        """The records of a stage's journal, up to the first damaged one (a crash may have
        cut the unsynced file anywhere); none when it is missing or not a regular file."""
        records: dict[str, tuple[int, int, bytes]] = {}
        try:
            pfd = self._fs.open_dir_for_write(parent, create=False)
            try:
                fd = os.open(name, _O_READ, dir_fd=pfd)
            finally:
                os.close(pfd)
        except (OSError, CommandError):
            return records
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return records
            unpacker = msgpack.Unpacker(
                raw=False,
                max_buffer_size=MAX_SIDECAR_BYTES,
                max_bin_len=1024,
                max_str_len=1 << 16,
                max_array_len=1 << 20,
                max_map_len=0,
                max_ext_len=0,
            )
            while chunk := os.read(fd, _HASH_CHUNK):
                unpacker.feed(chunk)
                for batch in unpacker:  # an array of [path, size, mtime, digest] per append
                    for path, size, mtime, digest in batch:
                        if not (isinstance(path, str) and type(size) is int and type(mtime) is int
                                and isinstance(digest, bytes)):  # fmt: skip
                            return records
                        records[path] = (size, mtime, digest)
        except Exception:  # any damage ends the journal there, never the transfer
            return records
        finally:
            os.close(fd)
        return records

    def _open_dir(self, vpath: str, create: bool) -> int:
        """A descriptor on directory ``vpath``, wherever it is (staged or in place)."""
        return self._fs.open_dir_for_write(self._real.get(vpath, vpath), create=create)

    def _plan_dir(self, dirs: OrderedDict[str, int], vparent: str) -> int:
        fd = dirs.get(vparent)
        if fd is not None:
            dirs.move_to_end(vparent)
            return fd
        self._place(vparent)
        fd = self._open_dir(vparent, create=True)
        dirs[vparent] = fd
        if len(dirs) > MAX_OPEN_DIRS:
            _close(dirs.popitem(last=False)[1])
        if vparent not in self._listings and len(self._listings) < MAX_LISTINGS:
            self._listings[vparent] = set(os.listdir(fd))
        return fd

    def _absent(self, vparent: str, *names: str) -> bool:
        """True when plan()'s listing of ``vparent`` has none of ``names``: no lstat or unlink
        needed (10,000 small files: four syscalls each into a new directory, measured).  A
        name that appears later is met by the O_EXCL create and the rename rules anyway."""
        listing = self._listings.get(vparent)
        if listing is None:
            return False
        return not listing or not any(name in listing for name in names)  # (a new directory: empty)

    def _plan_one(self, f: _File, dirs: OrderedDict[str, int]) -> None:
        entry = f.entry
        if entry.kind == FILETYPE_DIRECTORY:
            f.mode = _Mode.DIR
            if f.name:
                st = _lstat(self._plan_dir(dirs, f.vparent), f.name)
                if st is not None and not stat.S_ISDIR(st.st_mode):
                    raise CommandError(f"cannot create directory {f.display}: it exists and is not a directory")
            f.stage = self._place(f.display)
            return
        parent = self._plan_dir(dirs, f.vparent)
        f.stage = self._stage_of.get(f.vparent)
        listing = self._listings.get(f.vparent)
        if listing is not None and not listing and self._state_dir is None:
            # A directory that was empty (most often just made): nothing of this file is
            # there, neither target, part-file nor sidecar, so it is written fresh; what the
            # general path below concludes for absent names, without asking per name.
            f.mode, f.fresh, f.stale_part, f.sidecar = _Mode.PART, True, False, False
            return
        target = None if self._absent(f.vparent, f.name) else _lstat(parent, f.name)
        if target is not None and stat.S_ISDIR(target.st_mode):
            raise CommandError(f"cannot write {f.display}: it is a directory")
        if target is not None and f.stage is not None:
            # Only this transfer writes in its stage: the file is its own, from an earlier
            # session, and may have been cut short by a crash (nothing synced it yet).
            if self._staged_whole(f, parent, target):
                f.mode = _Mode.DONE
                f.have = RangeSet()
                if entry.size:
                    f.have.add(0, entry.size)
                return
            _unlink(parent, f.name)
            target = None
        if self._overwrite == OVERWRITE_IN_PLACE_SAME_SIZE and target is not None:
            if not stat.S_ISREG(target.st_mode):
                raise CommandError(f"cannot write {f.display} in place: it is not a regular file")
            f.mode = _Mode.INPLACE
            f.fresh = False
            f.target_id = (target.st_dev, target.st_ino)
            resumed = self._load_sidecar(f, parent, f.target_id)
            if resumed:
                return  # our own interrupted in-place write: its mtime and content are ours now
            self._check_newer(f, target)
            if target.st_size not in (0, entry.size):
                raise CommandError(
                    f"{f.display} exists with {target.st_size} bytes, the source has {entry.size}: "
                    "overwrite mode IN_PLACE_SAME_SIZE leaves it alone"
                )
            return
        if target is not None:
            if self._overwrite == OVERWRITE_NEVER:
                raise CommandError(f"{f.display} exists and overwrite mode is NEVER")
            self._check_newer(f, target)
        f.mode = _Mode.PART
        part = None if self._absent(f.vparent, f.part) else _lstat(parent, f.part)
        f.stale_part = part is not None
        usable = part is not None and stat.S_ISREG(part.st_mode) and part.st_size == entry.size
        if usable and self._load_sidecar(f, parent, (part.st_dev, part.st_ino)):  # type: ignore[union-attr]
            f.fresh = False
            return
        # Start over: drop the sidecar (and its temporary) before anything is written, so a
        # crash from here on cannot pair an old sidecar with new data.
        f.fresh = True
        if f.have:
            f.have = NO_RANGES
        if self._state_dir is None and self._absent(f.vparent, f.ckpt, f.ckpt + _TMP_SUFFIX):
            f.sidecar = False
            return
        cdir, cname = self._ckpt_location(f, parent)
        try:
            if _unlink(cdir, cname) | _unlink(cdir, cname + _TMP_SUFFIX):
                os.fsync(cdir)
            f.sidecar = False
        except OSError as exc:
            raise CommandError(
                f"cannot write {f.display}: {cname!r} is in the way and cannot be removed ({exc.strerror})"
            )

    def _staged_whole(self, f: _File, parent: int, target: os.stat_result) -> bool:
        """Whether the file at ``f``'s name in its stage is whole: the stage's journal has this
        entry and the file has the digest recorded there (and the block size is known, to
        report its blocks as present)."""
        assert f.stage is not None
        entry = f.entry
        record = f.stage.journal.get(entry.path)
        if record is None or record[:2] != (entry.size, entry.mtime_ns) or not self._block_size:
            return False
        if not stat.S_ISREG(target.st_mode) or target.st_size != entry.size:
            return False
        try:
            fd = os.open(f.name, _O_READ, dir_fd=parent)
        except OSError:
            return False  # unreadable (its mode bits are the source's): written again
        try:
            return self._verify(fd, entry, record[2])[0]
        except OSError:
            return False
        finally:
            os.close(fd)

    def _check_newer(self, f: _File, target: os.stat_result) -> None:
        if self._flags & TRANSFER_FLAG_WRITE_ONLY_NEWER and target.st_mtime_ns > f.entry.mtime_ns:
            raise CommandError(f"{f.display} is newer than the source (TRANSFER_FLAG_WRITE_ONLY_NEWER)")

    def _ckpt_location(self, f: _File, parent: int) -> tuple[int, str]:
        """(directory descriptor, name) of the sidecar of ``f`` whose directory is ``parent``."""
        if self._state_dir is None:
            return parent, f.ckpt
        st = os.fstat(parent)
        key = f"{st.st_dev}:{st.st_ino}/{f.part}".encode("utf-8", "surrogateescape")
        return self._state_dir, f"{hashlib.sha256(key).hexdigest()[:40]}{CKPT_SUFFIX}"

    def _load_sidecar(self, f: _File, parent: int, part_id: tuple[int, int]) -> bool:
        """Adopt the ranges of a valid sidecar into ``f.have``; False when there is none."""
        cdir, cname = self._ckpt_location(f, parent)
        try:
            fd = os.open(cname, _O_READ, dir_fd=cdir)
        except FileNotFoundError:
            return False
        except OSError:
            return False  # a link or something odd in its place: not ours, start over
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_SIDECAR_BYTES:
                return False
            chunks = []
            while True:
                chunk = os.read(fd, _HASH_CHUNK)
                if not chunk:
                    break
                chunks.append(chunk)
        finally:
            os.close(fd)
        decoded = _decode_sidecar(b"".join(chunks), f.entry, part_id)
        if decoded is None:
            return False
        f.have, recorded = decoded
        if self._block_size is None and recorded:
            self._block_size = recorded
        return True

    # -- data ------------------------------------------------------------------------------------------
    def write(self, file_index: int, offset: int, data: memoryview) -> None:
        """Store a block (BlockSink).  Refuses bytes past the declared size; disk full is a
        CommandError naming the file.  Does not keep ``data``."""
        f = self._files[file_index]
        n = len(data)
        end = offset + n
        size = f.entry.size
        if offset < 0 or end > size:
            raise CommandError(f"refused {n} bytes at offset {offset} of {f.display}: past its declared size {size}")
        if f.mode is not _Mode.PART and f.mode is not _Mode.INPLACE:
            if f.mode is _Mode.DISCARD:
                self.bytes_written += n
                return
            raise CommandError(f"no data was expected for {f.display} ({f.mode.value})")
        if self._block_size is None and end < size and n:
            self._block_size = n  # only the last block of a file is shorter than the others
        # A small fresh file comes whole in one block: it is held in memory (below).  plan()
        # set its mode and freshness, and only this thread stashes, so this holds under the lock.
        held = n == size <= SMALL_FILE and f.mode is _Mode.PART and f.fresh and f.stash is None
        # Hashed here, on the receiving loop, outside the lock: that loop has time to spare
        # while the finishing thread (create, write, rename per file) bounds a tree of small
        # files (4 KiB: 2.4 us of its ~25).
        digest = digest_of(data) if held and self._flags & TRANSFER_FLAG_READ else b""
        with self._lock:
            if f.state is not _State.OPEN or self._closed:
                raise CommandError(f"{f.display} is no longer open for writing")
            if held and self._stashed + n <= MAX_STASHED:
                # Not yet on disk and not in ``have``: a checkpoint claims nothing of it,
                # and an abort leaves nothing of it (the sender sends it again).
                f.stash = bytes(data)
                f.stash_digest = digest
                self._stashed += n
                self.bytes_written += n
                return
            fd = self._fds.get(file_index)
            if fd is None:
                try:
                    fd = self._open_locked(f)
                except OSError as exc:
                    raise self._io_error(exc, f, "writing")
            else:
                self._fds.move_to_end(file_index)
            pending = f.pending
            if pending is not None:
                if offset == f.pending_at + len(pending):
                    pending += data
                    if len(pending) >= COALESCE or end == size:
                        self._flush_locked(f, fd)
                    self.bytes_written += n
                    return
                self._flush_locked(f, fd)
            if n < COALESCE and end < size:
                f.pending = bytearray(data)  # its descriptor stays open while it holds any
                f.pending_at = offset
            else:
                self._store_locked(f, fd, data, offset)
        self.bytes_written += n

    def _flush_locked(self, f: _File, fd: int) -> None:
        """Write the blocks ``f`` gathered (see COALESCE); they are dropped if that fails."""
        pending = f.pending
        if pending is None:
            return
        f.pending = None
        self._store_locked(f, fd, pending, f.pending_at)

    def _store_locked(self, f: _File, fd: int, data: memoryview | bytearray, offset: int) -> None:
        n = len(data)
        try:
            if faults.FAULT is not None and faults.FAULT[0] == "block-write" and n > 1:
                _pwrite_all(fd, memoryview(data)[: n // 2], offset)
                fault_point("block-write")
            _pwrite_all(fd, data, offset)
        except OSError as exc:
            raise self._io_error(exc, f, "writing")
        if f.have is NO_RANGES:
            f.have = RangeSet()
        f.have.add(offset, offset + n)
        if not f.dirty:
            f.dirty = True
            self._dirty.add(f.index)
        size = f.entry.size
        if self._hash_ahead and size >= HASH_AHEAD and not f.hash_queued:
            first = f.have.first()
            if first is not None and first[0] == 0 and (first[1] - f.hashed >= HASH_AHEAD or first[1] == size):
                self._queue_hash_locked(f)

    # -- incremental hashing ----------------------------------------------------------------------------
    def _queue_hash_locked(self, f: _File) -> None:
        f.hash_queued = True
        self._hash_queue.append(f.index)
        if self._hasher is None:
            self._hasher = threading.Thread(target=self._hash_loop, name="jettui-writer-hash", daemon=True)
            self._hasher.start()
        self._hash_cv.notify()

    def _hash_loop(self) -> None:
        buf = bytearray(_HASH_CHUNK)
        view = memoryview(buf)
        while True:
            with self._lock:
                while not self._hash_queue and not self._closed:
                    self._hash_cv.wait()
                if self._closed:
                    return
                index = self._hash_queue.popleft()
            f = self._files[index]
            # The stripe lock keeps a finish (which continues from ``hashed``) waiting while
            # the digest moves on; a file already finishing is left alone.
            with self._stripes[index % _STRIPES]:
                with self._lock:
                    f.hash_queued = False
                    first = f.have.first()
                    end = first[1] if first is not None and first[0] == 0 else 0
                    fd = self._fds.get(index)
                    if f.state is not _State.OPEN or fd is None or end <= f.hashed:
                        continue  # its descriptor was recycled: the finish hashes the rest
                    fd = os.dup(fd)
                try:
                    hasher = f.hasher if f.hasher is not None else new_hasher()
                    pos = f.hashed
                    while pos < end:
                        n = os.preadv(fd, [view[: min(_HASH_CHUNK, end - pos)]], pos)
                        if n <= 0:
                            break
                        hasher.update(view[:n])  # releases the GIL for large updates
                        pos += n
                    f.hasher, f.hashed = hasher, pos
                except OSError:
                    f.hasher, f.hashed = None, 0  # the finish starts over from byte 0
                finally:
                    os.close(fd)

    def _io_error(self, exc: OSError, f: _File, doing: str) -> CommandError:
        if exc.errno in _DISK_FULL:
            return CommandError(f"receiver disk full while {doing} {f.display}")
        return CommandError(f"error while {doing} {f.display}: {os.strerror(exc.errno or errno.EIO)}")

    def _dir_locked(self, vparent: str) -> int:
        fd = self._dirs.get(vparent)
        if fd is not None:
            self._dirs.move_to_end(vparent)
            return fd
        fd = self._open_dir(vparent, create=True)
        self._dirs[vparent] = fd
        if len(self._dirs) > MAX_OPEN_DIRS:
            _close(self._dirs.popitem(last=False)[1])
        return fd

    def _open_locked(self, f: _File) -> int:
        fd = self._open_data(f, self._dir_locked(f.vparent))
        self._fds[f.index] = fd
        while len(self._fds) > self._max_open:
            # Closing needs no fsync: the next checkpoint or finish reopens the file by
            # name and fsync flushes the inode's pages whichever descriptor wrote them.
            index, old = self._fds.popitem(last=False)
            try:
                self._flush_locked(self._files[index], old)
            finally:
                _close(old)
        return fd

    @staticmethod
    def _create_part(f: _File, parent: int, create_mode: int, name: str = "") -> int:
        """Create the part-file of fresh file ``f`` (or ``name``: a held file's own name in a
        stage): whatever has the name (a stale file, or a link someone planted) is removed
        and ours made with O_EXCL|O_NOFOLLOW, which never writes through anything."""
        if f.stale_part:
            _unlink(parent, f.part)
        name = name or f.part
        try:
            fd = os.open(name, _O_NEW, create_mode, dir_fd=parent)
        except FileExistsError:  # appeared since plan(): remove it and try once more
            _unlink(parent, name)
            fd = os.open(name, _O_NEW, create_mode, dir_fd=parent)
        f.fresh = False
        return fd

    def _open_data(self, f: _File, parent: int, sized: bool = True, create_mode: int = 0o600) -> int:
        """Open (creating if fresh, with ``create_mode``) the file the data of ``f`` goes
        into; a fresh one is sized to the entry unless ``sized`` is False (the caller writes
        all of it)."""
        size = f.entry.size
        if f.mode is _Mode.INPLACE:
            fd = os.open(f.name, _O_RW, dir_fd=parent)
            try:
                st = os.fstat(fd)
                if (st.st_dev, st.st_ino) != f.target_id or not stat.S_ISREG(st.st_mode):
                    raise CommandError(f"{f.display} was replaced while it was being written in place")
                if st.st_size != size:
                    if st.st_size:
                        raise CommandError(f"{f.display} changed size while it was being written in place")
                    os.ftruncate(fd, size)
            except BaseException:
                os.close(fd)
                raise
            return fd
        if f.fresh:
            fd = self._create_part(f, parent, create_mode)
            try:
                if sized:
                    os.ftruncate(fd, size)  # sparse, and the size it must never pass
            except BaseException:
                os.close(fd)
                raise
            return fd
        try:
            fd = os.open(f.part, _O_RW, dir_fd=parent)
        except FileNotFoundError:
            raise CommandError(f"the part-file of {f.display} disappeared during the transfer")
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size != size:
            os.close(fd)
            raise CommandError(f"the part-file of {f.display} was changed during the transfer")
        return fd

    # -- checkpoints -----------------------------------------------------------------------------------
    def checkpoint(self) -> int:
        """Make the received data durable and record it: fsync every part-file written
        since the last checkpoint, then write its sidecar atomically.  Returns how many
        sidecars were written.  Blocking; safe while :meth:`write` goes on."""
        todo: list[tuple[_File, int | None, RangeSet]] = []
        with self._lock:
            if self._closed:
                return 0
            self._flush_all_locked()
            for index in sorted(self._dirty):
                f = self._files[index]
                f.dirty = False
                if f.state is _State.OPEN:
                    fd = self._fds.get(index)
                    # The snapshot is taken before the fsync below, so it claims only bytes
                    # whose pwrite has returned: the fsync makes them durable.
                    todo.append((f, os.dup(fd) if fd is not None else None, f.have.copy()))
            self._dirty.clear()
        written = 0
        error: CommandError | None = None
        for f, fd, have in todo:
            try:
                with self._stripes[f.index % _STRIPES]:
                    with self._lock:
                        if f.state is not _State.OPEN:
                            continue
                    self._checkpoint_one(f, fd, have)
                    written += 1
            except (OSError, CommandError) as exc:
                with self._lock:
                    f.dirty = True
                    self._dirty.add(f.index)
                if error is None:
                    error = exc if isinstance(exc, CommandError) else self._io_error(exc, f, "checkpointing")
            finally:
                _close(fd)
        if error is not None:
            raise error
        return written

    def _flush_all_locked(self) -> None:
        """Write every file's gathered blocks; the first failure is raised after the rest.
        Only files with a descriptor open can hold any (an eviction writes them first)."""
        error: CommandError | None = None
        for index, fd in self._fds.items():
            try:
                self._flush_locked(self._files[index], fd)
            except CommandError as exc:
                error = error or exc
        if error is not None:
            raise error

    def _checkpoint_one(self, f: _File, fd: int | None, have: RangeSet) -> None:
        parent = self._open_dir(f.vparent, create=False)
        own = None
        try:
            if fd is None:
                own = fd = os.open(f.data_name, _O_RW, dir_fd=parent)
            st = os.fstat(fd)
            os.fsync(fd)
            data = _encode_sidecar(f.entry, (st.st_dev, st.st_ino), self._block_size or 0, have)
            cdir, cname = self._ckpt_location(f, parent)
            tmp = cname + _TMP_SUFFIX
            _unlink(cdir, tmp)
            f.sidecar = True
            tfd = os.open(tmp, _O_NEW, 0o600, dir_fd=cdir)
            try:
                if faults.FAULT is not None:
                    _pwrite_all(tfd, data[: len(data) // 2], 0)
                    fault_point("checkpoint-write")
                _pwrite_all(tfd, data, 0)
                os.fsync(tfd)
            finally:
                os.close(tfd)
            # rename is atomic: a crash leaves the old sidecar or the new one, both true.
            os.rename(tmp, cname, src_dir_fd=cdir, dst_dir_fd=cdir)
        finally:
            _close(own)
            os.close(parent)

    # -- finishing -------------------------------------------------------------------------------------
    def finish_file(self, file_index: int, digest: bytes = b"") -> tuple[bool, str]:
        """Verify and install one complete file (the answer to ``FileReceived``), against
        ``digest`` (the event's) or else the manifest's.

        Returns ``(ok, message)`` for ``Receiver.file_verified``.  On a digest mismatch the
        part-file and sidecar are removed (a retry starts clean) and nothing is renamed.
        Blocking.
        """
        return self.finish_files([file_index], [digest])[0]

    def finish_files(self, indices: Sequence[int], digests: Sequence[bytes] | None = None) -> list[tuple[bool, str]]:
        """:meth:`finish_file` for several files at once, in the same order (``digests``
        likewise, an empty one meaning the manifest's).

        The same steps with the syncs batched: every file is verified, then their data is
        made durable with one ``syncfs`` per filesystem (instead of an fsync per file), then
        all are renamed, then each directory is fsynced once.  No rename happens before the
        data of every file in the batch is durable, so the crash guarantee is unchanged;
        thousands of small files no longer cost two journal commits each.  Files held in
        memory go through the same steps as a batch of their own (:meth:`_finish_held`),
        before the files written block by block.
        """
        results: dict[int, tuple[bool, str]] = {}
        owned: list[tuple[_File, int | None]] = []
        settled: list[_File] = []  # files given their verdict by this call
        expected = dict(zip(indices, digests, strict=True)) if digests is not None else {}
        with self._lock:
            for index in indices:
                f = self._files[index]
                if f.mode is _Mode.SKIP:
                    results[index] = (False, f.reason)
                elif f.mode is _Mode.DISCARD:
                    results[index] = (True, "not written (TRANSFER_FLAG_WRITE is off)")
                elif f.state is not _State.OPEN:
                    results[index] = (False, f"{f.display} was already finished")
                else:
                    f.state = _State.FINISHING
                    fd = self._fds.pop(index, None)  # ours now: write() refuses it
                    if fd is not None:
                        try:
                            self._flush_locked(f, fd)
                        except CommandError as exc:
                            # Left as a resume finds it: the sidecar claims only written bytes.
                            os.close(fd)
                            f.state = _State.FINISHED
                            results[index] = (False, exc.message)
                            settled.append(f)
                            continue
                    owned.append((f, fd))
                    settled.append(f)
        # A checkpoint that picked one of these files before FINISHING was set may still be
        # writing its sidecar: wait it out, so the sidecar cannot reappear after we remove it.
        # Later checkpoints see FINISHING and leave the file alone.
        for stripe in sorted({f.index % _STRIPES for f, _ in owned}):
            with self._stripes[stripe]:
                pass
        parents: dict[str, int] = {}
        ready: list[_Ready] = []
        held: list[tuple[_File, int]] = []  # verified files held in memory, and their directory
        batched = len(owned) > 1 and _syncfs is not None
        try:
            for f, fd in owned:
                try:
                    if f.mode is _Mode.DIR:
                        results[f.index] = self._finish_dir(f)
                        continue
                    if f.mode is _Mode.DONE:
                        results[f.index] = (True, "")
                        continue
                    parent = parents.get(f.vparent)
                    if parent is None:
                        parent = parents[f.vparent] = self._open_dir(f.vparent, create=True)
                    digest = expected.get(f.index) or f.entry.digest
                    if f.stash is not None:
                        # Checked in memory, then written in one pwrite by _finish_held: the
                        # bytes on disk are the ones verified (no read-back or second fstat).
                        ok, why = self._verify_bytes(f.stash, digest, f.stash_digest)
                        if ok:
                            held.append((f, parent))
                        else:
                            self._drop_stash(f)
                            results[f.index] = (False, f"{f.display} failed verification ({why}); "
                                                "the part-file was removed")  # fmt: skip
                        continue
                    handed, fd = fd, None  # _prepare owns it from here (keeps it in the _Ready, or closes it)
                    prepared = self._prepare(f, handed, parent, digest)
                    if isinstance(prepared, _Ready):
                        if batched:
                            # Thousands of files in a batch must not hold a descriptor each.
                            _close(prepared.fd)
                            prepared.fd = None
                        ready.append(prepared)
                    else:
                        results[f.index] = prepared
                except (CommandError, OSError) as exc:
                    results[f.index] = self._failure(exc, f)
                finally:
                    if fd is not None:
                        _close(fd)
            if held:
                self._finish_held(held, results)
            try:
                self._make_durable(ready)
            except OSError as exc:
                for item in ready:
                    results[item.file.index] = self._failure(exc, item.file)
                ready = []
            installed: list[_Ready] = []
            for item in ready:
                try:
                    results[item.file.index] = outcome = self._install(item)
                    if outcome[0]:
                        installed.append(item)
                except OSError as exc:
                    results[item.file.index] = self._failure(exc, item.file)
            if installed:
                fault_point("before-dir-fsync")
                synced: set[int] = set()
                for item in installed:
                    if item.parent not in synced:
                        synced.add(item.parent)
                        os.fsync(item.parent)
                for item in installed:
                    if item.file.sidecar:
                        _unlink(item.cdir, item.cname)
                        _unlink(item.cdir, item.cname + _TMP_SUFFIX)
        except OSError as exc:
            for item in ready:
                results[item.file.index] = self._failure(exc, item.file)
        finally:
            for item in ready:
                _close(item.fd)
            for parent in parents.values():
                _close(parent)
            for f, _ in owned:
                f.state = _State.FINISHED
                if f.have:
                    f.have = NO_RANGES
        if self._stages:
            self._settle(settled, results, expected)
        return [results[index] for index in indices]

    # -- stages ----------------------------------------------------------------------------------------
    def _settle(
        self, settled: Sequence[_File], results: dict[int, tuple[bool, str]], expected: dict[int, bytes]
    ) -> None:
        """Count the verdicts given to the entries of stages, record the good ones in their
        stage's journal, and publish each stage whose last verdict this was.  A stage that
        cannot be published fails those of its files in this batch."""
        complete: list[_Stage] = []
        records: dict[_Stage, list[tuple[str, int, int, bytes]]] = {}
        with self._lock:
            if self._closed:
                return  # aborted (superseded by a resumed session, which adopts the stage)
            for f in settled:
                stage = f.stage
                if stage is None:
                    continue
                if results[f.index][0] and f.mode is _Mode.PART:
                    entry = f.entry
                    digest = expected.get(f.index) or entry.digest
                    records.setdefault(stage, []).append((entry.path, entry.size, entry.mtime_ns, digest))
                stage.left -= 1
                if not stage.left:
                    complete.append(stage)
        for stage, batch in records.items():
            if stage not in complete:  # (a stage being published needs no journal)
                self._log(stage, msgpack.packb(batch))  # (one array: a third of a packb per file)
        for stage in complete:
            error = self._publish(stage)
            if error:
                for f in settled:
                    if f.stage is stage and results[f.index][0]:
                        results[f.index] = (False, error)

    def _log(self, stage: _Stage, data: bytes) -> None:
        """Append to the stage's journal (unsynced: a resume checks what it says)."""
        try:
            if stage.log_fd is None:
                pfd = self._fs.open_dir_for_write(stage.parent, create=False)
                try:
                    stage.log_fd = os.open(stage.log_name, _O_LOG, 0o600, dir_fd=pfd)
                finally:
                    os.close(pfd)
            os.write(stage.log_fd, data)
        except (OSError, CommandError):
            pass  # a file without its record is sent again by a resume, no more

    def _publish(self, stage: _Stage) -> str:
        """Put a complete stage under its final name: syncfs (every file in it is durable,
        those never synced one by one too), the rename, an fsync of the parent.  Returns ""
        or what went wrong."""
        try:
            parent = self._fs.open_dir_for_write(stage.parent, create=False)
        except CommandError as exc:
            return exc.message
        try:
            fault_point("before-fsync")
            _syncfs_raising(parent)
            # The journal goes first: a crash before the rename then costs a resume the
            # stage's files (sent again), where the other order would leave it behind for good.
            _close(stage.log_fd)
            stage.log_fd = None
            _unlink(parent, stage.log_name)
            fault_point("before-rename")
            try:
                fsview._rename_noreplace(parent, stage.staged_name, parent, stage.name)
            except FileExistsError:
                return self._merge(stage)
            fault_point("before-dir-fsync")
            os.fsync(parent)
        except OSError as exc:
            return f"cannot put {stage.staged} in place as {stage.top}: {os.strerror(exc.errno or errno.EIO)}"
        finally:
            os.close(parent)
        for vpath in stage.dirs:
            self._real.pop(vpath, None)
        return ""

    def _merge(self, stage: _Stage) -> str:
        """The stage's final name appeared during the transfer (another transfer, a person):
        move its entries into that directory one by one, as the overwrite mode says, and
        remove what is left of the stage.  Returns "" or what could not be moved."""
        problems: list[str] = []
        moved = 0
        inside = sorted(
            (f for f in self._files if f.stage is stage and f.mode is not _Mode.SKIP), key=lambda f: f.vparent
        )
        dirs: tuple[str, int, int] | None = None  # (virtual directory, staged descriptor, final descriptor)
        try:
            for f in inside:
                try:
                    if f.mode is _Mode.DIR:
                        os.close(self._fs.open_dir_for_write(f.display, create=True))
                        continue
                    if dirs is None or dirs[0] != f.vparent:
                        if dirs is not None:
                            done, dirs = dirs, None
                            self._close_pair(done)
                        src = self._fs.open_dir_for_write(stage.where(f.vparent), create=False)
                        try:
                            dirs = (f.vparent, src, self._fs.open_dir_for_write(f.vparent, create=True))
                        except BaseException:
                            os.close(src)
                            raise
                    ok, why = self._rename_into_place(f, dirs[2], (dirs[1], f.name))
                except CommandError as exc:
                    ok, why = False, exc.message
                except OSError as exc:
                    ok, why = False, f"{f.display}: {os.strerror(exc.errno or errno.EIO)}"
                if ok:
                    moved += 1
                else:
                    problems.append(why)
        finally:
            if dirs is not None:
                try:
                    self._close_pair(dirs)
                except OSError as exc:
                    problems.append(f"{dirs[0]}: {os.strerror(exc.errno or errno.EIO)}")
        for vpath in stage.dirs:
            self._real.pop(vpath, None)
        self._remove_stage(stage)
        if not problems:
            return ""
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return (f"{stage.top} appeared during the transfer; {moved} received entries were moved into it, "
                f"the rest stay in {stage.staged}: {problems[0]}{more}")  # fmt: skip

    @staticmethod
    def _close_pair(dirs: tuple[str, int, int]) -> None:
        """Close a staged directory and its final one, fsynced first (its new names)."""
        try:
            os.fsync(dirs[2])
        finally:
            os.close(dirs[1])
            os.close(dirs[2])

    def _remove_stage(self, stage: _Stage) -> None:
        """Remove the stage's directories that are empty, deepest first."""
        dirs = {stage.top}
        for vpath in stage.dirs:
            while len(vpath) > len(stage.top):
                dirs.add(vpath)
                vpath = _split(vpath)[0]
        for vpath in sorted(dirs, key=len, reverse=True):
            parent, name = _split(stage.where(vpath))
            try:
                pfd = self._fs.open_dir_for_write(parent, create=False)
            except CommandError:
                continue
            try:
                os.rmdir(name, dir_fd=pfd)
            except OSError:
                pass  # not empty: what could not be moved stays
            finally:
                os.close(pfd)

    def _drop_stash(self, f: _File) -> bytes:
        data = f.stash
        assert data is not None
        f.stash = None
        with self._lock:
            self._stashed -= len(data)
        return data

    def _finish_held(self, held: Sequence[tuple[_File, int]], results: dict[int, tuple[bool, str]]) -> None:
        """Install verified files held in memory by write(): create each part-file with its
        bytes and final permissions, one ``syncfs`` per filesystem, the renames, one fsync
        per directory: the sequence of :meth:`_prepare`, :meth:`_make_durable` and
        :meth:`_install`, without their steps for data already on disk (finish_files of
        10,000 x 4 KiB held files, in batches of 512: 21.8 -> 19.5 us per file, measured
        alternately with the per-file steps)."""
        mtime = self._flags & TRANSFER_FLAG_WRITE_MTIME
        torn = faults.FAULT is not None and faults.FAULT[0] == "block-write"
        # syncfs flushes the whole filesystem: worth it for a batch, not for one file.
        each = _syncfs is None or len(held) == 1
        with self._lock:
            datas = [f.stash or b"" for f, _ in held]
            for f, _ in held:
                f.stash = None
            self._stashed -= sum(map(len, datas))
        written: list[tuple[_File, int]] = []
        for (f, parent), data in zip(held, datas, strict=True):
            fd = None
            # In a stage the file is made under its own name and left unsynced: the stage's
            # publication syncs and renames them all at once.
            name = f.name if f.stage is not None else f.part
            try:
                # Created with its final permissions (the umask applies as for the fchmod of
                # other files); nothing of it was ever claimed, so a failure leaves nothing.
                # Held files are fresh (write()): _open_data's other cases and its sizing do
                # not apply, and this loop bounds a tree of small files.
                fd = self._create_part(f, parent, f.entry.mode & 0o777, name)
                if torn and len(data) > 1:
                    _pwrite_all(fd, data[: len(data) // 2], 0)
                    fault_point("block-write")
                _pwrite_all(fd, data, 0)
                if mtime:
                    os.utime(fd, ns=(time.time_ns(), f.entry.mtime_ns))
                if each and f.stage is None:
                    fault_point("before-fsync")
                    os.fsync(fd)
            except OSError as exc:
                results[f.index] = (False, self._io_error(exc, f, "writing").message)
                if fd is not None:
                    with contextlib.suppress(OSError):
                        _unlink(parent, name)
                continue
            finally:
                _close(fd)
            if f.stage is not None:
                results[f.index] = (True, "")
            else:
                written.append((f, parent))
        if not each:
            fault_point("before-fsync")
        try:
            if not each:
                parents = {parent for _, parent in written}
                for dev_parent in {os.fstat(parent).st_dev: parent for parent in parents}.values():
                    _syncfs_raising(dev_parent)
        except OSError as exc:
            for f, _ in written:
                results[f.index] = self._failure(exc, f)
            return
        installed: dict[int, list[_File]] = {}
        for f, parent in written:
            try:
                results[f.index] = outcome = self._rename_into_place(f, parent)
            except OSError as exc:
                results[f.index] = self._failure(exc, f)
                continue
            if outcome[0]:
                installed.setdefault(parent, []).append(f)
        if installed:
            fault_point("before-dir-fsync")
        # No sidecar to remove: plan() removed any a held (fresh) file had, and no checkpoint
        # writes one for it (nothing of it is in ``have``).
        for parent, files in installed.items():
            try:
                os.fsync(parent)
            except OSError as exc:
                for f in files:
                    results[f.index] = self._failure(exc, f)

    def _failure(self, exc: BaseException, f: _File) -> tuple[bool, str]:
        if isinstance(exc, CommandError):
            return False, exc.message
        assert isinstance(exc, OSError)
        return False, self._io_error(exc, f, "finishing").message

    def _finish_dir(self, f: _File) -> tuple[bool, str]:
        fd = self._open_dir(f.display, create=True)
        try:
            if self._flags & TRANSFER_FLAG_WRITE_MTIME:
                os.utime(fd, ns=(time.time_ns(), f.entry.mtime_ns))
        finally:
            os.close(fd)
        return True, ""

    def _prepare(self, f: _File, fd: int | None, parent: int, expected: bytes) -> _Ready | tuple[bool, str]:
        """Verify the received data and give it its metadata; closes ``fd`` unless the result
        is a :class:`_Ready` that owns it."""
        try:
            if fd is None:
                fd = self._open_data(f, parent)
            if (st := os.fstat(fd)).st_size != f.entry.size:
                ok, why, dev = False, f"it has {st.st_size} bytes instead of {f.entry.size}", st.st_dev
            else:
                ok, why = self._verify(fd, f.entry, expected, f.hasher, f.hashed)
                dev = st.st_dev
            cdir, cname = self._ckpt_location(f, parent)
            if not ok:
                _unlink(cdir, cname)
                if f.mode is _Mode.PART:
                    _unlink(parent, f.part)
                    return False, f"{f.display} failed verification ({why}); the part-file was removed"
                return False, f"{f.display} failed verification ({why}); it was written in place"
            if f.mode is _Mode.PART:
                os.fchmod(fd, f.entry.mode & 0o777 & ~self._umask)
            if self._flags & TRANSFER_FLAG_WRITE_MTIME:
                os.utime(fd, ns=(time.time_ns(), f.entry.mtime_ns))
            fault_point("before-fsync")
            ready = _Ready(f, fd, dev, parent, cdir, cname)
            fd = None
            return ready
        finally:
            _close(fd)

    def _make_durable(self, ready: Sequence[_Ready]) -> None:
        """fsync one file; ``syncfs`` once per filesystem for a batch (the same guarantee:
        every dirty page and inode of the filesystem is on disk when it returns)."""
        done: set[int] = set()
        for item in ready:
            if item.fd is not None:
                os.fsync(item.fd)
            elif item.dev not in done:
                done.add(item.dev)
                _syncfs_raising(item.parent)

    def _install(self, item: _Ready) -> tuple[bool, str]:
        """Put a durable, verified file under its final name (nothing to do in place)."""
        if item.file.mode is not _Mode.PART:
            return True, ""
        return self._rename_into_place(item.file, item.parent)

    def _rename_into_place(self, f: _File, parent: int, source: tuple[int, str] | None = None) -> tuple[bool, str]:
        """Rename a durable part-file (or ``source``: directory and name) onto its target in
        ``parent``, as the overwrite mode says."""
        src_dir, src_name = source or (parent, f.part)
        fault_point("before-rename")
        if self._overwrite == OVERWRITE_NEVER:
            try:
                fsview._rename_noreplace(src_dir, src_name, parent, f.name)
            except FileExistsError:
                return False, (
                    f"{f.display} appeared during the transfer and overwrite mode is NEVER; "
                    f"the received file was left as {src_name!r}"
                )
            return True, ""
        if self._overwrite == OVERWRITE_VERSIONED:
            self._backup(f, parent)
        os.rename(src_name, f.name, src_dir_fd=src_dir, dst_dir_fd=parent)
        return True, ""

    def _verify(
        self, fd: int, entry: FileEntry, expected: bytes, digest: Any = None, hashed: int = 0
    ) -> tuple[bool, str]:
        """Whole-file check: the digest against ``expected``, continuing ``digest`` (the hasher
        thread's, of the first ``hashed`` bytes) when given; all zeros when the sender did
        not read (TRANSFER_FLAG_READ off sends zero blocks).

        Holes (SEEK_HOLE) are hashed from a zero buffer instead of being read: the kernel
        would fill page cache with zeros for them, which for a sparse multi-GiB file costs
        more than the hash itself."""
        zeros = not self._flags & TRANSFER_FLAG_READ
        if not zeros and len(expected) != DIGEST_SIZE:
            return False, "the manifest carries no digest for it"
        if digest is None or zeros:
            digest, hashed = new_hasher(), 0
        size = entry.size
        # Sized to the file: a fresh 1 MiB buffer per 4 KiB file would cost more than the I/O.
        buf = bytearray(max(1, min(size - hashed, _HASH_CHUNK)))
        view = memoryview(buf)
        chunk = len(buf)
        offset = hashed
        while offset < size:
            data_at, data_end = _next_data(fd, offset, size)
            if not zeros:
                while offset < data_at:  # a hole: zeros by definition
                    step = min(data_at - offset, _HASH_CHUNK)
                    digest.update(_ZEROS_VIEW[:step])
                    offset += step
            offset = data_at
            while offset < data_end:
                n = os.preadv(fd, [view[: min(chunk, data_end - offset)]], offset)
                if n <= 0:
                    return False, f"read {offset} bytes of {size}"
                if zeros:
                    if buf.count(0, 0, n) != n:  # (memoryview == is byte by byte: slow)
                        return False, "expected zeros: the sender did not read its files"
                else:
                    digest.update(view[:n])
                offset += n
        if zeros or digest.digest() == expected:
            return True, ""
        return False, f"{DIGEST_NAME} digest differs from the sender's"

    def _verify_bytes(self, data: bytes, expected: bytes, digest: bytes = b"") -> tuple[bool, str]:
        """:meth:`_verify` of a whole file held in memory (``digest``: its digest, if known)."""
        if not self._flags & TRANSFER_FLAG_READ:
            if data.count(0) != len(data):
                return False, "expected zeros: the sender did not read its files"
            return True, ""
        if len(expected) != DIGEST_SIZE:
            return False, "the manifest carries no digest for it"
        if (digest or digest_of(data)) != expected:
            return False, f"{DIGEST_NAME} digest differs from the sender's"
        return True, ""

    def _backup(self, f: _File, parent: int) -> None:
        """VERSIONED: keep the current target as ``.jetbak`` without ever leaving the final
        name empty: a hard link, then the rename of the part-file replaces the name."""
        if _lstat(parent, f.name) is None:
            return
        _unlink(parent, f.bak)  # the older backup goes (a crash here leaves the target intact)
        fault_point("backup-rename")
        try:
            os.link(f.name, f.bak, src_dir_fd=parent, dst_dir_fd=parent, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in _NO_HARDLINKS:
                raise
            # A filesystem without hard links: move the target aside.  Only here is there a
            # window (until the next rename) in which the final name is absent.
            os.rename(f.name, f.bak, src_dir_fd=parent, dst_dir_fd=parent)
        fault_point("backup-rename")

    # -- end ---------------------------------------------------------------------------------------------
    def abort(self) -> None:
        """Stop: close every descriptor, leave part-files and sidecars for a resume."""
        self.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._hash_cv.notify_all()  # the hasher thread ends
            # Gathered blocks were never claimed (not in ``have``): a resume asks for them.
            for index in self._fds:
                self._files[index].pending = None
            fds = list(self._fds.values()) + list(self._dirs.values())
            for stage in self._stages.values():
                if stage is not None and stage.log_fd is not None:
                    fds.append(stage.log_fd)
                    stage.log_fd = None
            self._fds.clear()
            self._dirs.clear()
        for fd in fds:
            _close(fd)

    def __enter__(self) -> FileWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
