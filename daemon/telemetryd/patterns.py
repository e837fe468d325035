"""Events -> patterns: key values plus a masked template, a stable id, and exact counts."""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterable, Sequence
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
from .masking import RULESET_VERSION, Masker

EXAMPLE_MAX_CHARS = 1024
# Bounds of the hot-path caches: unique messages (ids, timestamps in text) would otherwise grow them
# without limit. Clearing when full is crude but keeps the common case (repeats) fast.
FAST_CACHE_MAX = 1 << 16
TEMPLATE_CACHE_MAX = 1 << 16

PatternKey = tuple[tuple[str | None, ...], str | None]


class PatternState(msgspec.Struct, array_like=True, gc=False, eq=False):
    """One pattern and its exact count. eq=False: hashed by identity, so it can sit in the dirty set."""

    id: str
    key: tuple[str | None, ...]
    template: str | None
    count: int
    first_seen: float
    last_seen: float
    example: str


def pattern_id(key_fields: Sequence[str], key: Sequence[str | None], template: str | None) -> str:
    """BLAKE2b of a canonical JSON encoding: equal on every host, process and Python version."""
    canon = msgspec.json.encode([list(key_fields), list(key), template])
    return hashlib.blake2b(canon, digest_size=8).hexdigest()


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

    def template(self, raw: Any) -> tuple[str | None, str]:
        """(template, example text) of a template field's raw value."""
        if raw is UNSET:
            return None, ""
        text = raw if type(raw) is str else json_text(raw)
        tpl = self._tcache.get(text)
        if tpl is None:
            tpl = self.masker.template(text)
            if len(self._tcache) >= TEMPLATE_CACHE_MAX:
                self._tcache.clear()
            self._tcache[text] = tpl
        return tpl, text

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
        self.table: dict[PatternKey, PatternState] = {}
        self.events_total = 0
        self.overflow_count = 0
        self.skipped: dict[str, int] = {}
        # Patterns changed since the last checkpoint was cut: a checkpoint writes only these.
        self.dirty: set[PatternState] = set()
        self._fast: dict[tuple[Any, Any], PatternState | None] = {}
        self._kcache: dict[tuple[Any, ...], tuple[str | None, ...]] = {}

    def restore(
        self, patterns: Iterable[PatternState], events_total: int, overflow: int, skipped: dict[str, int]
    ) -> None:
        self.table = {(tuple(p.key), p.template): p for p in patterns}
        self.events_total = events_total
        self.overflow_count = overflow
        self.skipped = dict(skipped)
        self.dirty = set()
        self._fast = {}
        self._kcache = {}

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + n

    def _lookup(self, raw_key: tuple[Any, ...], raw_tpl: Any, now: float) -> PatternState | None:
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
        tpl, text = ex.template(raw_tpl)
        pk = (key, tpl)
        p = self.table.get(pk)
        if p is None and len(self.table) < self.max_patterns:
            p = PatternState(
                pattern_id(ex.key_fields, key, tpl), key, tpl, 0, now, now, text[:EXAMPLE_MAX_CHARS]
            )
            self.table[pk] = p
        if plain_key and (type(raw_tpl) is str or raw_tpl is UNSET):
            if len(self._fast) >= FAST_CACHE_MAX:
                self._fast.clear()
            self._fast[(raw_key, raw_tpl)] = p
        return p

    def process_block(self, block: bytes, now: float) -> int:
        """Count every line of `block` (complete lines, each ending in a newline). Returns events counted."""
        try:
            block.decode("utf-8")
        except UnicodeDecodeError:
            return self._process_mixed(block, now)
        lines = block.split(b"\n")
        lines.pop()  # the empty piece after the final newline
        if len(block) > self.max_line_bytes:
            long = [ln for ln in lines if len(ln) > self.max_line_bytes]
            if long:
                self.skip(TOO_LONG, len(long))
                lines = [ln for ln in lines if len(ln) <= self.max_line_bytes]
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
        # The hot loop: locals only, one dict lookup per event when the (key, message) pair repeats.
        decode = self.ex.schema.decoder.decode
        raw_key = self.ex.schema.raw_key
        raw_tpl = self.ex.schema.raw_template
        fast = self._fast
        dirty_add = self.dirty.add
        counted = 0
        overflow = 0
        for line in lines:
            try:
                ev = decode(line)
            except DECODE_ERRORS as e:
                self.skip(skip_reason(line, e))
                continue
            k = raw_key(ev)
            m = raw_tpl(ev)
            try:
                p = fast[(k, m)]
            except (KeyError, TypeError):
                p = self._lookup(k, m, now)
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
