"""Events -> patterns: key values plus a masked template, a stable id, and exact counts."""

from __future__ import annotations

import hashlib
import heapq
from collections import Counter
from collections.abc import Iterable, Sequence
from io import BytesIO
from itertools import compress, repeat
from operator import not_
from typing import Any

import msgspec
from msgspec import UNSET

from .events import (
    DECODE_ERRORS,
    INVALID_UTF8,
    TOO_LONG,
    EventSchema,
    json_text,
    skip_reason,
)
from .masking import DIGIT_SHAPE, RULESET_VERSION, Masker

# PatternState is a committed record: it lives in records.py (the bottom layer) since issue 14.
from .records import PatternState as PatternState

EXAMPLE_MAX_CHARS = 1024
# Bounds of the hot-path caches: unique messages (ids, timestamps in text) would otherwise grow them
# without limit. Clearing when full is crude but keeps the common case (repeats) fast.
FAST_CACHE_MAX = 1 << 16
TEMPLATE_CACHE_MAX = 1 << 16
# After a block the whole-block path could not take (a malformed line, a template value that is not a
# string), this many blocks go line by line before it is tried again.
BLOCK_PATH_BACKOFF = 8

_NO_ENTRY = object()


def pattern_id(key_fields: Sequence[str], key: Sequence[str | None], template: str | None) -> str:
    """BLAKE2b of a canonical JSON encoding: equal on every host, process and Python version."""
    canon = msgspec.json.encode([list(key_fields), list(key), template])
    return hashlib.blake2b(canon, digest_size=8).hexdigest()


class _Marker:
    """A hot-path cache value that is not a pattern. False in a boolean context, unlike a pattern, so one
    pass in C (compress over map(not_, ...)) picks out the few events that need the slow path."""

    __slots__ = ()

    def __bool__(self) -> bool:
        return False


# EXACT marks a digit shape whose texts must each be masked on their own; MISS is what a lookup of an
# unknown entry returns.
EXACT = _Marker()
MISS = _Marker()


def settings_digest(key_fields: Sequence[str], template_field: str, masks: Iterable[tuple[str, str]]) -> str:
    """Digest of everything that shapes counts; a change means old counts cannot be continued."""
    canon = msgspec.json.encode(
        {
            "key_fields": list(key_fields),
            "template_field": template_field,
            "masks": [list(m) for m in masks],
            "ruleset": RULESET_VERSION,
        }
    )
    return hashlib.blake2b(canon, digest_size=8).hexdigest()


class Extractor:
    """Event -> (key, template, id) for one config; shared by the daemon and `telemetryd extract`."""

    def __init__(
        self, key_fields: Sequence[str], template_field: str, masks: Sequence[tuple[str, str]]
    ) -> None:
        self.schema = EventSchema(key_fields, template_field)
        self.key_fields = self.schema.key_fields
        self.masker = Masker(masks)
        self.digest = settings_digest(key_fields, template_field, masks)
        self._tcache: dict[str, str] = {}
        # Template by digit shape (masking.DIGIT_SHAPE), for shapes whose texts all share one; None
        # marks a shape whose texts must each be masked.
        self._scache: dict[bytes, str | None] = {}

    def template(self, raw: Any) -> tuple[str | None, str]:
        """(template, example text) of a template field's raw value."""
        if raw is UNSET:
            return None, ""
        text = raw if type(raw) is str else json_text(raw)
        return self.text_template(text)[0], text

    def text_template(self, text: str) -> tuple[str, bytes | None, bool]:
        """(template, digit shape, whether every text of that shape has this template). The shape is None
        for a text that cannot be encoded (a lone surrogate, from a caller other than the decoder)."""
        try:
            shape: bytes | None = text.encode().translate(DIGIT_SHAPE)
        except UnicodeEncodeError:
            shape = None
        entry: object = _NO_ENTRY
        if shape is not None:
            entry = self._scache.get(shape, _NO_ENTRY)
            if type(entry) is str:
                return entry, shape, True
        cached = self._tcache.get(text)
        if cached is None:
            cached = self.masker.template(text)
            if len(self._tcache) >= TEMPLATE_CACHE_MAX:
                self._tcache.clear()
            self._tcache[text] = cached
        if shape is None:
            return cached, None, False
        if entry is _NO_ENTRY:
            shared = self.masker.shared_by_shape(text, cached)
            if len(self._scache) >= TEMPLATE_CACHE_MAX:
                self._scache.clear()
            self._scache[shape] = cached if shared else None
            return cached, shape, shared
        return cached, shape, False

    def pattern_of(self, event: Any) -> tuple[tuple[str | None, ...], str | None, str]:
        key = self.schema.key_values(self.schema.raw_key(event))
        tpl, _ = self.template(self.schema.raw_template(event))
        return key, tpl, pattern_id(self.key_fields, key, tpl)


