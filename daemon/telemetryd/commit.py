"""The commit owner: what changed since the last checkpoint record, and the record being written.

Everything that must be committed goes through here: the source set reports files whose position or
identity moved, files released, and the memory of truncated files to `Changes`; the pattern table marks
the entries it changed in its `dirty` set (counting, and generalisation moving counts between entries),
which the committer takes at each cut. `Committer.cut` turns both into one journal record of absolute
values; the daemon only decides *when* (its timers) and hands over the write results.

Observers (metrics) learn what became durable through `CommitObserver`: `recovered(state)` once at
start, then `durable(record)` for each record the writer made durable: the record as written (totals,
changed pattern entries, files), decoded from the bytes on disk, so an observer never sees a value that
is not committed. Observers only observe: they cannot change what is written.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from . import checkpoint as ck
from .identity import FileIdent
from .reader import TailedFile
from .records import Delta, PatternState, Totals, TruncatedEntry


class Changes:
    """Changes not yet in a record. Filled by the source set; emptied only by Committer.cut."""

    def __init__(self) -> None:
        self.files: set[TailedFile] = set()
        self.dropped: set[FileIdent] = set()
        # The whole memory of truncated files, when it changed.
        self.truncations: list[TruncatedEntry] | None = None
        # The whole list of files outside the globs, when it changed.
        self.outside: list[FileIdent] | None = None
        # A file appeared: commit it soon, so a crash right after cannot forget a file that may be
        # renamed out of the globs before the next process starts.
        self.urgent = False

    def __bool__(self) -> bool:
        return bool(self.files or self.dropped or self.truncations is not None or self.outside is not None)

    def file(self, t: TailedFile) -> None:
        """t's position or identity moved (or t is new)."""
        self.files.add(t)

    def new_file(self, t: TailedFile) -> None:
        self.files.add(t)
        self.urgent = True

    def dropped_file(self, t: TailedFile, committed: bool) -> None:
        """t is no longer tracked; `committed`: it may be in a record (a held file never is)."""
        self.files.discard(t)
        if committed:
            self.dropped.add(t.ident)

    def truncated(self, entries: list[TruncatedEntry]) -> None:
        self.truncations = entries

    def outside_files(self, idents: list[FileIdent]) -> None:
        self.outside = idents

    def take(self) -> Changes:
        """Everything reported so far, leaving this object empty (the source set keeps a reference)."""
        out = Changes()
        out.files, out.dropped, out.truncations = self.files, self.dropped, self.truncations
        out.outside = self.outside
        self.files, self.dropped, self.truncations, self.urgent = set(), set(), None, False
        self.outside = None
        return out


class PatternTable(Protocol):
    """What the committer needs of the pattern table (patterns.PatternCounter)."""

    events_total: int
    overflow_count: int
    skipped: dict[str, int]
    dirty: set[PatternState]


class CommitObserver(Protocol):
    def recovered(self, state: ck.State) -> None: ...

    def durable(self, record: Delta) -> None: ...


class RecordRider(Protocol):
    """Something that rides with each record: `at_cut` runs as the record is cut, before the changed
    pattern entries are taken, so a change it makes to them (a metric series granted: export_base) goes
    into that very record; what it returns is handed back to `at_durable` once the record is durable.
    The exported counters use it to publish exactly what a durable record committed."""

    def at_cut(self) -> object: ...

    def at_durable(self, captured: object) -> None: ...


@dataclass
class _Inflight:
    seq: int
    events_total: int
    files: list[tuple[TailedFile, int]]
    dropped: list[FileIdent]
    patterns: list[PatternState]
    truncations: list[TruncatedEntry] | None
    outside: list[FileIdent] | None
    payload: bytes
    ridden: list[object]


@dataclass
class Committed:
    """What the daemon reports about a finished append."""

    ok: bool
    seq: int
    lag_events: int


@dataclass
class Committer:
    writer: ck.JournalWriter
    table: PatternTable
    seq: int
    bytes_read: int = 0
    changes: Changes = field(default_factory=Changes)
    observers: list[CommitObserver] = field(default_factory=list)
    riders: list[RecordRider] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.durable_events = self.events_at_cut = self.table.events_total
        self.last_cut = time.monotonic()
        self._inflight: _Inflight | None = None
        self._decode = ck.record_decoder()

    def subscribe(self, observer: CommitObserver, recovered: ck.State) -> None:
        observer.recovered(recovered)
        self.observers.append(observer)

    @property
    def in_flight(self) -> bool:
        return self._inflight is not None

    def dirty(self) -> bool:
        return bool(self.table.dirty or self.changes)

    def due(self, every_events: int, every_seconds: float, now: float) -> bool:
        if not self.dirty():
            return False
        return (
            self.changes.urgent
            or self.table.events_total - self.events_at_cut >= every_events
            or now - self.last_cut >= every_seconds
        )

    def cut(self) -> bool:
        """Hand the writer one record of everything changed since the last one. While a record is still
        being written, changes keep accumulating and go out together in the next (group commit)."""
        if self._inflight is not None:
            return False
        started = time.monotonic()
        self.seq += 1
        ridden = [r.at_cut() for r in self.riders]
        ch, t = self.changes.take(), self.table
        files = list(ch.files)
        entries = [f.entry() for f in files]
        pats = list(t.dirty)
        delta = Delta(
            self.seq,
            time.time(),
            Totals(t.events_total, t.overflow_count, self.bytes_read, dict(t.skipped)),
            entries,
            list(ch.dropped),
            pats,
            ch.truncations,
            ch.outside,
        )
        payload = ck.encode_delta(delta)
        self._inflight = _Inflight(
            self.seq,
            t.events_total,
            [(f, e.offset) for f, e in zip(files, entries, strict=True)],
            delta.dropped,
            pats,
            ch.truncations,
            ch.outside,
            payload,
            ridden,
        )
        t.dirty = set()
        self.events_at_cut = t.events_total
        self.last_cut = started
        self.writer.append(payload, self.seq, t.events_total, started)
        return True

    def finished(self, r: ck.WriteResult, live: Mapping[FileIdent, TailedFile]) -> Committed:
        """The writer's result for the record in flight. Durable: observers hear of it. Failed: all it
        held goes into the next record (values are absolute, so nothing is lost by writing them later)."""
        inf = self._inflight
        self._inflight = None
        assert inf is not None and inf.seq == r.seq
        if r.ok:
            self.durable_events = r.events_total
            for f, off in inf.files:
                f.committed = off
            for rider, captured in zip(self.riders, inf.ridden, strict=True):
                rider.at_durable(captured)
            if self.observers:
                rec = self._decode.decode(inf.payload)
                assert isinstance(rec, Delta)
                for o in self.observers:
                    o.durable(rec)
            return Committed(True, r.seq, self.table.events_total - self.durable_events)
        ch = self.changes
        ch.files.update(f for f, _ in inf.files if live.get(f.ident) is f)
        ch.dropped.update(i for i in inf.dropped if i not in live)
        self.table.dirty.update(inf.patterns)
        if inf.truncations is not None and ch.truncations is None:
            ch.truncations = inf.truncations
        if inf.outside is not None and ch.outside is None:
            ch.outside = inf.outside
        return Committed(False, r.seq, self.table.events_total - self.durable_events)
