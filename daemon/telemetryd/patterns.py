"""Events -> patterns: key values plus a masked template, a stable id, and exact counts."""

from __future__ import annotations

import hashlib
import heapq
from collections import Counter
from collections.abc import Iterable, Sequence
from io import BytesIO
from itertools import compress, repeat
from typing import Any

import msgspec
from msgspec import UNSET

from . import typed_values
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
from .structure import VARIABLE_AT, GroupKey, Structure
from .typed_values import (
    ACCELERATED,
    HAS_DIGIT,
    PLAN_MAX_CHARS,
    Key,
    Plans,
    intern,
    learn,
    plannable,
    put_plan,
    select_plan,
)

# One bound for three things: the example kept, the texts the structural stage reads, and the texts plans
# apply to (typed_values.plannable): a longer text gets no structural stage, so no plan may speak for it.
EXAMPLE_MAX_CHARS = PLAN_MAX_CHARS
# Bounds of the hot-path caches: unique messages (ids, timestamps in text) would otherwise grow them
# without limit. Clearing when full is crude but keeps the common case (repeats) fast.
FAST_CACHE_MAX = 1 << 16
TEMPLATE_CACHE_MAX = 1 << 16
# Blocks are counted this many bytes at a time (process_block).
CHUNK_BYTES = 1 << 17
# After a block the whole-block path could not take (a malformed line, a template value that is not a
# string), this many blocks go line by line before it is tried again.
BLOCK_PATH_BACKOFF = 8


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
# What a hot-path cache holds: a pattern, a marker, or None (the pattern table is full: overflow).
Entry = PatternState | _Marker | None
# When nearly every text of a block missed the first level even after it was taught (service
# telemetry: every text has an id), this many blocks go straight to the second; then it is tried again,
# and each time it misses again twice as many go by, up to FIRST_LEVEL_SKIP_MAX (32 MiB of 128 KiB
# parts: a workload that changes to texts without ids gets its first level back within that).
FIRST_LEVEL_SKIP = 16
FIRST_LEVEL_SKIP_MAX = 256


