"""Copy detection as pure functions: is a newly found file a copy of one already read?

A copy (copytruncate, or a copy that matches the globs) holds bytes that were already counted from its
original. `verdict` looks at the candidate's bytes and what is known of the original and says:

- Copy(offset): the candidate holds the original's bytes up to `offset`: read it from there.
- NotCopy(reason): a new file: read it from its start.
- Undecided(matched): still shorter than the original's offset and equal so far (`matched` bytes of it
  are known equal to the original's): a copy being written, or one that ends before the offset because
  the original was read on after the copy was made.

`stalled` decides an undecided candidate that stopped growing, or whose original was truncated. Nothing
here changes state: the source set applies the verdicts (sources.py). See docs/design.md, "Copies".
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol

from .identity import Identity, digest

# How long the identity of a truncated file is remembered, so its copy (copytruncate) can take over the
# offset when the copy is found only after the truncation.
COPY_MEMORY_SECONDS = 120.0
# A held file whose bytes cannot decide is a new file after this long without growing (or
# sources.rotate_wait_seconds if shorter).
COPY_STALL_SECONDS = 2.0
# Bytes compared per step while checking that a candidate is a prefix of its original.
COMPARE_CHUNK = 1 << 16


class View(Protocol):
    """Read access to a file: its size at one look and its bytes."""

    @property
    def size(self) -> int: ...

    def pread(self, n: int, offset: int) -> bytes: ...


@dataclass(frozen=True)
class FdView:
    fd: int
    size: int

    def pread(self, n: int, offset: int) -> bytes:
        return os.pread(self.fd, n, offset)


@dataclass(frozen=True)
class Origin:
    """What is known of a possible original: its identity at its read offset, its first bytes when
    known, and its bytes while it is still intact (None once it was truncated, or after a restart)."""

    ident: Identity
    head: bytes | None
    bytes: View | None


@dataclass(frozen=True)
class Copy:
    offset: int


@dataclass(frozen=True)
class NotCopy:
    reason: str


@dataclass(frozen=True)
class Undecided:
    matched: int


Verdict = Copy | NotCopy | Undecided


def heads_agree(head: bytes, o: Origin) -> bool:
    """First test, cheap: the candidate's first bytes agree with the original's (as far as both go)."""
    if o.head is not None:
        k = min(len(o.head), len(head))
        return o.head[:k] == head[:k]
    return o.ident.head_matches(head) is not False


def verdict(cand: View, head: bytes, o: Origin, matched: int = 0) -> Verdict:
    """Is `cand` (first bytes `head`, of which `matched` are already known equal to the original's) a
    copy of `o`? Reads bytes; changes nothing."""
    ident = o.ident
    if not heads_agree(head, o):
        return NotCopy("first bytes differ")
    size = cand.size
    if size >= ident.offset:
        if ident.head_matches(head) is False:
            return NotCopy("first bytes differ")
        off = ident.offset
        if ident.tail_len and digest(cand.pread(ident.tail_len, off - ident.tail_len)) != ident.tail:
            return NotCopy("bytes before the original's offset differ")
        if off and cand.pread(1, off - 1) != b"\n":
            return NotCopy("the original's offset is not a line start in it")
        return Copy(off)
    # Shorter than what was read of the original: compare what it has, while the original is intact.
    if o.bytes is None:
        return Undecided(min(len(head), size) if o.head is not None else matched)
    pos = matched
    while pos < size:
        n = min(COMPARE_CHUNK, size - pos)
        mine, theirs = cand.pread(n, pos), o.bytes.pread(n, pos)
        if len(mine) != n or len(theirs) != n:
            return Undecided(pos)  # one of them changed under us: look again next time
        if mine != theirs:
            return NotCopy(f"differs from the original at byte {pos + _first_difference(mine, theirs)}")
        pos += n
    return Undecided(size)


def stalled(cand: View, head: bytes, o: Origin, original_truncated: bool) -> Verdict:
    """An undecided candidate that stopped growing, or whose original was truncated.

    Only a truncated original makes a shorter candidate a copy: the copytruncate signature is a copy
    ending before the offset read from the original (the original was read on after the copy was made),
    then the truncation. Every byte of such a copy was read from the original, so it is a copy taken
    over at its last line end: nothing of it is read again. A shorter file next to an original that is
    never truncated is a new file that merely starts like it (identical headers), read from its start.
    """
    if not original_truncated:
        return NotCopy("stopped short of the original's offset")
    if not heads_agree(head, o):
        return NotCopy("first bytes differ")
    if o.head is None and o.ident.head_matches(head) is not True:
        # Known only by its committed fingerprint (truncated before a restart): the fingerprint must
        # cover the candidate's first bytes.
        return NotCopy("first bytes cannot be matched")
    return Copy(_line_end(cand, cand.size))


def _line_end(v: View, size: int) -> int:
    """Offset just past the last newline before `size`."""
    pos = size
    while pos > 0:
        start = max(0, pos - COMPARE_CHUNK)
        nl = v.pread(pos - start, start).rfind(b"\n")
        if nl >= 0:
            return start + nl + 1
        pos = start
    return 0


def _first_difference(a: bytes, b: bytes) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
