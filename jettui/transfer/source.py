"""The sender's file side of the data plane: building manifests and reading blocks.

* :func:`build_manifest` turns the docs' mapping dict (destination path → source path)
  into :class:`~jettui.transfer.manifest.FileEntry` items, expanding directories
  iteratively and, unless told not to (``digests=False``, what the server does), hashing
  every regular file (its digest) as it goes.  It blocks; the server runs it in a thread.
* :class:`FileSource` is the :class:`~jettui.transfer.sender.BlockSource` over real files:
  ``os.pread`` on descriptors opened once per file (a small LRU), a check that the file
  still is what the manifest describes, and zeros instead of reads when the transfer flags
  say not to read (network benchmark).  It hashes what it reads in file order, so the
  whole-file digest of a file whose manifest entry carries none is ready when the file has
  been sent (:meth:`FileSource.digest`): the data is read once, not once for the manifest
  and again for the network (the up-front hash cost ~0.95 s per GiB before the first byte
  left, measured).

Every file and directory is reached through :class:`~jettui.server.fsview.FileSystemView`
(openat2 ``RESOLVE_BENEATH`` from the sandbox root) or relative to a directory descriptor
it gave us, with ``O_NOFOLLOW``: a symbolic link is only ever followed by the view, which
refuses one that leads out of the sandbox.
"""

from __future__ import annotations

import errno
import os
import queue
import stat
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..constants import (
    FILETYPE_DIRECTORY,
    FILETYPE_REGULAR_FILE,
    SYMLINKS_FOLLOW,
    SYMLINKS_IGNORE,
    TRANSFER_FLAG_READ,
)
from ..errors import CommandError
from ..server.fsview import FileSystemView
from ..server.sandbox import MAX_NAME_BYTES, show
from .digest import FileHasher, digest_of, new_hasher
from .manifest import MAX_PATH_BYTES, FileEntry

__all__ = [
    "FileSource",
    "Manifest",
    "SourceChanged",
    "build_manifest",
    "normalize_dest_path",
]

#: Bytes per read while hashing (large reads: the hash, not the syscalls, should cost).
HASH_CHUNK = 1024 * 1024
#: How often a file being hashed may change under us before the manifest gives up.
HASH_ATTEMPTS = 3
#: Descriptors FileSource keeps open at once, and directory descriptors it opens files in.
MAX_OPEN_FILES = 64
MAX_OPEN_DIRS = 16
#: Bytes FileSource reads at once when blocks are read in order.
READ_AHEAD = 1024 * 1024
#: Files at least this big are hashed on FileSource's worker thread, and at most this many
#: read-ahead chunks wait for it.
HASH_THREAD_MIN = 8 * 1024 * 1024
MAX_HASH_QUEUED = 32
#: FileSource re-checks a file's size and mtime after this many bytes read from it.
RECHECK_BYTES = 64 * 1024 * 1024

_O_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)


class SourceChanged(CommandError):
    """A source file is no longer what the manifest describes (size or mtime differ).

    The driver restarts the transfer from scratch (a new manifest, no checkpoint) instead
    of splicing old and new data: blocks already sent belong to the old content.
    """

    def __init__(self, path: str, detail: str = "") -> None:
        self.path = path
        extra = f" ({detail})" if detail else ""
        super().__init__(
            f"source file {path!r} changed during the transfer{extra}; it must be sent again from the start"
        )


class Manifest(list[FileEntry]):
    """The entries of a manifest (a plain ``list[FileEntry]``) plus, in the same order, the
    virtual source path of each entry (``sources``, alias ``src_paths``) and what was left out."""

    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []
        #: Virtual paths of entries not taken: ignored symbolic links, devices, FIFOs, sockets.
        self.skipped: list[str] = []

    @property
    def src_paths(self) -> list[str]:
        return self.sources

    @property
    def total_size(self) -> int:
        return sum(entry.size for entry in self)


# -- destination paths -----------------------------------------------------------------------


