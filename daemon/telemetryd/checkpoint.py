"""Checkpoints: file offsets and pattern counts committed together, durably, at a cost flat in patterns.

On disk (state dir), generation g is a pair:
  snapshot.<g>  the whole state at the start of generation g (absent for g = 0: the empty state)
  journal.<g>   records appended after it; each record holds the *absolute* values of what changed
                (totals, file offsets, pattern counts) since the record before, so replaying a
                prefix of the journal gives exactly the state committed at that record.
A record is framed as <u32 length><u32 crc32><msgpack payload>; a checkpoint is one append + fdatasync,
so its cost depends on what changed, not on how many patterns are held. When journal.<g> grows past
`compact_bytes`, the writer starts journal.<g+1> and a compaction folds snapshot.<g> + journal.<g> into
snapshot.<g+1> (temp file, fsync, rename, fsync of the directory). Generation g-1 is kept as the fallback
for a snapshot that later turns out unreadable.
See docs/design.md for the recovery rules.
"""

from __future__ import annotations

import contextlib
import operator
import os
import queue
import re
import stat
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import msgspec

from .records import (
    Delta,
    FileEntry,
    FileIdent,
    JournalHeader,
    PatternState,
    Settings,
    Snapshot,
    Totals,
    TruncatedEntry,
)

# The record types live in records.py; re-exported for the CLI, reports and tests.
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

SCHEMA = 1
SNAP_MAGIC = b"TLMDSNP1"
JOURNAL_MAGIC = b"TLMDJRN1"
_FRAME = struct.Struct("<II")
# A record larger than this cannot have been written by us: treat the length as corrupt.
MAX_RECORD = 1 << 31

_encoder = msgspec.msgpack.Encoder()
_snap_decoder = msgspec.msgpack.Decoder(Snapshot)
_record_decoder = msgspec.msgpack.Decoder(JournalHeader | Delta)


# Checkpoints hold paths and message examples: readable by the daemon's user only. The state dir is
# 0700 (Daemon.run); each file is created 0600, and files moved aside (.corrupt) are made so too.
FILE_MODE = 0o600
DIR_MODE = 0o700


class CorruptCheckpoint(Exception):
    pass


class CheckpointUnreadable(Exception):
    """A state file that cannot be read at all (a directory where a journal should be, permissions):
    not corruption to repair, an operator's problem to report. The message names the path."""

    def __init__(self, path: str, why: str) -> None:
        super().__init__(f"cannot read checkpoint file {path}: {why}")
        self.path = path


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise CheckpointUnreadable(path, e.strerror or str(e)) from None


def secure_state_dir(state_dir: str) -> None:
    """Make the state dir 0700 and every file in it 0600-class (group and others get nothing)."""
    st = os.stat(state_dir)
    if st.st_mode & 0o077:
        os.chmod(state_dir, DIR_MODE)
    with os.scandir(state_dir) as it:
        names = [e.path for e in it if e.is_file(follow_symlinks=False)]
    for path in names:
        # Through a descriptor opened without following links, and never a file with another name
        # elsewhere: a hard link planted in the state dir must not let the daemon change another file.
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode) and st.st_nlink == 1 and st.st_mode & 0o077:
                os.fchmod(fd, st.st_mode & 0o700)
        finally:
            os.close(fd)


def frame(payload: bytes) -> bytes:
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def snapshot_name(g: int) -> str:
    return f"snapshot.{g:08d}"


def journal_name(g: int) -> str:
    return f"journal.{g:08d}"


_GEN_RE = re.compile(r"^(snapshot|journal)\.(\d{8})$")


def list_generations(state_dir: str) -> tuple[list[int], list[int]]:
    snaps: list[int] = []
    journals: list[int] = []
    try:
        names = os.listdir(state_dir)
    except OSError as e:
        raise CheckpointUnreadable(state_dir, e.strerror or str(e)) from None
    for name in names:
        m = _GEN_RE.match(name)
        if m:
            (snaps if m.group(1) == "snapshot" else journals).append(int(m.group(2)))
    return sorted(snaps), sorted(journals)


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- reading -------------------------------------------------------------------------------------


