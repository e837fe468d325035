"""Hostile input, fuzzed: whatever the bytes, counting never raises, every line is either counted or
skipped with a reason, and what was counted can be checkpointed and printed.

Runs the daemon's own counting code (PatternCounter.process_block, the call the main loop makes for each
block of complete lines) in-process, so hypothesis can try thousands of inputs; the same kinds of lines
go through the real daemon in test_faults.py::test_hostile_lines_through_the_daemon_each_counted_or_skipped.
"""

from __future__ import annotations

import json
import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from telemetryd import checkpoint as ck
from telemetryd.events import SKIP_REASONS
from telemetryd.patterns import Extractor, PatternCounter

KEY_FIELDS = ["k", "a.b"]
MAX_LINE = 4096

# Text with everything Unicode has, lone surrogates included (hypothesis leaves them out by default).
any_text = st.text(alphabet=st.characters(blacklist_categories=()), max_size=30)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | any_text
)
json_values = st.recursive(
    scalars,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(any_text, kids, max_size=4),
    max_leaves=12,
)


def _dumps(v: Any, ascii_only: bool) -> bytes:
    # ensure_ascii=False + surrogatepass: lone surrogates as raw (invalid) UTF-8; True: as \ud800 escapes.
    return json.dumps(v, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


@st.composite
def json_object_lines(draw: st.DrawFn) -> bytes:
    obj: dict[str, Any] = {}
    for name in draw(st.lists(st.sampled_from(["k", "a", "message", "x", ""]), max_size=5)):
        obj[name] = draw(json_values)
    if draw(st.booleans()):
        obj["a"] = {"b": draw(json_values)}
    line = _dumps(obj, draw(st.booleans()))
    if draw(st.booleans()) and line.startswith(b"{") and len(line) > 2:
        # Duplicate keys: the same field again, with another value of any type.
        line = line[:-1] + b', "k": ' + _dumps(draw(json_values), True) + b"}"
    return line


@st.composite
def nested_lines(draw: st.DrawFn) -> bytes:
    depth = draw(st.integers(1, 3000))
    open_, close = draw(st.sampled_from([(b"[", b"]"), (b'{"k":', b"}"), (b'{"a":{"b":', b"}}")]))
    inner = draw(st.sampled_from([b"1", b'"x"', b"null", b"[]", b"{}"]))
    line = open_ * depth + inner + close * depth
    return b'{"k": ' + line + b"}" if draw(st.booleans()) else line


huge_numbers = st.one_of(
    st.integers(1, 5000).map(lambda n: b'{"k": ' + b"9" * n + b"}"),
    st.integers(-100000, 100000).map(lambda e: b'{"k": 1e%d, "message": 2.5E%d}' % (e, -e)),
    st.integers(1, 400).map(lambda n: b'{"k": -0.' + b"0" * n + b"1}"),
)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid line with hostile bytes spliced in: NUL, stray quotes, invalid UTF-8, bits flipped."""
    line = bytearray(draw(json_object_lines()))
    for _ in range(draw(st.integers(1, 3))):
        pos = draw(st.integers(0, len(line)))
        line[pos:pos] = draw(st.sampled_from([b"\x00", b'"', b"\\", b"\xff", b"\xed\xa0\x80", b"}", b"\x7f"]))
    return bytes(line)


any_line = st.one_of(
    st.binary(max_size=200),
    json_object_lines(),
    nested_lines(),
    huge_numbers,
    mutated(),
    st.integers(MAX_LINE - 2, MAX_LINE + 50).map(lambda n: b'{"k": "' + b"y" * n + b'"}'),
).map(lambda b: b.replace(b"\n", b""))


def _counter() -> PatternCounter:
    return PatternCounter(Extractor(KEY_FIELDS, "message", []), 50, MAX_LINE)


def _snapshot(c: PatternCounter) -> tuple[int, int, dict[str, int], dict[str, int]]:
    return (
        c.events_total,
        c.overflow_count,
        dict(c.skipped),
        {p.id: p.count for p in c.table.values()},
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(any_line, min_size=1, max_size=12))
def test_every_line_is_counted_or_skipped_and_state_stays_writable(lines: list[bytes]) -> None:
    block = b"\n".join(lines) + b"\n"
    c = _counter()
    c.process_block(block, 1000.0)
    events, overflow, skipped, counts = _snapshot(c)
    assert events + sum(skipped.values()) == len(lines)
    assert set(skipped) <= set(SKIP_REASONS)
    assert sum(counts.values()) + overflow == events
    # A block is counted as its lines one by one would be: the fast path (valid UTF-8 block) and the
    # line-by-line path agree.
    one = _counter()
    for ln in lines:
        one.process_block(ln + b"\n", 1000.0)
    assert _snapshot(one) == (events, overflow, skipped, counts)
    # What was counted can be committed and read back, and printed as patterns --json would.
    for p in c.table.values():
        assert re.fullmatch(r"[0-9a-f]{16}", p.id)
        assert all(v is None or type(v) is str for v in p.key)
    delta = ck.Delta(1, 1000.0, ck.Totals(events, overflow, len(block), skipped), [], [], list(c.dirty))
    back = ck._record_decoder.decode(ck.encode_delta(delta))
    assert isinstance(back, ck.Delta)
    assert {p.id: (tuple(p.key), p.template, p.count) for p in back.patterns} == {
        p.id: (tuple(p.key), p.template, p.count) for p in c.dirty
    }
    doc = [
        {"key": dict(zip(KEY_FIELDS, p.key, strict=True)), "template": p.template} for p in c.table.values()
    ]
    json.dumps(doc, ensure_ascii=False).encode("utf-8")  # strict: no lone surrogates got through


@settings(max_examples=50, deadline=None)
@given(st.lists(json_object_lines(), min_size=1, max_size=30), st.integers(1, 60))
def test_key_of_every_json_type_is_stable_text(lines: list[bytes], cut: int) -> None:
    """Splitting the same lines into blocks differently never changes a count or an id."""
    whole = _counter()
    whole.process_block(b"".join(ln.replace(b"\n", b"") + b"\n" for ln in lines), 1.0)
    parts = _counter()
    clean = [ln.replace(b"\n", b"") + b"\n" for ln in lines]
    for i in range(0, len(clean), cut):
        parts.process_block(b"".join(clean[i : i + cut]), 1.0)
    assert _snapshot(parts) == _snapshot(whole)
