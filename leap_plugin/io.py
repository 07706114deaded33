"""File output that never leaves a half-written file behind."""
from __future__ import annotations

import os
import tempfile
from typing import IO, Any, Callable

__all__ = ["atomic_write", "lock_folder", "FolderInUse"]


def atomic_write(path: str, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(binary_file)`` on a temporary file in ``path``'s folder, then rename it
    to ``path``: a crash mid-write leaves the previous ``path`` (or none) intact."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide outputs from other users
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class FolderInUse(RuntimeError):
    """Another process holds the folder's lock (:func:`lock_folder`)."""


_HELD: dict[str, IO[str]] = {}


def lock_folder(folder: str, what: str = "run") -> None:
    """Hold an exclusive lock on ``folder`` (its ``.lock`` file) until this process exits,
    so that two runs never write into one output folder. Re-entrant within a process.

    Raises:
        FolderInUse: naming the folder and the process that holds it.
    """
    import fcntl

    folder = os.path.realpath(folder)
    if folder in _HELD:
        return
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, ".lock")
    handle = open(path, "a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise FolderInUse(f"output folder {folder!r} is in use by another {what} (process {holder}); "
                          "wait for it, or choose another output folder") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    _HELD[folder] = handle
