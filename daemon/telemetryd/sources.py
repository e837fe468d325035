"""Sources: which files are tailed. Globs are re-scanned; a file is known by identity, not by name.

A tracked file moves through: discovered -> reading -> (rotated | deleted: its path no longer leads
to it, but its descriptor is read to the end) -> released (closed, dropped from the checkpoint after
`rotate_wait_seconds` without growth). See docs/design.md for the rules.
"""

from __future__ import annotations

import glob
import os
import stat
from collections.abc import Iterable
from typing import Any

from .checkpoint import FileEntry, FileIdent
from .config import SourcesConfig
from .reader import CHUNK, FP_MAX, TailedFile, digest

Log = Any  # a structlog BoundLogger; typed loosely because structlog's proxies are dynamic


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
        self.open_count = 0

    # --- bookkeeping --------------------------------------------------------------------------------

    def load(self, entries: Iterable[FileEntry]) -> None:
        for e in entries:
            self.files[(e.dev, e.ino)] = TailedFile.from_entry(e)

    def configure(self, cfg: SourcesConfig) -> None:
        self.cfg = cfg

    def _error(self, path: str, reason: str, detail: str = "") -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1
        if (path, reason) not in self._error_logged:
            self._error_logged.add((path, reason))
            self.log.warning("source_error", path=path, reason=reason, detail=detail)

    def _clear_error(self, path: str) -> None:
        if self._error_logged:
            self._error_logged = {k for k in self._error_logged if k[0] != path}

    def _opened(self, t: TailedFile) -> None:
        self.open_count += 1

    def close_file(self, t: TailedFile) -> None:
        if t.fd is not None:
            t.close()
            self.open_count -= 1

    def _drop(self, t: TailedFile) -> None:
        self.close_file(t)
        self.files.pop(t.ident, None)
        if self.by_path.get(t.path) is t:
            del self.by_path[t.path]
        self.dirty.discard(t)
        self.dropped.add(t.ident)

    def _reset(self, t: TailedFile, why: str, kind: str = "truncate") -> None:
        self.rotations[kind] += 1
        self.log.info("file_rewritten", path=t.path, reason=why, old_offset=t.offset)
        t.reset()
        self.dirty.add(t)

    # --- discovery ----------------------------------------------------------------------------------

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

    def scan(self, now: float) -> list[TailedFile]:
        """Re-expand the globs and reconcile with what is tracked. Returns the files worth reading now."""
        seen: set[FileIdent] = set()
        by_path: dict[str, TailedFile] = {}
        to_read: list[TailedFile] = []
        for path in self.expand():
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue  # vanished between listing and stat: the next scan settles it
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
            if t is not None and t.unverified:
                t = self._resume(t, path)
            elif t is not None and t.path != path:
                self.rotations["rename"] += 1
                self.log.info("file_renamed", old_path=t.path, path=path)
                if self.by_path.get(t.path) is t:
                    del self.by_path[t.path]
                t.path = path
                self.dirty.add(t)
            if t is None:
                t = self._discover(path, ident)
                if t is None:
                    continue
            if t.gone_since is not None:
                t.gone_since = None
            by_path[path] = t
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
        self.by_path = by_path
        return to_read

    def _open_new(self, path: str, ident: FileIdent) -> int | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as e:
            self._error(path, "open_failed", e.strerror or str(e))
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
        self._opened(t)
        head = os.pread(fd, FP_MAX, 0)
        t.fp, t.fp_len = (digest(head), len(head)) if head else ("", 0)
        if self.cfg.start_at == "end":
            t.offset = _last_line_end(fd)
            if t.offset:
                t.tail_len = min(64, t.offset)
                t.tail = digest(os.pread(fd, t.tail_len, t.offset - t.tail_len))
        self.files[ident] = t
        self.dirty.add(t)
        self.log.info("file_opened", path=path, offset=t.offset, dev=ident[0], ino=ident[1])
        return t

    def _resume(self, t: TailedFile, path: str) -> TailedFile | None:
        """A checkpointed file met again: resume at its offset only if it still holds what was read."""
        fd = self._open_new(path, t.ident)
        if fd is None:
            return None
        t.adopt_fd(fd)
        self._opened(t)
        t.unverified = False
        if t.path != path:
            self.rotations["rename"] += 1
            self.log.info("file_renamed", old_path=t.path, path=path)
            t.path = path
            self.dirty.add(t)
        why = t.verify()
        if why:
            # Inode reuse or a rewrite in place: the offset belongs to another file's content.
            self._reset(t, why)
        else:
            self.log.info("file_resumed", path=path, offset=t.offset)
        return t

    def _find_elsewhere(self, t: TailedFile) -> TailedFile | None:
        """A checkpointed file no glob matches any more (rotated while we were down): look for its inode
        in its old directory, so its unread tail is finished before it is released."""
        d = os.path.dirname(t.path)
        try:
            with os.scandir(d) as it:
                for e in it:
                    if e.inode() == t.ino:
                        try:
                            st = os.stat(e.path, follow_symlinks=False)
                        except OSError:
                            continue
                        if st.st_dev == t.dev and stat.S_ISREG(st.st_mode):
                            return self._resume(t, e.path)
        except OSError:
            return None
        return None

    # --- reading support ----------------------------------------------------------------------------

    def ensure_open(self, t: TailedFile) -> bool:
        if t.fd is not None:
            return True
        try:
            t.open()
        except OSError:
            return False
        self._opened(t)
        return True

    def release_finished(self, now: float) -> list[TailedFile]:
        """Close and forget files whose path is gone, once they are read to the end and quiet."""
        released = []
        for t in list(self.files.values()):
            if t.gone_since is None or now - t.gone_since < self.cfg.rotate_wait_seconds:
                continue
            if t.fd is not None:
                size = os.fstat(t.fd).st_size
                if size > t.offset:
                    t.gone_since = now  # still growing: a writer has it open; keep following
                    continue
            self.log.info("file_released", path=t.path, offset=t.offset)
            self._drop(t)
            released.append(t)
        return released

    def close_idle(self) -> None:
        """Keep descriptors under max_open_files: close files still reachable by path, oldest first."""
        if self.open_count <= self.cfg.max_open_files:
            return
        idle = sorted(
            (t for t in self.files.values() if t.fd is not None and t.gone_since is None),
            key=lambda t: t.last_active,
        )
        for t in idle[: self.open_count - self.cfg.max_open_files]:
            self.close_file(t)

    def close_all(self) -> None:
        for t in self.files.values():
            self.close_file(t)


def _match(path: str, pattern: str) -> bool:
    import fnmatch

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
