"""One live trainer per checkpoint directory.

Two processes training into one checkpoint interleave their steps and epochs (metrics.csv
with every epoch twice) and both report success. This happens for real: Snakemake's recovery
recipe (`snakemake --unlock`, then `--rerun-incomplete`) starts a second job for a run whose
first job is still alive. So a trainer holds `<checkpoint>/lock` for as long as it runs:

- the lock is `fcntl.flock` on an open file, so the kernel releases it when the process ends,
  however it ends (exit, exception, SIGKILL): a dead trainer never leaves a stale lock;
- the file holds `<pid>@<host>` of the holder, so the refusal says who to wait for.

The lock file stays in place between runs (removing a lock file races with a process that
has just opened it); its content is only a name, never trusted as the lock itself.
"""

from __future__ import annotations

import fcntl
import os
import socket
import stat
from pathlib import Path

from forcematch.errors import ForcematchError
from forcematch.io.atomic import output_errors

LOCK_NAME = "lock"


def holder_of(text: str) -> str:
    """'pid 123 on host h' for a lock file holding '123@h'."""
    pid, _, host = text.strip().partition("@")
    if not pid.isdigit() or not host:
        return "another process (it has not written its name yet)"
    return f"pid {pid} on host {host}"


class CheckpointLock:
    """`with CheckpointLock(ckpt):` holds `ckpt/lock` or raises ForcematchError naming the
    process that holds it. `ckpt` must exist."""

    def __init__(self, ckpt: str | os.PathLike):
        self.ckpt = Path(ckpt)
        self.path = self.ckpt / LOCK_NAME
        self._fd: int | None = None

    def _open(self) -> int:
        flags = (os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
                 | getattr(os, "O_NOFOLLOW", 0))
        try:
            with output_errors(self.path):
                fd = os.open(self.path, flags, 0o666)
        except OSError as exc:
            raise ForcematchError(f"cannot open the checkpoint lock {self.path}: "
                                  f"{exc.strerror or exc}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise ForcematchError(f"checkpoint lock {self.path} is not a regular file")
        return fd

    def acquire(self) -> None:
        fd = self._open()
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = holder_of(os.pread(fd, 256, 0).decode("utf-8", errors="replace"))
                raise ForcematchError(
                    f"{self.ckpt} is in use by another training run: {holder} holds "
                    f"{self.path}; two trainers on one checkpoint would interleave their "
                    "steps. Wait for it to finish or stop it, then rerun") from None
            with output_errors(self.path):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}@{socket.gethostname()}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        """Forget the holder's name and release the lock (idempotent)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass  # the lock is released by close() all the same
        finally:
            os.close(fd)

    def __enter__(self) -> CheckpointLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
