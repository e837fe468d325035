"""Files -> lines: one tailed file, read in binary chunks, consumed only up to its last complete line."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass

from .checkpoint import FileEntry

CHUNK = 1 << 20
# The first FP_MAX bytes identify a file beyond its inode; a smaller file has a shorter fingerprint that
# grows (without rereading) until it reaches FP_MAX.
FP_MAX = 256
# Bytes before the offset that must still be there for a resume to be trusted.
TAIL_MAX = 64


def digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


@dataclass
class Block:
    # data[:end] are complete lines, each ending in b"\n" (may be empty); bytes after `end` are the
    # start of a line still being written, read along to save copying the block.
    data: bytes
    too_long: int  # lines skipped for length while scanning for their end
    consumed: int  # bytes the offset moves by (the lines plus skipped lines)
    end: int = 0


class TailedFile:
    """A file known by (dev, ino) plus a fingerprint of its first bytes, never by its name alone."""

    def __init__(
        self,
        dev: int,
        ino: int,
        path: str,
        offset: int = 0,
        fp: str = "",
        fp_len: int = 0,
        tail: str = "",
        tail_len: int = 0,
    ) -> None:
        self.dev = dev
        self.ino = ino
        self.path = path
        self.offset = offset
        # The offset in the last durable checkpoint (for checkpoint lag).
        self.committed = offset
        self.fp = fp
        self.fp_len = fp_len
        self.tail = tail
        self.tail_len = tail_len
        self.fd: int | None = None
        self.size: int | None = None
        # Set when the path no longer leads here (renamed away or deleted): read on, then release.
        self.gone_since: float | None = None
        self.deleted = False
        # While a line longer than max_line_bytes is being skipped: where the search for its end resumes.
        self._skip_scan: int | None = None
        self.last_active = 0.0
        # Loaded from a checkpoint but not yet matched to a file on disk.
        self.unverified = False
        # The first up to FP_MAX bytes, in memory only: tells a copy of this file from a new one.
        self.head = b""
        # Set by the source set while the file must not be read yet (a possible copy of a tracked file,
        # or a copy whose lines are still being read from its original): called before each read,
        # returns True while the file is held.
        self.gate: Callable[[TailedFile], bool] | None = None
        self.held = False
        self._checked_size = -1

    @property
    def ident(self) -> tuple[int, int]:
        return (self.dev, self.ino)

    def entry(self) -> FileEntry:
        return FileEntry(
            self.dev, self.ino, self.path, self.offset, self.fp, self.fp_len, self.tail, self.tail_len
        )

    @classmethod
    def from_entry(cls, e: FileEntry) -> TailedFile:
        t = cls(e.dev, e.ino, e.path, e.offset, e.fp, e.fp_len, e.tail, e.tail_len)
        t.unverified = True
        return t

    def open(self, path: str | None = None) -> None:
        """Open by path, only if the path still leads to this identity."""
        p = path or self.path
        fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != self.ident:
            os.close(fd)
            raise FileNotFoundError(f"{p} is no longer the file being tailed")
        self.close()
        self.fd = fd

    def adopt_fd(self, fd: int) -> None:
        self.close()
        self.fd = fd

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def verify(self) -> str:
        """Before resuming at a saved offset: '' if the file still holds what was read, else why not."""
        assert self.fd is not None
        size = os.fstat(self.fd).st_size
        if size < self.offset:
            return f"size {size} below committed offset {self.offset}"
        if self.fp_len and digest(os.pread(self.fd, self.fp_len, 0)) != self.fp:
            return "first bytes changed"
        if self.offset:
            if (
                self.tail_len
                and digest(os.pread(self.fd, self.tail_len, self.offset - self.tail_len)) != self.tail
            ):
                return "bytes before the committed offset changed"
            if os.pread(self.fd, 1, self.offset - 1) != b"\n":
                return "committed offset is not at a line start"
        return ""

    def reset(self) -> None:
        """Start over at 0: the file was truncated or rewritten in place."""
        self.offset = 0
        self.fp = ""
        self.fp_len = 0
        self.tail = ""
        self.tail_len = 0
        self.head = b""
        self._skip_scan = None

    def _grow_fingerprint(self) -> bool:
        """Extend a short fingerprint as the file grows. False if its first bytes changed."""
        assert self.fd is not None
        head = os.pread(self.fd, FP_MAX, 0)
        if self.fp_len and digest(head[: self.fp_len]) != self.fp:
            return False
        if len(head) > self.fp_len:
            self.fp, self.fp_len = digest(head), len(head)
            self.head = head
        return True

    def check_truncated(self) -> str:
        """'' if the file can be read on from the offset, else what happened to it."""
        assert self.fd is not None
        st = os.fstat(self.fd)
        self.size = st.st_size
        self.deleted = st.st_nlink == 0
        if self.gate is not None:
            self.held = self.gate(self)
            if self.held:
                return ""
        if st.st_size < self.offset:
            return "truncated"
        if st.st_size != self._checked_size and self.tail_len:
            # Truncated and written past the offset again between two looks (copytruncate under load):
            # the size alone cannot tell, the bytes before the offset can.
            self._checked_size = st.st_size
            if digest(os.pread(self.fd, self.tail_len, self.offset - self.tail_len)) != self.tail:
                return "rewritten"
        if self.fp_len < FP_MAX and st.st_size > self.fp_len and not self._grow_fingerprint():
            return "rewritten"
        return ""

    def read_block(self, max_line_bytes: int, budget: int = CHUNK) -> Block:
        """Complete lines from the offset on; a trailing partial line stays unread until its newline."""
        assert self.fd is not None
        if self.held:
            return Block(b"", 0, 0)
        if self._skip_scan is not None:
            return self._skip_long_line(max_line_bytes)
        want = max(budget, max_line_bytes + 1)
        data = os.pread(self.fd, want, self.offset)
        nl = data.rfind(b"\n")
        if nl < 0:
            if len(data) > max_line_bytes:
                # Never hold a too-long line whole: remember where to look for its end and drop the bytes.
                self._skip_scan = self.offset + len(data)
                return self._skip_long_line(max_line_bytes)
            return Block(b"", 0, 0)
        end = nl + 1
        self._advance(data[max(0, end - TAIL_MAX) : end], end)
        return Block(data, 0, end, end)

    def _skip_long_line(self, max_line_bytes: int) -> Block:
        assert self.fd is not None and self._skip_scan is not None
        while True:
            data = os.pread(self.fd, CHUNK, self._skip_scan)
            if not data:
                return Block(b"", 0, 0)
            nl = data.find(b"\n")
            if nl >= 0:
                end = self._skip_scan + nl + 1
                consumed = end - self.offset
                self._skip_scan = None
                self._advance(b"", consumed)
                return Block(b"", 1, consumed)
            self._skip_scan += len(data)

    def set_offset(self, offset: int) -> None:
        """Move to a line start taken over from another file (a copy inherits its original's offset)."""
        assert self.fd is not None
        self.offset = offset
        self._skip_scan = None
        self.tail_len = min(TAIL_MAX, offset)
        self.tail = digest(os.pread(self.fd, self.tail_len, offset - self.tail_len)) if offset else ""
        head = os.pread(self.fd, FP_MAX, 0)
        self.fp, self.fp_len, self.head = (digest(head), len(head), head) if head else ("", 0, b"")

    def _advance(self, consumed_bytes: bytes, n: int) -> None:
        assert self.fd is not None
        self.offset += n
        want = min(TAIL_MAX, self.offset)
        tail = consumed_bytes[-want:]
        if len(tail) < want:
            # A short block: take the tail from the file so it never depends on how reads were split.
            tail = os.pread(self.fd, want, self.offset - want)
        self.tail, self.tail_len = digest(tail), len(tail)
        if self.fp_len < FP_MAX:
            self._grow_fingerprint()
