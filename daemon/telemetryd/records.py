"""Committed records: what a checkpoint holds, as msgspec structs. The bottom layer with identity.py.

The on-disk layout of each struct is fixed (array_like: fields by position); fields added later go at
the end with a default, so older records still decode. Imports only identity.py: the checkpoint module,
the pattern table, the source set and the commit owner all import these, never the other way round.
"""

from __future__ import annotations

import msgspec

from .identity import FileIdent, Identity

__all__ = [
    "Delta",
    "FileEntry",
    "FileIdent",
    "JournalHeader",
    "PatternState",
    "Settings",
    "Snapshot",
    "Totals",
    "TruncatedEntry",
]


class FileEntry(msgspec.Struct, array_like=True, frozen=True):
    """A tracked file: (dev, ino), its last name, and its Identity flattened (offset, fp..., tail...)."""

    dev: int
    ino: int
    path: str
    offset: int
    # Identity beyond (dev, ino): BLAKE2b of the first fp_len bytes, so a reused inode is told apart.
    fp: str
    fp_len: int
    # BLAKE2b of the tail_len bytes before `offset`: resuming is safe only if they are still there.
    tail: str
    tail_len: int

    @classmethod
    def of(cls, ident: FileIdent, path: str, i: Identity) -> FileEntry:
        return cls(ident[0], ident[1], path, i.offset, i.fp, i.fp_len, i.tail, i.tail_len)

    @property
    def identity(self) -> Identity:
        return Identity(self.offset, self.fp, self.fp_len, self.tail, self.tail_len)


class TruncatedEntry(msgspec.Struct, array_like=True, frozen=True):
    """What a file held before it was truncated, kept for a while: a copy of it (copytruncate) that is
    found later, even by the next process after a crash, takes over this offset instead of starting at
    0. The identity fields mean what they mean in FileEntry."""

    time: float  # wall clock of the truncation; the memory expires after copies.COPY_MEMORY_SECONDS
    fp: str
    fp_len: int
    tail: str
    tail_len: int
    offset: int
    # Added in issue 14 (absent in older records): where the file was, so its copy can be looked for in
    # that directory even when no glob matches the copy's name (logrotate's `app.jsonl.1`).
    path: str = ""

    @classmethod
    def of(cls, wall: float, i: Identity, path: str = "") -> TruncatedEntry:
        return cls(wall, i.fp, i.fp_len, i.tail, i.tail_len, i.offset, path)

    @property
    def identity(self) -> Identity:
        return Identity(self.offset, self.fp, self.fp_len, self.tail, self.tail_len)


class PatternState(msgspec.Struct, array_like=True, gc=False, eq=False):
    """One pattern and its exact count. eq=False: hashed by identity, so it can sit in the dirty set."""

    id: str
    key: tuple[str | None, ...]
    template: str | None
    count: int
    first_seen: float
    last_seen: float
    example: str
    # Fields below were added after schema 1; trailing defaults keep older records decodable.
    # Set on a pattern folded into a more general one (docs/design.md, "Generalised patterns and
    # monotone series"): its count is frozen from then on and the entry kept, so `patterns` can show
    # what a general pattern absorbed and its metric series stays where it was.
    absorbed_into: str | None = None
    # Events this pattern took over from the patterns it absorbed: count - absorbed were counted into it
    # directly.
    absorbed: int = 0
    # The direct count (count - absorbed) when the pattern was given its own metric series, -1 while it
    # has none. Committed with the count, so after a restart the series continues from the same base.
    export_base: int = -1


class Totals(msgspec.Struct, array_like=True):
    events: int = 0
    overflow: int = 0
    bytes_read: int = 0
    skipped: dict[str, int] = msgspec.field(default_factory=dict)


class Settings(msgspec.Struct):
    digest: str
    key_fields: list[str]
    template_field: str


class Snapshot(msgspec.Struct):
    schema: int
    generation: int
    seq: int
    time: float
    settings: Settings
    totals: Totals
    files: list[FileEntry]
    patterns: list[PatternState]
    # Added after schema 1 was released; absent in older snapshots, hence the default.
    truncated: list[TruncatedEntry] = msgspec.field(default_factory=list)
    # (dev, ino) of the regular files in the globs' directories that no glob matches (rotated names):
    # a file there that is not in this list appeared while no daemon ran (issue 14). None: not known.
    outside: list[FileIdent] | None = None


class JournalHeader(msgspec.Struct, tag="h"):
    schema: int
    generation: int
    time: float
    settings: Settings


class Delta(msgspec.Struct, tag="d"):
    seq: int
    time: float
    totals: Totals
    files: list[FileEntry]
    dropped: list[FileIdent]
    patterns: list[PatternState]
    # The whole list when it changed since the previous record, else None (and absent in older records).
    truncated: list[TruncatedEntry] | None = None
    # The whole list when it changed, else None (see Snapshot.outside).
    outside: list[FileIdent] | None = None
