"""The exported event counters: committed counts only, continued across restarts and settings changes.

What Prometheus sees of events, skipped lines, overflow, patterns created and per-pattern series comes
from one `View`, an immutable value built from the state a journal record commits (`capture`, when the
record is cut) and published only once that record is durable (`on_durable`), or built from the
recovered state at start (`recovered`). So a scrape never shows more than is on disk, and after a crash
the next process starts from exactly the values the last durable record held: Prometheus sees neither
a reset nor a count twice. The scrape thread reads `self._view` once (a reference swap is atomic), so
it needs no lock and the main loop is never held up by a scrape.

Counts archived by a change of pattern settings (daemon._archive) are carried as committed offsets in
`metrics-offsets.json` (`archive`), written durably before the reset state is, so every counter
continues across the change; docs/operations.md explains it to operators.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Protocol

import msgspec
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from .checkpoint import write_file_durably
from .events import SKIP_REASONS
from .patterns import PatternState
from .series_policy import SeriesSlots, series_value

# What a cut copies of each pattern holding a series (one C call per pattern).
_STATE = attrgetter("count", "absorbed", "export_base", "absorbed_into")

OFFSETS_FILE = "metrics-offsets.json"
OTHER = "other"
# Label names a key field may not take: the ones these metrics set themselves, and the target labels
# Prometheus attaches (a clash would be renamed to exported_* at scrape, silently).
RESERVED_LABELS = frozenset({"pattern_id", "template", "absorbed_into", "instance", "job"})
KEY_LABEL_PREFIX = "key_"
# Label values (templates, key values) are cut to this many characters, with "…" at the end: at most
# 2048 bytes of UTF-8, the smallest limit among common stores (Mimir's max_label_value_length; longer
# values make it reject the series). The pattern_id still tells two cut values apart.
LABEL_VALUE_MAX_CHARS = 512
_INVALID = re.compile(r"[^a-zA-Z0-9_]")


def label_names(key_fields: Sequence[str]) -> tuple[str, ...]:
    """A Prometheus label name per key field path: every character outside [a-zA-Z0-9_] becomes `_`;
    a name that is reserved, starts with a digit or with `__` gets the prefix `key_`; a name already
    taken by an earlier key field gets `_2`, `_3`, ... (docs/contract.md)."""
    out: list[str] = []
    for path in key_fields:
        name = _INVALID.sub("_", path)
        if name in RESERVED_LABELS or name[:1].isdigit() or name.startswith("__"):
            name = KEY_LABEL_PREFIX + name
        base, n = name, 2
        while name in out:
            name, n = f"{base}_{n}", n + 1
        out.append(name)
    return tuple(out)


def label_value(text: str | None) -> str:
    """A label value: "" for None (Prometheus reads it as the label being absent), cut if too long."""
    if text is None:
        return ""
    return text if len(text) <= LABEL_VALUE_MAX_CHARS else text[: LABEL_VALUE_MAX_CHARS - 1] + "…"


def key_labels(names: Sequence[str], key: Sequence[str | None]) -> dict[str, str]:
    return {n: label_value(v) for n, v in zip(names, key, strict=False)}


class ArchivedSeries(msgspec.Struct):
    """A pattern series from settings in force before a change: its value frozen there."""

    value: int
    labels: dict[str, str]
    template: str
    first_seen: float


class Offsets(msgspec.Struct):
    """What earlier pattern settings counted: added to the counters so they continue across a change."""

    events: int = 0
    overflow: int = 0
    created: int = 0
    series: dict[str, ArchivedSeries] = msgspec.field(default_factory=dict)
    # One mark per archived state (settings digest, seq, events): archiving again after a crash in the
    # middle of a settings change finds its mark and adds nothing.
    archives: list[str] = msgspec.field(default_factory=list)


def load_offsets(state_dir: str) -> Offsets:
    try:
        with open(os.path.join(state_dir, OFFSETS_FILE), "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return Offsets()
    try:
        return msgspec.json.decode(data, type=Offsets)
    except msgspec.DecodeError as e:
        # Written by rename after fsync: a bad file is damage, and guessing would break counters.
        raise OSError(f"{os.path.join(state_dir, OFFSETS_FILE)}: unreadable ({e})") from None


def save_offsets(state_dir: str, offsets: Offsets) -> None:
    write_file_durably(state_dir, OFFSETS_FILE, msgspec.json.format(msgspec.json.encode(offsets), indent=1))


def archive(
    state_dir: str,
    patterns: Iterable[PatternState],
    totals: tuple[int, int],
    mark: str,
    key_fields: Sequence[str],
) -> Offsets:
    """Fold the counts of settings being retired into the committed offsets. Must be durable before the
    reset state is: `totals` is (events, overflow) of the archived state, `mark` identifies it."""
    off = load_offsets(state_dir)
    if mark in off.archives:
        return off
    names = label_names(key_fields)
    n = 0
    for p in patterns:
        n += 1
        if p.export_base < 0:
            continue  # its events are in `other`, which continues through the events offset
        prev = off.series.get(p.id)
        value = series_value(p) + (prev.value if prev is not None else 0)
        off.series[p.id] = ArchivedSeries(
            value, key_labels(names, p.key), label_value(p.template), p.first_seen
        )
    off.events += totals[0]
    off.overflow += totals[1]
    off.created += n
    off.archives.append(mark)
    save_offsets(state_dir, off)
    return off


@dataclass(frozen=True)
class Info:
    labels: dict[str, str]  # key labels
    template: str
    first_seen: float


@dataclass(frozen=True)
class View:
    """Committed values, offsets included. Never mutated once built: the scrape thread reads it whole."""

    events: int
    overflow: int
    skipped: Mapping[str, int]
    created: int
    # The patterns of the current settings holding a series: ids, and (count, absorbed, export_base,
    # absorbed_into) as committed, in the same order. Values are derived at scrape time, so a cut only
    # copies four fields per series, in C.
    ids: tuple[str, ...]
    states: list[tuple[int, int, int, str | None]]
    info: Mapping[str, Info] = field(default_factory=dict)
    # The patterns committed last, newest last: their info and first-seen time are exported too.
    recent: tuple[tuple[str, Info], ...] = ()

    def series(self, archived: Mapping[str, ArchivedSeries]) -> list[tuple[str, int, str | None]]:
        """(pattern id, value, absorbed_into) of every series, archived ones included."""
        current = {
            pid: (count - absorbed - base, into)
            for pid, (count, absorbed, base, into) in zip(self.ids, self.states, strict=True)
        }
        out: list[tuple[str, int, str | None]] = []
        for pid, a in archived.items():
            # The same id under the new settings is the same pattern: its series goes on from the archive.
            value, into = current.pop(pid, (0, None))
            out.append((pid, a.value + value, into))
        out.extend((pid, value, into) for pid, (value, into) in current.items())
        return out


class ExportedCounts(Collector):
    """Collector of the committed event counters and per-pattern series."""

    def __init__(self, key_fields: Sequence[str] = (), series_limit: int = 0) -> None:
        self.names = label_names(key_fields)
        self.series_limit = series_limit
        self.offsets = Offsets()
        self._view: View | None = None
        self._info: Mapping[str, Info] = {}
        # `held` only grows between recoveries: the first `_known` of it are in `_ids` and `_info`.
        self._known = 0
        self._ids: tuple[str, ...] = ()
        self._recent: tuple[tuple[str, Info], ...] = ()
        self._recent_last: PatternState | None = None
        # The text of these families, by content type, for the view it was rendered from: it changes
        # once per durable record, while a dashboard or a tight loop may scrape far more often, and on
        # service telemetry it is most of /metrics (a pattern_info series per pattern with a template).
        self._text: tuple[View | None, dict[str, bytes]] = (None, {})
        self._alone = CollectorRegistry(auto_describe=False)
        self._alone.register(self)

    # --- main thread -------------------------------------------------------------------------------

    def recovered(
        self,
        offsets: Offsets,
        events: int,
        overflow: int,
        skipped: Mapping[str, int],
        created: int,
        held: Sequence[PatternState],
        recent: Sequence[PatternState] = (),
    ) -> None:
        """The recovered (durable) state: published at once, before the first record of this process."""
        self.offsets = offsets
        self._known, self._ids, self._info = 0, (), {}
        self._recent, self._recent_last = (), None
        self._view = self.capture(events, overflow, skipped, created, held, recent)

    def capture(
        self,
        events: int,
        overflow: int,
        skipped: Mapping[str, int],
        created: int,
        held: Sequence[PatternState],
        recent: Sequence[PatternState] = (),
    ) -> View:
        """The values a record about to be cut commits: totals, the number of patterns in the table, and
        the patterns holding a series (their current values are exactly what that record commits, since
        every entry changed since the last durable record is in it). O(series), not O(patterns)."""
        off = self.offsets
        if len(held) > self._known:
            grown = dict(self._info)
            for p in held[self._known :]:
                grown[p.id] = self._describe(p)
            self._info = grown
            self._ids = tuple(p.id for p in held)
            self._known = len(held)
        if recent and recent[-1] is not self._recent_last:  # patterns were created since the last cut
            self._recent = tuple((p.id, self._info.get(p.id) or self._describe(p)) for p in recent)
            self._recent_last = recent[-1]
        return View(
            off.events + events,
            off.overflow + overflow,
            dict(skipped),
            off.created + created,
            self._ids,
            list(map(_STATE, held)),
            self._info,
            self._recent,
        )

    def _describe(self, p: PatternState) -> Info:
        return Info(key_labels(self.names, p.key), label_value(p.template), p.first_seen)

    def on_durable(self, view: View) -> None:
        """The record `view` was captured for is on disk: publish it."""
        self._view = view

    # --- scrape thread -----------------------------------------------------------------------------

    def describe(self) -> Iterable[Metric]:
        return list(self._families(None))

    def exposition(self, encoder: Callable[[CollectorRegistry], bytes], content_type: str) -> bytes:
        """These families as `encoder` writes them (prometheus_client's choose_encoder), rendered once
        per published view and content type."""
        v = self._view
        seen, texts = self._text
        if seen is not v or v is None:
            texts = {}
        text = texts.get(content_type)
        if text is None:
            text = encoder(self._alone)
            if v is not None and v is self._view:  # not replaced while rendering: keep it
                self._text = (v, {**texts, content_type: text})
        return text

    def collect(self) -> Iterable[Metric]:
        return list(self._families(self._view))

    def _families(self, v: View | None) -> Iterator[Metric]:
        events = Metric(
            "telemetryd_events", "Events counted into patterns (overflow included), committed", "counter"
        )
        overflow = Metric(
            "telemetryd_overflow_events", "Events counted in the overflow bucket, committed", "counter"
        )
        skipped = Metric("telemetryd_lines_skipped", "Lines not counted, by reason, committed", "counter")
        created = Metric("telemetryd_patterns_created", "Patterns first seen, committed", "counter")
        per = Metric(
            "telemetryd_pattern_events",
            "Events per pattern, committed: at most metrics.pattern_series patterns, the rest in "
            'pattern_id="other"; the series sum to telemetryd_events_total',
            "counter",
        )
        info = Metric(
            "telemetryd_pattern_info",
            "Template and key values of each pattern with a series and of the patterns created last",
            "gauge",
        )
        first = Metric(
            "telemetryd_pattern_first_seen_timestamp_seconds",
            "Unix time each pattern with a series, and each of the patterns created last, was first seen",
            "gauge",
        )
        held = Metric("telemetryd_pattern_series", "Patterns holding their own series", "gauge")
        limit = Metric("telemetryd_pattern_series_max", "Configured metrics.pattern_series", "gauge")
        limit.add_sample("telemetryd_pattern_series_max", {}, self.series_limit)
        if v is not None:
            # Before recovery there is nothing committed to show: no sample, rather than a 0 that
            # Prometheus would read as a counter reset.
            events.add_sample("telemetryd_events_total", {}, v.events)
            overflow.add_sample("telemetryd_overflow_events_total", {}, v.overflow)
            for reason in sorted(set(SKIP_REASONS) | set(v.skipped)):
                skipped.add_sample(
                    "telemetryd_lines_skipped_total", {"reason": reason}, v.skipped.get(reason, 0)
                )
            created.add_sample("telemetryd_patterns_created_total", {}, v.created)
            held.add_sample("telemetryd_pattern_series", {}, len(v.ids))
            blank = dict.fromkeys(self.names, "")
            archived = self.offsets.series
            total = 0
            exported = set()
            for pid, value, into in v.series(archived):
                total += value
                exported.add(pid)
                # An archived series keeps its labels: a series that changed labels would be a new one.
                a = archived.get(pid)
                i = v.info.get(pid)
                if a is not None:
                    keys, tpl, seen = a.labels, a.template, a.first_seen
                elif i is not None:
                    keys, tpl, seen = i.labels, i.template, i.first_seen
                else:  # cannot happen: every series id is in the archive or in the info
                    keys, tpl, seen = {}, "", 0.0
                per.add_sample("telemetryd_pattern_events_total", {"pattern_id": pid, **keys}, value)
                labels = {"pattern_id": pid, "template": tpl, **keys}
                if into is not None:
                    labels["absorbed_into"] = into
                info.add_sample("telemetryd_pattern_info", labels, 1)
                first.add_sample("telemetryd_pattern_first_seen_timestamp_seconds", {"pattern_id": pid}, seen)
            for pid, i in v.recent:
                if pid not in exported:
                    info.add_sample(
                        "telemetryd_pattern_info", {"pattern_id": pid, "template": i.template, **i.labels}, 1
                    )
                    first.add_sample(
                        "telemetryd_pattern_first_seen_timestamp_seconds", {"pattern_id": pid}, i.first_seen
                    )
            per.add_sample(
                "telemetryd_pattern_events_total", {"pattern_id": OTHER, **blank}, v.events - total
            )
        yield from (events, overflow, skipped, created, per, info, first, held, limit)


class PatternCounts(Protocol):
    """What the rider reads of the pattern table (patterns.PatternCounter)."""

    events_total: int
    overflow_count: int
    skipped: dict[str, int]
    table: dict[str, PatternState]
    dirty: set[PatternState]


@dataclass
class ExportRider:
    """Rides with every journal record (commit.RecordRider): as the record is cut, grants series to the
    patterns that earned one (so the grant is committed in that record) and captures the values it
    commits; once the record is durable, publishes them."""

    exported: ExportedCounts
    slots: SeriesSlots
    counts: PatternCounts

    def at_cut(self) -> View:
        c, slots = self.counts, self.slots
        slots.grant(c.dirty, c.table)
        return self.exported.capture(
            c.events_total, c.overflow_count, c.skipped, len(c.table), slots.held, slots.recent
        )

    def at_durable(self, captured: object) -> None:
        assert isinstance(captured, View)
        self.exported.on_durable(captured)
