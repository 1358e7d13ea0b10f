"""Durable files: atomic replacement of a file's content, and a lock on an output folder.

Every file the package writes whole (checkpoints, MD states, logs rewritten on resume, plots, JSON
and CSV summaries) goes through :func:`atomic_write` or one of its shortcuts: the content is written
to a temporary file in the target's folder (``.<name>.<random>.tmp``), flushed and fsynced, renamed
over the target with :func:`os.replace`, and the folder is fsynced where the platform allows it. A
process killed at any moment leaves the old file or the new one, never a mixture; once the call has
returned, the new content survives a power cut. A failed write removes its temporary file and leaves
the target untouched.

:class:`DirectoryLock` keeps two processes from writing into one folder (a training run directory,
an MD output folder).
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Iterable, Iterator, List, Mapping, Type, Union

import numpy as np

PathLike = Union[str, os.PathLike]

LOCK_FILE = ".lock"
_TEMPORARY_SUFFIX = ".tmp"
# errors of fsync on a folder from file systems that do not support it (the data is still written)
_UNSUPPORTED = {errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF, errno.EACCES, errno.EPERM, errno.EISDIR}


def _create_temporary(path: Path) -> tuple[int, Path]:
    """Create ``.<name>.<random>.tmp`` beside ``path`` (exclusively, with the permissions a plain
    ``open`` gives under the process's umask) and return its descriptor and path."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{_TEMPORARY_SUFFIX}")
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue


def fsync_directory(folder: PathLike) -> None:
    """Make a rename or a new file in ``folder`` durable (a no-op where folders cannot be fsynced,
    e.g. on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as error:
        if error.errno not in _UNSUPPORTED:
            raise
    finally:
        os.close(fd)


def fsync_file(path: PathLike) -> None:
    """Put what has been written to ``path`` so far (by this or any open handle) on disk."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _commit(tmp: Path, path: Path) -> None:
    os.replace(tmp, path)
    fsync_directory(path.parent)


@contextmanager
def atomic_write(path: PathLike) -> Iterator[IO[bytes]]:
    """Open a binary handle whose content replaces ``path`` when the block ends without an error.

    Guarantees: ``path`` holds its old content or the complete new one at every moment, also if the
    process is killed; the new content is on disk (file and folder fsynced) when the block has
    exited; on an error (raised in the block or by the write, fsync or rename) the temporary file
    is removed, ``path`` is untouched and the error propagates. The folder is created if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        _commit(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """A temporary file name beside ``path`` for writers that need a name rather than a handle
    (an ASE trajectory, ``ase.io.write``); it replaces ``path`` when the block ends without an
    error, with the guarantees of :func:`atomic_write`. The writer must have closed the file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(path)
    os.close(fd)
    try:
        yield tmp
        fsync_file(tmp)
        _commit(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def file_sha256(path: PathLike) -> str:
    """SHA-256 hex digest of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_bytes_atomic(path: PathLike, data: bytes) -> Path:
    """Replace ``path`` with ``data`` atomically and durably (see :func:`atomic_write`)."""
    with atomic_write(path) as handle:
        handle.write(data)
    return Path(path)


def write_text_atomic(path: PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Replace ``path`` with ``text`` atomically and durably (see :func:`atomic_write`)."""
    return write_bytes_atomic(path, text.encode(encoding))


def savez_atomic(path: PathLike, arrays: Mapping[str, Any], compressed: bool = False) -> Path:
    """Replace ``path`` with an ``.npz`` archive of ``arrays`` (``np.savez``, or
    ``np.savez_compressed``) atomically and durably (see :func:`atomic_write`)."""
    with atomic_write(path) as handle:
        (np.savez_compressed if compressed else np.savez)(handle, **arrays)
    return Path(path)


def leftover_temporaries(folder: PathLike, names: Iterable[str] | None = None) -> List[Path]:
    """The temporary files in ``folder`` that writes of this module (``.<name>.<random>.tmp``) or of
    earlier versions (``.<name>.tmp``) left when the process was killed, for the targets ``names``
    (all when None). Only the folder's owner (the holder of its :class:`DirectoryLock`) may delete
    them: another process may be writing them."""
    wanted = None if names is None else set(names)
    found = []
    for candidate in Path(folder).glob(f".*{_TEMPORARY_SUFFIX}"):
        stem = candidate.name[1 : -len(_TEMPORARY_SUFFIX)]
        targets = {stem, stem.rpartition(".")[0]}  # ".NAME.tmp" or ".NAME.RANDOM.tmp"
        if wanted is None or targets & wanted:
            found.append(candidate)
    return sorted(found)


class DirectoryBusyError(RuntimeError):
    """A folder's :class:`DirectoryLock` is held by another process (or another lock object)."""


class DirectoryLock:
    """An exclusive lock on a folder: ``fcntl.flock`` on ``<folder>/.lock``, which names the holder
    (``process <pid>``).

    :meth:`acquire` (or entering the ``with`` block) does not wait: a folder another process holds
    raises :class:`DirectoryBusyError` (a RuntimeError) naming the folder and that process. The
    lock is released by :meth:`release`, at the end of the ``with`` block, or by the operating
    system when the process dies (also by SIGKILL). The ``.lock`` file stays in the folder. Locks
    are per open file: a second DirectoryLock on the same folder is refused in the same process too.
    Where ``fcntl`` does not exist (Windows), locking is a no-op. ``what`` names the folder in the
    message."""

    def __init__(self, folder: PathLike, what: str = "folder") -> None:
        self.folder = Path(folder)
        self.what = what
        self._handle: IO[str] | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._handle is not None

    def acquire(self) -> DirectoryLock:
        """Take the lock (creating the folder if needed); DirectoryBusyError if another holder has it."""
        if self._handle is not None:
            return self
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        handle = open(self.folder / LOCK_FILE, "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise DirectoryBusyError(
                f"{self.folder} is in use by {owner}: two runs cannot write into one {self.what}; "
                f"wait for it to finish or choose another {self.what}"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()}\n")
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        """Release the lock (nothing happens when it is not held)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(
        self, kind: Type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()


__all__ = [
    "LOCK_FILE",
    "DirectoryBusyError",
    "DirectoryLock",
    "atomic_path",
    "atomic_write",
    "fsync_directory",
    "fsync_file",
    "leftover_temporaries",
    "savez_atomic",
    "write_bytes_atomic",
    "write_text_atomic",
]