def normalize_dest_path(path: object, *, allow_empty: bool = False) -> str:
    """A destination path as a manifest carries it: relative, ``/``-separated, without
    ``.``, empty or ``..`` components, NUL, or components over 255 bytes.

    A leading ``/`` is dropped (absolute targets are re-rooted under the receiver's
    sandbox and destinationPath, spec §5.3).  ``..`` is refused rather than resolved: a
    mapping that needs it is a mistake or an attack.
    """
    if not isinstance(path, str):
        raise CommandError(f"a destination path must be a string, not {type(path).__name__}")
    if "\x00" in path:
        raise CommandError(f"destination path {show(path)} contains a NUL byte")
    # Already in normal form (a manifest's own paths are): one pass in C instead of a Python
    # loop per component, ~5 us of the receiver's set-up per file of a 10,000-file tree.
    if path.isascii() and 0 < len(path) <= MAX_NAME_BYTES:
        split = path.split("/")
        if "" not in split and "." not in split and ".." not in split:
            return path
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            raise CommandError(f"destination path {show(path)} contains '..'")
        try:
            size = len(part.encode("utf-8"))
        except UnicodeEncodeError:
            raise CommandError(f"destination path {show(path)} is not valid UTF-8")
        if size > MAX_NAME_BYTES:
            raise CommandError(f"destination path {show(path)} has a component longer than {MAX_NAME_BYTES} bytes")
        parts.append(part)
    joined = "/".join(parts)
    if not joined and not allow_empty:
        raise CommandError(f"destination path {show(path)} names no file")
    if len(joined.encode("utf-8")) > MAX_PATH_BYTES:
        raise CommandError(f"destination path {show(path)} is longer than {MAX_PATH_BYTES} bytes")
    return joined


def _join(base: str, name: str) -> str:
    return f"{base}/{name}" if base else name


def _join_virtual(base: str, name: str) -> str:
    return base + name if base.endswith("/") else f"{base}/{name}"


# -- building a manifest ---------------------------------------------------------------------


@dataclass(slots=True)
class _PendingDir:
    fd: int | None  # an open descriptor (top level) or None: reopen by virtual path
    vpath: str  # virtual source path (for the view, and messages)
    dest: str  # normalised destination path ("" = the destination itself)
    ancestors: frozenset[tuple[int, int]]  # (dev, ino) of the directories above: loop check


def _hash_fd(fd: int, st: os.stat_result, vpath: str) -> bytes:
    """The digest of an open regular file, which must not change while we read it."""
    for _ in range(HASH_ATTEMPTS):
        digest = new_hasher()
        # Sized to the file (plus one byte, to see growth): a fresh 1 MiB buffer for every
        # small file would cost more than reading it.
        buf = bytearray(min(st.st_size + 1, HASH_CHUNK))
        view = memoryview(buf)
        offset = 0
        while True:
            n = os.preadv(fd, [buf], offset)
            if n <= 0:
                break
            digest.update(view[:n])  # releases the GIL for large updates
            offset += n
        after = os.fstat(fd)
        if offset == st.st_size == after.st_size and after.st_mtime_ns == st.st_mtime_ns:
            return digest.digest()
        st = after
    raise CommandError(f"source file {vpath} keeps changing while it is being read; try again later")


def _check_utf8(names: list[str], where: str) -> None:
    """Refuse a listing with a name that is not UTF-8 (os.listdir gives those with surrogates)."""
    try:
        "/".join(names).encode("utf-8")  # one call per directory; "/" is in no name
    except UnicodeEncodeError:
        for name in names:
            try:
                name.encode("utf-8")
            except UnicodeEncodeError:
                raise CommandError(
                    f"file name {show(name)} in {where} is not valid UTF-8 and cannot be transferred"
                ) from None


