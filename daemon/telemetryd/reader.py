"""Files -> lines: one tailed file, read in binary chunks, consumed only up to its last complete line.

The reader never moves its own position while reading: `read_block` returns the block and the
Identity the file would have once the block is counted, and `advance` takes it afterwards, with no I/O
in between. So an exception anywhere between reading and counting (a failing pread, a bug in counting)
leaves the position where the counts are: the block is read again, never lost and never half-counted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .identity import FP_MAX, TAIL_MAX, FileIdent, Identity, digest, holds
from .records import FileEntry

CHUNK = 1 << 20


@dataclass
class Block:
    # data[:end] are complete lines, each ending in b"\n" (may be empty); bytes after `end` are the
    # start of a line still being written, read along to save copying the block.
    data: bytes
    too_long: int  # lines skipped for length while scanning for their end
    consumed: int  # bytes the position moves by (the lines plus skipped lines)
    end: int
    reached: Identity  # the identity once this block is counted


class TailedFile:
    """A file known by (dev, ino) plus an Identity (fingerprint, tail, offset), never by its name alone."""

    def __init__(self, dev: int, ino: int, path: str, ident: Identity | None = None) -> None:
        self.dev = dev
        self.ino = ino
        self.path = path
        # What has been counted: the offset (a line start) and the bytes that identify the file there.
        self.id = ident or Identity()
        # The offset in the last durable checkpoint (for checkpoint lag).
        self.committed = self.id.offset
        self.fd: int | None = None
        # The size at the last look (fstat before a read), for lag figures.
        self.size: int | None = None
        # Set when the path no longer leads here (renamed away or deleted): read on, then release.
        self.gone_since: float | None = None
        # Its size when the source set last found it grown while gone (release waits for quiet).
        self.size_when_gone = -1
        # While a line longer than max_line_bytes is being skipped: where the search for its end resumes.
        # Not committed: after a restart the search starts again at the offset.
        self._skip_scan: int | None = None
        self.last_active = 0.0
        # Loaded from a checkpoint but not yet matched to a file on disk.
        self.unverified = False
        # The first up to FP_MAX bytes, in memory only: tells a copy of this file from a new one.
        self.head = b""
        # The size at the last check of the bytes before the offset.
        self._checked_size = -1

    @property
    def ident(self) -> FileIdent:
        return (self.dev, self.ino)

    @property
    def offset(self) -> int:
        return self.id.offset

    def entry(self) -> FileEntry:
        return FileEntry.of(self.ident, self.path, self.id)

    @classmethod
    def from_entry(cls, e: FileEntry) -> TailedFile:
        t = cls(e.dev, e.ino, e.path, e.identity)
        t.unverified = True
        return t

    # --- descriptor ---------------------------------------------------------------------------------

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

    # --- identity -----------------------------------------------------------------------------------

    def verify(self) -> str:
        """Before resuming at a saved offset: '' if the file still holds what was read, else why not."""
        assert self.fd is not None
        return holds(self.fd, self.id)

    def reset(self) -> None:
        """Start over at 0: the file was truncated or rewritten in place."""
        self.id = Identity()
        self.head = b""
        self.size = None
        self._skip_scan = None
        self._checked_size = -1

    def set_position(self, ident: Identity, head: bytes) -> None:
        """Move to a line start taken over from another file (a copy inherits its original's offset)."""
        self.id = ident
        self.head = head
        self._skip_scan = None
        self._checked_size = -1

    def check(self, size: int) -> str:
        """'' if the file can be read on from the offset, else what happened to it. `size` is from the one
        fstat of this turn: the decision and the read that follows see the same file."""
        assert self.fd is not None
        # Files only grow: smaller than at the last look is a truncation even before anything was read
        # (offset 0), when the size alone cannot fall below the offset.
        shrunk = self.size is not None and size < self.size
        self.size = size
        if size < self.id.offset or shrunk:
            return "truncated"
        if size != self._checked_size and self.id.tail_len:
            # Truncated and written past the offset again between two looks (copytruncate under load):
            # the size alone cannot tell, the bytes before the offset can.
            self._checked_size = size
            off, n = self.id.offset, self.id.tail_len
            if digest(os.pread(self.fd, n, off - n)) != self.id.tail:
                return "rewritten"
        if self.id.fp_len < FP_MAX and size > self.id.fp_len:
            head = os.pread(self.fd, FP_MAX, 0)
            if self.id.head_matches(head) is False:
                return "rewritten"
            # A short fingerprint grows with the file (it describes bytes before any offset, so it may be
            # committed at any time).
            self.id = self.id.with_head(head)
            self.head = head
        return ""

    # --- reading ------------------------------------------------------------------------------------

    def read_block(self, max_line_bytes: int, budget: int = CHUNK) -> Block | None:
        """Complete lines from the offset on, and the identity once they are counted; None if there is no
        complete line yet (a trailing partial line stays unread until its newline). Moves nothing."""
        assert self.fd is not None
        if self._skip_scan is not None:
            return self._skip_long_line()
        off = self.id.offset
        want = max(budget, max_line_bytes + 1)
        data = os.pread(self.fd, want, off)
        nl = data.rfind(b"\n")
        if nl < 0:
            if len(data) > max_line_bytes:
                # Never hold a too-long line whole: remember where to look for its end and drop the bytes.
                self._skip_scan = off + len(data)
                return self._skip_long_line()
            return None
        end = nl + 1
        return Block(data, 0, end, end, self._reached(off + end, data[max(0, end - TAIL_MAX) : end]))

    def advance(self, b: Block) -> None:
        """The block has been counted: take the position it reaches. No I/O, nothing that can fail."""
        self.id = b.reached
        if b.too_long:
            self._skip_scan = None

    def _reached(self, offset: int, before: bytes) -> Identity:
        want = min(TAIL_MAX, offset)
        if len(before) < want:
            # A short block: take the tail from the file so it never depends on how reads were split.
            assert self.fd is not None
            before = os.pread(self.fd, want, offset - want)
        return self.id.advanced(offset, before)

    def _skip_long_line(self) -> Block | None:
        assert self.fd is not None and self._skip_scan is not None
        while True:
            data = os.pread(self.fd, CHUNK, self._skip_scan)
            if not data:
                return None
            nl = data.find(b"\n")
            if nl >= 0:
                end = self._skip_scan + nl + 1
                consumed = end - self.id.offset
                return Block(b"", 1, consumed, 0, self._reached(end, b""))
            self._skip_scan += len(data)
