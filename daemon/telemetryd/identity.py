"""File identity: what a file held up to a read offset, and whether a descriptor still holds it.

The one identity type of the daemon. The reader carries it as the position it has counted up to, the
source set compares identities to tell copies, rotations and rewrites apart, and the checkpoint records
store it (flattened into FileEntry / TruncatedEntry, whose on-disk layout predates this type).
Imports nothing from the package: everything else may import it.
"""

from __future__ import annotations

import hashlib
import os

import msgspec

# The first FP_MAX bytes identify a file beyond its inode; a smaller file has a shorter fingerprint that
# grows (without rereading) until it reaches FP_MAX.
FP_MAX = 256
# Bytes before the offset that must still be there for a resume to be trusted.
TAIL_MAX = 64

FileIdent = tuple[int, int]  # (st_dev, st_ino)


def digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


class Identity(msgspec.Struct, frozen=True):
    """A file's content identity at a read offset.

    fp: BLAKE2b of the first fp_len bytes (fp_len <= FP_MAX); tail: BLAKE2b of the tail_len bytes before
    `offset` (tail_len = min(TAIL_MAX, offset)). `offset` is always at a line start.
    """

    offset: int = 0
    fp: str = ""
    fp_len: int = 0
    tail: str = ""
    tail_len: int = 0

    def with_head(self, head: bytes) -> Identity:
        """The same position with a fingerprint of `head` (the file's first up to FP_MAX bytes)."""
        fp, fp_len = (digest(head), len(head)) if head else ("", 0)
        return msgspec.structs.replace(self, fp=fp, fp_len=fp_len)

    def advanced(self, offset: int, tail_bytes: bytes) -> Identity:
        """The identity once the reader has counted up to `offset`; tail_bytes are the bytes just before
        it (at least min(TAIL_MAX, offset) of them)."""
        tail = tail_bytes[-min(TAIL_MAX, offset) :] if offset else b""
        return msgspec.structs.replace(
            self, offset=offset, tail=digest(tail) if tail else "", tail_len=len(tail)
        )

    def head_matches(self, head: bytes) -> bool | None:
        """Whether `head` (first bytes of a file) agrees with the fingerprint; None if too short to tell."""
        if len(head) < self.fp_len:
            return None
        return not self.fp_len or digest(head[: self.fp_len]) == self.fp


def at(fd: int, offset: int) -> Identity:
    """The identity of the file open at fd, at `offset` (a line start)."""
    want = min(TAIL_MAX, offset)
    tail = os.pread(fd, want, offset - want) if want else b""
    return Identity().with_head(os.pread(fd, FP_MAX, 0)).advanced(offset, tail)


def holds(fd: int, ident: Identity, size: int | None = None) -> str:
    """The resume check: '' if the file open at fd still holds what `ident` describes, else why not.

    Size not below the offset, the first fp_len bytes and the tail_len bytes before the offset unchanged,
    and the byte before the offset a newline.
    """
    if size is None:
        size = os.fstat(fd).st_size
    if size < ident.offset:
        return f"size {size} below committed offset {ident.offset}"
    if ident.fp_len and digest(os.pread(fd, ident.fp_len, 0)) != ident.fp:
        return "first bytes changed"
    if ident.offset:
        if (
            ident.tail_len
            and digest(os.pread(fd, ident.tail_len, ident.offset - ident.tail_len)) != ident.tail
        ):
            return "bytes before the committed offset changed"
        if os.pread(fd, 1, ident.offset - 1) != b"\n":
            return "committed offset is not at a line start"
    return ""


def last_line_end(fd: int, size: int | None = None) -> int:
    """Offset just past the last newline in the first `size` bytes (default: the whole file)."""
    pos = os.fstat(fd).st_size if size is None else size
    while pos > 0:
        start = max(0, pos - (1 << 20))
        data = os.pread(fd, pos - start, start)
        nl = data.rfind(b"\n")
        if nl >= 0:
            return start + nl + 1
        pos = start
    return 0