class _Builder:
    def __init__(self, fs: FileSystemView, symlinks: int, max_files: int, digests: bool = True) -> None:
        self.fs = fs
        self.symlinks = symlinks
        self.max_files = max_files
        self.digests = digests
        self.result = Manifest()
        self.dests: set[str] = set()

    def add(self, entry: FileEntry, vpath: str) -> None:
        if entry.path in self.dests:
            raise CommandError(f"destination {entry.path!r} is mapped more than once")
        if len(self.result) >= self.max_files:
            raise CommandError(f"the manifest has more than {self.max_files} files (the maxFilesPerManifest limit)")
        self.dests.add(entry.path)
        self.result.append(entry)
        self.result.sources.append(vpath)

    def add_file(self, fd: int, vpath: str, dest: str) -> None:
        """Hash the regular file open as ``fd`` (which this closes) into an entry."""
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise CommandError(f"cannot send {vpath}: not a regular file")
            if not dest:
                raise CommandError(f"cannot send the file {vpath} to the destination directory itself; name it")
            digest = b""
            if self.digests:
                os.set_blocking(fd, True)
                digest = _hash_fd(fd, st, vpath)
        except OSError as exc:
            raise CommandError(f"cannot read {vpath}: {os.strerror(exc.errno or errno.EIO)}")
        finally:
            os.close(fd)
        self.add(FileEntry(dest, st.st_size, st.st_mtime_ns, FILETYPE_REGULAR_FILE, digest, st.st_mode & 0o7777), vpath)

    def open_followed(self, vpath: str) -> tuple[str, int]:
        """Open what ``vpath`` names, following symbolic links inside the sandbox only
        (the view refuses the rest): ("file" | "dir", descriptor)."""
        try:
            return "file", self.fs.open_read(vpath)
        except CommandError as file_error:
            try:
                return "dir", self.fs.open_dir_for_write(vpath, create=False)
            except CommandError:
                raise file_error from None

    def walk(self, top: _PendingDir) -> None:
        """Expand a directory tree without recursion.  Only the directory being listed has
        a descriptor open; the pending ones are reopened through the view by virtual path
        (confined like any other lookup), so wide or deep trees cannot exhaust descriptors."""
        stack = [top]
        while stack:
            pending = stack.pop()
            fd = pending.fd
            pending.fd = None
            if fd is None:
                fd = self.fs.open_dir_for_write(pending.vpath, create=False)
            try:
                st = os.fstat(fd)
                key = (st.st_dev, st.st_ino)
                if key in pending.ancestors:
                    raise CommandError(f"symbolic link loop: {pending.vpath} leads back to a directory above it")
                subdirs, nonempty = self.list_dir(fd, pending, pending.ancestors | {key})
            except OSError as exc:
                raise CommandError(f"cannot list {pending.vpath}: {os.strerror(exc.errno or errno.EIO)}")
            finally:
                os.close(fd)
            if not nonempty and pending.dest:
                # Nothing below it will be sent: the directory itself must be, or it is lost.
                entry = FileEntry(pending.dest, 0, st.st_mtime_ns, FILETYPE_DIRECTORY, b"", st.st_mode & 0o7777)
                self.add(entry, pending.vpath)
            # Reversed so the walk visits names in sorted order (stable manifests and logs).
            stack.extend(reversed(subdirs))

    def list_dir(
        self, fd: int, pending: _PendingDir, ancestors: frozenset[tuple[int, int]]
    ) -> tuple[list[_PendingDir], bool]:
        """Add the files of one directory; return its subdirectories still to walk and
        whether anything at all will be sent from below it."""
        subdirs: list[_PendingDir] = []
        nonempty = False
        names = sorted(os.listdir(fd))
        _check_utf8(names, pending.vpath)
        vprefix = _join_virtual(pending.vpath, "")
        dprefix = _join(pending.dest, "")
        euid = os.geteuid()
        for name in names:
            vpath = vprefix + name
            dest = dprefix + name
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed since the listing
            mode = st.st_mode
            if stat.S_ISLNK(mode):
                if self.symlinks == SYMLINKS_IGNORE:
                    self.result.skipped.append(vpath)
                    continue
                kind, child = self.open_followed(vpath)
                if kind == "dir":
                    os.close(child)
                    subdirs.append(_PendingDir(None, vpath, dest, ancestors))
                else:
                    self.add_file(child, vpath, dest)
                nonempty = True
            elif stat.S_ISDIR(mode):
                subdirs.append(_PendingDir(None, vpath, dest, ancestors))
                nonempty = True
            elif stat.S_ISREG(mode) and not self.digests:
                # Nothing to read: the stat is the entry, and one access check (not open,
                # fstat, close) says now, as before, that the file cannot be read.  For our
                # own files the owner bits decide (an ACL's owner entry is those bits), so
                # the check is the mode; others ask the kernel.
                if not (st.st_uid == euid and mode & stat.S_IRUSR) and not os.access(
                    name, os.R_OK, dir_fd=fd, effective_ids=True, follow_symlinks=False
                ):
                    raise CommandError(f"cannot read {vpath}: {os.strerror(errno.EACCES)}")
                entry = FileEntry(dest, st.st_size, st.st_mtime_ns, FILETYPE_REGULAR_FILE, b"", st.st_mode & 0o7777)
                self.add(entry, vpath)
                nonempty = True
            elif stat.S_ISREG(mode):
                # Relative to the directory's descriptor with O_NOFOLLOW: a file swapped for
                # a link since the stat fails here instead of leading anywhere.
                try:
                    child = os.open(name, _O_READ, dir_fd=fd)
                except OSError as exc:
                    raise CommandError(f"cannot read {vpath}: {os.strerror(exc.errno or errno.EIO)}")
                self.add_file(child, vpath, dest)
                nonempty = True
            else:
                self.result.skipped.append(vpath)  # devices, FIFOs, sockets: not transferable
        return subdirs, nonempty


