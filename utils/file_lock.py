"""Inter-process file locks and atomic writes for files that several
workflows (threads or processes) share, such as the calendar cache.

Locks are ``fcntl.flock`` locks on one sidecar file per target
(``.<name>.lock`` next to it). Where there is no ``fcntl`` (Windows: ComfyUI
portable and Desktop), the well-kept ``filelock`` library takes the same sidecar
lock with the OS's own locking; there a shared (reader) lock is taken as an
exclusive one, which keeps every guarantee below and only lets readers wait for
each other. The sidecar is created once and reused, so lock
files never pile up; it is never deleted, because unlinking a lock file that
another process is about to lock splits the lock in two. ``flock`` locks belong
to an open file description, so two threads of one process that each take the
lock exclude each other too.

Writes go to a temporary file in the same folder, are fsynced and then
``os.replace``d over the target: a reader sees the old file or the new one,
never a mixture, and a writer killed mid-write leaves the old content intact.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

DEFAULT_TIMEOUT = 10.0
_POLL_INTERVAL = 0.005
_MAX_POLL_INTERVAL = 0.05


def lock_path_for(path: str | os.PathLike) -> Path:
    """The sidecar lock file that guards ``path``."""
    target = Path(path)
    return target.with_name(f".{target.name}.lock")


class FileLock:
    """A shared (readers) or exclusive (writers) lock on ``path``.

    Usable as a context manager or with ``acquire()``/``release()``. Raises
    ``TimeoutError`` when the lock cannot be had within ``timeout`` seconds
    (``None`` waits forever, ``0`` tries once).
    """

    def __init__(self, path: str | os.PathLike, timeout: float | None = DEFAULT_TIMEOUT,
                 shared: bool = False) -> None:
        self.path = Path(path)
        self.lock_path = lock_path_for(self.path)
        self.timeout = timeout
        self.shared = shared
        self._fd: int | None = None
        self._portable: Any = None  # a filelock.FileLock where there is no fcntl

    @property
    def locked(self) -> bool:
        return self._fd is not None or self._portable is not None

    def _timeout_error(self) -> TimeoutError:
        kind = "shared" if self.shared else "exclusive"
        return TimeoutError(f"could not take the {kind} lock on {self.path} within "
                            f"{self.timeout:g}s (another writer holds {self.lock_path})")

    def _acquire_portable(self) -> "FileLock":
        import filelock

        lock = filelock.FileLock(str(self.lock_path), timeout=-1 if self.timeout is None else self.timeout,
                                 thread_local=False)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise self._timeout_error() from None
        self._portable = lock
        return self

    def acquire(self) -> "FileLock":
        if self.locked:
            raise RuntimeError(f"lock on {self.path} is already held by this object")
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        if fcntl is None:
            return self._acquire_portable()
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        mode = fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX
        try:
            if self.timeout is None:
                fcntl.flock(fd, mode)
            else:
                self._acquire_polling(fd, mode)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def _acquire_polling(self, fd: int, mode: int) -> None:
        deadline = time.monotonic() + max(0.0, self.timeout or 0.0)
        interval = _POLL_INTERVAL
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._timeout_error() from None
                time.sleep(min(interval, remaining))
                interval = min(interval * 2, _MAX_POLL_INTERVAL)

    def release(self) -> None:
        portable, self._portable = self._portable, None
        if portable is not None:
            portable.release()
            return
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> "FileLock":
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, timeout: float | None = DEFAULT_TIMEOUT,
              shared: bool = False) -> Iterator[FileLock]:
    """``with file_lock(path):`` holds an exclusive lock; ``shared=True`` for readers."""
    lock = FileLock(path, timeout=timeout, shared=shared)
    with lock:
        yield lock


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Replace ``path`` with ``data`` in one step (temp file, fsync, os.replace)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(target.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, data: Any, *, indent: int | None = 2) -> None:
    """Serialise first (a value that is not JSON never touches the disk), then write atomically."""
    payload = json.dumps(data, ensure_ascii=False, indent=indent, sort_keys=False)
    atomic_write_bytes(path, (payload + "\n").encode("utf-8"))


def read_json(path: str | os.PathLike, default: Any = None, *,
              timeout: float | None = DEFAULT_TIMEOUT) -> Any:
    """Read JSON under a shared lock; ``default`` when the file does not exist."""
    target = Path(path)
    with file_lock(target, timeout=timeout, shared=True):
        try:
            text = target.read_text(encoding="utf-8")
        except FileNotFoundError:
            return default
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{target} is not valid JSON ({exc.msg} at line {exc.lineno})") from exc


def update_json(path: str | os.PathLike, update: Callable[[Any], Any], default: Any = None, *,
                timeout: float | None = DEFAULT_TIMEOUT) -> Any:
    """Read-modify-write under one exclusive lock, so concurrent updates are never lost.

    ``update`` receives the current value (``default`` when the file is missing)
    and returns the new one, which is written atomically and returned.
    """
    target = Path(path)
    with file_lock(target, timeout=timeout):
        try:
            current = json.loads(target.read_text(encoding="utf-8"))
        except FileNotFoundError:
            current = default
        except json.JSONDecodeError as exc:
            raise ValueError(f"{target} is not valid JSON ({exc.msg} at line {exc.lineno})") from exc
        new_value = update(current)
        atomic_write_json(target, new_value)
        return new_value
