"""Private-file helpers: owner-only permissions and crash-safe writes.

A reader must never see half a key file or half a keyring, and two processes starting
for the first time at once must end up with one master key, not two. So files are
written whole to a temporary name in the same directory, fsynced, then published with
a hard link (fails if the name exists: "create") or a rename (atomically replaces:
"replace"), and the directory is fsynced so the new name survives a power cut.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700
_ENFORCE_MODES = os.name == "posix"


def ensure_dir(path: Path) -> None:
    """Create a missing data directory readable by its owner only; existing ones are left as they are."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)


def too_open_bits(path: Path) -> int:
    """Permission bits beyond owner read/write (0 when the file is private enough, or on Windows)."""
    if not _ENFORCE_MODES:
        return 0
    return stat.S_IMODE(path.stat().st_mode) & ~PRIVATE_FILE_MODE


def file_mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def read_small(path: Path, limit: int) -> bytes:
    """Read a file that should be small; reading stops after `limit` + 1 bytes so a wrong path costs nothing."""
    with path.open("rb") as f:
        return f.read(limit + 1)


def _fsync_dir(directory: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(directory: Path, data: bytes) -> Path:
    # mkstemp creates the file with mode 0600 already, before any byte is written
    fd, name = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(name)
        raise
    return Path(name)


def create_private_file(path: Path, data: bytes) -> bool:
    """Write `data` to a new file with mode 0600; False (and nothing changed) when `path` already exists."""
    ensure_dir(path.parent)
    tmp = _write_temp(path.parent, data)
    try:
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:
            # file systems without hard links: exclusive create is still all-or-nothing on the name
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    _fsync_dir(path.parent)
    return True


def replace_private_file(path: Path, data: bytes) -> None:
    """Atomically replace (or create) `path` with `data`, mode 0600."""
    ensure_dir(path.parent)
    tmp = _write_temp(path.parent, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


@contextlib.contextmanager
def exclusive_lock(lock_path: Path) -> Iterator[None]:
    """Hold an advisory lock between processes (POSIX flock; a no-op where flock does not exist)."""
    ensure_dir(lock_path.parent)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
    try:
        if sys.platform != "win32":
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the flock