def build_manifest(
    fs: FileSystemView,
    mappings: Mapping[str, str | Mapping[str, object]],
    symlinks: int = SYMLINKS_FOLLOW,
    max_files: int = 1_000_000,
    *,
    digests: bool = True,
) -> Manifest:
    """Entries for ``mappings`` (destination path → source path, or → ``{"srcPath": ...,
    "type": FILETYPE_*}``), every regular file hashed (with ``digests``; without,
    entries carry an empty digest and :class:`FileSource` hashes the files as it sends them).

    Directories are expanded recursively; a directory with nothing to send inside becomes
    a FILETYPE_DIRECTORY entry so it is created.  Symbolic links below a mapped directory
    are followed (inside the sandbox only: one that leads out fails the manifest) or
    ignored, per ``symlinks``; a source named explicitly in the mapping is always followed.
    Devices, FIFOs and sockets are left out (listed in ``Manifest.skipped``).  The result
    is a ``list[FileEntry]`` whose ``sources`` give each entry's virtual source path.
    Blocking: run it in a thread.
    """
    if symlinks not in (SYMLINKS_FOLLOW, SYMLINKS_IGNORE):
        raise CommandError(f"unknown symlinks mode {show(symlinks)}")
    if not isinstance(mappings, Mapping) or not mappings:
        raise CommandError("mappings must be a non-empty dict of destination path -> source path")
    builder = _Builder(fs, symlinks, max_files, digests)
    for dest_raw, value in mappings.items():
        want: object = None
        if isinstance(value, Mapping):
            src = value.get("srcPath")
            want = value.get("type")
            if want is not None and want not in (FILETYPE_DIRECTORY, FILETYPE_REGULAR_FILE):
                raise CommandError(f"mapping type {show(want)} is not FILETYPE_DIRECTORY or FILETYPE_REGULAR_FILE")
        else:
            src = value
        if not isinstance(src, str):
            raise CommandError(f"source path for {show(dest_raw)} must be a string")
        dest = normalize_dest_path(dest_raw, allow_empty=True)
        vpath = fs.display(src)
        kind, fd = builder.open_followed(vpath)
        if want is not None and (want == FILETYPE_DIRECTORY) != (kind == "dir"):
            os.close(fd)
            wanted = "directory" if want == FILETYPE_DIRECTORY else "regular file"
            raise CommandError(f"{vpath} is not a {wanted}, as the mapping for {show(dest_raw)} says")
        if kind == "file":
            builder.add_file(fd, vpath, dest)
        else:
            builder.walk(_PendingDir(fd, vpath, dest, frozenset()))
    _check_tree(builder.result)
    return builder.result


def _check_tree(entries: Sequence[FileEntry]) -> None:
    """Refuse a manifest in which one path is both a file and a directory's ancestor
    (``a`` a file and ``a/b`` another): the receiver could only fail half-way."""
    files = {e.path for e in entries if e.kind == FILETYPE_REGULAR_FILE}
    checked: set[str] = set()  # directories whose own ancestors were checked too
    for entry in entries:
        path = entry.path
        cut = path.rfind("/")
        while cut > 0:
            path = path[:cut]
            if path in checked:
                break
            if path in files:
                raise CommandError(f"destination {path!r} is a file but {entry.path!r} needs it as a directory")
            checked.add(path)
            cut = path.rfind("/")


# -- reading blocks -----------------------------------------------------------------------------


