"""GET /patterns: the document of `patterns --json`, read from the state dir with the CLI's own code.

It shows what is committed (durable), never the daemon's in-memory counts: the same numbers
`telemetryd patterns --json` prints, at most one checkpoint interval behind the live counts, and no
coupling to the daemon's internals. Raw example lines are replaced by null unless
`metrics.expose_examples` is on: they are log text the HTTP client may have no right to read.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import checkpoint as ck
from .report import iso, patterns_document

# A live daemon may prune a snapshot between our listing and our reading it; such a read is retried.
READ_ATTEMPTS = 3
PARAMS = ("top", "since")


class BadQuery(ValueError):
    """A query parameter that cannot be used: answered 400 with this message."""


class StateUnavailable(Exception):
    """No consistent committed state could be read: answered 503 with this message."""


@dataclass(frozen=True)
class Query:
    top: int | None = None
    since: str | None = None  # in report.iso()'s fixed-width UTC form, so strings compare as times


def parse_query(qs: str) -> Query:
    try:
        pairs = urllib.parse.parse_qsl(qs, keep_blank_values=True, strict_parsing=bool(qs))
    except ValueError:
        raise BadQuery(f"malformed query string {qs!r}") from None
    seen: dict[str, str] = {}
    for name, value in pairs:
        if name not in PARAMS:
            raise BadQuery(f"unknown parameter {name!r} (known: {', '.join(PARAMS)})")
        if name in seen:
            raise BadQuery(f"parameter {name!r} given more than once")
        seen[name] = value
    top = None
    if "top" in seen:
        v = seen["top"]
        if not v.isdigit() or not v.isascii():
            raise BadQuery(f"top: expected a non-negative integer, got {v!r}")
        top = int(v)
    since = None
    if "since" in seen:
        since = _since(seen["since"])
    return Query(top, since)


def _since(v: str) -> str:
    try:
        t = dt.datetime.fromisoformat(v)
    except ValueError:
        raise BadQuery(
            f"since: expected an ISO 8601 time with a UTC offset, e.g. 2026-01-31T12:00:00Z, got {v!r}"
        ) from None
    if t.tzinfo is None:
        raise BadQuery(f"since: {v!r} has no UTC offset (add Z or +HH:MM)")
    stamp = iso(t.timestamp())
    if stamp is None:  # the epoch itself: every pattern was seen after it
        return ""
    return stamp


class PatternsReader:
    """Reads the committed pattern table, re-reading only when a state file changed."""

    def __init__(self, state_dir: str, key_fields: Sequence[str], expose_examples: bool) -> None:
        self.state_dir = state_dir
        self.key_fields = list(key_fields)
        self.expose_examples = expose_examples
        # One reader at a time: a burst of requests costs one read of the state, not one each.
        self._lock = threading.Lock()
        self._stamp: object = None
        self._doc: dict[str, Any] | None = None

    def _stamp_now(self) -> object:
        stamp = []
        try:
            with os.scandir(self.state_dir) as it:
                for e in it:
                    try:
                        st = e.stat()
                    except FileNotFoundError:
                        continue  # pruned by the daemon since the listing: not part of the state
                    stamp.append((e.name, st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError as e:
            raise StateUnavailable(f"cannot read the state dir: {e.strerror}") from None
        return sorted(stamp)

    def _read(self) -> dict[str, Any]:
        notes: list[str] = []
        for _ in range(READ_ATTEMPTS):
            try:
                rec = ck.recover(self.state_dir, repair=False)
            except OSError as e:
                notes = [f"cannot read the state dir: {e.strerror}"]
                continue
            if rec.outcome in ("fresh", "clean", "fallback"):
                settings = rec.state.settings
                doc = patterns_document(rec.state, settings.key_fields if settings else self.key_fields)
                if not self.expose_examples:
                    for p in doc["patterns"]:
                        p["example"] = None
                return doc
            notes = rec.notes
        raise StateUnavailable("no consistent checkpoint: " + "; ".join(notes))

    def document(self, q: Query) -> dict[str, Any]:
        with self._lock:
            stamp = self._stamp_now()
            if self._doc is None or stamp != self._stamp:
                self._doc = self._read()
                self._stamp = stamp
            doc = self._doc
        ps: list[dict[str, Any]] = doc["patterns"]
        if q.since is not None:
            since = q.since
            ps = [p for p in ps if p["last_seen"] is not None and p["last_seen"] >= since]
        if q.top is not None:
            ps = ps[: q.top]
        return {**doc, "patterns": ps}
