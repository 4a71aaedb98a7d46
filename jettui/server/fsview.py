"""A user's view of the filesystem through named sandbox roots.

Every operation is done relative to a directory descriptor opened on a root when the view
is made, never by checking a path string and then opening it:

* Paths are parsed by :mod:`jettui.server.sandbox` (sandbox name, NUL, lengths, lexical
  ``..``) into components below a root.
* Components are opened with ``openat2(2)`` and ``RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS``
  relative to the root's descriptor, so the kernel refuses, atomically, ``..`` and symbolic
  links that lead out (absolute or relative) and magic links such as ``/proc/self/fd/N``.
  A directory swapped for a symbolic link between two of our calls cannot take us out.
  Symbolic links that stay inside the root are followed.
* Without ``openat2`` (Linux < 5.6, seccomp filters, other systems) the same rule is
  enforced by walking component by component with ``O_NOFOLLOW`` opens, reading each
  symbolic link ourselves and resolving its ``..`` against the stack of descriptors we came
  through (never the kernel's ``..``), refusing absolute targets and climbs above the root.
* The last component is then handled with dir-fd-relative calls that do not follow it
  (``fstatat(AT_SYMLINK_NOFOLLOW)``, ``mkdirat``, ``unlinkat``, ``renameat2``, ``openat``
  with ``O_NOFOLLOW``), and rm/du walk trees with descriptors, never following a link.

The root named ``""`` of an unsandboxed user is ``/`` itself: there the kernel's
``RESOLVE_IN_ROOT`` is used instead, so absolute links (common in a real system) resolve
as they normally would and nothing can lie outside anyway.

All methods block; the server calls them through ``asyncio.to_thread``.  Failures are
:class:`~jettui.errors.CommandError` with the *virtual* path in the message, never the
directory a root lives in.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import hashlib
import heapq
import operator
import os
import secrets
import stat
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

from jettui.constants import (
    ACCESS_EXECUTE,
    ACCESS_READ,
    ACCESS_WRITE,
    HASH_TYPES,
    LS_TYPE_DIRECTORY,
    LS_TYPE_REGULAR,
    LS_TYPE_ROOT,
    LS_TYPE_SYMLINK,
)
from jettui.errors import CommandError
from jettui.server.sandbox import VirtualPath, check_sandbox_name, parse_path, show

#: Use openat2(2) when the kernel has it.  Tests set this to False to exercise the
#: component-by-component fallback with the same hostile inputs.
USE_OPENAT2 = True
#: Use renameat2(RENAME_NOREPLACE) for no-clobber moves.  Tests turn it off to exercise
#: the check-then-rename fallback.
USE_RENAMEAT2 = True

#: Bytes of one part of an S3 multipart upload, for the "S3" hash (the common 8 MiB).
S3_PART_SIZE = 8 * 1024 * 1024
#: The kernel's limit on symbolic links followed in one lookup; the fallback walk keeps it.
MAX_SYMLINKS = 40
#: Entries one ls result may hold by default (the server's ``max_ls_entries``): a listing is
#: built whole in memory (about 1 KiB per entry by the time it is encoded), so a directory
#: of tens of millions of entries is refused instead of exhausting memory.
MAX_LS_ENTRIES = 2_000_000
#: Entries per page of a progressive listing after the first (see FileSystemView.ls_paged).
LATER_PAGES = 10_000
#: Directory descriptors rm/du keep open on the way down; deeper levels are closed and
#: re-entered through ".." (checked by device and inode) so depth never exhausts fds.
FD_WINDOW = 64

_READ_CHUNK = 1024 * 1024

#: ``publish(entries, expected)``: hands a page of a progressive listing to the server loop.
Publish = Callable[[list[dict[str, Any]], "int | None", bool], None]
_DIRENTRY_STAT: Callable[[os.DirEntry[str]], os.stat_result] = functools.partial(
    os.DirEntry.stat, follow_symlinks=False
)
_DIRENTRY_NAME = operator.attrgetter("name")

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOCTTY = getattr(os, "O_NOCTTY", 0)
# O_PATH needs only search permission on a directory, like an ordinary path lookup does;
# a directory we only pass as dir_fd never needs read permission.
_O_SEARCH = getattr(os, "O_PATH", os.O_RDONLY)
_O_DIR = os.O_RDONLY | os.O_DIRECTORY | _O_CLOEXEC
# O_NONBLOCK so that opening a FIFO that replaced a file cannot hang a worker thread.
_O_READ_FILE = os.O_RDONLY | os.O_NONBLOCK | _O_NOCTTY | _O_CLOEXEC

_RESOLVE_BENEATH = 0x08
_RESOLVE_IN_ROOT = 0x10
_RESOLVE_NO_MAGICLINKS = 0x02
_SYS_OPENAT2 = 437  # the same number on x86_64 and aarch64 (and every asm-generic arch)
_RENAME_NOREPLACE = 1

_S_IFMT = 0o170000
_S_IFREG = stat.S_IFREG
_S_IFDIR = stat.S_IFDIR
_S_IFLNK = stat.S_IFLNK
# File type bits -> ls type; anything else (devices, FIFOs, sockets) is not listed.
_KIND_OF = {_S_IFREG: LS_TYPE_REGULAR, _S_IFDIR: LS_TYPE_DIRECTORY, _S_IFLNK: LS_TYPE_SYMLINK}


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def _load_libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


_libc = _load_libc()
_syscall: Any = None
_renameat2: Any = None
if _libc is not None:
    _syscall = _libc.syscall
    _syscall.restype = ctypes.c_long
    _renameat2 = getattr(_libc, "renameat2", None)
    if _renameat2 is not None:
        _renameat2.restype = ctypes.c_int
        _renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]

# None: not tried yet; False: the kernel (or a seccomp filter) said ENOSYS.
_openat2_works: bool | None = None if _syscall is not None else False


def _openat2(dir_fd: int, path: str, flags: int, resolve: int) -> int:
    """openat2(2) through ctypes; raises OSError like os.open would."""
    how = _OpenHow(flags, 0, resolve)
    raw = os.fsencode(path)
    for _ in range(64):
        fd = _syscall(
            ctypes.c_long(_SYS_OPENAT2),
            ctypes.c_int(dir_fd),
            ctypes.c_char_p(raw),
            ctypes.byref(how),
            ctypes.c_size_t(ctypes.sizeof(how)),
        )
        if fd >= 0:
            return int(fd)
        err = ctypes.get_errno()
        # EAGAIN: RESOLVE_BENEATH/IN_ROOT saw a concurrent rename while resolving ".." in a
        # link target and would rather we retried than risk a wrong answer.
        if err not in (errno.EINTR, errno.EAGAIN):
            raise OSError(err, os.strerror(err))
    raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))


def _openat2_available() -> bool:
    global _openat2_works
    if _openat2_works is None:
        try:
            os.close(_openat2(-100, ".", os.O_RDONLY | os.O_DIRECTORY | _O_CLOEXEC, 0))  # AT_FDCWD
            _openat2_works = True
        except OSError as exc:
            # ENOSYS: old kernel; EPERM: an old seccomp profile that denies unknown calls.
            _openat2_works = exc.errno not in (errno.ENOSYS, errno.EPERM)
    return _openat2_works


def openat2_available() -> bool:
    """Whether this kernel has openat2(2) (the tests skip the kernel variant without it)."""
    return _openat2_available()


def _rename_noreplace(src_fd: int, src: str, dst_fd: int, dst: str) -> None:
    """Rename without ever replacing an existing destination."""
    if USE_RENAMEAT2 and _renameat2 is not None:
        if _renameat2(src_fd, os.fsencode(src), dst_fd, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        # ENOSYS: no syscall; EINVAL: the filesystem lacks RENAME_NOREPLACE (or the move is
        # into the directory itself, which the fallback's rename reports in its turn).
        if err not in (errno.ENOSYS, errno.EINVAL):
            raise OSError(err, os.strerror(err))
    # Fallback: a window between the check and the rename, in which a concurrent creation
    # inside the same sandbox could be replaced.  Confinement is not affected: both names
    # are relative to descriptors that are already inside.
    try:
        os.stat(dst, dir_fd=dst_fd, follow_symlinks=False)
    except FileNotFoundError:
        os.rename(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
    else:
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST))


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _has_dac_override() -> bool:
    """Whether root here really bypasses permission bits (not so in some containers)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) & (1 << 1))  # CAP_DAC_OVERRIDE
    except (OSError, ValueError):
        pass
    return False


