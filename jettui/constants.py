"""Constants of the JetStream API, with the names and values of the seed "Constants" document.

Everything the seed names is here with the same name and value, so a script that did
``from jetstream.constants import *`` works after changing the import to
``from jettui.constants import *``.

Decisions where the public documents are silent (see shared/spec/jetstream-api.md §11, §13):

* Symbolic-link handling: the seed documents two constants ("follow and copy contents",
  "ignore") whose names never survived.  We call them ``SYMLINKS_FOLLOW = 0`` (the
  default, as cp -L and the seed's ordering suggest) and ``SYMLINKS_IGNORE = 1``.
* ``PERMISSIONS`` is "fine grained API permissions" with no published names.  We make it
  an :class:`enum.IntFlag` (:class:`Permissions`) so values combine with ``|`` and
  travel over the wire as plain ints.  ``PERMISSIONS_ALL`` is what a token gets when
  ``createAPIToken(permissions=None)``.
* ls type codes come from the lsAsync / lsRootsAsync documentation: regular 4,
  directory 2, symlink 5, drive 8, and a root is drive|directory = 10.
* Request statuses are the seed's ``pending`` / ``success`` / ``error``.  Older examples
  print ``complete``; clients should accept both (``REQUEST_STATUS_DONE``).
"""

from __future__ import annotations

import enum

#: Version of the API spoken by this package.
API_VERSION = 40

#: Version of JetStream this API surface comes from.
BUILD_VERSION = (2, 9, 2)

#: By default, the API connects to a server on this TCP control port.
DEFAULT_API_PORT = 8886

#: By default, the API connects to a server running on 'localhost'.
DEFAULT_SERVER_ADDRESS = "localhost"

#: Connection attempts time out and fail if unresponsive for this many seconds.
DEFAULT_TIMEOUT_SECONDS = 10

#: Default UDP receive port of a server (the data plane; it multiplexes both directions).
DEFAULT_RECV_PORT = 8886

# -- Manifest flags ---------------------------------------------------------------
#: Identify a manifest mapping item as a directory.
FILETYPE_DIRECTORY = 2
#: Identify a manifest mapping item as a regular file.
FILETYPE_REGULAR_FILE = 4

# -- Min cipher -------------------------------------------------------------------
#: No encryption or validation.  For debugging only.
MIN_CIPHER_NONE = 0
#: Not encrypted, but authenticated: readable, not forgeable.
MIN_CIPHER_UNENCRYPTED = 1
#: Encrypted and authenticated with 128-bit security (AES-128-GCM).
MIN_CIPHER_ENCRYPTED_128 = 2
#: Encrypted and authenticated with 256-bit security (AES-256-GCM).
MIN_CIPHER_ENCRYPTED_256 = 3

CIPHER_NAMES: dict[int, str] = {
    MIN_CIPHER_NONE: "NONE",
    MIN_CIPHER_UNENCRYPTED: "UNENCRYPTED",
    MIN_CIPHER_ENCRYPTED_128: "ENCRYPTED_128",
    MIN_CIPHER_ENCRYPTED_256: "ENCRYPTED_256",
}

# -- Overwrite mode ---------------------------------------------------------------
#: Overwrite files only if the existing file is the same or zero size (written in place).
OVERWRITE_IN_PLACE_SAME_SIZE = 2
#: Use part-files and never overwrite existing files; the part-file is left in place.
OVERWRITE_NEVER = 3
#: Use part-files and overwrite existing files.
OVERWRITE_ALWAYS = 4
#: Use part-files and overwrite; the original is kept with a ``.jetbak`` extension.
OVERWRITE_VERSIONED = 5

OVERWRITE_NAMES: dict[int, str] = {
    OVERWRITE_IN_PLACE_SAME_SIZE: "IN_PLACE_SAME_SIZE",
    OVERWRITE_NEVER: "NEVER",
    OVERWRITE_ALWAYS: "ALWAYS",
    OVERWRITE_VERSIONED: "VERSIONED",
}

#: Extension of the backup kept by OVERWRITE_VERSIONED.
BACKUP_SUFFIX = ".jetbak"
#: Extension of the file a transfer writes before it is renamed into place.
PARTFILE_SUFFIX = ".jetpart"

# -- Transfer flags (bit flags) ----------------------------------------------------
#: Neither read at the sender nor write at the destination (network debugging).
TRANSFER_FLAG_NONE = 0
#: Read at the sender, skip writing at the destination.
TRANSFER_FLAG_READ = 1
#: Skip reading at the sender, write at the destination.
TRANSFER_FLAG_WRITE = 2
#: Read and write: the default.
TRANSFER_FLAG_READ_WRITE = 3
#: Set the destination modification time to the source's.
TRANSFER_FLAG_WRITE_MTIME = 4
#: Do not write when the destination exists and is newer than the source.
TRANSFER_FLAG_WRITE_ONLY_NEWER = 8

