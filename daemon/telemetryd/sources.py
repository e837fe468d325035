"""Sources: which files are tailed. Globs are re-scanned; a file is known by identity, not by name.

A tracked file moves through: discovered -> reading -> (rotated | deleted: its path no longer leads
to it, but its descriptor is read to the end) -> released (closed, dropped from the checkpoint after
`rotate_wait_seconds` without growth). See docs/design.md for the rules.
"""

from __future__ import annotations

import errno
import fnmatch
import glob
import os
import stat
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .checkpoint import FileEntry, FileIdent, TruncatedEntry
from .config import SourcesConfig
from .reader import CHUNK, FP_MAX, TailedFile, digest

Log = Any  # a structlog BoundLogger; typed loosely because structlog's proxies are dynamic


# How long the identity of a truncated file is remembered, so its copy (copytruncate) can take over the
# offset when the copy is found only after the truncation.
COPY_MEMORY_SECONDS = 120.0
HEAD_KEY = 32
# A copy being written keeps growing; a held file that stops short of its original's offset for this
# long is a new file that merely starts like it.
COPY_STALL_SECONDS = 2.0
# Bytes compared at the end of a possible copy still being written, against its original.
COPY_PROBE = 4096


@dataclass
class _Truncated:
    """What a file held before it was truncated: a copy of it may carry these bytes on."""

    at: float
    head: bytes | None  # None when only the fingerprint is known (truncated while we were down)
    fp: str
    fp_len: int
    tail: str
    tail_len: int
    offset: int
    wall: float  # time.time() of the truncation: what a checkpoint keeps, to expire it after a restart

    def entry(self) -> TruncatedEntry:
        return TruncatedEntry(self.wall, self.fp, self.fp_len, self.tail, self.tail_len, self.offset)


_Origin = TailedFile | _Truncated


def watch_roots(patterns: Iterable[str]) -> list[tuple[str, bool]]:
    """(directory, recursive) pairs to watch: the longest glob-free directory prefix of each pattern."""
    roots: dict[str, bool] = {}
    for pat in patterns:
        parts = os.path.abspath(os.path.expanduser(pat)).split(os.sep)
        dirs = parts[:-1]
        fixed = next((n for n, part in enumerate(dirs) if glob.has_magic(part)), len(dirs))
        root = os.sep.join(dirs[:fixed]) or os.sep
        # A wildcard in a directory part (or **) means files can appear below the root.
        roots[root] = roots.get(root, False) or fixed < len(dirs)
    return sorted(roots.items())