class _HashWorker:
    """One thread feeding hashers with read-ahead chunks, in the order given.

    A plain thread and queue rather than an executor: py-spy showed ThreadPoolExecutor.submit
    (its locks and futures) at a tenth of the sending loop."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Any, bytes | memoryview | None, threading.Event | None] | None]
        self._queue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="jettui-source-hash", daemon=True)
        self._thread.start()

    def feed(self, hasher: FileHasher, data: bytes | memoryview, last: bool = False) -> threading.Event | None:
        """Queue ``data`` for ``hasher``; with ``last``, return the event set once it is hashed.
        Waits while more than MAX_HASH_QUEUED chunks are queued (memory stays bounded)."""
        done = threading.Event() if last else None
        self._queue.put((hasher, data, done))
        if done is None and self._queue.qsize() > MAX_HASH_QUEUED:
            caught_up = threading.Event()
            self._queue.put((None, None, caught_up))
            caught_up.wait()
        return done

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            hasher, data, done = item
            if data is not None:
                hasher.update(data)  # releases the GIL for large chunks
            if done is not None:
                done.set()

    def stop(self) -> None:
        self._queue.put(None)


class FileSource:
    """BlockSource over the manifest's files (``src_paths[i]`` is entry i's virtual path).

    Descriptors are opened through the view on first use and kept in an LRU of
    ``max_open`` entries.  Each file is checked against the manifest (size and mtime) when
    opened, after every ``recheck_bytes`` bytes read from it, and when its last byte is
    read; a difference raises :class:`SourceChanged`, which is also kept in ``changed``
    because the sender machine turns exceptions into a failure message.
    Without TRANSFER_FLAG_READ in ``flags`` nothing is opened: reads return zeros.
    """

    def __init__(
        self,
        fs: FileSystemView,
        entries: Sequence[FileEntry],
        src_paths: Sequence[str],
        flags: int,
        *,
        max_open: int = MAX_OPEN_FILES,
        recheck_bytes: int = RECHECK_BYTES,
    ) -> None:
        if len(entries) != len(src_paths):
            raise ValueError("entries and src_paths differ in length")
        self._fs = fs
        self._entries = entries
        self._src = src_paths
        self._read = bool(flags & TRANSFER_FLAG_READ)
        self._max_open = max(1, max_open)
        self._recheck = recheck_bytes
        self._fds: OrderedDict[int, list[int]] = OrderedDict()  # index -> [fd, bytes since check]
        self._dirs: OrderedDict[str, int] = OrderedDict()  # virtual directory -> descriptor
        self._closed = False
        self.changed: SourceChanged | None = None
        self.bytes_read = 0
        # Read-ahead for sequential reads: one pread per READ_AHEAD bytes instead of one per
        # 1344-byte WAN block (the pread was ~7 % of a core at 100 Mbit/s, py-spy).  A read
        # elsewhere (a resend) is a plain pread and leaves the window alone.
        self._window: tuple[int, int, memoryview] | None = None  # (file index, offset, data)
        self._next: tuple[int, int] = (-1, -1)  # where a sequential read continues
        # Whole-file digests of entries without a manifest digest, fed with what is read in
        # file order from byte 0 (index -> [hash, bytes hashed]); finished ones in _digests.
        # Resends and reads past a gap (a resume skips acknowledged blocks) leave it alone:
        # digest() then reads the file once more.
        self._hashing: dict[int, list[Any]] = {}
        self._digests: dict[int, bytes] = {}
        # Files of HASH_THREAD_MIN bytes or more are hashed on a worker thread, in order:
        # a finished file's hash and the event set once the worker has fed it all.
        self._hasher: _HashWorker | None = None
        self._pending_digests: dict[int, tuple[Any, threading.Event | None]] = {}

    def read(self, file_index: int, offset: int, length: int) -> bytes | memoryview:
        if not self._read:
            return bytes(length)  # benchmark mode: the network only
        entry = self._entries[file_index]
        if offset < 0 or offset + length > entry.size:
            raise ValueError(f"read past the end of {entry.path!r}")
        slot = self._fds.get(file_index)
        if slot is None:
            if offset == 0 and length == entry.size and length < READ_AHEAD:
                return self._read_whole(file_index, entry)
            slot = self._open(file_index)
        else:
            self._fds.move_to_end(file_index)
        fd = slot[0]
        try:
            data = self._read_ahead(file_index, fd, offset, length, entry.size)
            if len(data) < length:
                short = bytes(data)
                while len(short) < length:
                    more = os.pread(fd, length - len(short), offset + len(short))
                    if not more:
                        raise self._changed(file_index, "it is shorter than the manifest says")
                    short += more
                data = short
        except OSError as exc:
            raise CommandError(f"cannot read {self._src[file_index]}: {os.strerror(exc.errno or errno.EIO)}")
        self.bytes_read += length
        slot[1] += length
        if slot[1] >= self._recheck or offset + length == entry.size:
            slot[1] = 0
            self._verify(file_index, fd)
        return data

    def _read_whole(self, index: int, entry: FileEntry) -> bytes:
        """A small file asked for in one block: open, one read, check, hash, close, without
        the descriptor cache, read-ahead window and running digest of the general path
        (10,000 x 4 KiB files: the sender's per-file cost).  The read asks for a byte more
        than the manifest says, so a file that grew is seen as well.

        One check, after the read, where the general path checks before and after: the
        open is non-blocking, and relative to the directory it follows no link (the view's
        fallback follows links inside the root and refuses what is not a regular file), so
        a FIFO or a directory put in the file's place fails the read and the check then
        names it; a file changed at any time before the check differs from the manifest."""
        fd = self._open_unchecked(index)
        try:
            try:
                data = os.pread(fd, entry.size + 1, 0)
            except OSError:
                self._verify(index, fd)  # not a regular file any more: say so
                raise
            self._verify(index, fd)
            if len(data) != entry.size:
                longer = "longer" if len(data) > entry.size else "shorter"
                raise self._changed(index, f"it is {longer} than the manifest says")
        except OSError as exc:
            raise CommandError(f"cannot read {self._src[index]}: {os.strerror(exc.errno or errno.EIO)}")
        finally:
            os.close(fd)
        if not entry.digest and index not in self._digests:
            self._digests[index] = digest_of(data)
        self.bytes_read += entry.size
        self._next = (index, entry.size)
        return data

    def _read_ahead(self, index: int, fd: int, offset: int, length: int, size: int) -> bytes | memoryview:
        # Blocks from the window are views, not copies: the datagram is the only copy.
        win = self._window
        if win is not None and win[0] == index and win[1] <= offset and offset + length <= win[1] + len(win[2]):
            start = offset - win[1]
            data: bytes | memoryview = win[2][start : start + length]
        elif (index, offset) == self._next and length < READ_AHEAD:
            chunk = os.pread(fd, min(READ_AHEAD, size - offset), offset)
            view = memoryview(chunk)
            self._window = (index, offset, view)
            self._hash_forward(index, offset, chunk, size)
            data = view[:length]
        else:
            data = os.pread(fd, length, offset)
            self._hash_forward(index, offset, data, size)
        self._next = (index, offset + length)
        return data

    def _hash_forward(self, index: int, offset: int, data: bytes | memoryview, size: int) -> None:
        """Feed the running digest of file ``index`` with ``data`` read at ``offset``.

        A large file is hashed by a worker thread (the hasher releases the GIL for large
        updates): on the sending loop the SHA-256 of a 1 GiB file was ~30 % of its time
        (py-spy), on the worker it overlaps with the sending.  ``data`` is an immutable
        read-ahead chunk, so the worker may hold it."""
        state = self._hashing.get(index)
        if state is None:
            if offset or index in self._digests or self._entries[index].digest:
                return
            state = self._hashing[index] = [new_hasher(), 0]
        pos = state[1]
        end = offset + len(data)
        if not offset <= pos < end:
            return
        piece = memoryview(data)[pos - offset :] if pos > offset else data
        state[1] = end
        hasher = state[0]
        if size < HASH_THREAD_MIN:
            hasher.update(piece)
            if end >= size:
                self._digests[index] = hasher.digest()
                del self._hashing[index]
            return
        worker = self._hasher
        if worker is None:
            worker = self._hasher = _HashWorker()
        if end >= size:
            self._pending_digests[index] = (hasher, worker.feed(hasher, piece, last=True))
            del self._hashing[index]
        else:
            worker.feed(hasher, piece)

    def digest(self, file_index: int) -> bytes:
        """The digest of file ``file_index``: the manifest's, else the one computed while the
        file was read in order, else (a resumed transfer sent only part of it) a read of the
        whole file now, checked against the manifest like any read.  Empty when the transfer
        does not read its files (the receiver then checks for zeros)."""
        entry = self._entries[file_index]
        if entry.digest or not self._read:
            return entry.digest
        digest = self._digests.get(file_index)
        if digest is not None:
            return digest
        pending = self._pending_digests.pop(file_index, None)
        if pending is not None:
            hasher, done = pending
            assert done is not None
            done.wait()
            digest = self._digests[file_index] = hasher.digest()
            return digest
        self._hashing.pop(file_index, None)
        slot = self._fds.get(file_index)
        if slot is None:
            slot = self._open(file_index)
        fd = slot[0]
        self._verify(file_index, fd)
        try:
            digest = _hash_fd(fd, os.fstat(fd), self._src[file_index])
        except CommandError:
            raise self._changed(file_index, "it changed while it was hashed") from None
        self._verify(file_index, fd)
        self._digests[file_index] = digest
        return digest

    def check_empty(self) -> None:
        """Check that the manifest's empty files are still empty, as every read checks the
        others against the manifest: nothing ever reads an empty file, so one caught by the
        manifest while it was being rewritten (truncated, not yet written) would otherwise
        arrive empty without a word.  Raises :class:`SourceChanged` for the first that has
        content now.  Only the size counts: a transfer onto its own source replaces an empty
        file with another (a new mtime, the same content), and one that is gone, unreadable
        or no longer regular is left alone (the copy is the file as the manifest saw it)."""
        if not self._read:
            return
        for index, entry in enumerate(self._entries):
            if entry.size or entry.kind != FILETYPE_REGULAR_FILE:
                continue
            try:
                fd = self._open_unchecked(index)
            except (OSError, CommandError):
                continue
            try:
                st = os.fstat(fd)
            finally:
                os.close(fd)
            if stat.S_ISREG(st.st_mode) and st.st_size:
                raise self._changed(index, f"size {st.st_size}, manifest 0")

    def _open_unchecked(self, index: int) -> int:
        """A descriptor of file ``index``, not yet checked against the manifest."""
        if self._closed:
            raise CommandError("the file source is closed")
        fd = self._open_relative(self._src[index])
        if fd is None:
            fd = self._fs.open_read(self._src[index])
        return fd

    def _open_checked(self, index: int) -> int:
        """A descriptor of file ``index``, checked against the manifest."""
        fd = self._open_unchecked(index)
        try:
            self._verify(index, fd)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _open(self, index: int) -> list[int]:
        fd = self._open_checked(index)
        while len(self._fds) >= self._max_open:
            _, (old, _) = self._fds.popitem(last=False)
            os.close(old)
        slot = [fd, 0]
        self._fds[index] = slot
        return slot

    def _open_relative(self, vpath: str) -> int | None:
        """Open a file relative to its directory's descriptor (kept in a small LRU), with
        ``O_NOFOLLOW``, as the manifest builder does; None when that is not possible (a
        symbolic link, which only the view may follow, or any other refusal: the caller
        asks the view).  One openat instead of a resolution from the sandbox root per file
        (10,000 small files: a sixth of the sending loop, py-spy)."""
        parent, sep, name = vpath.rpartition("/")
        if not sep or not name or name in (".", ".."):
            return None
        dfd = self._dirs.get(parent)
        try:
            if dfd is None:
                dfd = self._fs.open_dir_for_write(parent or "/", create=False)
                self._dirs[parent] = dfd
                while len(self._dirs) > MAX_OPEN_DIRS:
                    os.close(self._dirs.popitem(last=False)[1])
            else:
                self._dirs.move_to_end(parent)
            return os.open(name, _O_READ, dir_fd=dfd)
        except (OSError, CommandError):
            return None

    def _verify(self, index: int, fd: int) -> None:
        entry = self._entries[index]
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CommandError(f"cannot read {self._src[index]}: not a regular file")
        if st.st_size != entry.size:
            raise self._changed(index, f"size {st.st_size}, manifest {entry.size}")
        if st.st_mtime_ns != entry.mtime_ns:
            raise self._changed(index, "modification time differs from the manifest")

    def _changed(self, index: int, detail: str) -> SourceChanged:
        exc = SourceChanged(self._src[index], detail)
        self.changed = exc
        return exc

    def close(self) -> None:
        self._closed = True
        if self._hasher is not None:
            self._hasher.stop()
            self._hasher = None
        fds = [fd for fd, _ in self._fds.values()] + list(self._dirs.values())
        self._fds.clear()
        self._dirs.clear()
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> FileSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