def read_snapshot(path: str) -> Snapshot:
    data = _read_bytes(path)
    if not data.startswith(SNAP_MAGIC):
        raise CorruptCheckpoint(f"{path}: bad magic")
    body = data[len(SNAP_MAGIC) :]
    if len(body) < _FRAME.size:
        raise CorruptCheckpoint(f"{path}: truncated header")
    n, crc = _FRAME.unpack_from(body)
    payload = body[_FRAME.size : _FRAME.size + n]
    if len(payload) != n or len(body) != _FRAME.size + n:
        raise CorruptCheckpoint(f"{path}: truncated or trailing bytes")
    if zlib.crc32(payload) != crc:
        raise CorruptCheckpoint(f"{path}: checksum mismatch")
    try:
        snap = _snap_decoder.decode(payload)
    except msgspec.DecodeError as e:
        raise CorruptCheckpoint(f"{path}: undecodable: {e}") from None
    if snap.schema != SCHEMA:
        raise CorruptCheckpoint(f"{path}: unknown schema version {snap.schema}")
    return snap


@dataclass
class JournalScan:
    header: JournalHeader | None
    deltas: list[Delta]
    good_size: int  # bytes up to the end of the last good record
    size: int
    problem: Literal["", "torn", "corrupt"] = ""
    detail: str = ""


def scan_journal(path: str) -> JournalScan:
    """Read records until the first bad one. A record cut short at the end is `torn` (a crash during
    an append); anything else unreadable is `corrupt`. A file that cannot be read at all raises
    CheckpointUnreadable."""
    data = _read_bytes(path)
    size = len(data)
    if len(data) < len(JOURNAL_MAGIC):
        return JournalScan(
            None, [], 0, size, "torn" if JOURNAL_MAGIC.startswith(data) else "corrupt", "short file"
        )
    if not data.startswith(JOURNAL_MAGIC):
        return JournalScan(None, [], 0, size, "corrupt", "bad magic")
    pos = len(JOURNAL_MAGIC)
    header: JournalHeader | None = None
    deltas: list[Delta] = []
    while pos < size:
        if size - pos < _FRAME.size:
            return JournalScan(header, deltas, pos, size, "torn", f"partial frame at byte {pos}")
        n, crc = _FRAME.unpack_from(data, pos)
        if n > MAX_RECORD:
            return JournalScan(header, deltas, pos, size, "corrupt", f"absurd length at byte {pos}")
        end = pos + _FRAME.size + n
        if end > size:
            return JournalScan(header, deltas, pos, size, "torn", f"record at byte {pos} cut short")
        payload = data[pos + _FRAME.size : end]
        if zlib.crc32(payload) != crc:
            return JournalScan(header, deltas, pos, size, "corrupt", f"checksum mismatch at byte {pos}")
        try:
            rec = _record_decoder.decode(payload)
        except msgspec.DecodeError as e:
            return JournalScan(header, deltas, pos, size, "corrupt", f"undecodable record at byte {pos}: {e}")
        if isinstance(rec, JournalHeader):
            if header is not None or deltas:
                return JournalScan(header, deltas, pos, size, "corrupt", f"second header at byte {pos}")
            if rec.schema != SCHEMA:
                return JournalScan(None, [], 0, size, "corrupt", f"unknown schema version {rec.schema}")
            header = rec
        else:
            if header is None:
                return JournalScan(None, [], 0, size, "corrupt", "record before header")
            deltas.append(rec)
        pos = end
    if header is None:
        return JournalScan(None, [], pos, size, "torn", "no header")
    return JournalScan(header, deltas, pos, size)


# --- the state a checkpoint describes -------------------------------------------------------------


_IDENT = operator.attrgetter("dev", "ino")
_ID = operator.attrgetter("id")


@dataclass
class State:
    generation: int = 0
    seq: int = 0
    time: float = 0.0
    settings: Settings | None = None
    totals: Totals = field(default_factory=Totals)
    files: dict[FileIdent, FileEntry] = field(default_factory=dict)
    patterns: dict[str, PatternState] = field(default_factory=dict)
    truncated: list[TruncatedEntry] = field(default_factory=list)
    outside: list[FileIdent] | None = None

    @classmethod
    def from_snapshot(cls, s: Snapshot) -> State:
        return cls(
            s.generation,
            s.seq,
            s.time,
            s.settings,
            s.totals,
            dict(zip(map(_IDENT, s.files), s.files, strict=True)),
            dict(zip(map(_ID, s.patterns), s.patterns, strict=True)),
            list(s.truncated),
            s.outside,
        )

    def apply(self, d: Delta) -> None:
        self.seq = d.seq
        self.time = d.time
        self.totals = d.totals
        for ident in d.dropped:
            self.files.pop(tuple(ident), None)  # type: ignore[arg-type]
        # In C: recovery replays every record, and one record can hold every pattern.
        self.files.update(zip(map(_IDENT, d.files), d.files, strict=True))
        self.patterns.update(zip(map(_ID, d.patterns), d.patterns, strict=True))
        if d.truncated is not None:
            self.truncated = d.truncated
        if d.outside is not None:
            self.outside = d.outside

    def to_snapshot(self, generation: int) -> Snapshot:
        assert self.settings is not None
        return Snapshot(
            SCHEMA,
            generation,
            self.seq,
            self.time,
            self.settings,
            self.totals,
            list(self.files.values()),
            list(self.patterns.values()),
            self.truncated,
            self.outside,
        )