class SourceSet:
    def __init__(self, cfg: SourcesConfig, log: Log) -> None:
        self.cfg = cfg
        self.log = log
        self.files: dict[FileIdent, TailedFile] = {}
        self.by_path: dict[str, TailedFile] = {}
        # Identities released since the last checkpoint was cut.
        self.dropped: set[FileIdent] = set()
        # Offsets that moved (or files that appeared) since the last checkpoint was cut.
        self.dirty: set[TailedFile] = set()
        self.rotations: dict[str, int] = {"rename": 0, "truncate": 0, "delete": 0}
        self.errors: dict[str, int] = {}
        self._error_logged: set[tuple[str, str]] = set()
        # Open descriptors, least recently used first.
        self._open: OrderedDict[TailedFile, None] = OrderedDict()
        self._truncated: list[_Truncated] = []
        # The list changed since the last checkpoint record was cut.
        self.truncated_dirty = False
        # Held files: possible copies (value: the candidates and when the file last grew) and copies
        # following their original (value: the original).
        self._pending: dict[TailedFile, tuple[list[_Origin], float, int]] = {}
        self._follows: dict[TailedFile, TailedFile] = {}
        # Tracked files that could be copied, by their first HEAD_KEY bytes (shorter heads under b""):
        # built once per scan that finds new files, so 10,000 new files cost no quadratic search.
        self._heads: dict[bytes, list[TailedFile]] | None = None
        # Files whose path is gone (rotated away, deleted), kept up to date by scan and release: the
        # daemon polls these, and an idle loop must not walk 10,000 files to find them.
        self.gone: list[TailedFile] = []
        # (mtime, inode) of each glob's directory at the last full scan; None if a glob has a wildcard
        # in a directory part, where only a full scan can tell.
        self._dir_marks: tuple[tuple[int, int], ...] | None = None
        # Whether the last full scan found nothing awaiting a decision. A decision taken after it (a
        # copy taking over its original's offset, a hold released) can leave a file with unread lines
        # and no notification to come: one more full scan queues it.
        self._settled = False

    @property
    def open_count(self) -> int:
        return len(self._open)

    # --- bookkeeping --------------------------------------------------------------------------------

    def load(self, entries: Iterable[FileEntry], truncated: Iterable[TruncatedEntry] = ()) -> None:
        for e in entries:
            self.files[(e.dev, e.ino)] = TailedFile.from_entry(e)
        mono, wall = time.monotonic(), time.time()
        for r in truncated:
            age = max(0.0, wall - r.time)
            if age < COPY_MEMORY_SECONDS:
                self._truncated.append(
                    _Truncated(mono - age, None, r.fp, r.fp_len, r.tail, r.tail_len, r.offset, r.time)
                )

    def truncated_entries(self) -> list[TruncatedEntry]:
        return [r.entry() for r in self._truncated]

    def configure(self, cfg: SourcesConfig) -> None:
        self.cfg = cfg

    def _error(self, path: str, reason: str, detail: str = "") -> None:
        # Counted and logged once per path and reason until the path works again: a file that stays
        # unreadable is retried on every rescan without flooding the log or the counter.
        if (path, reason) not in self._error_logged:
            self.errors[reason] = self.errors.get(reason, 0) + 1
            self._error_logged.add((path, reason))
            self.log.warning("source_error", path=path, reason=reason, detail=detail)

    def _clear_error(self, path: str) -> None:
        if self._error_logged:
            self._error_logged = {k for k in self._error_logged if k[0] != path}

    def _opened(self, t: TailedFile) -> None:
        self._open[t] = None
        self._open.move_to_end(t)
        self._evict(keep=t)

    def _evict(self, keep: TailedFile | None = None) -> None:
        """Close least recently used files still reachable by path; they are reopened by identity."""
        excess = len(self._open) - self.cfg.max_open_files
        if excess <= 0:
            return
        victims: list[TailedFile] = []
        for t in self._open:  # least recently used first; no copy of the whole list per open
            if len(victims) >= excess:
                break
            if t is keep or t.gone_since is not None:
                continue  # a rotated-away or deleted file may be unreachable once closed
            victims.append(t)
        for t in victims:
            self.close_file(t)

    def close_file(self, t: TailedFile) -> None:
        if t.fd is not None:
            t.close()
        self._open.pop(t, None)

    def _drop(self, t: TailedFile) -> None:
        self.close_file(t)
        self.files.pop(t.ident, None)
        if self.by_path.get(t.path) is t:
            del self.by_path[t.path]
        self.dirty.discard(t)
        self._pending.pop(t, None)
        self._follows.pop(t, None)
        was_held = t.gate is not None
        t.gate = None
        if not was_held:
            # A held file was never checkpointed; anything else leaves the checkpoint.
            self.dropped.add(t.ident)
        for f, orig in list(self._follows.items()):
            if orig is t:
                self._unfollow(f, t.offset, "original released")

    def _reset(self, t: TailedFile, why: str, kind: str = "truncate") -> None:
        self.rotations[kind] += 1
        self.log.info("file_rewritten", path=t.path, reason=why, old_offset=t.offset)
        if t.offset and t.fp_len:
            self._truncated.append(
                _Truncated(
                    time.monotonic(),
                    t.head or None,
                    t.fp,
                    t.fp_len,
                    t.tail,
                    t.tail_len,
                    t.offset,
                    time.time(),
                )
            )
            # Committed with the reset offset in one record: a crash before the copy is found must not
            # forget what the file held.
            self.truncated_dirty = True
        old_offset = t.offset
        t.reset()
        self.dirty.add(t)
        for f, orig in list(self._follows.items()):
            if orig is t:
                self._unfollow(f, old_offset, "original truncated")

    # --- discovery ----------------------------------------------------------------------------------

    def could_match(self, path: str) -> bool:
        """Whether a path a watcher reported may be a new source (a rescan settles it)."""
        return any(fnmatch.fnmatch(path, os.path.abspath(p)) for p in self.cfg.paths)

    def expand(self) -> list[str]:
        out: list[str] = []
        seen: set[str] = set()
        for pat in self.cfg.paths:
            for p in sorted(glob.glob(os.path.expanduser(pat), recursive=True)):
                if p in seen:
                    continue
                seen.add(p)
                if any(_match(p, ex) for ex in self.cfg.exclude):
                    continue
                out.append(os.path.abspath(p))
        return out

    def _dir_signature(self) -> tuple[tuple[int, int], ...] | None:
        marks = []
        for pat in self.cfg.paths:
            d = os.path.dirname(os.path.abspath(os.path.expanduser(pat)))
            if glob.has_magic(d):
                return None
            try:
                st = os.stat(d)
            except OSError:
                marks.append((-1, -1))
                continue
            marks.append((st.st_mtime_ns, st.st_ino))
        return tuple(marks)

    def unchanged_since_scan(self) -> bool:
        """True if a rescan would find nothing new: no directory of a glob changed since the last full
        scan (creating, deleting or renaming an entry updates it) and no file awaits a decision.

        Only for use while change notifications work: writes to tracked files come from them, and a
        full scan still runs every so often in case one was missed.
        """
        if not self._settled or self._awaiting():
            return False
        return self._dir_signature() == self._dir_marks

    def _awaiting(self) -> bool:
        return bool(self.gone or self._pending or self._follows or self._error_logged)

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
        self._dir_marks = self._dir_signature()
        for path in self.expand():
            try:
                st = os.stat(path)
            except FileNotFoundError:
                if os.path.islink(path):
                    self._error(path, "dangling_symlink")
                else:
                    self._error(path, "vanished")
                continue
            except OSError as e:
                self._error(path, "stat_failed", e.strerror or str(e))
                continue
            if not stat.S_ISREG(st.st_mode):
                self._error(path, "not_regular_file")
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
                changed = st.st_size != t.offset or t.gate is not None or t.gone_since is not None
            if t.gone_since is not None:
                t.gone_since = None
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
                t.gone_since = now
                deleted = t.fd is not None and os.fstat(t.fd).st_nlink == 0
                kind = "delete" if deleted else "rename"
                self.rotations[kind] += 1
                self.log.info("file_rotated_away", path=t.path, kind=kind, offset=t.offset)
                to_read.append(t)
        if self._truncated:
            kept = [r for r in self._truncated if now - r.at < COPY_MEMORY_SECONDS]
            if len(kept) != len(self._truncated):
                self._truncated = kept
                self.truncated_dirty = True
        self._heads = None
        for path, ident in fresh:
            nt = self._discover(path, ident)
            if nt is None:
                continue
            by_path[path] = nt
            to_read.append(nt)
        self.by_path = by_path
        self.gone = [t for t in self.files.values() if t.gone_since is not None]
        self._settled = self._dir_marks is not None and not self._awaiting()
        return to_read

    def _renamed(self, t: TailedFile, path: str) -> None:
        self.rotations["rename"] += 1
        self.log.info("file_renamed", old_path=t.path, path=path)
        if self.by_path.get(t.path) is t:
            del self.by_path[t.path]
        t.path = path
        if t.gate is None:
            self.dirty.add(t)

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
            os.close(fd)  # replaced between stat and open: the next scan sees the new one
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
        self._opened(t)
        head = os.pread(fd, FP_MAX, 0)
        t.fp, t.fp_len, t.head = (digest(head), len(head), head) if head else ("", 0, b"")
        cands = self._copy_candidates(t)
        if cands:
            # Possibly a copy of a tracked file (copytruncate, or a copy that matches the globs): held
            # until its bytes decide, so no line is read twice.
            self._pending[t] = (cands, time.monotonic(), os.fstat(fd).st_size)
            t.gate = self._gate
            if self._settle(t):
                self.log.info("file_held", path=path, reason="possible copy", candidates=len(cands))
            return t
        self._start_new(t)
        return t

    def _start_new(self, t: TailedFile) -> None:
        assert t.fd is not None
        if self.cfg.start_at == "end":
            t.set_offset(_last_line_end(t.fd))
        self.dirty.add(t)
        self.log.info("file_opened", path=t.path, offset=t.offset, dev=t.dev, ino=t.ino)

    # --- copies -------------------------------------------------------------------------------------

    def _copy_candidates(self, n: TailedFile) -> list[_Origin]:
        """Tracked (or just truncated) files whose first bytes agree with n's and that were read past
        them: n may be a copy of one of them."""
        out: list[_Origin] = []
        if self._heads is None:
            self._heads = {}
            for t in self.files.values():
                if t.offset and t.head and t.gate is None and not t.unverified:
                    key = t.head[:HEAD_KEY] if len(t.head) >= HEAD_KEY else b""
                    self._heads.setdefault(key, []).append(t)
        if len(n.head) >= HEAD_KEY:
            pool = self._heads.get(n.head[:HEAD_KEY], []) + self._heads.get(b"", [])
        else:
            pool = [t for ts in self._heads.values() for t in ts]
        for t in pool:
            if t is n or t.gate is not None or t.unverified or t.offset <= len(n.head) or not t.head:
                continue
            if t.gone_since is not None:
                continue  # renamed away or deleted: a new file under its old name is not its copy
            k = min(len(t.head), len(n.head))
            if t.head[:k] == n.head[:k]:
                out.append(t)
        for r in self._truncated:
            if r.offset <= len(n.head):
                continue
            if r.head is not None:
                k = min(len(r.head), len(n.head))
                if r.head[:k] == n.head[:k]:
                    out.append(r)
            elif len(n.head) < r.fp_len or digest(n.head[: r.fp_len]) == r.fp:
                out.append(r)
        return out

    def _gate(self, t: TailedFile) -> bool:
        return self._settle(t)

    def _settle(self, n: TailedFile) -> bool:
        """Decide about a held file. True while it stays held."""
        orig = self._follows.get(n)
        if orig is not None:
            if self.files.get(orig.ident) is orig and orig.gate is None:
                return True
            self._unfollow(n, orig.offset, "original gone")
            return False
        pend = self._pending.get(n)
        if pend is None:
            n.gate = None
            return False
        cands, grew_at, last_size = pend
        assert n.fd is not None
        size = os.fstat(n.fd).st_size
        now = time.monotonic()
        if size != last_size:
            grew_at = now
        still: list[_Origin] = []
        n.head = os.pread(n.fd, FP_MAX, 0)
        # Files truncated since n was found may be what n is a copy of.
        for c in [*cands, *(r for r in self._truncated if r not in cands)]:
            verdict = self._compare(n, c, size)
            if verdict == "copy":
                del self._pending[n]
                offset = c.offset
                n.set_offset(offset)
                self.log.info("file_copy_found", path=n.path, offset=offset)
                if isinstance(c, TailedFile) and self.files.get(c.ident) is c and c.gate is None:
                    # The original is intact: it is read on, and the copy takes over its offset once it
                    # is truncated or released.
                    self._follows[n] = c
                    return True
                n.gate = None
                self.dirty.add(n)
                return False
            if verdict == "maybe":
                still.append(c)
        if still and now - grew_at < min(self.cfg.rotate_wait_seconds, COPY_STALL_SECONDS):
            self._pending[n] = (still, grew_at, size)
            return True
        del self._pending[n]
        n.gate = None
        if still:
            self.log.info("file_copy_stalled", path=n.path, size=size)
        self._start_new(n)
        return False

    def _compare(self, n: TailedFile, c: _Origin, size: int) -> str:
        """'copy' if n holds c's bytes up to c's offset, 'maybe' if it may still become so, else 'no'."""
        assert n.fd is not None
        head = n.head
        chead = c.head if c.head else None
        if chead is not None:
            k = min(len(chead), len(head))
            if chead[:k] != head[:k]:
                return "no"
        elif len(head) >= c.fp_len and digest(head[: c.fp_len]) != c.fp:
            return "no"
        if size < c.offset:
            # Still being written (or a different file): compare its last bytes with the original's.
            if isinstance(c, TailedFile) and c.fd is not None and size > len(head):
                k = min(COPY_PROBE, size)
                if os.pread(n.fd, k, size - k) != os.pread(c.fd, k, size - k):
                    return "no"
            return "maybe"
        if c.fp_len and digest(head[: c.fp_len]) != c.fp:
            return "no"
        if c.tail_len and digest(os.pread(n.fd, c.tail_len, c.offset - c.tail_len)) != c.tail:
            return "no"
        if os.pread(n.fd, 1, c.offset - 1) != b"\n":
            return "no"
        return "copy"

    def _unfollow(self, n: TailedFile, offset: int, why: str) -> None:
        """A copy takes over from its original: read on from where the original was read to."""
        self._follows.pop(n, None)
        n.gate = None
        n.held = False
        if self.files.get(n.ident) is not n:
            return
        if n.fd is None and not self.ensure_open(n):
            return
        assert n.fd is not None
        size = os.fstat(n.fd).st_size
        # Lines the original got after the copy was made were read from the original.
        n.set_offset(offset if offset <= size else _last_line_end(n.fd))
        self.dirty.add(n)
        self.log.info("file_copy_takes_over", path=n.path, offset=n.offset, reason=why)

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
        head = os.pread(fd, FP_MAX, 0)
        if t.fp_len and len(head) >= t.fp_len and digest(head[: t.fp_len]) == t.fp:
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
            self._open.move_to_end(t)
            return True
        if t.gate is None and t.gone_since is None:
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
            if t.fd is not None and t.gate is None:
                size = os.fstat(t.fd).st_size
                if size > t.offset:
                    t.gone_since = now  # still growing: a writer has it open; keep following
                    continue
            self.log.info("file_released", path=t.path, offset=t.offset)
            self._drop(t)
            released.append(t)
        if released:
            self.gone = [t for t in self.gone if self.files.get(t.ident) is t and t.gone_since is not None]
        return released

    def close_idle(self) -> None:
        """Keep descriptors under max_open_files: close files still reachable by path, oldest first."""
        self._evict()

    def close_all(self) -> None:
        for t in list(self.files.values()):
            self.close_file(t)


def _match(path: str, pattern: str) -> bool:
    return fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(os.path.basename(path), pattern)


def _last_line_end(fd: int) -> int:
    """Offset just past the last newline, so start_at=end never begins inside a line."""
    size = os.fstat(fd).st_size
    pos = size
    while pos > 0:
        start = max(0, pos - CHUNK)
        data = os.pread(fd, pos - start, start)
        nl = data.rfind(b"\n")
        if nl >= 0:
            return start + nl + 1
        pos = start
    return 0
