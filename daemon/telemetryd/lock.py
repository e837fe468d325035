"""One daemon per state dir: an fcntl lock whose file names the holder."""

from __future__ import annotations

import errno
import fcntl
import os
import stat


class LockHeld(Exception):
    def __init__(self, path: str, holder: str) -> None:
        super().__init__(f"state dir is locked by another telemetryd (pid {holder or 'unknown'}): {path}")
        self.holder = holder


class LockUnsafe(Exception):
    """The lock path is not a plain file of its own (a symlink, a hard link, a FIFO...). The daemon
    truncates the lock file and writes its pid into it, so following such a path would overwrite
    whatever it leads to (e.g. a symlink planted to /etc/passwd). Nothing is written; an operator must
    remove it."""

    def __init__(self, path: str, why: str) -> None:
        super().__init__(f"refusing to use the state dir lock {path}: {why}; remove it and start again")
        self.path = path
        self.why = why


class StateLock:
    def __init__(self, state_dir: str) -> None:
        self.path = os.path.join(state_dir, "lock")
        self.fd: int | None = None

    def acquire(self) -> None:
        # O_NOFOLLOW: a symlink at the last component fails with ELOOP instead of being followed;
        # O_NONBLOCK: a FIFO planted there cannot hang the open (no effect on a regular file).
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
        try:
            fd = os.open(self.path, flags, 0o640)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise LockUnsafe(self.path, "it is a symbolic link") from None
            raise
        st = os.fstat(fd)
        why = (
            "it is not a regular file"
            if not stat.S_ISREG(st.st_mode)
            else f"it has {st.st_nlink} hard links"
            if st.st_nlink != 1
            else ""
        )
        if why:
            os.close(fd)
            raise LockUnsafe(self.path, why)
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