Outcome = Literal["fresh", "clean", "fallback", "quarantined"]


@dataclass
class Recovery:
    state: State
    outcome: Outcome
    # The journal to continue appending to, and its size up to the last good record.
    journal_gen: int
    journal_good_size: int | None  # None: the journal does not exist yet
    notes: list[str] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)
    # Generations whose snapshot is missing though its journal predecessor is complete: compact them.
    needs_compaction: bool = False


def _quarantine(state_dir: str, name: str, rec: Recovery, why: str) -> None:
    src = os.path.join(state_dir, name)
    dst = f"{src}.{int(time.time())}.corrupt"
    os.replace(src, dst)
    with contextlib.suppress(OSError):
        os.chmod(dst, FILE_MODE)
    rec.quarantined.append(os.path.basename(dst))
    rec.notes.append(f"{name}: {why}; moved aside to {os.path.basename(dst)}")


def _save_bad_tail(state_dir: str, name: str, good: int, rec: Recovery, why: str) -> None:
    """Keep the unreadable bytes for a post-mortem, then cut the journal back to its last good record."""
    path = os.path.join(state_dir, name)
    with open(path, "rb") as f:
        f.seek(good)
        bad = f.read()
    dst = write_file_durably(state_dir, f"{name}.{int(time.time())}.corrupt", bad)
    with open(path, "r+b") as f:
        f.truncate(good)
        os.fsync(f.fileno())
    rec.quarantined.append(os.path.basename(dst))
    rec.notes.append(
        f"{name}: {why}; {len(bad)} bytes after byte {good} moved aside to {os.path.basename(dst)}"
    )


def recover(state_dir: str, *, repair: bool = True) -> Recovery:
    """Rebuild the last committed state. With repair=False nothing on disk is changed (status, verify)."""
    snaps, journals = list_generations(state_dir)
    if not snaps and not journals:
        return Recovery(State(), "fresh", 0, None, ["no checkpoint in state dir"])
    rec = Recovery(State(), "clean", 0, None)
    base: Snapshot | None = None
    for g in reversed(snaps):
        try:
            base = read_snapshot(os.path.join(state_dir, snapshot_name(g)))
            if base.generation != g:
                raise CorruptCheckpoint(f"generation {base.generation} in file of generation {g}")
            break
        except CorruptCheckpoint as e:
            rec.outcome = "quarantined"
            if repair:
                _quarantine(state_dir, snapshot_name(g), rec, str(e))
            else:
                rec.notes.append(f"{snapshot_name(g)}: {e}")
    if base is None:
        if 0 not in journals:
            # Nothing to rebuild from: say so loudly, move what is left aside and start from zero with
            # offsets at zero, which still counts every line exactly once.
            rec.outcome = "quarantined"
            rec.notes.append(
                "no readable snapshot and no journal from the beginning: starting from empty state"
            )
            if repair:
                for g in journals:
                    _quarantine(state_dir, journal_name(g), rec, "no snapshot to apply it to")
            return rec
        state = State()
        base_gen = 0
    else:
        state = State.from_snapshot(base)
        base_gen = base.generation
    rec.journal_gen = base_gen
    later = [g for g in journals if g >= base_gen]
    expected = base_gen
    for g in later:
        if g != expected:
            # A gap in the chain: later generations were written on top of records we do not have.
            rec.outcome = "quarantined"
            rec.notes.append(f"journal generation {expected} missing; ignoring generations from {g}")
            _drop_generations_from(state_dir, g, journals, snaps, rec, repair)
            break
        name = journal_name(g)
        scan = scan_journal(os.path.join(state_dir, name))
        if scan.header is not None:
            if state.settings is None:
                state.settings = scan.header.settings
            for d in scan.deltas:
                state.apply(d)
        rec.journal_gen = g
        rec.journal_good_size = scan.good_size if scan.header is not None else None
        if scan.problem:
            if rec.outcome == "clean":
                rec.outcome = "fallback" if scan.problem == "torn" else "quarantined"
            elif scan.problem == "corrupt":
                rec.outcome = "quarantined"
            if repair:
                if scan.header is None:
                    _quarantine(state_dir, name, rec, scan.detail)
                else:
                    _save_bad_tail(state_dir, name, scan.good_size, rec, f"{scan.problem}: {scan.detail}")
            else:
                rec.notes.append(f"{name}: {scan.problem}: {scan.detail}")
            # Later generations were written on top of records we no longer have.
            _drop_generations_from(state_dir, g + 1, journals, snaps, rec, repair)
            break
        expected = g + 1
    state.generation = rec.journal_gen
    rec.state = state
    # A snapshot of the generation we continue in is missing: the last compaction did not finish.
    rec.needs_compaction = rec.journal_gen > base_gen
    return rec


