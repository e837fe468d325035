"""Sources: identity and lifecycle of the tracked files. A file is known by identity, never by name.

A tracked file moves through: discovered (or held while its bytes decide whether it is a copy) ->
reading -> (rotated | deleted: its path no longer leads to it, but its descriptor is read to the end)
-> released (closed, dropped from the checkpoint after `rotate_wait_seconds` without growth). A change
notice for a path is checked against the identity behind it at once, so a rotation is seen within the
latency of a notice, whatever the rescan interval. See docs/design.md, "File identity and lifecycle".

Helpers, each readable alone: discovery.py (globs -> paths), openfiles.py (descriptor cache), copies.py
(copy verdicts as pure functions), reader.py (one file's reading), commit.py (Changes: what is reported
here for the next checkpoint record).
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from . import copies
from .commit import Changes
from .config import SourcesConfig
from .discovery import DirMarks, Globs
from .discovery import watch_roots as watch_roots
from .identity import FP_MAX, FileIdent, Identity, at, holds, last_line_end
from .openfiles import OpenFiles
from .reader import TailedFile
from .records import FileEntry, TruncatedEntry

Log = Any  # a structlog BoundLogger; typed loosely because structlog's proxies are dynamic

# Tracked files indexed by their first HEAD_KEY bytes, to find copy candidates without a quadratic search.
HEAD_KEY = 32


@dataclass
class Truncated:
    """What a file held before it was truncated: a copy of it may carry these bytes on."""

    at: float  # monotonic time of the truncation
    head: bytes | None  # None when only the fingerprint is known (truncated before a restart)
    ident: Identity
    wall: float  # time.time() of the truncation: what a checkpoint keeps, to expire it after a restart
    path: str = ""
    # Its directory was searched for a copy the globs do not match (once per process).
    searched: bool = False

    def entry(self) -> TruncatedEntry:
        return TruncatedEntry.of(self.wall, self.ident, self.path)


@dataclass
class _Candidate:
    origin: TailedFile | Truncated
    matched: int = 0  # bytes of the held file known equal to the original's


@dataclass
class _Hold:
    """A file not read yet: a possible copy (cands), or a copy following its intact original."""

    cands: list[_Candidate]
    grew_at: float
    size: int
    follows: TailedFile | None = None
    seen: set[int] = field(default_factory=set)  # id() of the truncation memories already considered


class SourceSet:
    def __init__(self, cfg: SourcesConfig, log: Log, changes: Changes | None = None) -> None:
        self.cfg = cfg
        self.log = log
        self.changes = changes if changes is not None else Changes()
        self.globs = Globs(cfg.paths, cfg.exclude)
        self.files: dict[FileIdent, TailedFile] = {}
        self.by_path: dict[str, TailedFile] = {}
        self.rotations: dict[str, int] = {"rename": 0, "truncate": 0, "delete": 0}
        # Truncations or rewrites of a file read past 0: lines written after the last read and before the
        # truncation may exist in no file the globs reach (docs/design.md, "Delivery guarantee").
        self.loss_windows = 0
        self.errors: dict[str, int] = {}
        self._error_logged: set[tuple[str, str]] = set()
        self.open = OpenFiles(cfg.max_open_files)
        self._truncated: list[Truncated] = []
        self._holds: dict[TailedFile, _Hold] = {}
        # Tracked files that could be copied, by their first HEAD_KEY bytes (shorter heads under b""):
        # built once per batch of new files, so 10,000 new files cost no quadratic search.
        self._heads: dict[bytes, list[TailedFile]] | None = None
        # Files whose path is gone (rotated away, deleted): the daemon polls these, and an idle loop must
        # not walk 10,000 files to find them.
        self.gone: list[TailedFile] = []
        self._dir_marks: DirMarks | None = None
        # Whether the last full scan found nothing awaiting a decision. A decision taken after it (a copy
        # taking over its original's offset, a hold released) can leave a file with unread lines and no
        # notification to come: one more full scan queues it.
        self._settled = False
        # Files a decision made readable (a copy taking over, a hold released): read them at once.
        self._ready: list[TailedFile] = []
        # (dev, ino) of the files in the globs' directories that no glob matches, as last committed; None
        # when not known (a fresh start, globs with wildcard directories).
        self._outside: set[FileIdent] | None = None
        # Loaded from a checkpoint: the first scan looks for files that appeared while no daemon ran.
        self._look_for_unseen = False

    @property
    def open_count(self) -> int:
        return len(self.open)

    # --- bookkeeping --------------------------------------------------------------------------------

    def load(
        self,
        entries: Iterable[FileEntry],
        truncated: Iterable[TruncatedEntry] = (),
        outside: Iterable[FileIdent] | None = None,
    ) -> None:
        if outside is not None:
            self._outside = {(d, i) for d, i in outside}
            self._look_for_unseen = True
        for e in entries:
            self.files[(e.dev, e.ino)] = TailedFile.from_entry(e)
        mono, wall = time.monotonic(), time.time()
        for r in truncated:
            age = max(0.0, wall - r.time)
            if age < copies.COPY_MEMORY_SECONDS:
                self._truncated.append(Truncated(mono - age, None, r.identity, r.time, r.path))

    def truncated_entries(self) -> list[TruncatedEntry]:
        return [r.entry() for r in self._truncated]

    def configure(self, cfg: SourcesConfig) -> None:
        self.cfg = cfg
        self.globs = Globs(cfg.paths, cfg.exclude)
        self.open.limit = cfg.max_open_files

    def _error(self, path: str, reason: str, detail: str = "") -> None:
        # Counted and logged once per path and reason until the path works again: a file that stays
        # unreadable is retried on every rescan without flooding the log or the counter.
        if (path, reason) not in self._error_logged:
            self.errors[reason] = self.errors.get(reason, 0) + 1
            self._error_logged.add((path, reason))
            self.log.warning("source_error", path=path, reason=reason, detail=detail)

    def read_failed(self, t: TailedFile, e: OSError) -> None:
        self._error(t.path, "read_failed", e.strerror or str(e))
        self.close_file(t)

    def _clear_error(self, path: str) -> None:
        if self._error_logged:
            self._error_logged = {k for k in self._error_logged if k[0] != path}

    def _opened(self, t: TailedFile) -> None:
        self.open.used(t)
        self.open.evict(self._must_stay_open, keep=t)

    def _must_stay_open(self, t: TailedFile) -> bool:
        return t.gone_since is not None  # a rotated-away or deleted file may be unreachable once closed

    def take_ready(self) -> list[TailedFile]:
        out, self._ready = self._ready, []
        return out

    def waiting(self) -> list[TailedFile]:
        """Files no notice will bring: rotated away or deleted (drained), held (their decision is timed)."""
        return [*self.gone, *self._holds]

    def close_file(self, t: TailedFile) -> None:
        self.open.close(t)

    def close_idle(self) -> None:
        """Keep descriptors under max_open_files: close files still reachable by path, oldest first."""
        self.open.evict(self._must_stay_open)

    def close_all(self) -> None:
        for t in list(self.files.values()):
            self.close_file(t)

    def _drop(self, t: TailedFile) -> None:
        self.close_file(t)
        if self.files.get(t.ident) is t:
            del self.files[t.ident]
        if self.by_path.get(t.path) is t:
            del self.by_path[t.path]
        held = self._holds.pop(t, None) is not None
        # A held file was never checkpointed; anything else leaves the checkpoint.
        self.changes.dropped_file(t, committed=not held)
        for n, h in list(self._holds.items()):
            if h.follows is t:
                self._take_over(n, t.id, "original released")
            else:
                h.cands = [c for c in h.cands if c.origin is not t]

    def _remember_truncation(self, t: TailedFile) -> Truncated:
        r = Truncated(time.monotonic(), t.head or None, t.id, time.time(), t.path)
        self._truncated.append(r)
        # Committed with the reset offset in one record: a crash before the copy is found must not forget
        # what the file held.
        self.changes.truncated(self.truncated_entries())
        return r

    def _reset(self, t: TailedFile, why: str, kind: str = "truncate") -> None:
        """t no longer holds what was read (truncated, rewritten in place, inode reused): start at 0."""
        self.rotations[kind] += 1
        self.log.info("file_rewritten", path=t.path, reason=why, old_offset=t.offset)
        old = t.id
        # Also at offset 0 with a known head: its copy (outside the globs) holds lines never read.
        memory = self._remember_truncation(t) if old.fp_len else None
        if old.offset:
            self.loss_windows += 1
        t.reset()
        self.changes.file(t)
        if memory is not None:
            self._copy_outside_globs(memory, time.monotonic())
        # Files held against t are decided now, while what t held is still known.
        for n, h in list(self._holds.items()):
            if h.follows is t:
                self._take_over(n, old, "original truncated")
            elif memory is not None and any(c.origin is t for c in h.cands):
                for c in h.cands:
                    if c.origin is t:
                        c.origin = memory
                h.seen.add(id(memory))
                self._decide_truncated(n, h, memory)

    # --- discovery ----------------------------------------------------------------------------------

    def could_match(self, path: str) -> bool:
        return self.globs.could_match(path)

    def unchanged_since_scan(self) -> bool:
        """True if a rescan would find nothing new: no directory of a glob changed since the last full
        scan (creating, deleting or renaming an entry updates it) and no file awaits a decision.

        Only for use while change notifications work: writes to tracked files come from them, and a
        full scan still runs every so often in case one was missed.
        """
        if not self._settled or self._awaiting():
            return False
        return self.globs.dir_marks() == self._dir_marks

    def dirs_changed(self) -> bool:
        """An entry of a glob's directory was created, removed or renamed since the last full scan (one
        stat per directory). False when that cannot be told (wildcard directories): rescans cover them."""
        marks = self.globs.dir_marks()
        return marks is not None and marks != self._dir_marks

    def _awaiting(self) -> bool:
        return bool(self.gone or self._holds or self._error_logged)

    def scan(self, now: float) -> list[TailedFile]:
        """Re-expand the globs and reconcile with what is tracked. Returns the files worth reading now.

        Known identities are settled first (resumed, renamed, rotated away), new ones last: a new file
        may be a copy of a tracked or just-truncated one, which is only known once those are settled.
        """
        seen: set[FileIdent] = set()
        by_path: dict[str, TailedFile] = {}
        to_read: list[TailedFile] = []
        fresh: list[tuple[str, FileIdent]] = []
        # Taken before listing: a change made while the scan runs moves the mark, so it is seen next time.
        self._dir_marks = self.globs.dir_marks()
        for path in self.globs.expand():
            st = self._stat(path)
            if st is None:
                continue
            ident = (st.st_dev, st.st_ino)
            if ident in seen:
                continue  # a second name (hard link, symlink) of a file already in this scan
            seen.add(ident)
            t = self.files.get(ident)
            if t is None:
                fresh.append((path, ident))
                continue
            changed = True
            if t.unverified:
                t = self._resume(t, path)
                if t is None:
                    continue
            elif t.path != path:
                self._renamed(t, path)
            else:
                # Read only files whose size moved away from the offset: a rescan over 10,000 idle files
                # must not reopen each of them (notifications bring the changes).
                changed = st.st_size != t.offset or t in self._holds or t.gone_since is not None
            self._back(t)
            by_path[path] = t
            if changed:
                to_read.append(t)
        for t in list(self.files.values()):
            if t.ident in seen:
                continue
            if t.unverified:
                found = self._find_elsewhere(t)
                if found is None:
                    self.log.info("file_gone", path=t.path, offset=t.offset)
                    self._drop(t)
                    continue
                t = found
                to_read.append(t)
            if t.gone_since is None:
                self._went_away(t, now)
                to_read.append(t)
        for r in list(self._truncated):
            if not r.searched:  # loaded from the checkpoint: the copy may have been made while we were down
                self._copy_outside_globs(r, now)
        if self._truncated:
            kept = [r for r in self._truncated if now - r.at < copies.COPY_MEMORY_SECONDS]
            if len(kept) != len(self._truncated):
                self._truncated = kept
                self.changes.truncated(self.truncated_entries())
        self._heads = None
        self.by_path = by_path
        for path, ident in fresh:
            nt = self._discover(path, ident)
            if nt is not None:
                to_read.append(nt)
        to_read.extend(self._reconcile_outside(now))
        self.gone = [t for t in self.files.values() if t.gone_since is not None]
        self._settled = self._dir_marks is not None and not self._awaiting()
        return to_read

    def _reconcile_outside(self, now: float) -> list[TailedFile]:
        """Keep the committed list of files outside the globs up to date, and at the first scan after a
        restart read the ones that appeared while no daemon ran: a generation created and renamed out of
        the globs before this process could see it (rotation faster than a restart)."""
        dirs = self.globs.dirs()
        if dirs is None:
            return []
        cur: dict[FileIdent, str] = {}
        for d in dirs:
            try:
                with os.scandir(d) as it:
                    for e in it:
                        if e.is_file(follow_symlinks=False) and not self.globs.could_match(e.path):
                            st = e.stat(follow_symlinks=False)
                            cur[(st.st_dev, st.st_ino)] = e.path
            except OSError:
                continue
        found: list[TailedFile] = []
        if self._look_for_unseen and self._outside is not None:
            self._look_for_unseen = False
            # Only rotated names of the files we follow (`app.jsonl` -> `app.jsonl.1`, `app.jsonl-2024...`):
            # other files that appear beside them (our own logs, archives) are none of ours.
            names = {os.path.basename(t.path) for t in self.files.values()}
            for ident, path in cur.items():
                base = os.path.basename(path)
                rotated = any(base.startswith(n) and base != n for n in names)
                if rotated and ident not in self._outside and ident not in self.files:
                    t = self._adopt_unseen(path, ident, now)
                    if t is not None:
                        found.append(t)
        if self._outside is None or set(cur) != self._outside:
            self._outside = set(cur)
            self.changes.outside_files(sorted(cur))
        return found

    def _adopt_unseen(self, path: str, ident: FileIdent, now: float) -> TailedFile | None:
        fd = self._open_new(path, ident)
        if fd is None:
            return None
        head = os.pread(fd, FP_MAX, 0)
        # Only JSON lines from their first byte (a rotated generation starts at a line start), and not a
        # copy of a tracked or truncated file (copies are matched by the copy rules, never read from 0).
        known = [t.id for t in self.files.values()] + [r.ident for r in self._truncated]
        # (A head too short to tell, a copy still being written, counts as a match: it is looked at again
        # at its next change notice.)
        if not head.startswith(b"{") or any(i.fp_len and i.head_matches(head) is not False for i in known):
            os.close(fd)
            return None
        t = TailedFile(ident[0], ident[1], path)
        t.adopt_fd(fd)
        t.head = head
        t.id = t.id.with_head(head)
        self.files[ident] = t
        self._opened(t)
        t.gone_since = now  # no glob leads to it: read to its end, then released
        self.changes.new_file(t)
        self._ready.append(t)
        self.log.warning(
            "file_found_unseen", path=path, note="a rotated name never seen under a glob: read from 0"
        )
        return t

    def on_notice(self, paths: Iterable[str], now: float) -> list[TailedFile]:
        """Change notices: each path is checked against the identity behind it, at once. Paths not known
        yet first, so a file renamed from one matching name to another is followed, not lost."""
        known = [p for p in paths if p in self.by_path]
        new = [p for p in paths if p not in self.by_path and self.globs.could_match(p)]
        out: list[TailedFile] = []
        self._heads = None
        for p in new + known:
            out.extend(self._check_path(p, now))
        for p in paths:
            if p not in self.by_path and self._rotated_name(p):
                t = self._unseen_at(p, now)
                if t is not None:
                    out.append(t)
        return out

    def _rotated_name(self, path: str) -> bool:
        """`app.jsonl.1`, `app.jsonl-2024...` beside a followed `app.jsonl` (a name no glob matches)."""
        d, base = os.path.split(path)
        if self.globs.could_match(path):
            return False
        return any(os.path.join(d, base[:i]) in self.by_path for i in range(1, len(base)))

    def _unseen_at(self, path: str, now: float) -> TailedFile | None:
        """A new file under a rotated name while we run: a generation renamed away before we could see it
        at its glob name, or a copy of content we never read (copytruncate of a file we had not read
        yet). A copy of anything read is left to the copy rules (by fingerprint)."""
        if self._outside is None:
            return None  # which files were there before is not known (wildcard directories)
        try:
            st = os.stat(path)
        except OSError:
            return None
        ident = (st.st_dev, st.st_ino)
        if not stat.S_ISREG(st.st_mode) or ident in self.files or ident in self._outside or not st.st_size:
            return None
        return self._adopt_unseen(path, ident, now)

    def check_paths(self, now: float) -> list[TailedFile]:
        """Without notices (polling): the identity behind every known path, with one stat each. Returns
        the files worth reading: new ones, and known ones whose size moved away from the offset."""
        out: list[TailedFile] = []
        self._heads = None
        for p in list(self.by_path):
            out.extend(self._check_path(p, now, only_changed=True))
        return out

    def _check_path(self, path: str, now: float, only_changed: bool = False) -> list[TailedFile]:
        t = self.by_path.get(path)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            st = None
        except OSError:
            return [t] if t is not None else []
        if st is not None and not stat.S_ISREG(st.st_mode):
            st = None
        if t is not None and st is not None and (st.st_dev, st.st_ino) == t.ident:
            return [t] if not only_changed or st.st_size != t.offset or t in self._holds else []
        out: list[TailedFile] = []
        if t is not None:
            # The path leads elsewhere, or nowhere: t was renamed away or deleted; its descriptor is
            # read to its end.
            if t.gone_since is None:
                self._went_away(t, now)
            out.append(t)
        if st is None or self.globs.excluded(path):
            return out
        ident = (st.st_dev, st.st_ino)
        known = self.files.get(ident)
        if known is not None:
            if known.unverified:
                found = self._resume(known, path)
                if found is None:
                    return out
                known = found
            elif known.path != path:
                self._renamed(known, path)
            self._back(known)
            self.by_path[path] = known
            out.append(known)
            return out
        nt = self._discover(path, ident)
        if nt is not None:
            out.append(nt)
        return out

    def _stat(self, path: str) -> os.stat_result | None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            self._error(path, "dangling_symlink" if os.path.islink(path) else "vanished")
            return None
        except OSError as e:
            self._error(path, "stat_failed", e.strerror or str(e))
            return None
        if not stat.S_ISREG(st.st_mode):
            self._error(path, "not_regular_file")
            return None
        return st

    def _went_away(self, t: TailedFile, now: float) -> None:
        t.gone_since = now
        try:
            deleted = t.fd is not None and os.fstat(t.fd).st_nlink == 0
        except OSError:
            deleted = False
        kind = "delete" if deleted else "rename"
        self.rotations[kind] += 1
        self.log.info("file_rotated_away", path=t.path, kind=kind, offset=t.offset)
        if self.by_path.get(t.path) is t:
            del self.by_path[t.path]
        if t not in self.gone:
            self.gone.append(t)

    def _back(self, t: TailedFile) -> None:
        """t is reachable by a matching path again (renamed back into the globs)."""
        if t.gone_since is not None:
            t.gone_since = None
            self.gone = [g for g in self.gone if g is not t]

    def _renamed(self, t: TailedFile, path: str) -> None:
        if t.gone_since is None:
            self.rotations["rename"] += 1
        self.log.info("file_renamed", old_path=t.path, path=path)
        if self.by_path.get(t.path) is t:
            del self.by_path[t.path]
        t.path = path
        if t not in self._holds:
            self.changes.file(t)

    def _open_new(self, path: str, ident: FileIdent) -> int | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            self._error(path, "vanished")
            return None
        except OSError as e:
            reason = "permission_denied" if e.errno in (errno.EACCES, errno.EPERM) else "open_failed"
            self._error(path, reason, e.strerror or str(e))
            return None
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != ident:
            os.close(fd)  # replaced between stat and open: the next look sees the new one
            return None
        self._clear_error(path)
        return fd

    def _discover(self, path: str, ident: FileIdent) -> TailedFile | None:
        fd = self._open_new(path, ident)
        if fd is None:
            return None
        t = TailedFile(ident[0], ident[1], path)
        t.adopt_fd(fd)
        self.files[ident] = t
        self.by_path[path] = t
        self._opened(t)
        t.head = os.pread(fd, FP_MAX, 0)
        t.id = t.id.with_head(t.head)
        cands = self._copy_candidates(t)
        if cands:
            # Possibly a copy of a tracked file (copytruncate, or a copy that matches the globs): held
            # until its bytes decide, so no line is read twice.
            size = os.fstat(fd).st_size
            self._holds[t] = _Hold(
                [_Candidate(c) for c in cands],
                time.monotonic(),
                size,
                seen={id(c) for c in cands if isinstance(c, Truncated)},
            )
            self.log.info("file_held", path=path, reason="possible copy", candidates=len(cands))
            self._settle(t, size, time.monotonic())
            return t
        self._start_new(t)
        return t

    def _start_new(self, t: TailedFile) -> None:
        assert t.fd is not None
        self._holds.pop(t, None)
        if self.cfg.start_at == "end":
            t.set_position(at(t.fd, last_line_end(t.fd)), t.head)
        self.changes.new_file(t)
        self._ready.append(t)
        self.log.info("file_opened", path=t.path, offset=t.offset, dev=t.dev, ino=t.ino)

    # --- copies -------------------------------------------------------------------------------------

    def _copy_outside_globs(self, r: Truncated, now: float) -> None:
        """logrotate's copytruncate leaves the copy under a name no glob matches (`app.jsonl.1`). Lines
        written after our last read and before the copy are only there: find the copy by its bytes in the
        truncated file's directory and read it from the truncated offset to its end, like a file rotated
        away. A copy no longer than that offset holds nothing unread and is left alone."""
        r.searched = True
        if not r.path:
            return
        try:
            with os.scandir(os.path.dirname(r.path)) as it:
                entries = [e for e in it if e.is_file(follow_symlinks=False)]
        except OSError:
            return
        for e in entries:
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            ident = (st.st_dev, st.st_ino)
            if ident in self.files or st.st_size <= r.ident.offset or self.globs.could_match(e.path):
                continue
            try:
                fd = os.open(e.path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                same = (os.fstat(fd).st_dev, os.fstat(fd).st_ino) == ident and not holds(fd, r.ident)
            except OSError:
                same = False
            if not same:
                os.close(fd)
                continue
            t = TailedFile(ident[0], ident[1], e.path)
            t.adopt_fd(fd)
            t.head = os.pread(fd, FP_MAX, 0)
            t.set_position(at(fd, r.ident.offset), t.head)
            self.files[ident] = t
            self._opened(t)
            # Nothing leads to it by glob: read to its end, then released like a file rotated away.
            t.gone_since = now
            self.gone.append(t)
            self._truncated = [x for x in self._truncated if x is not r]
            self.changes.truncated(self.truncated_entries())
            self.changes.new_file(t)
            self._ready.append(t)
            self._settled = False
            self.log.info("file_copy_found", path=e.path, offset=t.offset, reason="copy outside the globs")
            return

    def _copy_candidates(self, n: TailedFile) -> list[TailedFile | Truncated]:
        """Tracked (or just truncated) files whose first bytes agree with n's and that were read past
        them: n may be a copy of one of them."""
        out: list[TailedFile | Truncated] = []
        if self._heads is None:
            self._heads = {}
            for t in self.files.values():
                if t.offset and t.head and t not in self._holds and not t.unverified:
                    key = t.head[:HEAD_KEY] if len(t.head) >= HEAD_KEY else b""
                    self._heads.setdefault(key, []).append(t)
        if len(n.head) >= HEAD_KEY:
            pool = self._heads.get(n.head[:HEAD_KEY], []) + self._heads.get(b"", [])
        else:
            pool = [t for ts in self._heads.values() for t in ts]
        for t in pool:
            if t is n or t in self._holds or t.unverified or t.offset <= len(n.head) or not t.head:
                continue
            if t.gone_since is not None:
                continue  # renamed away or deleted: a new file under its old name is not its copy
            if self.files.get(t.ident) is not t:
                continue
            if copies.heads_agree(n.head, copies.Origin(t.id, t.head, None)):
                out.append(t)
        for r in self._truncated:
            origin = copies.Origin(r.ident, r.head, None)
            # Any offset: a copy of a small file (shorter than the fingerprint) is all head.
            if r.ident.offset > 0 and copies.heads_agree(n.head, origin):
                out.append(r)
        return out

    def prepare(self, t: TailedFile, now: float) -> bool:
        """Before reading t this turn: open it, settle a hold, check for truncation, all from one fstat.
        False if t is not to be read now. OSError is the caller's to report (read_failed)."""
        if self.files.get(t.ident) is not t or not self.ensure_open(t):
            return False
        assert t.fd is not None
        size = os.fstat(t.fd).st_size
        if t in self._holds:
            if self._settle(t, size, now):
                t.size = size
                return False
            if self.files.get(t.ident) is not t or t.fd is None:
                return False
            size = os.fstat(t.fd).st_size
        why = t.check(size)
        if why:
            self._reset(t, why)
            # _reset may open t's copy outside the globs, and the descriptor cache may close t to make
            # room for it: reopen it (by identity) before reading on.
            if self.files.get(t.ident) is not t or not self.ensure_open(t):
                return False
            assert t.fd is not None
            # From 0 again: the fingerprint of what it holds now, before anything is read and committed
            # (an identity committed without one cannot tell its copies from new files).
            t.check(os.fstat(t.fd).st_size)
        return True

    def _intact(self, c: TailedFile) -> bool:
        """Whether a possible original still holds what was read of it. A truncation found here is
        handled at once (_reset), which decides the files held against it."""
        if self.files.get(c.ident) is not c or not self.ensure_open(c):
            return False
        assert c.fd is not None
        why = c.check(os.fstat(c.fd).st_size)
        if why:
            self._reset(c, why)
            return False
        return True

    def _settle(self, n: TailedFile, size: int, now: float) -> bool:
        """Apply the copy verdicts to a held file. True while it stays held."""
        h = self._holds[n]
        if h.follows is not None:
            orig = h.follows
            if self._intact(orig):
                return True
            if n in self._holds:  # released rather than truncated
                self._take_over(n, orig.id, "original gone")
            return False
        assert n.fd is not None
        if size != h.size:
            h.grew_at, h.size = now, size
        n.head = os.pread(n.fd, FP_MAX, 0)
        view = copies.FdView(n.fd, size)
        # Files truncated since n was found may be what n is a copy of.
        for r in self._truncated:
            if id(r) not in h.seen:
                h.seen.add(id(r))
                h.cands.append(_Candidate(r))
        still: list[_Candidate] = []
        for c in list(h.cands):
            o = c.origin
            if isinstance(o, TailedFile) and not self._intact(o):
                if n not in self._holds:
                    return False  # decided by the original's truncation
                if c not in h.cands or not isinstance(c.origin, Truncated):
                    continue  # released, or not a copy of what it held
                o = c.origin  # truncated just now: compared with what it held
            if isinstance(o, TailedFile):
                assert o.fd is not None
                origin = copies.Origin(o.id, o.head or None, copies.FdView(o.fd, o.offset))
            else:
                origin = copies.Origin(o.ident, o.head, None)
            v = copies.verdict(view, n.head, origin, c.matched)
            if isinstance(o, TailedFile) and not isinstance(v, copies.NotCopy) and not self._intact(o):
                # The original changed while it was compared: the comparison proves nothing.
                if n not in self._holds:
                    return False
                v = copies.Undecided(c.matched)
            if isinstance(v, copies.Copy):
                self.log.info("file_copy_found", path=n.path, offset=v.offset)
                if isinstance(o, TailedFile):
                    # The original is intact: it is read on, and the copy takes over its offset once it
                    # is truncated or released.
                    h.follows, h.cands = o, []
                    return True
                self._take_over(n, o.ident, "copy of a truncated file")
                return False
            if isinstance(v, copies.Undecided):
                c.matched = max(c.matched, v.matched)
                still.append(c)
        h.cands = still
        if still and now - h.grew_at < min(self.cfg.rotate_wait_seconds, copies.COPY_STALL_SECONDS):
            return True
        for c in still:
            if isinstance(c.origin, Truncated) and self._decide_truncated(n, h, c.origin, stalled=True):
                return False
        if still:
            self.log.info("file_copy_stalled", path=n.path, size=size)
        self._start_new(n)
        return False

    def _decide_truncated(self, n: TailedFile, h: _Hold, r: Truncated, stalled: bool = False) -> bool:
        """n is held against a file that was truncated. True if n was taken as its copy. Still shorter
        than the truncated offset, it stays held (a copy still being written reaches the offset and takes
        it over) until it stalls: then every byte of it was read from the original."""
        assert n.fd is not None
        view = copies.FdView(n.fd, os.fstat(n.fd).st_size)
        origin = copies.Origin(r.ident, r.head, None)
        matched = max((c.matched for c in h.cands if c.origin is r), default=0)
        v = copies.verdict(view, n.head, origin, matched)
        if isinstance(v, copies.Undecided):
            if not stalled:
                return False
            v = copies.stalled(view, n.head, origin, original_truncated=True)
        if isinstance(v, copies.Copy):
            self.log.info("file_copy_found", path=n.path, offset=v.offset)
            self._take_over(n, r.ident, "copy of a truncated file", cap=v.offset)
            return True
        h.cands = [c for c in h.cands if c.origin is not r]
        return False

    def _take_over(self, n: TailedFile, orig: Identity, why: str, cap: int | None = None) -> None:
        """A copy takes over from its original: read on from where the original was read to (or from its
        own last line end when it is shorter: every byte of it was read from the original)."""
        self._holds.pop(n, None)
        if self.files.get(n.ident) is not n:
            return
        if n.fd is None and not self.ensure_open(n):
            return
        assert n.fd is not None
        size = os.fstat(n.fd).st_size
        offset = orig.offset if cap is None else min(cap, orig.offset)
        if offset > size or (offset and os.pread(n.fd, 1, offset - 1) != b"\n"):
            # Lines the original got after the copy was made were read from the original.
            offset = last_line_end(n.fd, min(offset, size))
        n.set_position(at(n.fd, offset), os.pread(n.fd, FP_MAX, 0))
        self.changes.new_file(n)
        self._ready.append(n)
        self._settled = False
        self.log.info("file_copy_takes_over", path=n.path, offset=n.offset, reason=why)

    # --- known files met again ------------------------------------------------------------------------

    def _resume(self, t: TailedFile, path: str) -> TailedFile | None:
        """A checkpointed file met again: resume at its offset only if it still holds what was read."""
        fd = self._open_new(path, t.ident)
        if fd is None:
            return None
        t.adopt_fd(fd)
        self._opened(t)
        t.unverified = False
        if t.path != path:
            self._renamed(t, path)
        why = t.verify()
        if why:
            # Inode reuse or a rewrite in place: the offset belongs to another file's content.
            self._reset(t, why)
        else:
            # debug: at info, 10,000 files would mean 10,000 lines at every start
            self.log.debug("file_resumed", path=path, offset=t.offset)
        # Not the descriptor opened above: _reset may have opened a copy and the cache closed t for it
        # (its number may even belong to another file by now).
        if t.fd is not None:
            head = os.pread(t.fd, FP_MAX, 0)
            if t.id.head_matches(head):
                t.head = head
        return t

    def _find_by_inode(self, t: TailedFile) -> str | None:
        """The current name of t in its old directory (rotated while we were down, or while closed)."""
        d = os.path.dirname(t.path)
        try:
            with os.scandir(d) as it:
                for e in it:
                    if e.inode() != t.ino:
                        continue
                    try:
                        st = os.stat(e.path, follow_symlinks=False)
                    except OSError:
                        continue
                    if st.st_dev == t.dev and stat.S_ISREG(st.st_mode):
                        return e.path
        except OSError:
            return None
        return None

    def _find_elsewhere(self, t: TailedFile) -> TailedFile | None:
        """A checkpointed file no glob matches any more (rotated while we were down): look for its inode
        in its old directory, so its unread tail is finished before it is released."""
        p = self._find_by_inode(t)
        return self._resume(t, p) if p is not None else None

    # --- reading support ----------------------------------------------------------------------------

    def ensure_open(self, t: TailedFile) -> bool:
        """An open descriptor for t, reopened by identity if it was closed to stay under max_open_files."""
        if t.fd is not None:
            self.open.used(t)
            return True
        if t not in self._holds and t.gone_since is None:
            # Polling over many closed idle files: a stat tells whether reopening is worth it.
            try:
                st = os.stat(t.path)
            except OSError:
                st = None
            if st is not None and (st.st_dev, st.st_ino) == t.ident and st.st_size == t.offset:
                return False
        try:
            t.open()
        except FileNotFoundError:
            # Renamed while closed: find it by inode where it was.
            p = self._find_by_inode(t)
            if p is None:
                return False
            try:
                t.open(p)
            except OSError:
                return False
            if p != t.path:
                self._renamed(t, p)
        except OSError as e:
            self._error(t.path, "open_failed", e.strerror or str(e))
            return False
        self._opened(t)
        return True

    def release_finished(self, now: float) -> list[TailedFile]:
        """Close and forget files whose path is gone, once they are read to the end and quiet."""
        released = []
        for t in list(self.gone):
            if self.files.get(t.ident) is not t:
                continue
            if t.gone_since is None or now - t.gone_since < self.cfg.rotate_wait_seconds:
                continue
            if t.fd is not None and t not in self._holds:
                size = os.fstat(t.fd).st_size
                if size > t.offset and size != t.size_when_gone:
                    # Still growing (a writer has it open): keep following. Unread bytes that stay the
                    # same for rotate_wait_seconds are the start of a line nobody will finish (a copy that
                    # copytruncate cut in the middle of a line): not an event.
                    t.gone_since, t.size_when_gone = now, size
                    continue
            self.log.info("file_released", path=t.path, offset=t.offset)
            self._drop(t)
            if self._outside is not None and not self.globs.could_match(t.path):
                # Known from now on even if no scan runs before a crash: never read again after a restart.
                self._outside.add(t.ident)
                self.changes.outside_files(sorted(self._outside))
            released.append(t)
        if released:
            self.gone = [t for t in self.gone if self.files.get(t.ident) is t and t.gone_since is not None]
        return released