def _readonly(fd: int) -> bool:
    try:
        return bool(os.fstatvfs(fd).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _faccess(dir_fd: int, name: str) -> int:
    """The access bits of ``name`` for this process, asked of the kernel (faccessat)."""
    bits = 0
    for mode, bit in ((os.R_OK, ACCESS_READ), (os.W_OK, ACCESS_WRITE), (os.X_OK, ACCESS_EXECUTE)):
        if os.access(name, mode, dir_fd=dir_fd, effective_ids=True, follow_symlinks=False):
            bits |= bit
    return bits


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _in_use(
    method: Callable[Concatenate[FileSystemView, _P], _R],
) -> Callable[Concatenate[FileSystemView, _P], _R]:
    """Count a public call as in flight (and turn a stray OSError into a CommandError).
    close() during a call defers closing the root
    descriptors until the last call returns: closing them under a running call would let
    the descriptor numbers be reused by some other open (another user's root, say) and the
    call would carry on relative to that."""

    @functools.wraps(method)
    def guarded(self: FileSystemView, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with self._lock:
            if self._closed:
                raise CommandError("this file system view is closed")
            self._busy += 1
        try:
            return method(self, *args, **kwargs)
        except OSError as exc:
            # A safety net: every failure reaches the client as a CommandError, and an
            # OSError's own text is not used because it may carry a real file name.
            reason = os.strerror(exc.errno) if exc.errno else "system error"
            raise CommandError(f"{method.__name__} failed: {reason}") from None
        finally:
            with self._lock:
                self._busy -= 1
                release = self._closed and not self._busy
            if release:
                self._release()

    return guarded


class _Root:
    """One sandbox root: its name and a descriptor on its directory."""

    __slots__ = ("name", "fd", "resolve", "in_root", "error")

    def __init__(self, name: str, fd: int, in_root: bool, error: str = "") -> None:
        self.name = name
        self.fd = fd
        self.in_root = in_root
        self.resolve = (_RESOLVE_IN_ROOT if in_root else _RESOLVE_BENEATH) | _RESOLVE_NO_MAGICLINKS
        self.error = error


class _Level:
    """One directory on the way down a tree walk."""

    __slots__ = ("fd", "dev", "ino", "name", "subdirs")

    def __init__(self, fd: int, st: os.stat_result, name: str) -> None:
        self.fd = fd
        self.dev = st.st_dev
        self.ino = st.st_ino
        self.name = name
        self.subdirs: list[str] = []


class FileSystemView:
    """What one session sees of the filesystem: a set of named roots.

    Virtual paths: ``name:/a/b`` for a named root, ``/a/b`` for the root with the blank
    name.  See :mod:`jettui.server.sandbox` for the exact path rules.
    """

    def __init__(self, roots: Mapping[str, str] | None, max_entries: int | None = None) -> None:
        """roots: ``{sandboxName: absolute directory on disk}``; ``None`` means not
        sandboxed: one root named ``""`` at ``/``.  ``max_entries``: most entries one ls
        result may hold (:data:`MAX_LS_ENTRIES` when None).

        A root that cannot be opened does not fail the view (the user may have other roots);
        it is left out of :meth:`ls_roots` and using it says the sandbox is unavailable.
        """
        if roots is None:
            roots = {"": "/"}
        if not isinstance(roots, Mapping):
            raise CommandError(f"sandbox roots must be a mapping, not {type(roots).__name__}")
        self.max_entries = MAX_LS_ENTRIES if max_entries is None else max_entries
        self._lock = threading.Lock()
        self._closed = False
        self._busy = 0  # public calls in flight (see _in_use)
        self._roots: dict[str, _Root] = {}
        euid = os.geteuid()
        self._euid = euid
        # Permission bits answer access exactly for the owner (POSIX ACLs keep the owner's
        # entry in the mode) and for root with CAP_DAC_OVERRIDE; others ask faccessat.
        self._root_override = euid == 0 and _has_dac_override()
        try:
            system_root = os.stat("/")
            for name, directory in roots.items():
                check_sandbox_name(name)
                if not isinstance(directory, str) or not directory.startswith("/") or "\x00" in directory:
                    raise CommandError(f"sandbox {name!r} must map to an absolute directory path")
                try:
                    fd = os.open(directory, _O_DIR)
                except OSError as exc:
                    self._roots[name] = _Root(name, -1, False, os.strerror(exc.errno or errno.EIO))
                    continue
                st = os.fstat(fd)
                in_root = (st.st_dev, st.st_ino) == (system_root.st_dev, system_root.st_ino)
                self._roots[name] = _Root(name, fd, in_root)
        except BaseException:
            self._release()
            raise

    # -- life cycle ---------------------------------------------------------------------

    def close(self) -> None:
        """Close the roots' descriptors (once the calls in flight have returned).
        Idempotent; later calls raise CommandError."""
        with self._lock:
            self._closed = True
            release = not self._busy
        if release:
            self._release()

    def _release(self) -> None:
        with self._lock:
            roots, self._roots = self._roots, {}
        for root in roots.values():
            if root.fd >= 0:
                _close_quietly(root.fd)

    def __enter__(self) -> FileSystemView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- paths --------------------------------------------------------------------------

    def _locate(self, path: object) -> tuple[_Root, VirtualPath]:
        roots = self._roots
        if not roots:
            raise CommandError("no sandbox roots are available to this session")
        vpath = parse_path(path, roots)
        root = roots[vpath.root]
        if root.fd < 0:
            raise CommandError(f"sandbox {vpath.root or '/'!r} is unavailable ({root.error})")
        return root, vpath

    @_in_use
    def display(self, path: str) -> str:
        """The canonical virtual path for messages (``name:/a/b`` or ``/a/b``)."""
        return self._locate(path)[1].display()

    def _open(self, root: _Root, parts: Sequence[str], flags: int, follow: bool = True) -> int:
        """Open ``parts`` below ``root``, confined.  Symbolic links on the way (and the last
        one if ``follow``) are followed only while they stay inside the root."""
        if USE_OPENAT2 and _openat2_available():
            last = 0 if follow else os.O_NOFOLLOW
            try:
                return _openat2(root.fd, "/".join(parts) or ".", flags | last | _O_CLOEXEC, root.resolve)
            except OSError as exc:
                if exc.errno != errno.ENOSYS:
                    raise
        return self._walk_open(root, parts, flags, follow)

    @staticmethod
    def _walk_open(root: _Root, parts: Sequence[str], flags: int, follow: bool) -> int:
        """The openat2 rule without openat2: one O_NOFOLLOW open per component, links read
        and resolved by us, ``..`` popping our own stack of descriptors."""
        todo = list(reversed(parts))
        stack: list[int] = []  # descriptors opened below root.fd, deepest last
        links = 0
        try:
            while True:
                here = stack[-1] if stack else root.fd
                if not todo:
                    return os.open(".", flags | _O_CLOEXEC, dir_fd=here)
                name = todo.pop()
                if name in ("", "."):
                    continue
                if name == "..":
                    if stack:
                        os.close(stack.pop())
                    elif not root.in_root:
                        raise OSError(errno.EXDEV, "path leads outside the root")
                    continue
                last = not todo
                if last:
                    open_flags = flags | os.O_NOFOLLOW
                else:
                    open_flags = _O_SEARCH | os.O_DIRECTORY | os.O_NOFOLLOW
                try:
                    fd = os.open(name, open_flags | _O_CLOEXEC, dir_fd=here)
                except OSError as exc:
                    # A link gives ELOOP (or ENOTDIR with O_DIRECTORY) under O_NOFOLLOW.
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR) or (last and not follow):
                        raise
                    try:
                        target = os.readlink(name, dir_fd=here)
                    except OSError:
                        raise exc from None  # not a link: the open's own error stands
                    links += 1
                    if links > MAX_SYMLINKS:
                        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP)) from None
                    if target.startswith("/"):
                        if not root.in_root:
                            raise OSError(errno.EXDEV, "absolute symbolic link") from None
                        while stack:
                            os.close(stack.pop())
                    todo.extend(reversed(target.split("/")))
                    continue
                if last:
                    return fd
                stack.append(fd)
        finally:
            for fd in stack:
                _close_quietly(fd)

    def _open_parent(self, root: _Root, vpath: VirtualPath) -> tuple[int, str]:
        """A descriptor on the parent directory of ``vpath`` and the last component."""
        return self._open(root, vpath.parts[:-1], _O_SEARCH | os.O_DIRECTORY), vpath.parts[-1]

    @staticmethod
    def _error(exc: OSError, vpath: VirtualPath, action: str) -> CommandError:
        """A CommandError for a failed system call, naming only the virtual path."""
        where = vpath.display()
        code = exc.errno
        if code == errno.ENOENT:
            reason = "no such file or directory"
        elif code == errno.EXDEV:
            reason = "refused: the path leads outside the sandbox (through a symbolic link)"
        elif code == errno.ELOOP:
            reason = "refused: too many symbolic links, or a symbolic link that cannot be followed here"
        elif code == errno.ENOTDIR:
            reason = "a component of the path is not a directory"
        elif code in (errno.EACCES, errno.EPERM):
            reason = "permission denied"
        elif code == errno.EEXIST:
            reason = "it already exists"
        else:
            reason = os.strerror(code) if code else str(exc)
        return CommandError(f"cannot {action} {where}: {reason}")

    # -- entries ------------------------------------------------------------------------

    def _access(self, dir_fd: int, name: str, st: os.stat_result, readonly: bool) -> int:
        mode = st.st_mode
        if self._root_override:
            bits = ACCESS_READ | ACCESS_WRITE
            if mode & 0o111 or stat.S_ISDIR(mode):
                bits |= ACCESS_EXECUTE
        elif st.st_uid == self._euid:
            bits = (mode >> 6) & 7
        else:
            bits = _faccess(dir_fd, name)
        if readonly:
            bits &= ~ACCESS_WRITE
        return bits

    def _entry(
        self, dir_fd: int, name: str, display_name: str, hash_type: str | None, is_root: bool = False
    ) -> dict[str, Any] | None:
        """The ls entry of ``name`` in ``dir_fd`` (not following it), or None for a kind of
        file ls does not show (devices, FIFOs, sockets)."""
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        fmt = st.st_mode & _S_IFMT
        if fmt == _S_IFREG:
            kind, size = LS_TYPE_REGULAR, st.st_size
        elif fmt == _S_IFDIR:
            kind, size = (LS_TYPE_ROOT if is_root else LS_TYPE_DIRECTORY), 0
        elif fmt == _S_IFLNK:
            kind, size = LS_TYPE_SYMLINK, 0
        else:
            return None
        ns = st.st_mtime_ns
        digest = ""
        if hash_type is not None and kind == LS_TYPE_REGULAR:
            digest = _hash_file(dir_fd, name, hash_type)
        return {
            "name": display_name,
            "type": kind,
            "size": size,
            "mtime": ns // 1_000_000_000,
            "mtimeus": ns // 1000,
            "access": self._access(dir_fd, name, st, _readonly(dir_fd)),
            "hash": digest,
        }

    def _list_dir(self, fd: int, hash_type: str | None, vpath: VirtualPath) -> list[dict[str, Any]]:
        """Entries of the directory open as ``fd``, in the order the directory gives them.
        More than ``max_entries`` entries is a CommandError naming the limit, raised before
        more memory is used."""
        files: list[dict[str, Any]] = []
        with os.scandir(fd) as entries:
            self._add_entries(fd, entries, _DIRENTRY_STAT, _DIRENTRY_NAME, vpath, files)
        self._add_hashes(fd, files, hash_type)
        return files

    def _list_dir_paged(
        self, fd: int, hash_type: str | None, vpath: VirtualPath, page_size: int, publish: Publish
    ) -> list[dict[str, Any]]:
        """Entries of the directory open as ``fd``, directories first, then by case-folded
        name, published ``page_size`` at a time as they are made (see :meth:`ls_paged`).

        The names and types come from one ``getdents`` pass (no stat), so the first page
        is out after that pass, a pick of its names and ``page_size`` stats, not after
        100,000 stats."""
        dirs: list[str] = []
        others: list[str] = []
        with os.scandir(fd) as entries:
            for entry in entries:
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)  # d_type: no syscall
                except OSError:
                    is_dir = False
                (dirs if is_dir else others).append(entry.name)
        expected = len(dirs) + len(others)
        files: list[dict[str, Any]] = []
        stat_of = functools.partial(os.stat, dir_fd=fd, follow_symlinks=False)

        def add_page(names: list[str], last: bool) -> None:
            done = len(files)
            self._add_entries(fd, names, stat_of, str, vpath, files)
            page = files[done:]
            self._add_hashes(fd, page, hash_type)
            publish(page, expected, last)

        # The first page first: picking its names (nsmallest, equivalent to the head of the
        # sort) is a fraction of sorting 100,000 names, which then overlaps the client.
        fold = str.casefold
        first = heapq.nsmallest(page_size, dirs, key=fold)
        if len(first) < page_size:
            first += heapq.nsmallest(page_size - len(first), others, key=fold)
        add_page(first, len(first) == expected)
        if len(first) == expected:
            return files
        dirs.sort(key=fold)
        others.sort(key=fold)
        names = dirs + others
        # Later pages are bigger: fewer hand-overs to the event loop and to the client.
        step = max(page_size, LATER_PAGES)
        for start in range(len(first), len(names), step):
            add_page(names[start : start + step], start + step >= len(names))
        return files

    def _add_entries(
        self,
        fd: int,
        items: Iterable[Any],
        stat_of: Callable[[Any], os.stat_result],
        name_of: Callable[[Any], str],
        vpath: VirtualPath,
        files: list[dict[str, Any]],
    ) -> None:
        """Append the ls entries of ``items`` (dirents or names in ``fd``) to ``files``.
        The hot path of ls: one fstatat per entry and plain dicts, with access computed
        inline."""
        limit = self.max_entries
        readonly = _readonly(fd)
        root_override = self._root_override
        euid = self._euid
        no_write = ~ACCESS_WRITE if readonly else ~0
        append = files.append
        # Everything the loop touches is a local: global and attribute look-ups are a
        # measurable share of the per-entry cost at 100,000 entries.
        kind_of = _KIND_OF.get
        ifmt = _S_IFMT
        regular = LS_TYPE_REGULAR
        directory = LS_TYPE_DIRECTORY
        faccess = _faccess
        for item in items:
            try:
                st = stat_of(item)
            except FileNotFoundError:
                continue  # removed while we listed
            mode = st.st_mode
            kind = kind_of(mode & ifmt)
            if kind is None:
                continue  # devices, FIFOs, sockets: not transferable, not in the seed's types
            if len(files) >= limit:
                raise CommandError(
                    f"cannot list {vpath.display()}: it has more than {limit} entries "
                    f"(the server's max_ls_entries={limit}); list a subdirectory or raise the limit"
                )
            name = name_of(item)
            if root_override:
                bits = 7 if (mode & 0o111 or kind == directory) else 6
            elif st.st_uid == euid:
                bits = (mode >> 6) & 7
            else:
                bits = faccess(fd, name)
            ns = st.st_mtime_ns
            append(
                {
                    "name": name,
                    "type": kind,
                    "size": st.st_size if kind == regular else 0,
                    "mtime": ns // 1_000_000_000,
                    "mtimeus": ns // 1000,
                    "access": bits & no_write,
                    "hash": "",
                }
            )

    @staticmethod
    def _add_hashes(fd: int, files: list[dict[str, Any]], hash_type: str | None) -> None:
        if hash_type is not None:
            for item in files:
                if item["type"] == LS_TYPE_REGULAR:
                    item["hash"] = _hash_file(fd, item["name"], hash_type)

    # -- listing ------------------------------------------------------------------------

    @_in_use
    def ls_roots(self) -> dict[str, Any]:
        """``{"path": "", "files": [...]}``: one type-10 entry per available root, named
        by its sandbox name (``"/"`` for the blank one)."""
        roots = self._roots
        files = []
        for root in roots.values():
            if root.fd < 0:
                continue
            try:
                entry = self._entry(root.fd, ".", root.name or "/", None, is_root=True)
            except OSError:
                continue
            if entry is not None:
                files.append(entry)
        return {"path": "", "files": files}

    @_in_use
    def ls(self, path: str, directory: bool = False, hash_type: str | None = None) -> dict[str, Any]:
        """``{"path": path, "files": [...]}``: the entries of a directory, or the single
        entry of a file.  ``directory=True`` gives the entry of the path itself."""
        hash_type = _check_hash_type(hash_type)
        root, vpath = self._locate(path)
        if directory:
            return {"path": path, "files": [self._stat_entry(root, vpath, hash_type)]}
        try:
            fd = self._open(root, vpath.parts, _O_DIR)
        except OSError as exc:
            if exc.errno != errno.ENOTDIR or not vpath.parts:
                raise self._error(exc, vpath, "list")
            return {"path": path, "files": [self._stat_entry(root, vpath, hash_type)]}
        try:
            return {"path": path, "files": self._list_dir(fd, hash_type, vpath)}
        except OSError as exc:
            raise self._error(exc, vpath, "list")
        finally:
            os.close(fd)

    @_in_use
    def ls_paged(
        self, path: str, directory: bool, hash_type: str | None, page_size: int, publish: Publish
    ) -> dict[str, Any]:
        """:meth:`ls`, progressively (jettui extension, ``lsAsync`` with ``pageSize``).

        The entries come directories first, then by case-folded name (a file manager's
        default order, so a client shows the first page as it is); ``publish(entries,
        expected, last)`` is called with the first ``page_size`` entries as soon as they
        are statted, then with each further page (:data:`LATER_PAGES` entries or
        ``page_size``, whichever is larger); ``expected`` is the number of names found (an
        upper bound) and ``last`` marks the last page.  The return value is the whole
        result, as :meth:`ls` gives it."""
        hash_type = _check_hash_type(hash_type)
        root, vpath = self._locate(path)
        if not directory:
            try:
                fd = self._open(root, vpath.parts, _O_DIR)
            except OSError as exc:
                if exc.errno != errno.ENOTDIR or not vpath.parts:
                    raise self._error(exc, vpath, "list")
            else:
                try:
                    return {"path": path, "files": self._list_dir_paged(fd, hash_type, vpath, page_size, publish)}
                except OSError as exc:
                    raise self._error(exc, vpath, "list")
                finally:
                    os.close(fd)
        files = [self._stat_entry(root, vpath, hash_type)]
        publish(files, 1, True)
        return {"path": path, "files": files}

    def _stat_entry(self, root: _Root, vpath: VirtualPath, hash_type: str | None) -> dict[str, Any]:
        """The entry of the path itself, not following a final symbolic link."""
        try:
            if not vpath.parts:
                entry = self._entry(root.fd, ".", root.name or "/", hash_type)
            else:
                parent, name = self._open_parent(root, vpath)
                try:
                    entry = self._entry(parent, name, name, hash_type)
                finally:
                    os.close(parent)
        except OSError as exc:
            raise self._error(exc, vpath, "stat")
        if entry is None:
            raise CommandError(f"cannot list {vpath.display()}: not a file, directory or symbolic link")
        return entry

    @_in_use
    def ls_list(
        self, path_list: list[str], stat_only: bool = False, hash_type: str | None = None
    ) -> list[dict[str, Any]]:
        """One :meth:`ls` result per path, in order.  ``stat_only`` describes directories
        themselves instead of their contents."""
        if not isinstance(path_list, list | tuple):
            raise CommandError(f"pathList must be a list of paths, not {type(path_list).__name__}")
        hash_type = _check_hash_type(hash_type)
        return [self.ls(path, directory=bool(stat_only), hash_type=hash_type) for path in path_list]

    # -- changing -----------------------------------------------------------------------

    def _makedirs(self, root: _Root, vpath: VirtualPath, flags: int) -> int:
        """Create ``vpath`` and its parents as needed; return the final directory opened
        with ``flags``."""
        parts = vpath.parts
        try:
            return self._open(root, parts, flags | os.O_DIRECTORY)
        except OSError as exc:
            # Missing, or a file in the way: the step-by-step loop below says which.
            if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                raise self._error(exc, vpath, "create directory")
        here = self._open(root, (), _O_SEARCH | os.O_DIRECTORY)
        try:
            for depth, name in enumerate(parts, 1):
                prefix = VirtualPath(vpath.root, parts[:depth])
                try:
                    os.mkdir(name, 0o777, dir_fd=here)
                except FileExistsError:
                    pass
                except OSError as exc:
                    raise self._error(exc, prefix, "create directory")
                # Re-open from the root (not from ``here``) so a symbolic link met here is
                # judged against the root, exactly as any other lookup is.
                try:
                    nxt = self._open(
                        root, parts[:depth], (flags if depth == len(parts) else _O_SEARCH) | os.O_DIRECTORY
                    )
                except OSError as exc:
                    if exc.errno in (errno.ENOTDIR, errno.ENOENT):
                        raise CommandError(
                            f"cannot create directory {prefix.display()}: it exists and is not a directory"
                        )
                    raise self._error(exc, prefix, "create directory")
                os.close(here)
                here = nxt
            return here
        except BaseException:
            os.close(here)
            raise

    @_in_use
    def mkdir(self, path: str) -> None:
        """Create a directory and its parents.  An existing directory is fine; an existing
        file (or anything else) of that name is an error."""
        root, vpath = self._locate(path)
        os.close(self._makedirs(root, vpath, _O_SEARCH))

    @_in_use
    def open_dir_for_write(self, path: str, create: bool = True) -> int:
        """An ``O_RDONLY|O_DIRECTORY`` descriptor on a directory for the transfer writer
        (creating it and its parents when ``create``).  The caller closes it."""
        root, vpath = self._locate(path)
        if create:
            return self._makedirs(root, vpath, os.O_RDONLY)
        try:
            return self._open(root, vpath.parts, _O_DIR)
        except OSError as exc:
            raise self._error(exc, vpath, "open directory")

    @_in_use
    def missing_top(self, path: str) -> tuple[str, str, str] | None:
        """The topmost directory of ``path`` that does not exist, as ``(its path, its
        parent's path, its name)``; None when ``path`` exists, or when something other than
        a missing name is in the way (open_dir_for_write then says what)."""
        root, vpath = self._locate(path)
        parts = vpath.parts
        depth = len(parts)
        while depth > 0:
            try:
                os.close(self._open(root, parts[:depth], _O_SEARCH | os.O_DIRECTORY))
            except FileNotFoundError:
                depth -= 1
                continue
            except OSError:
                return None
            break
        if depth == len(parts):
            return None
        top = VirtualPath(vpath.root, parts[: depth + 1])
        return top.display(), VirtualPath(vpath.root, parts[:depth]).display(), parts[depth]

    @_in_use
    def mkfile(self, path: str, size: int, fill_random: bool = False, modify_existing: bool = False) -> None:
        """Create a file of ``size`` bytes (zeros, sparse; or random bytes).

        As the seed says: an existing entry of that name is left alone and the call
        succeeds, unless ``modify_existing``, which replaces it (a directory cannot be
        replaced).  The file is written under a temporary name and renamed into place, so
        nobody sees it half-filled and a symbolic link in its place is replaced, not
        written through.
        """
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise CommandError(f"file size must be a non-negative integer, not {show(size)}")
        root, vpath = self._locate(path)
        if not vpath.parts:
            raise CommandError(f"cannot create file {vpath.display()}: it is the sandbox root")
        try:
            parent, name = self._open_parent(root, vpath)
        except OSError as exc:
            raise self._error(exc, vpath, "create file")
        try:
            try:
                existing = os.stat(name, dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                existing = None
            if existing is not None:
                if not modify_existing:
                    return
                if stat.S_ISDIR(existing.st_mode):
                    raise CommandError(f"cannot replace {vpath.display()}: it is a directory")
            temp = f".jettui-mkfile-{secrets.token_hex(8)}"
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _O_CLOEXEC, 0o666, dir_fd=parent)
            try:
                try:
                    _fill(fd, size, fill_random)
                finally:
                    os.close(fd)
                if modify_existing:
                    os.rename(temp, name, src_dir_fd=parent, dst_dir_fd=parent)
                else:
                    try:
                        _rename_noreplace(parent, temp, parent, name)
                    except FileExistsError:
                        pass  # created meanwhile by someone else: "otherwise return success"
            finally:
                try:
                    os.unlink(temp, dir_fd=parent)
                except FileNotFoundError:
                    pass
        except OSError as exc:
            raise self._error(exc, vpath, "create file")
        finally:
            os.close(parent)

    @_in_use
    def mv(self, path: str, new_path: str) -> None:
        """Move or rename ``path`` to ``new_path`` (both confined; across roots when they
        share a filesystem).  An existing ``new_path`` is never replaced."""
        root, src = self._locate(path)
        new_root, dst = self._locate(new_path)
        if not src.parts:
            raise CommandError(f"cannot move {src.display()}: it is a sandbox root")
        if not dst.parts:
            raise CommandError(f"cannot move {src.display()} to {dst.display()}: that is a sandbox root")
        try:
            src_parent, src_name = self._open_parent(root, src)
        except OSError as exc:
            raise self._error(exc, src, "move")
        try:
            try:
                dst_parent, dst_name = self._open_parent(new_root, dst)
            except OSError as exc:
                raise self._error(exc, dst, f"move {src.display()} to")
            try:
                _rename_noreplace(src_parent, src_name, dst_parent, dst_name)
            except FileExistsError:
                raise CommandError(f"cannot move {src.display()} to {dst.display()}: the destination exists")
            except OSError as exc:
                if exc.errno == errno.EXDEV:
                    reason = "they are on different filesystems"
                elif exc.errno == errno.EINVAL:
                    reason = "a directory cannot be moved into itself"
                elif exc.errno == errno.ENOENT:
                    reason = f"{src.display()} does not exist"
                elif exc.errno in (errno.EACCES, errno.EPERM):
                    reason = "permission denied"
                else:
                    reason = os.strerror(exc.errno or errno.EIO)
                raise CommandError(f"cannot move {src.display()} to {dst.display()}: {reason}")
            finally:
                os.close(dst_parent)
        finally:
            os.close(src_parent)

    @_in_use
    def rm(self, path: str) -> None:
        """Remove a file, a symbolic link (not what it points to) or a whole directory tree."""
        root, vpath = self._locate(path)
        if not vpath.parts:
            raise CommandError(f"cannot remove {vpath.display()}: it is a sandbox root")
        try:
            parent, name = self._open_parent(root, vpath)
        except OSError as exc:
            raise self._error(exc, vpath, "remove")
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                os.unlink(name, dir_fd=parent)
                return
            try:
                top = os.open(name, _O_DIR | os.O_NOFOLLOW, dir_fd=parent)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                os.unlink(name, dir_fd=parent)  # became a link or file since the stat
                return
            try:
                _walk_tree(top, remove=True)
            finally:
                os.close(top)
            os.rmdir(name, dir_fd=parent)
        except OSError as exc:
            raise self._error(exc, vpath, "remove")
        finally:
            os.close(parent)

    @_in_use
    def du(self, path: str) -> dict[str, int]:
        """``{"du": bytes}``: the total size of the regular files at or under ``path``.
        Symbolic links count zero and are not followed, not even a final one."""
        root, vpath = self._locate(path)
        try:
            if vpath.parts:
                parent, name = self._open_parent(root, vpath)
                try:
                    st = os.stat(name, dir_fd=parent, follow_symlinks=False)
                    if not stat.S_ISDIR(st.st_mode):
                        return {"du": st.st_size if stat.S_ISREG(st.st_mode) else 0}
                    top = os.open(name, _O_DIR | os.O_NOFOLLOW, dir_fd=parent)
                finally:
                    os.close(parent)
            else:
                top = os.open(".", _O_DIR, dir_fd=root.fd)
            try:
                return {"du": _walk_tree(top, remove=False)}
            finally:
                os.close(top)
        except OSError as exc:
            raise self._error(exc, vpath, "measure")

    @_in_use
    def open_read(self, path: str) -> int:
        """An ``O_RDONLY`` descriptor on a regular file (a final symbolic link is followed
        while it stays inside the root).  The caller closes it."""
        root, vpath = self._locate(path)
        try:
            fd = self._open(root, vpath.parts, _O_READ_FILE)
        except OSError as exc:
            raise self._error(exc, vpath, "read")
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise CommandError(f"cannot read {vpath.display()}: not a regular file")
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return fd


