"""Pattern ids and counting: pure functions of the event; the daemon's fast path agrees with `extract`."""

from __future__ import annotations

import collections
import json
import random

from hypothesis import given, settings
from hypothesis import strategies as st
from telemetryd.extract import extract_rows
from telemetryd.patterns import Extractor, PatternCounter, pattern_id


def test_pattern_ids_are_pinned() -> None:
    # Literal values: an id must never change across hosts, runs or Python versions. They are
    # BLAKE2b-64 of the compact JSON [key_fields, key_values, template], e.g.
    # b'[["event_type"],["error"],"timeout after <*> ms"]'.
    assert pattern_id(["event_type"], ["error"], "timeout after <*> ms") == "9afabb4f1a1611e9"
    assert pattern_id(["k"], [None], None) == "759f3afe5463c9a5"
    assert pattern_id([], [], "") == "7b9c5279feb7d1e7"


def test_key_values_are_strings_or_json_text() -> None:
    ex = Extractor(["a", "b.c", "d"], "message", [])
    ev = ex.schema.decoder.decode(
        b'{"a": 1.5, "b": {"c": [1, {"y": 2, "x": 1}]}, "d": null, "message": "hi"}'
    )
    key, _tpl, _ = ex.pattern_of(ev)
    assert key == ("1.5", '[1,{"x":1,"y":2}]', "null")
    ev = ex.schema.decoder.decode(b'{"b": "not an object"}')
    assert ex.pattern_of(ev)[0] == (None, None, None)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=3),
    max_leaves=6,
)
events = st.fixed_dictionaries(
    {},
    optional={
        "k": json_values,
        "j": st.sampled_from(["x", "y", 1, True]),
        "message": st.text(max_size=30)
        | json_values
        # many texts of one digit shape, some sharing a template and some not (k12 is kept)
        | st.tuples(
            st.sampled_from(["took {} ms", "key k{}", "sha{} ok", "at 0x{}-1"]), st.integers(0, 999)
        ).map(lambda t: t[0].format(t[1])),
    },
)
lines = st.one_of(
    events.map(lambda e: json.dumps(e).encode()),
    st.binary(max_size=40).filter(lambda b: b"\n" not in b),
    st.sampled_from([b"[]", b"1", b'"s"', b"", b"{", b'{"k": 1e400}', b'{"k": "\\ud800"}', b"{" * 5000]),
)


def live_counts(c: PatternCounter) -> collections.Counter[str]:
    """Counts of the patterns events are counted into now (absorbed entries are history)."""
    return collections.Counter({p.id: p.count for p in c.live_patterns()})


@settings(max_examples=150, deadline=None)
@given(st.lists(lines, max_size=30))
def test_fast_path_counts_equal_extract(batch: list[bytes]) -> None:
    ex = Extractor(["k", "j"], "message", [])
    counter = PatternCounter(ex, 1000, 200)
    block = b"".join(line + b"\n" for line in batch)
    counter.process_block(block, 1.0)
    counter.process_block(block, 2.0)  # again: the caches must not change the outcome
    want_ids: collections.Counter[str] = collections.Counter()
    want_skips: collections.Counter[str] = collections.Counter()
    # a fresh extractor over the whole input: no cache of any kind stands between a line and its pattern
    for r in extract_rows(Extractor(["k", "j"], "message", []), batch, 200):
        if "skipped" in r:
            want_skips[r["skipped"]] += 2
        else:
            want_ids[r["id"]] += 2
    got = live_counts(counter)
    assert got == want_ids
    assert collections.Counter(counter.skipped) == want_skips
    assert counter.events_total == sum(want_ids.values())


def test_large_blocks_with_bad_lines_inside_count_like_line_by_line() -> None:
    # The whole-block path gives way to the line-by-line one on a malformed line or a template value
    # that is not a string, and comes back later; counts must not depend on which path a line took.
    rnd = random.Random(3)
    good = [
        json.dumps(
            {
                "k": rnd.choice("abc"),
                "message": rnd.choice(["took %d ms", "key k%d", "up %d"]) % rnd.randint(0, 200),
            }
        )
        for _ in range(20000)
    ]
    odd = ["{", "", "[1]", '{"k": "a", "message": 5}', '{"k": {"x": 1}, "message": "m 1"}', '{"k": "a"}']
    lines = [ln if i % 997 else rnd.choice(odd) for i, ln in enumerate(good)]
    c = PatternCounter(Extractor(["k"], "message", []), 1000, 1 << 20)
    for i in range(0, len(lines), 512):
        c.process_block(("\n".join(lines[i : i + 512]) + "\n").encode(), 1.0)
    want: collections.Counter[str] = collections.Counter()
    skips: collections.Counter[str] = collections.Counter()
    for r in extract_rows(Extractor(["k"], "message", []), [ln.encode() for ln in lines], 1 << 20):
        if "skipped" in r:
            skips[r["skipped"]] += 1
        else:
            want[r["id"]] += 1
    assert live_counts(c) == want
    assert collections.Counter(c.skipped) == skips and sum(skips.values()) > 10
    assert c.events_total == sum(want.values())


def test_overflow_bucket_past_max_patterns() -> None:
    ex = Extractor(["k"], "", [])
    c = PatternCounter(ex, 3, 1 << 20)
    c.process_block(b"".join(b'{"k": "v%d"}\n' % i for i in range(10)) * 2, 1.0)
    assert len(c.table) == 3 and c.overflow_count == 14 and c.events_total == 20
    assert sum(p.count for p in c.table.values()) == 6


def test_line_length_limit_and_partial_tail_in_one_block() -> None:
    # A line of exactly max_line_bytes (its newline not counted, a CR before it counted) is an event, one
    # byte more is too_long; the bytes after `end` are a partial line and must not be counted.
    limit = 64

    def line(n: int) -> bytes:
        head = b'{"k": "a", "message": "'
        return head + b"x" * (n - len(head) - 2) + b'"}'

    exact, over = line(limit), line(limit + 1)
    assert (len(exact), len(over)) == (limit, limit + 1)
    body = exact + b"\n" + over + b"\n" + line(limit - 1) + b"\r\n" + exact + b"\r\n" + b"\n"
    partial = b'{"k": "b", "message": "not yet'
    c = PatternCounter(Extractor(["k"], "message", []), 100, limit)
    assert c.process_block(body + partial, 1.0, end=len(body)) == 2
    assert c.skipped == {"too_long": 2, "empty": 1}
    assert sorted(p.count for p in c.table.values()) == [1, 1]  # two templates: 39 and 38 x's
    assert all(p.key == ("a",) for p in c.table.values())
