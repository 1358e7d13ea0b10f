"""forcefield_et.files: atomic, durable replacement of files and the lock on an output folder."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from forcefield_et import files
from forcefield_et.files import (
    DirectoryBusyError,
    DirectoryLock,
    atomic_path,
    atomic_write,
    leftover_temporaries,
    savez_atomic,
    write_bytes_atomic,
    write_text_atomic,
)

FILES_MODULE = Path(files.__file__)

# Holds a DirectoryLock on argv[1] in another process (files.py loaded on its own: no torch to import).
# Prints "held", releases on the first line of stdin and prints "released", exits on the second.
HOLDER = r"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location("durable_files", sys.argv[2])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
lock = module.DirectoryLock(sys.argv[1]).acquire()
print("held", flush=True)
sys.stdin.readline()
lock.release()
print("released", flush=True)
sys.stdin.readline()
"""


class LockHolder:
    """Another process holding ``folder``'s DirectoryLock until :meth:`release` (or :meth:`stop`)."""

    def __init__(self, folder: Path) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), str(FILES_MODULE)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout.readline().strip() == "held"

    def release(self) -> None:
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline().strip() == "released"

    def stop(self) -> None:
        self.process.communicate("\n\n", timeout=30)

    def __enter__(self) -> LockHolder:
        return self

    def __exit__(self, *exc) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_a_write_replaces_the_whole_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "state.bin"
    assert write_bytes_atomic(path, b"old") == path  # the folder is created
    write_bytes_atomic(path, b"new content")
    assert path.read_bytes() == b"new content"
    write_text_atomic(path, "Å\n")
    assert path.read_bytes() == "Å\n".encode()
    assert temporaries(path.parent) == []


def test_a_write_that_fails_midway_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "state.bin"
    path.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(path) as handle:
            handle.write(b"half of the new")
            raise KeyboardInterrupt
    assert path.read_bytes() == b"old" and temporaries(tmp_path) == []
    with pytest.raises(ValueError, match="no arrays for you"), atomic_path(path) as tmp:
        tmp.write_bytes(b"half")
        raise ValueError("no arrays for you")
    assert path.read_bytes() == b"old" and temporaries(tmp_path) == []


def test_the_new_content_is_fsynced_before_it_replaces_the_old(tmp_path, monkeypatch):
    path = tmp_path / "state.bin"
    path.write_bytes(b"old")

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_bytes_atomic(path, b"new")
    assert path.read_bytes() == b"old" and temporaries(tmp_path) == []
    synced = []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.fstat(fd)))
    write_bytes_atomic(path, b"new")
    assert path.read_bytes() == b"new"
    assert len(synced) == 2 and not os.path.samestat(synced[0], os.stat(tmp_path))  # the file, then
    assert os.path.samestat(synced[1], os.stat(tmp_path))  # the folder that holds the rename


def test_savez_and_atomic_path_write_complete_files(tmp_path):
    arrays = {"positions": np.arange(6.0).reshape(2, 3), "meta": np.array('{"step": 3}')}
    for compressed in (False, True):
        path = savez_atomic(tmp_path / "state.npz", arrays, compressed=compressed)
        with np.load(path) as data:
            assert set(data.files) == set(arrays)
            assert np.array_equal(data["positions"], arrays["positions"]) and str(data["meta"]) == '{"step": 3}'
    with atomic_path(tmp_path / "log.txt") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".log.txt.") and tmp.name.endswith(".tmp")
        tmp.write_text("complete\n")
    assert (tmp_path / "log.txt").read_text() == "complete\n" and temporaries(tmp_path) == []


def test_leftover_temporaries_are_those_of_the_named_targets(tmp_path):
    for name in (".md_state.npz.1a2b3c4d.tmp", ".md_state.npz.tmp", ".md_log.csv.99.tmp", ".other.tmp", "plain.tmp"):
        (tmp_path / name).write_bytes(b"partial")
    assert [p.name for p in leftover_temporaries(tmp_path, ["md_state.npz", "md_log.csv"])] == [
        ".md_log.csv.99.tmp", ".md_state.npz.1a2b3c4d.tmp", ".md_state.npz.tmp"]
    assert len(leftover_temporaries(tmp_path)) == 4  # every hidden one


@pytest.mark.skipif(sys.platform == "win32", reason="fcntl locks are POSIX")
def test_the_lock_refuses_a_second_holder_until_it_is_released(tmp_path):
    folder = tmp_path / "out"
    with LockHolder(folder) as holder:
        assert (folder / ".lock").read_text() == f"process {holder.process.pid}\n"
        message = (f"{folder} is in use by process {holder.process.pid}: two runs cannot write into one MD output "
                   "folder; wait for it to finish or choose another MD output folder")
        with pytest.raises(DirectoryBusyError) as info:  # a RuntimeError that callers can tell apart
            DirectoryLock(folder, "MD output folder").acquire()
        assert str(info.value) == message and isinstance(info.value, RuntimeError)
        holder.release()  # the other process goes on running, without the lock
        with DirectoryLock(folder) as lock:
            assert lock.held and (folder / ".lock").read_text() == f"process {os.getpid()}\n"
            with pytest.raises(RuntimeError, match=f"in use by process {os.getpid()}"):
                DirectoryLock(folder).acquire()  # a second lock in the same process is refused too
        assert not lock.held
        again = DirectoryLock(folder).acquire()  # free after the with block
        again.release()
        again.release()  # releasing twice is harmless
        holder.stop()


@pytest.mark.skipif(sys.platform == "win32", reason="fcntl locks are POSIX")
def test_the_lock_of_a_killed_process_is_free(tmp_path):
    with LockHolder(tmp_path) as holder:
        holder.process.kill()
        holder.process.wait()
    with DirectoryLock(tmp_path) as lock:
        assert lock.held


def test_the_lock_is_a_no_op_without_fcntl(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "fcntl", None)  # import fcntl raises ImportError, as on Windows
    with DirectoryLock(tmp_path) as first, DirectoryLock(tmp_path) as second:
        assert not first.held and not second.held
    assert not (tmp_path / ".lock").exists()