# -- Symbolic links (names chosen by us; see the module docstring) ----------------
#: Follow the symlink and copy the file contents.
SYMLINKS_FOLLOW = 0
#: Ignore (do not copy) symbolic links.
SYMLINKS_IGNORE = 1

# -- ls entry types -----------------------------------------------------------------
LS_TYPE_DIRECTORY = 2
LS_TYPE_REGULAR = 4
LS_TYPE_SYMLINK = 5
LS_TYPE_DRIVE = 8
LS_TYPE_ROOT = LS_TYPE_DRIVE | LS_TYPE_DIRECTORY

#: ``access`` bits of an ls entry.
ACCESS_READ = 1 << 2
ACCESS_WRITE = 1 << 1
ACCESS_EXECUTE = 1 << 0

#: Hash types accepted by lsAsync / lsListAsync.
HASH_TYPES = ("MD5", "S3")

# -- Request statuses ------------------------------------------------------------------
REQUEST_STATUS_PENDING = "pending"
REQUEST_STATUS_SUCCESS = "success"
REQUEST_STATUS_ERROR = "error"
#: Statuses that mean "finished" (older documents print ``complete``).
REQUEST_STATUS_DONE = frozenset({REQUEST_STATUS_SUCCESS, REQUEST_STATUS_ERROR, "complete"})

# -- Transfer statuses -------------------------------------------------------------------
TRANSFER_STATUS_PENDING = "pending"
TRANSFER_STATUS_SENDING = "sending"
TRANSFER_STATUS_SUSPENDED = "suspended"
TRANSFER_STATUS_CANCELLED = "cancelled"
TRANSFER_STATUS_COMPLETE = "complete"
TRANSFER_STATUS_ERROR = "error"
TRANSFER_END_STATUSES = frozenset({TRANSFER_STATUS_CANCELLED, TRANSFER_STATUS_COMPLETE, TRANSFER_STATUS_ERROR})

# -- Receive transfer statuses ------------------------------------------------------------
RECV_STATUS_RECEIVING = "receiving"
RECV_STATUS_COMPLETE = "complete"
RECV_STATUS_ERROR = "error"

# -- Manifest statuses ---------------------------------------------------------------------
MANIFEST_STATUS_PENDING = "pending"
MANIFEST_STATUS_COMPLETE = "complete"
MANIFEST_STATUS_ERROR = "error"


class Permissions(enum.IntFlag):
    """Fine grained API permissions (the seed's ``PERMISSIONS``).

    A session authenticated with a user name has every permission its role allows; a
    session authenticated with an API token has only the flags the token carries.
    """

    #: List directories, roots and sizes (lsAsync, lsListAsync, lsRootsAsync, duAsync).
    BROWSE = 1 << 0
    #: Read file contents: hashes, and use files as transfer sources (manifests).
    READ = 1 << 1
    #: Create and change files and directories (mkdirAsync, mkFileAsync, mvAsync, receive).
    WRITE = 1 << 2
    #: Delete files and directories (rmAsync, and the source side of a move).
    DELETE = 1 << 3
    #: Create and control transfers and destinations.
    TRANSFER = 1 << 4
    #: Create shared (download-link) tokens.
    SHARE = 1 << 5
    #: Create, list, update and delete API tokens.
    MANAGE_TOKENS = 1 << 6
    #: Administrative methods (still only for superusers / wranglers as well).
    ADMIN = 1 << 7


PERMISSIONS = Permissions
PERMISSION_NONE = Permissions(0)
PERMISSION_BROWSE = Permissions.BROWSE
PERMISSION_READ = Permissions.READ
PERMISSION_WRITE = Permissions.WRITE
PERMISSION_DELETE = Permissions.DELETE
PERMISSION_TRANSFER = Permissions.TRANSFER
PERMISSION_SHARE = Permissions.SHARE
PERMISSION_MANAGE_TOKENS = Permissions.MANAGE_TOKENS
PERMISSION_ADMIN = Permissions.ADMIN
PERMISSIONS_ALL = Permissions(
    Permissions.BROWSE
    | Permissions.READ
    | Permissions.WRITE
    | Permissions.DELETE
    | Permissions.TRANSFER
    | Permissions.SHARE
    | Permissions.MANAGE_TOKENS
    | Permissions.ADMIN
)