def _drop_generations_from(
    state_dir: str, first: int, journals: list[int], snaps: list[int], rec: Recovery, repair: bool
) -> None:
    for g in journals:
        if g >= first and repair:
            _quarantine(state_dir, journal_name(g), rec, "follows an unreadable record")
    for g in snaps:
        if g >= first and repair and os.path.exists(os.path.join(state_dir, snapshot_name(g))):
            _quarantine(state_dir, snapshot_name(g), rec, "follows an unreadable record")


# --- writing ---------------------------------------------------------------------------------------


def write_snapshot(state_dir: str, snap: Snapshot) -> int:
    """Atomically (write_file_durably). Returns bytes written."""
    data = SNAP_MAGIC + frame(_encoder.encode(snap))
    write_file_durably(state_dir, snapshot_name(snap.generation), data)
    return len(data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def write_file_durably(state_dir: str, name: str, data: bytes) -> str:
    """A file in the state dir, there whole or not at all: a temp file of the state dir's mode (named
    per process and thread: the compactor writes snapshots beside the main thread), fsync, rename,
    fsync of the directory. Returns its path."""
    path = os.path.join(state_dir, name)
    tmp = f"{path}.tmp.{os.getpid()}.{threading.get_ident()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(state_dir)
    return path


def remove_stray_temp_files(state_dir: str) -> None:
    for name in os.listdir(state_dir):
        if ".tmp." in name:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(state_dir, name))


def compact_missing(state_dir: str, upto: int) -> int:
    """Write every missing snapshot up to generation `upto`, oldest first. Returns bytes written."""
    snaps, _ = list_generations(state_dir)
    have = [g for g in snaps if g <= upto]
    start = (max(have) + 1) if have else 1
    total = 0
    for g in range(start, upto + 1):
        total += compact(state_dir, g)
    if upto >= 1:
        prune(state_dir, upto - 1)
    return total


def compact(state_dir: str, generation: int) -> int:
    """Fold snapshot.<generation-1> + journal.<generation-1> into snapshot.<generation>.

    Works from the files alone (never from the live in-memory state), so it can run beside ingestion
    and be redone after a crash with the same result."""
    prev = generation - 1
    snap_path = os.path.join(state_dir, snapshot_name(prev))
    if prev == 0 and not os.path.exists(snap_path):
        state = State()
    else:
        state = State.from_snapshot(read_snapshot(snap_path))
    scan = scan_journal(os.path.join(state_dir, journal_name(prev)))
    if scan.header is None or scan.problem:
        raise CorruptCheckpoint(f"{journal_name(prev)}: {scan.problem or 'empty'} {scan.detail}")
    if state.settings is None:
        state.settings = scan.header.settings
    for d in scan.deltas:
        state.apply(d)
    return write_snapshot(state_dir, state.to_snapshot(generation))


def prune(state_dir: str, keep_from: int) -> None:
    """Remove generations older than keep_from (one full generation stays as fallback)."""
    snaps, journals = list_generations(state_dir)
    for g in snaps:
        if g < keep_from:
            os.unlink(os.path.join(state_dir, snapshot_name(g)))
    for g in journals:
        if g < keep_from:
            os.unlink(os.path.join(state_dir, journal_name(g)))


