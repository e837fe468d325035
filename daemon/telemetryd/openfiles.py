"""The open-file cache: descriptors bounded by `sources.max_open_files`, least recently used closed first.

Only bookkeeping: which tracked files hold a descriptor, in what order they were used, and which to
close. Whether a closed file can be reopened (and how: by path, or by inode in its directory) is the
source set's business; files it must keep open (rotated away or deleted: nothing else leads to them)
are never chosen.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from .reader import TailedFile


class OpenFiles:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lru: OrderedDict[TailedFile, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._lru)

    def used(self, t: TailedFile) -> None:
        """t holds a descriptor and was just used."""
        self._lru[t] = None
        self._lru.move_to_end(t)

    def close(self, t: TailedFile) -> None:
        t.close()
        self._lru.pop(t, None)

    def evict(self, must_stay_open: Callable[[TailedFile], bool], keep: TailedFile | None = None) -> None:
        """Close least recently used files until under the limit; they are reopened by identity."""
        excess = len(self._lru) - self.limit
        if excess <= 0:
            return
        victims: list[TailedFile] = []
        for t in self._lru:  # least recently used first; no copy of the whole list per open
            if len(victims) >= excess:
                break
            if t is keep or must_stay_open(t):
                continue
            victims.append(t)
        for t in victims:
            self.close(t)
