"""Discovery: which paths the globs name, and which directories to watch for them.

Knows nothing of identities or offsets: it turns `sources.paths` / `sources.exclude` into paths, says
whether a path a change notice named could be one of them, and marks the glob directories so an idle
rescan can be skipped when none of them changed.
"""

from __future__ import annotations

import fnmatch
import glob
import os
from collections.abc import Iterable

DirMarks = tuple[tuple[int, int], ...]


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


class Globs:
    def __init__(self, paths: list[str], exclude: list[str]) -> None:
        self.paths = paths
        self.exclude = exclude
        self._abs = [os.path.abspath(os.path.expanduser(p)) for p in paths]

    def could_match(self, path: str) -> bool:
        """Whether a path a watcher reported may be a source (a stat settles it)."""
        return any(fnmatch.fnmatch(path, p) for p in self._abs) and not self.excluded(path)

    def excluded(self, path: str) -> bool:
        return any(_match(path, ex) for ex in self.exclude)

    def expand(self) -> list[str]:
        out: list[str] = []
        seen: set[str] = set()
        for pat in self.paths:
            for p in sorted(glob.glob(os.path.expanduser(pat), recursive=True)):
                if p in seen:
                    continue
                seen.add(p)
                if self.excluded(p):
                    continue
                out.append(os.path.abspath(p))
        return out

    def dirs(self) -> list[str] | None:
        """The globs' directories; None when one has a wildcard (its directories are not known)."""
        out = sorted({os.path.dirname(p) for p in self._abs})
        return None if any(glob.has_magic(d) for d in out) else out

    def dir_marks(self) -> DirMarks | None:
        """(mtime, inode) of each glob's directory: creating, deleting or renaming an entry moves the
        mtime. None when a glob has a wildcard in a directory part, where only a full scan can tell."""
        marks = []
        for pat in self._abs:
            d = os.path.dirname(pat)
            if glob.has_magic(d):
                return None
            try:
                st = os.stat(d)
            except OSError:
                marks.append((-1, -1))
                continue
            marks.append((st.st_mtime_ns, st.st_ino))
        return tuple(marks)


def _match(path: str, pattern: str) -> bool:
    return fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(os.path.basename(path), pattern)