@dataclass
class WriteResult:
    kind: Literal["append", "rotate", "compact"]
    ok: bool
    seq: int = 0
    events_total: int = 0
    nbytes: int = 0
    duration: float = 0.0
    error: str = ""
    generation: int = 0


@dataclass
class _Append:
    payload: bytes
    seq: int
    events_total: int
    started: float


class JournalWriter:
    """Appends records to the active journal in a thread, so fsync overlaps with reading.

    At most one append is in flight; the main loop coalesces changes while it waits (group commit).
    A failed append is cut back off the journal, so a half-written record never precedes a good one.
    """

    def __init__(
        self,
        state_dir: str,
        generation: int,
        good_size: int | None,
        settings: Settings,
        on_result: Callable[[WriteResult], None],
    ) -> None:
        self.state_dir = state_dir
        self.settings = settings
        self.generation = generation
        self._on_result = on_result
        self._q: queue.Queue[_Append | tuple[str, int] | None] = queue.Queue()
        self._fd: int | None = None
        self._size = 0
        self._open(generation, good_size)
        self._thread = threading.Thread(target=self._run, name="checkpoint-writer", daemon=True)
        self._thread.start()

    def _open(self, generation: int, good_size: int | None) -> None:
        path = os.path.join(self.state_dir, journal_name(generation))
        if good_size is None:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
            header = frame(_encoder.encode(JournalHeader(SCHEMA, generation, time.time(), self.settings)))
            try:
                _write_all(fd, JOURNAL_MAGIC + header)
                os.fsync(fd)
            except BaseException:
                os.close(fd)
                raise
            fsync_dir(self.state_dir)
            size = len(JOURNAL_MAGIC) + len(header)
        else:
            fd = os.open(path, os.O_WRONLY)
            os.ftruncate(fd, good_size)
            size = good_size
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._size, self.generation = fd, size, generation

    @property
    def journal_bytes(self) -> int:
        return self._size

    def append(self, payload: bytes, seq: int, events_total: int, started: float) -> None:
        self._q.put(_Append(payload, seq, events_total, started))

    def rotate(self, generation: int) -> None:
        self._q.put(("rotate", generation))

    def close(self) -> None:
        self._q.put(None)
        self._thread.join()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            if isinstance(item, _Append):
                self._on_result(self._do_append(item))
            else:
                self._on_result(self._do_rotate(item[1]))

    def _do_append(self, a: _Append) -> WriteResult:
        assert self._fd is not None
        data = frame(a.payload)
        try:
            os.lseek(self._fd, self._size, os.SEEK_SET)
            _write_all(self._fd, data)
            os.fdatasync(self._fd)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
            return WriteResult(
                "append",
                False,
                a.seq,
                a.events_total,
                len(data),
                time.monotonic() - a.started,
                f"{e.strerror or e}",
            )
        self._size += len(data)
        return WriteResult("append", True, a.seq, a.events_total, len(data), time.monotonic() - a.started)

    def _do_rotate(self, generation: int) -> WriteResult:
        try:
            self._open(generation, None)
        except OSError as e:
            return WriteResult("rotate", False, error=f"{e.strerror or e}", generation=generation)
        return WriteResult("rotate", True, generation=generation)


def start_compaction(
    state_dir: str, generation: int, on_result: Callable[[WriteResult], None]
) -> threading.Thread:
    """Fold the journals behind `generation` into snapshots in a thread of its own: appends never wait."""

    def run() -> None:
        started = time.monotonic()
        try:
            n = compact_missing(state_dir, generation)
        except (OSError, CorruptCheckpoint, CheckpointUnreadable) as e:
            on_result(
                WriteResult(
                    "compact", False, error=str(e), generation=generation, duration=time.monotonic() - started
                )
            )
            return
        on_result(
            WriteResult("compact", True, nbytes=n, generation=generation, duration=time.monotonic() - started)
        )

    t = threading.Thread(target=run, name="checkpoint-compactor", daemon=True)
    t.start()
    return t


def record_decoder() -> msgspec.msgpack.Decoder[JournalHeader | Delta]:
    return msgspec.msgpack.Decoder(JournalHeader | Delta)


def encode_delta(d: Delta) -> bytes:
    return _encoder.encode(d)


def iter_state_files(state_dir: str) -> Iterator[str]:
    snaps, journals = list_generations(state_dir)
    for g in sorted(set(snaps) | set(journals)):
        for name in (snapshot_name(g), journal_name(g)):
            if os.path.exists(os.path.join(state_dir, name)):
                yield name
