"""Which patterns get their own `telemetryd_pattern_events_total` series: a small, pure policy.

The choice is committed state (`PatternState.export_base`), not a metrics setting, because a series must
continue from the same value in every process: docs/design.md, "Generalised patterns and monotone
series". The rule: a pattern gets a series once its direct count (count - absorbed) reaches
`min_events` while fewer than `limit` patterns hold one; once given, a series is kept. The series'
value is the direct count since that moment (all of it for a pattern granted in the record that first
commits it), so `other`, which holds every event not in a series, never goes down.

`SeriesSlots.grant` runs where pattern entries change, just before their record is cut: a grant
edits an entry that is already in the record (it is dirty), so the grant and the counts that caused
it are committed together.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from itertools import islice

from .patterns import PatternState

# How many of the patterns created last are kept in `SeriesSlots.recent`.
RECENT_PATTERNS = 50


def direct(p: PatternState) -> int:
    """Events counted into `p` itself, not taken over from patterns it absorbed."""
    return p.count - p.absorbed


def series_value(p: PatternState) -> int:
    """The value of `p`'s series (only meaningful while `p.export_base >= 0`)."""
    return direct(p) - p.export_base


def eligible(p: PatternState, min_events: int) -> bool:
    return p.export_base < 0 and p.absorbed_into is None and direct(p) >= min_events


def choose(candidates: Iterable[PatternState], free: int, min_events: int) -> list[PatternState]:
    """The patterns to give a series now: the largest eligible ones (ties by id, so the choice does not
    depend on set order), at most `free`."""
    if free <= 0:
        return []
    found = [p for p in candidates if eligible(p, min_events)]
    found.sort(key=lambda p: (-direct(p), p.id))
    return found[:free]


class SeriesSlots:
    """The patterns holding a series (at most `limit`), in the order they got it."""

    def __init__(self, limit: int, min_events: int) -> None:
        self.limit = limit
        self.min_events = min_events
        self.held: list[PatternState] = []
        # Length of the pattern table at the last cut. The table only ever grows (absorbed entries are
        # kept, docs/design.md) and a dict keeps insertion order, so the entries past this position were
        # created since then: none of their events has been committed, so none is in `other` yet.
        self._cut_len = 0
        # The patterns committed last (oldest first): their template and first-seen time are exported
        # even without a series, so a new pattern is visible when every series is taken.
        self.recent: deque[PatternState] = deque(maxlen=RECENT_PATTERNS)

    def recovered(self, table: dict[str, PatternState]) -> None:
        """Take over the grants committed before (a lower limit than then keeps them all: a series, once
        given, is never taken away)."""
        self.held = sorted((p for p in table.values() if p.export_base >= 0), key=lambda p: p.id)
        self._cut_len = len(table)
        self.recent.clear()
        self.recent.extend(reversed(list(islice(reversed(table.values()), RECENT_PATTERNS))))

    def grant(self, changed: Iterable[PatternState], table: dict[str, PatternState]) -> list[PatternState]:
        """Give series to eligible patterns among `changed` (entries about to be committed), with the
        pattern `table` they belong to. Returns the patterns granted; their `export_base` is set: 0 for a
        pattern never committed before (its series holds its whole count), else its direct count now
        (what it counted before is in `other` already)."""
        fresh_from, self._cut_len = self._cut_len, len(table)
        # From the end: the cost follows the patterns created since the last cut, not the table.
        created = list(islice(reversed(table.values()), len(table) - fresh_from))
        self.recent.extend(reversed(created[:RECENT_PATTERNS]))
        free = self.limit - len(self.held)
        if free <= 0:
            return []
        chosen = choose(changed, free, self.min_events)
        if chosen:
            fresh = set(map(id, created))
            for p in chosen:
                p.export_base = 0 if id(p) in fresh else direct(p)
            self.held.extend(chosen)
        return chosen