def settings_digest(key_fields: Sequence[str], template_field: str, masks: Iterable[tuple[str, str]]) -> str:
    """Digest of everything that shapes counts; a change means old counts cannot be continued."""
    canon = msgspec.json.encode(
        {
            "key_fields": list(key_fields),
            "template_field": template_field,
            "masks": [list(m) for m in masks],
            "ruleset": RULESET_VERSION,
            "structure": VARIABLE_AT,
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
        # Rule template by digit shape of the stage-0 text (masking.DIGIT_SHAPE), for shapes whose texts
        # all share one.
        self._scache: dict[bytes, str] = {}

    def template(self, raw: Any) -> tuple[str | None, str]:
        """(template, example text) of a template field's raw value."""
        if raw is UNSET:
            return None, ""
        text = raw if type(raw) is str else json_text(raw)
        return self.text_template(text)[0], text

    def text_template(self, text: str) -> tuple[str, str, bytes | None, bytes | None]:
        """(template, stage-0 text, digit shape of the text, digit shape of its stage-0 text). The shapes
        are None for a text that cannot be encoded (a lone surrogate, from a caller other than the
        decoder).

        The template is a function of the stage-0 text (masking.Masker.prepare), and stage 0 treats the
        digits as one class, so texts of one digit shape have stage-0 texts of one digit shape."""
        prepared = self.masker.prepare(text)
        try:
            shape: bytes | None = text.encode().translate(DIGIT_SHAPE)
            shape0: bytes | None = prepared.encode().translate(DIGIT_SHAPE)
        except UnicodeEncodeError:
            shape = shape0 = None
        if shape0 is not None:
            entry = self._scache.get(shape0)
            if entry is not None:
                return entry, prepared, shape, shape0
        cached = self._tcache.get(prepared)
        if cached is None:
            cached = self.masker.template_prepared(prepared)
            if len(self._tcache) >= TEMPLATE_CACHE_MAX:
                self._tcache.clear()
            self._tcache[prepared] = cached
        if shape0 is not None and self.masker.shared_by_shape(prepared, cached):
            if len(self._scache) >= TEMPLATE_CACHE_MAX:
                self._scache.clear()
            self._scache[shape0] = cached
        return cached, prepared, shape, shape0

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
        # Entries folded into a more general pattern: kept in the table, but no longer patterns that
        # events are counted into (telemetryd_patterns and `status` show the others).
        self.folded = 0
        self.events_total = 0
        self.overflow_count = 0
        self.skipped: dict[str, int] = {}
        # Patterns changed since the last checkpoint was cut: a checkpoint writes only these.
        self.dirty: set[PatternState] = set()
        # The hot path's cache: (*raw key values, digit shape of the template text) -> pattern, where the
        # shape is masking.DIGIT_SHAPE applied to the UTF-8 text; or (*raw key values, UNSET) when the
        # event has no template field. Raw keys are cached only when all are plain strings.
        self._fast: dict[tuple[Any, ...], PatternState | _Marker | None] = {}
        # The second level, for events the first misses: (raw key values, typed_values.key of the text).
        # Ids and other typed values are gone from that key, and its plans blank the names and shorten
        # the numbers the structural stage and the rules mask, so service messages share entries.
        # By raw key values: the plans of their keys (typed_values.py; derived from what the slow path
        # saw: the structural stage works per key, so its plans do too) and the entries by key. One
        # dict lookup per event finds both; `_second_size` counts key values and entries, to bound them.
        self._second: dict[tuple[Any, ...], tuple[Plans, dict[Key, Entry]]] = {}
        self._second_size = 0
        self._kcache: dict[tuple[Any, ...], tuple[str | None, ...]] = {}
        # Plans cut down, with the structural stage's generation at the cut (see _learn).
        self._cut: dict[tuple[tuple[Any, ...], bytes], int] = {}
        self._generation = 0
        self._block_path_off = 0
        # The first level is skipped while it mostly misses, if the key is C code (a speed choice only:
        # both levels give every text its own pattern).
        self._may_skip_first = ACCELERATED and bool(extractor.schema.template_field)
        self._skip_first = 0
        self._skip_len = FIRST_LEVEL_SKIP
        self._taught = False
        # The structural stage (structure.py) and, per group, its live (not absorbed) entries: what a
        # position becoming variable folds. Both are derived from the table, never committed.
        self.structure = Structure()
        self._live: dict[GroupKey, list[PatternState]] = {}
        # After a restore the structure is derived when a new template first needs it, not before
        # READY: recovery hands over a million patterns in O(1) and must stay so.
        self._structure_ready = True

    def restore(
        self, patterns: dict[str, PatternState], events_total: int, overflow: int, skipped: dict[str, int]
    ) -> None:
        """Take over the recovered patterns (by id); the dict becomes the counter's own."""
        self.table = patterns
        self.folded = sum(1 for p in patterns.values() if p.absorbed_into is not None)
        self.events_total = events_total
        self.overflow_count = overflow
        self.skipped = dict(skipped)
        self.dirty = set()
        self._fast = {}
        self._second = {}
        self._second_size = 0
        self._kcache = {}
        self._cut = {}
        self._structure_ready = False

    def _derive_structure(self) -> None:
        """Rebuild the structural stage from the committed entries (structure.py says why it is exact)."""
        self._structure_ready = True
        st = self.structure = Structure()
        live: dict[GroupKey, list[PatternState]] = {}
        for p in self.table.values():
            if p.template is None or len(p.example) >= EXAMPLE_MAX_CHARS:
                continue
            gk, _ = st.observe_in_group(p.key, p.template)
            if p.absorbed_into is None:
                live.setdefault(gk, []).append(p)
        self._live = live

    @property
    def live_count(self) -> int:
        return len(self.table) - self.folded

    def live_patterns(self) -> list[PatternState]:
        """The patterns events are counted into now: every entry not folded into a more general one."""
        return [p for p in self.table.values() if p.absorbed_into is None]

    def _entry(
        self, key: tuple[str | None, ...], tpl: str | None, text: str, now: float
    ) -> PatternState | None:
        """The pattern of (key, rule template), creating it if the cap allows; None means overflow."""
        ex = self.ex
        if not self._structure_ready:
            self._derive_structure()
        structural = tpl is not None and len(text) < EXAMPLE_MAX_CHARS
        t = self.structure.apply(key, tpl) if structural and tpl is not None else tpl
        pid = pattern_id(ex.key_fields, key, t)
        p = self.table.get(pid)
        if p is not None:
            return p
        if len(self.table) >= self.max_patterns:
            return None
        p = PatternState(pid, key, t, 0, now, now, text[:EXAMPLE_MAX_CHARS])
        self.table[pid] = p
        self.dirty.add(p)
        if not structural or t is None or tpl is None:
            return p
        # Only a template that got an entry teaches the structure, so the structure stays a function of
        # the committed entries; the entry is made before folding so that it keeps its value.
        st = self.structure
        gk = st.group_of(key, t)[0]
        self._live.setdefault(gk, []).append(p)
        changed = st.observe(key, tpl)
        if changed is not None:
            self._generation += 1
            self._generalise(changed, now)
        while p.absorbed_into is not None:
            p = self.table[p.absorbed_into]
        return p

    def _generalise(self, gk: GroupKey, now: float) -> None:
        """Fold every live entry of group `gk` whose template changed into the more general pattern.

        Counts move inside the table only: the general pattern's count and `absorbed` grow by the
        entry's count, the entry keeps its count and names the general pattern in `absorbed_into`. Both
        are marked dirty, so the record that commits this also commits the offsets of the line that
        caused it."""
        st = self.structure
        kf = self.ex.key_fields
        keep: list[PatternState] = []
        folded: list[tuple[PatternState, str]] = []
        for e in self._live.get(gk, []):
            assert e.template is not None
            nt = st.apply(e.key, e.template)
            if nt == e.template:
                keep.append(e)
            else:
                folded.append((e, nt))
        for e, nt in folded:
            pid = pattern_id(kf, e.key, nt)
            g = self.table.get(pid)
            if g is None:
                # Beyond max_patterns too: a general pattern only ever replaces several.
                g = PatternState(pid, e.key, nt, 0, e.first_seen, e.last_seen, e.example)
                self.table[pid] = g
                keep.append(g)
            g.count += e.count
            g.absorbed += e.count
            g.first_seen = min(g.first_seen, e.first_seen)
            g.last_seen = max(g.last_seen, e.last_seen)
            e.absorbed_into = pid
            self.folded += 1
            self.dirty.add(e)
            self.dirty.add(g)
        self._live[gk] = keep
        # The hot-path caches are kept: an entry they name may now be folded, and whoever counts into
        # it follows `absorbed_into` to the general pattern, which is the pattern its texts have now
        # (masking is monotone: the general template of the folded template is that of its texts).

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
        shape = shape0 = None
        prepared = ""
        if type(raw_tpl) is str:
            text = raw_tpl
            tpl: str | None
            tpl, prepared, shape, shape0 = ex.text_template(text)
        else:
            tpl, text = ex.template(raw_tpl)
        p = self._entry(key, tpl, text, now)
        if not plain_key:
            return p
        fast = self._fast
        if len(fast) >= FAST_CACHE_MAX:
            fast.clear()
        if self._second_size >= FAST_CACHE_MAX:
            self._second.clear()
            self._second_size = 0
            self._cut.clear()
        if shape is not None and shape0 is not None and tpl is not None:
            # Shared by every text of this digit shape when the template this text gets now keeps no
            # digit: every piece with a digit is then masked by a rule or by the structural stage, which
            # masks it for the texts of that shape too (docs/design.md, "Cache keys and plans").
            final = p.template if p is not None and p.template is not None else tpl
            shared = ex.masker.shared_by_shape(prepared, final)
            fast[(*raw_key, shape)] = p if shared else EXACT
            key0: Key | None = shape0
            # A text with no digit whose template the structural stage left alone teaches no plan;
            # unless plans exist for its key values (one may need cutting), its key is shape0.
            sec = self._second.get(raw_key)
            if sec is None:
                sec = self._second[intern(raw_key)] = ({}, {})
                self._second_size += 1  # key values count too: each may hold no entry
            plans, entries = sec
            learns = final != tpl or HAS_DIGIT.search(text) is not None or bool(plans)
            if learns and ex.masker.plans_apply and plannable(text):
                key0 = self._learn(raw_key, plans, text, prepared, tpl, final)
            if key0 is not None:
                # Under a plan, the digits of the template are in kept tokens (_learn sees to it).
                ok = shared if key0[:1] != b"\xff" else ex.masker.digits_are_one_class(prepared)
                if key0 not in entries:
                    self._second_size += 1
                entries[key0] = p if ok else EXACT
            if not shared:
                fast[(*raw_key, text)] = p  # an EXACT shape's texts are looked up one by one
        elif raw_tpl is UNSET:
            fast[(*raw_key, UNSET)] = p
        # else: 1, 1.0 and true hash alike but give different templates; not cached
        return p

    def _learn(
        self,
        raw_key: tuple[Any, ...],
        plans: Plans,
        text: str,
        prepared: str,
        rule_template: str,
        template: str,
    ) -> Key | None:
        """Teach the plans what the structural stage masked in `template`; the text's key under them.

        An entry may be stored under a plan only by a text whose template masks every position the
        plan blanks (docs/design.md, "Cache keys and plans"): a plan that blanks more is cut down to
        what this text masks."""
        masker = self.ex.masker
        learnt = learn(prepared, rule_template, template)
        if learnt is None:
            # Plans cannot speak for this text (a rule merged tokens): never store under one.
            k = masker.key_fn(text, plans)
            return None if k[:1] == b"\xff" else k
        toks, plan, pk = learnt
        masked, keep, _, numbers = plan
        cur = plans.get(pk)
        if cur is None:
            if masked or keep or numbers:
                if len(plans) >= FAST_CACHE_MAX:
                    plans.clear()
                put_plan(plans, pk, plan)
        elif type(cur) is tuple and cur != plan and self._cut.get((raw_key, pk), -1) < self._generation:
            # Grow a plan (the structural stage masks more as it sees more) when this text may store
            # under the grown one, unless it was cut since the structural stage last changed: two
            # sub-groups under one plan key then cannot make it swing back and forth more often than the
            # structure changes, which it does a bounded number of times. (A plan cut for good at the
            # first cut stays cut by a text seen before its sub-group generalised: every later text
            # with a name or id in that place misses.)
            blank0, keep0, _, numbers0 = cur
            if set(blank0) <= set(masked) and set(numbers0) <= set(numbers) and set(keep0) <= set(keep):
                put_plan(plans, pk, plan)
        # Each round cuts the plan that applies down to what this text may store under (its blanks and
        # collapsed numbers to what it masked, its kept digits up to what it keeps): strictly, so it
        # ends.
        while True:
            a = select_plan(toks, plans)
            if a is None or (
                set(a.blank) <= set(masked) and set(a.keep) >= set(keep) and set(a.numbers) <= set(numbers)
            ):
                return masker.key_fn(text, plans)
            self._cut[(raw_key, a.key)] = self._generation
            # the plan applied, so its kept tokens are this text's: their shapes stay right
            now_kept = tuple(sorted({*a.keep, *keep}))
            put_plan(
                plans,
                a.key,
                (
                    tuple(j for j in a.plan[0] if j in masked or j not in a.blank),
                    now_kept,
                    tuple(toks[j] for j in now_kept),
                    tuple(j for j in a.plan[3] if (j in numbers or j not in a.numbers) and j not in now_kept),
                ),
            )

    def process_block(self, block: bytes, now: float, end: int | None = None) -> int:
        """Count the lines of `block[:end]` (complete lines, each ending in a newline; the bytes after
        `end`, if any, are a partial line with no newline, and are ignored). Returns events counted."""
        if end is None:
            end = len(block)
        # The block's events per pattern (None: the overflow bucket), added to the patterns and to the
        # totals in one place, at its end, so that counts and totals move together; and a part's
        # hundreds of events fall on tens of patterns (adding them per part cost 1.6% of the
        # instructions on service telemetry).
        tally: Counter[Any] = Counter()
        if end <= CHUNK_BYTES:
            counted = self._process_part(block, now, end, tally)
        else:
            # A part at a time, each of whole lines: its decoded events stay in the core's cache while
            # they are looked up (a 1 MiB block's 4,500 events did not: 20% more time per event).
            counted = 0
            i = 0
            while i < end:
                j = block.rfind(b"\n", i, min(i + CHUNK_BYTES, end)) + 1
                if j <= i:  # a line longer than a part: up to its end
                    j = block.find(b"\n", i, end) + 1 or end
                counted += self._process_part(block[i:j], now, j - i, tally)
                i = j
        overflow = tally.pop(None, 0)
        dirty_add = self.dirty.add
        table = self.table
        for p, n in tally.items():
            assert isinstance(p, PatternState)
            while p.absorbed_into is not None:  # cached before a fold, or folded later in this block
                p = table[p.absorbed_into]
            p.count += n
            p.last_seen = now
            dirty_add(p)
        self.events_total += counted
        self.overflow_count += overflow
        return counted

    def _process_part(self, block: bytes, now: float, end: int, tally: Counter[Any]) -> int:
        if not block.isascii():
            if end < len(block):
                block = block[:end]
            try:
                block.decode("utf-8")
            except UnicodeDecodeError:
                return self._process_mixed(block, now, tally)
        # BytesIO finds line ends with memchr: three times faster than bytes.split, which steps byte by
        # byte. The lines keep their newline, which the decoder takes as white space.
        lines = BytesIO(block).readlines()
        if end < len(block):
            lines.pop()  # the partial line after `end`
        limit = self.max_line_bytes + 1
        if end > limit and max(map(len, lines)) > limit:
            self.skip(TOO_LONG, sum(1 for ln in lines if len(ln) > limit))
            lines = [ln for ln in lines if len(ln) <= limit]
        return self._count(lines, now, tally)

    def _process_mixed(self, block: bytes, now: float, tally: Counter[Any]) -> int:
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
        return self._count(good, now, tally)

    def _count(self, lines: list[bytes], now: float, tally: Counter[Any]) -> int:
        """Count decodable lines into `tally` by pattern, skip the rest."""
        if self._block_path_off:
            self._block_path_off -= 1
            return self._count_each(lines, False, now, tally)
        try:
            events = list(map(self.ex.schema.decoder.decode, lines))
        except DECODE_ERRORS:
            self._block_path_off = BLOCK_PATH_BACKOFF
            return self._count_each(lines, False, now, tally)
        return self._count_events(events, now, tally)

    def _count_events(self, events: list[Any], now: float, tally: Counter[Any]) -> int:
        """Count decoded events. Per event only C code runs when every (key, message shape) is cached:
        the digit shape of the raw text first (bytes.translate, cheap), then, for the texts that miss,
        their key (typed_values.key: C code when the accelerator is built)."""
        schema = self.ex.schema
        one_level = self._skip_first > 0
        if one_level:
            self._skip_first -= 1
        try:
            if one_level:
                found = self._second_level(events)
            elif schema.template_attr is not None:
                found = typed_values.first_level(
                    events, schema.key_attrs, schema.template_attr, self._fast, MISS
                )
            else:  # no template field, or a nested one
                keys = [map(get, events) for get in schema.key_getters]
                if schema.template_field:
                    texts = map(str.encode, map(schema.raw_template, events))
                    shapes: Iterable[Any] = map(bytes.translate, texts, repeat(DIGIT_SHAPE))
                else:
                    shapes = repeat(UNSET)
                found = list(map(self._fast.get, zip(*keys, shapes, strict=False), repeat(MISS)))
        except (TypeError, ValueError):  # a template value that is not a string, an unhashable key
            self._block_path_off = BLOCK_PATH_BACKOFF
            return self._count_each(events, True, now, tally)
        tally.update(found)
        if tally.pop(MISS, 0) + tally.pop(EXACT, 0):
            missed = list(compress(events, map(isinstance, found, repeat(_Marker))))
            if one_level:
                found0: list[Any] = list(compress(found, map(isinstance, found, repeat(_Marker))))
            else:
                # The second level, still in C per event: the few events it misses too run Python.
                try:
                    found0 = self._second_level(missed)
                except (TypeError, ValueError):
                    found0 = [MISS] * len(missed)
                tally.update(found0)
                missed0 = tally.pop(MISS, 0) + tally.pop(EXACT, 0)
                # Teach the first level what the second had. Where nearly every text missed the first
                # level even after it was taught (service telemetry: every text has an id, so no digit
                # shape recurs), go straight to the second level for a while instead.
                idish = len(missed) * 5 > len(found) * 4 and missed0 * 4 < len(missed)
                if idish and self._taught:
                    if self._may_skip_first:
                        self._skip_first = self._skip_len
                        self._skip_len = min(2 * self._skip_len, FIRST_LEVEL_SKIP_MAX)
                else:
                    if not idish:
                        self._skip_len = FIRST_LEVEL_SKIP
                    if missed0 < len(missed):
                        self._teach_first(missed, found0)
                self._taught = idish
            self._resolve(missed, found0, tally, now)
        return len(found)

    def _second_level(self, events: list[Any]) -> list[Any]:
        """The second level's entry of each event (or MISS): by raw key values, then typed_values.key."""
        schema = self.ex.schema
        tattr = schema.template_attr
        if self.ex.masker.plans_apply and tattr is not None:
            return typed_values.lookup_events(events, schema.key_attrs, tattr, self._second, MISS)
        # User masks (the key is Masker.key_fn's) or a nested template field: the same, by the getters.
        second = self._second
        key_fn = self.ex.masker.key_fn
        out: list[Any] = []
        for ev in events:
            sec = second.get(schema.raw_key(ev))
            out.append(MISS if sec is None else sec[1].get(key_fn(schema.raw_template(ev), sec[0]), MISS))
        return out

    def _teach_first(self, missed: list[Any], found0: list[Any]) -> None:
        """Give the first level the texts the second level had, by the first level's sharing rule
        (Masker.shared_by_shape on the final template)."""
        schema = self.ex.schema
        masker = self.ex.masker
        fast = self._fast
        for ev, p in zip(missed, found0, strict=True):
            if type(p) is not PatternState or p.template is None:
                continue
            text = schema.raw_template(ev)
            if type(text) is not str or not masker.shared_by_shape(text, p.template):
                continue
            if len(fast) >= FAST_CACHE_MAX:
                fast.clear()
            fast[(*schema.raw_key(ev), text.encode().translate(DIGIT_SHAPE))] = p

    def _resolve(self, missed: list[Any], found0: list[Any], tally: Counter[Any], now: float) -> None:
        """The events no cache level had: an exact-only shape by text, the rest by the slow path."""
        schema = self.ex.schema
        fast = self._fast
        second = self._second
        key_fn = self.ex.masker.key_fn
        again = map(isinstance, found0, repeat(_Marker))
        for ev, f in compress(zip(missed, found0, strict=True), again):
            k, m = schema.raw_key(ev), schema.raw_template(ev)
            p = fast.get((*k, m), MISS) if f is EXACT else MISS
            if p is MISS and type(m) is str:
                # An earlier event of this block may have taught the entry (or the plan) since the
                # block was looked up: a block of one message's first thousand lines is one slow path.
                try:
                    sec = second.get(k)
                    p = MISS if sec is None else sec[1].get(key_fn(m, sec[0]), MISS)
                except (TypeError, ValueError):  # an unhashable key value; a lone surrogate
                    p = MISS
                if p is EXACT:
                    p = MISS
            tally[self._lookup(k, m, now) if p is MISS else p] += 1

    def _count_each(self, items: list[Any], decoded: bool, now: float, tally: Counter[Any]) -> int:
        """One by one into `tally`: `items` are lines (a line that does not decode is skipped with its
        reason) or, if `decoded`, events."""
        decode = self.ex.schema.decoder.decode
        raw_key = self.ex.schema.raw_key
        raw_tpl = self.ex.schema.raw_template
        fast = self._fast
        shape_table = DIGIT_SHAPE
        lookup = self._lookup
        counted = 0
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
            tally[p] += 1
            counted += 1
        return counted

    def top(self, n: int | None = None) -> list[PatternState]:
        def order(p: PatternState) -> tuple[int, str]:
            return (-p.count, p.id)

        if n is None:
            return sorted(self.table.values(), key=order)
        # The stats pass asks for a few of many: no full sort every half second.
        return heapq.nsmallest(n, self.table.values(), key=order)