# -- helpers that need no view ----------------------------------------------------------


def _check_hash_type(hash_type: object) -> str | None:
    if hash_type is None or hash_type == "":
        return None
    if isinstance(hash_type, str) and hash_type.upper() in HASH_TYPES:
        return hash_type.upper()
    raise CommandError(f"unknown hash type {show(hash_type)}; valid types are {', '.join(HASH_TYPES)}")


def _hash_file(dir_fd: int, name: str, hash_type: str) -> str:
    """MD5 (hex) or the S3 multipart ETag of a regular file; "" if it cannot be read."""
    try:
        fd = os.open(name, _O_READ_FILE | os.O_NOFOLLOW, dir_fd=dir_fd)
    except OSError:
        return ""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
        whole = hashlib.md5(usedforsecurity=False)
        part = hashlib.md5(usedforsecurity=False)
        part_digests: list[bytes] = []
        in_part = 0
        buf = bytearray(_READ_CHUNK)
        view = memoryview(buf)
        while True:
            count = os.readv(fd, [buf])
            if count <= 0:
                break
            chunk = view[:count]
            if hash_type == "MD5":
                whole.update(chunk)
                continue
            while chunk:
                take = min(len(chunk), S3_PART_SIZE - in_part)
                part.update(chunk[:take])
                in_part += take
                chunk = chunk[take:]
                if in_part == S3_PART_SIZE:
                    part_digests.append(part.digest())
                    part = hashlib.md5(usedforsecurity=False)
                    in_part = 0
        if hash_type == "MD5":
            return whole.hexdigest()
        if in_part or not part_digests:
            part_digests.append(part.digest())
        if len(part_digests) == 1:
            return part_digests[0].hex()
        combined = hashlib.md5(b"".join(part_digests), usedforsecurity=False)
        return f"{combined.hexdigest()}-{len(part_digests)}"
    except OSError:
        return ""
    finally:
        os.close(fd)


