"""One daemon per state dir: an fcntl lock whose file names the holder."""

from __future__ import annotations

import fcntl
import os


class LockHeld(Exception):
    def __init__(self, path: str, holder: str) -> None:
        super().__init__(f"state dir is locked by another telemetryd (pid {holder or 'unknown'}): {path}")
        self.holder = holder


class StateLock:
    def __init__(self, state_dir: str) -> None:
        self.path = os.path.join(state_dir, "lock")
        self.fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
            os.close(fd)
            raise LockHeld(self.path, holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
