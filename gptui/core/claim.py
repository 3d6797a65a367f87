"""One writer per run: an exclusive claim on a run folder, taken atomically before anything is written to it.

The claim is an `flock` on the run's `.claim` file. Taking it is one system call, so two processes (or two
threads, or the TUI and the command line) that start at the same moment cannot both get it; the OS drops it
when its holder ends, kill -9 included, so a claim left by a dead process is simply free to take again. The
file also names who claimed the run (pid, host, time), for the message that refuses the next one, and for
`runs` to tell a run being written from one that only says so. Of a torchrun job, rank 0 alone claims (it
alone writes).

Nothing here imports torch.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from gptui.core.errors import InputError, RunBusy

CLAIM = ".claim"
RETRY_SECONDS = 0.3  # how long a claim waits out a lock held by no one named (a look by `claimed`)


class RunClaim:
    """The exclusive right to write one run folder, held until `release()` or the end of the process."""

    def __init__(self, path: Path, fd: int):
        self.path = path
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # no owner named any more; the lock itself goes with the descriptor
        os.close(fd)

    def __enter__(self) -> RunClaim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def claim_run(folder: Path, run_id: str | None = None) -> RunClaim:
    """Claim the run in `folder`, or raise RunBusy naming the process that holds it."""
    folder = Path(folder)
    path = folder / CLAIM
    deadline = time.monotonic() + RETRY_SECONDS
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except FileNotFoundError:
            raise InputError(f"run folder {folder} does not exist") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = read_holder(folder)
            # a claimer names itself right after locking; a lock held by nobody named is a brief look by
            # `claimed` (or a claimer about to name itself), worth waiting out
            if (holder is None or not _alive_here(holder)) and time.monotonic() < deadline:
                time.sleep(0.01)
                continue
            raise RunBusy(f"run {run_id or folder.name} is already training in another process"
                          f"{_holder_text(holder)}") from None
        # the file may have been replaced (deleted by hand) between open and lock: the lock must be on the one
        # that is there now, or a second claimer could lock the new file
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(owner) + "\n").encode(), 0)
        return RunClaim(path, fd)


def read_holder(folder: Path) -> dict[str, Any] | None:
    """Who the claim file names (pid, host, since), or None; says nothing about whether it still holds it."""
    try:
        data = json.loads((Path(folder) / CLAIM).read_text(encoding="utf-8") or "null")
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def claimed(folder: Path) -> bool:
    """Whether a live process holds the run's claim. Cheap when nobody does; otherwise a brief shared lock
    tells a holder from a stale name (a claim that `claim_run` meets meanwhile waits it out)."""
    holder = read_holder(folder)
    if holder is None or not _alive_here(holder):
        return False
    try:
        fd = os.open(Path(folder) / CLAIM, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing drops the shared lock, if it was taken
    return False


def _alive_here(holder: dict[str, Any]) -> bool:
    pid = holder.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    if holder.get("host") != socket.gethostname():
        return True  # another machine's process on a shared folder: only the lock can tell
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _holder_text(holder: dict[str, Any] | None) -> str:
    if not holder or not isinstance(holder.get("pid"), int):
        return ""
    host = holder.get("host")
    where = f" on {host}" if isinstance(host, str) and host != socket.gethostname() else ""
    return f" (pid {holder['pid']}{where})"