def _fill(fd: int, size: int, fill_random: bool) -> None:
    if not fill_random:
        os.ftruncate(fd, size)  # sparse zeros, instant
        return
    left = size
    while left:
        chunk = os.urandom(min(left, _READ_CHUNK))
        written = 0
        while written < len(chunk):
            written += os.write(fd, chunk[written:])
        left -= len(chunk)


def _walk_tree(top_fd: int, remove: bool) -> int:
    """Walk the directory open as ``top_fd`` without following symbolic links and return
    the bytes of its regular files; with ``remove``, delete everything below it.

    Iterative (no Python recursion), at most FD_WINDOW descriptors held: deeper ancestors
    are closed and re-entered with ``..`` from the child, and that ``..`` must land on the
    same device and inode we left, or the walk stops, since the tree was moved under us.
    Directories already visited (bind-mount loops) are skipped.
    """
    top_stat = os.fstat(top_fd)
    stack = [_Level(top_fd, top_stat, "")]
    seen = {(top_stat.st_dev, top_stat.st_ino)}
    total = _scan(stack[0], remove)
    low = 1  # stack[1:low] have their descriptors closed; stack[0] is the caller's
    try:
        while True:
            level = stack[-1]
            if level.subdirs:
                name = level.subdirs.pop()
                try:
                    fd = os.open(name, _O_DIR | os.O_NOFOLLOW, dir_fd=level.fd)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    if remove:  # swapped for a link or a file since the scan: remove that
                        os.unlink(name, dir_fd=level.fd)
                    continue
                st = os.fstat(fd)
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    os.close(fd)
                    continue
                seen.add(key)
                child = _Level(fd, st, name)
                stack.append(child)
                if len(stack) - low > FD_WINDOW:
                    os.close(stack[low].fd)
                    stack[low].fd = -1
                    low += 1
                total += _scan(child, remove)
                continue
            if len(stack) == 1:
                return total
            # Done with this level.  It stays on the stack until its descriptor is closed,
            # so the finally clause closes it if re-entering the parent fails.
            parent = stack[-2]
            if parent.fd < 0:
                fd = os.open("..", _O_DIR | os.O_NOFOLLOW, dir_fd=level.fd)
                st = os.fstat(fd)
                if (st.st_dev, st.st_ino) != (parent.dev, parent.ino):
                    os.close(fd)
                    raise CommandError("the directory tree was moved while it was being walked; stopped")
                parent.fd = fd
                low = len(stack) - 2
            os.close(level.fd)
            level.fd = -1
            stack.pop()
            if remove:
                try:
                    os.rmdir(level.name, dir_fd=parent.fd)
                except FileNotFoundError:
                    pass
    finally:
        for level in stack[1:]:
            if level.fd >= 0:
                _close_quietly(level.fd)


def _scan(level: _Level, remove: bool) -> int:
    """Handle the non-directories of one directory (sum or unlink) and remember its
    subdirectories for later, so no directory stream stays open while we go down."""
    total = 0
    subdirs = level.subdirs
    with os.scandir(level.fd) as entries:
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    subdirs.append(entry.name)
                elif remove:
                    os.unlink(entry.name, dir_fd=level.fd)
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
            except FileNotFoundError:
                continue
            except IsADirectoryError:
                subdirs.append(entry.name)  # replaced by a directory since readdir
    return total