class PatternCounter:
    """The pattern table: exact counts, the overflow bucket, skip counters and the dirty set.

    Everything a checkpoint needs to commit together with the file offsets lives here.
    """

    def __init__(self, extractor: Extractor, max_patterns: int, max_line_bytes: int) -> None:
        self.ex = extractor
        self.max_patterns = max_patterns
        self.max_line_bytes = max_line_bytes
        # By pattern id: recovery hands over its own dict of a million patterns as it is, with no rebuild
        # (a slow-path lookup pays for computing the id instead).
        self.table: dict[str, PatternState] = {}
        self.events_total = 0
        self.overflow_count = 0
        self.skipped: dict[str, int] = {}
        # Patterns changed since the last checkpoint was cut: a checkpoint writes only these.
        self.dirty: set[PatternState] = set()
        # The hot path's cache: (*raw key values, digit shape of the template text) -> pattern, where the
        # shape is masking.DIGIT_SHAPE applied to the UTF-8 text; or (*raw key values, UNSET) when the
        # event has no template field. Raw keys are cached only when all are plain strings.
        self._fast: dict[tuple[Any, ...], PatternState | _Marker | None] = {}
        self._kcache: dict[tuple[Any, ...], tuple[str | None, ...]] = {}
        self._block_path_off = 0

    def restore(
        self, patterns: dict[str, PatternState], events_total: int, overflow: int, skipped: dict[str, int]
    ) -> None:
        """Take over the recovered patterns (by id); the dict becomes the counter's own."""
        self.table = patterns
        self.events_total = events_total
        self.overflow_count = overflow
        self.skipped = dict(skipped)
        self.dirty = set()
        self._fast = {}
        self._kcache = {}

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + n

    def _lookup(self, raw_key: tuple[Any, ...], raw_tpl: Any, now: float) -> PatternState | None:
        """The slow path: normalise, mask, find or create the pattern, and fill the hot-path caches."""
        ex = self.ex
        # Keys repeat far more than messages do: normalise each distinct raw key once.
        try:
            key = self._kcache[raw_key]
            plain_key = True
        except (KeyError, TypeError):
            key = ex.schema.key_values(raw_key)
            # Only plain strings are cached by raw value: 1, 1.0 and true hash alike but are different keys.
            plain_key = all(type(v) is str or v is UNSET for v in raw_key)
            if plain_key:
                if len(self._kcache) >= FAST_CACHE_MAX:
                    self._kcache.clear()
                self._kcache[raw_key] = key
        shape, shared = None, False
        if type(raw_tpl) is str:
            text = raw_tpl
            tpl: str | None
            tpl, shape, shared = ex.text_template(text)
        else:
            tpl, text = ex.template(raw_tpl)
        pid = pattern_id(ex.key_fields, key, tpl)
        p = self.table.get(pid)
        if p is None and len(self.table) < self.max_patterns:
            p = PatternState(pid, key, tpl, 0, now, now, text[:EXAMPLE_MAX_CHARS])
            self.table[pid] = p
        if not plain_key:
            return p
        fast = self._fast
        if len(fast) >= FAST_CACHE_MAX:
            fast.clear()
        if shape is not None:
            fast[(*raw_key, shape)] = p if shared else EXACT
            if not shared:
                fast[(*raw_key, text)] = p  # an EXACT shape's texts are looked up one by one
        elif raw_tpl is UNSET:
            fast[(*raw_key, UNSET)] = p
        # else: 1, 1.0 and true hash alike but give different templates; not cached
        return p

    def process_block(self, block: bytes, now: float, end: int | None = None) -> int:
        """Count the lines of `block[:end]` (complete lines, each ending in a newline; the bytes after
        `end`, if any, are a partial line with no newline, and are ignored). Returns events counted."""
        if end is None:
            end = len(block)
        if not block.isascii():
            if end < len(block):
                block = block[:end]
            try:
                block.decode("utf-8")
            except UnicodeDecodeError:
                return self._process_mixed(block, now)
        # BytesIO finds line ends with memchr: three times faster than bytes.split, which steps byte by
        # byte. The lines keep their newline, which the decoder takes as white space.
        lines = BytesIO(block).readlines()
        if end < len(block):
            lines.pop()  # the partial line after `end`
        limit = self.max_line_bytes + 1
        if end > limit and max(map(len, lines)) > limit:
            self.skip(TOO_LONG, sum(1 for ln in lines if len(ln) > limit))
            lines = [ln for ln in lines if len(ln) <= limit]
        return self._count(lines, now)

    def _process_mixed(self, block: bytes, now: float) -> int:
        good: list[bytes] = []
        lines = block.split(b"\n")
        lines.pop()
        for ln in lines:
            if len(ln) > self.max_line_bytes:
                self.skip(TOO_LONG)
                continue
            try:
                ln.decode("utf-8")
            except UnicodeDecodeError:
                self.skip(INVALID_UTF8)
                continue
            good.append(ln)
        return self._count(good, now)

    def _count(self, lines: list[bytes], now: float) -> int:
        """Count decodable lines, skip the rest."""
        if self._block_path_off:
            self._block_path_off -= 1
            return self._count_each(lines, False, now)
        try:
            events = list(map(self.ex.schema.decoder.decode, lines))
        except DECODE_ERRORS:
            self._block_path_off = BLOCK_PATH_BACKOFF
            return self._count_each(lines, False, now)
        return self._count_events(events, now)

    def _count_events(self, events: list[Any], now: float) -> int:
        """Count decoded events. Per event only C code runs when every (key, message shape) is cached."""
        schema = self.ex.schema
        try:
            keys = [map(get, events) for get in schema.key_getters]
            if schema.template_field:
                texts = map(str.encode, map(schema.raw_template, events))
                shapes: Iterable[Any] = map(bytes.translate, texts, repeat(DIGIT_SHAPE))
            else:
                shapes = repeat(UNSET)
            entries = zip(*keys, shapes, strict=False)
            found = list(map(self._fast.get, entries, repeat(MISS)))
        except (TypeError, ValueError):  # a template value that is not a string, an unhashable key
            self._block_path_off = BLOCK_PATH_BACKOFF
            return self._count_each(events, True, now)
        tally = Counter(found)
        if tally.pop(MISS, 0) + tally.pop(EXACT, 0):
            # Only these few events run Python: compress() steps over the others in C. Overflow (None)
            # is false too, but already counted.
            fast = self._fast
            for ev, f in compress(zip(events, found, strict=True), map(not_, found)):
                if f is not None:
                    k, m = schema.raw_key(ev), schema.raw_template(ev)
                    p = fast.get((*k, m), MISS) if f is EXACT else MISS
                    tally[self._lookup(k, m, now) if p is MISS else p] += 1
        overflow = tally.pop(None, 0)
        dirty_add = self.dirty.add
        for p, n in tally.items():
            assert isinstance(p, PatternState)
            p.count += n
            p.last_seen = now
            dirty_add(p)
        self.events_total += len(found)
        self.overflow_count += overflow
        return len(found)

    def _count_each(self, items: list[Any], decoded: bool, now: float) -> int:
        """One by one: `items` are lines (a line that does not decode is skipped with its reason) or,
        if `decoded`, events."""
        decode = self.ex.schema.decoder.decode
        raw_key = self.ex.schema.raw_key
        raw_tpl = self.ex.schema.raw_template
        fast = self._fast
        shape_table = DIGIT_SHAPE
        lookup = self._lookup
        dirty_add = self.dirty.add
        counted = 0
        overflow = 0
        for item in items:
            if decoded:
                ev = item
            else:
                try:
                    ev = decode(item)
                except DECODE_ERRORS as e:
                    self.skip(skip_reason(item, e))
                    continue
            k = raw_key(ev)
            m = raw_tpl(ev)
            try:
                p = fast.get((*k, m.encode().translate(shape_table)), MISS)
            except AttributeError:  # the template value is not a string
                try:
                    p = fast.get((*k, m), MISS)
                except TypeError:
                    p = MISS
            except (TypeError, ValueError):
                p = MISS
            if p is EXACT:
                p = fast.get((*k, m), MISS)
            if isinstance(p, _Marker):
                p = lookup(k, m, now)
            if p is None:
                overflow += 1
                continue
            p.count += 1
            p.last_seen = now
            dirty_add(p)
            counted += 1
        self.events_total += counted + overflow
        self.overflow_count += overflow
        return counted + overflow

    def top(self, n: int | None = None) -> list[PatternState]:
        def order(p: PatternState) -> tuple[int, str]:
            return (-p.count, p.id)

        if n is None:
            return sorted(self.table.values(), key=order)
        # The stats pass asks for a few of many: no full sort every half second.
        return heapq.nsmallest(n, self.table.values(), key=order)
