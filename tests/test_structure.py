"""The structural stage: word positions that vary become <*>, decided by the set of messages (never
their order), folded into general patterns with exact counts, and rebuilt exactly after a restart."""

from __future__ import annotations

import collections
import json
import random
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from service_writer import messages
from telemetryd.extract import extract_rows
from telemetryd.patterns import Extractor, PatternCounter, PatternState
from telemetryd.structure import VARIABLE_AT, Structure

KEYS = ["service"]


def lines_of(evs: list[dict[str, str]]) -> list[bytes]:
    return [json.dumps(e).encode() for e in evs]


def counter() -> PatternCounter:
    return PatternCounter(Extractor(KEYS, "message", []), 100000, 1 << 20)


def feed(c: PatternCounter, lines: list[bytes], block: int) -> None:
    for i in range(0, len(lines), block):
        c.process_block(b"".join(ln + b"\n" for ln in lines[i : i + block]), 1.0)


def live(c: PatternCounter) -> dict[str, int]:
    return {p.id: p.count for p in c.live_patterns()}


def check_invariants(c: PatternCounter) -> None:
    # every event is in exactly one live pattern or the overflow bucket
    assert c.events_total == sum(live(c).values()) + c.overflow_count
    # the figure telemetryd_patterns and `status` show: live entries, not the folded ones kept
    assert c.live_count == len(c.live_patterns())
    # what a general pattern absorbed is exactly the counts of the entries folded into it
    into: collections.Counter[str] = collections.Counter()
    for p in c.table.values():
        if p.absorbed_into is not None:
            into[p.absorbed_into] += p.count
            assert p.absorbed_into in c.table
    for p in c.table.values():
        assert p.absorbed == into[p.id], p


def test_word_variables_become_placeholders() -> None:
    lines = lines_of(messages(3000, seed=1))
    c = counter()
    feed(c, lines, 256)
    tpls = {p.template for p in c.live_patterns()}
    assert "account <*> logged on through <*>" in tpls
    assert "table <*> scanned in <*> ms, planner chose <*>" in tpls
    assert "lane <*> drained" in tpls
    # 7 true templates, each under one service key
    assert len(tpls) == 7 and len(c.live_patterns()) == 7
    check_invariants(c)


def test_few_values_stay_message_text() -> None:
    s = Structure()
    for w in ["Started", "Paused", "Resumed"][: VARIABLE_AT - 1]:
        s.observe((), f"VM {w} on host")
    assert s.apply((), "VM Paused on host") == "VM Paused on host"
    s.observe((), "VM Stopped on host")
    assert s.apply((), "VM Paused on host") == "VM <*> on host"
    # a position once variable stays variable, and other groups are untouched
    s.observe((), "VM Paused on host")
    assert s.apply((), "VM Paused on host") == "VM <*> on host"
    assert s.apply(("k",), "VM Paused on host") == "VM Paused on host"
    assert s.apply((), "VM Paused on host now") == "VM Paused on host now"


def test_a_partly_masked_value_needs_fewer_companions() -> None:
    s = Structure()
    s.observe((), "rule expire-<*> applied")
    assert s.apply((), "rule expire-<*> applied") == "rule expire-<*> applied"
    s.observe((), "rule archive-glacier applied")
    assert s.apply((), "rule archive-glacier applied") == "rule <*> applied"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_final_table_is_the_same_for_any_order_and_block_size(seed: int) -> None:
    lines = lines_of(messages(4000, seed=5))
    c1 = counter()
    feed(c1, lines, 4000)
    rnd = random.Random(seed)
    shuffled = lines[:]
    rnd.shuffle(shuffled)
    c2 = counter()
    # uneven blocks: a fold can happen in the middle of a block
    i = 0
    while i < len(shuffled):
        n = rnd.randint(1, 700)
        feed(c2, shuffled[i : i + n], n)
        i += n
    assert live(c1) == live(c2)
    check_invariants(c1)
    check_invariants(c2)
    # and extract, over the whole input in either order, names the same patterns with the same counts
    for inp in (lines, shuffled):
        rows = list(extract_rows(Extractor(KEYS, "message", []), inp, 1 << 20))
        assert collections.Counter(r["id"] for r in rows) == collections.Counter(live(c1))


def test_extract_ids_do_not_depend_on_order() -> None:
    lines = lines_of(messages(2000, seed=9))
    by_line = {
        ln: r["id"]
        for ln, r in zip(lines, extract_rows(Extractor(KEYS, "message", []), lines, 1 << 20), strict=True)
    }
    rev = lines[::-1]
    for ln, r in zip(rev, extract_rows(Extractor(KEYS, "message", []), rev, 1 << 20), strict=True):
        assert by_line[ln] == r["id"]


def test_two_hosts_agree_on_ids_of_common_patterns() -> None:
    lines = lines_of(messages(6000, seed=11))
    a, b = counter(), counter()
    feed(a, lines[0::2], 512)
    feed(b, lines[1::2], 512)
    la, lb = live(a), live(b)
    common = {i for i in la if la[i] >= 100} & {i for i in lb if lb[i] >= 100}
    assert len(common) == 7
    assert {i for i in la if la[i] >= 100} == {i for i in lb if lb[i] >= 100}


def snapshot(c: PatternCounter) -> dict[str, PatternState]:
    """What a checkpoint commits and recovery hands back: the entries, encoded and decoded."""
    raw = msgspec.msgpack.encode(list(c.table.values()))
    return {p.id: p for p in msgspec.msgpack.decode(raw, type=list[PatternState])}


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 2999), min_size=1, max_size=6), st.integers(0, 1000))
def test_restore_at_any_point_gives_the_same_table(cuts: list[int], seed: int) -> None:
    lines = lines_of(messages(3000, seed=seed))
    want = counter()
    feed(want, lines, 300)
    c = counter()
    prev = 0
    for cut in [*sorted(set(cuts)), len(lines)]:
        feed(c, lines[prev:cut], 97)
        check_invariants(c)
        # a restart: only the committed entries survive; the structure is derived from them
        r = counter()
        r.restore(snapshot(c), c.events_total, c.overflow_count, c.skipped)
        assert live(r) == live(c)
        c = r
        prev = cut
    assert live(c) == live(want)
    check_invariants(c)


def test_a_fold_marks_both_entries_dirty() -> None:
    c = counter()
    evs = [{"service": "s", "message": f"user {n} logged in"} for n in ("alice", "bob", "carol")]
    feed(c, lines_of(evs), 10)
    c.dirty = set()
    feed(c, lines_of([{"service": "s", "message": "user dave logged in"}]), 10)
    general = [p for p in c.table.values() if p.template == "user <*> logged in"]
    assert len(general) == 1 and general[0].count == 4 and general[0].absorbed == 3
    folded = [p for p in c.table.values() if p.absorbed_into == general[0].id]
    assert len(folded) == 4  # dave's entry too: it keeps the value that made the position vary
    assert set(c.dirty) == {general[0], *folded}


def test_explain_says_why() -> None:
    evs: list[dict[str, Any]] = [
        {"service": "s", "message": f"user {n} logged in"} for n in ("al", "bo", "cy", "di")
    ]
    rows = list(extract_rows(Extractor(KEYS, "message", []), lines_of(evs), 1 << 20, explain=True))
    assert rows[0]["template"] == "user <*> logged in"
    assert rows[0]["stage0"] == "user al logged in"
    assert rows[0]["rule_template"] == "user al logged in"
    assert rows[0]["variables"][0]["piece"] == "al" and "values" in rows[0]["variables"][0]["why"]


def test_templates_sharing_a_first_word_do_not_mask_each_other() -> None:
    s = Structure()
    rnd = random.Random(4)
    flags = [f"flag {''.join(rnd.choices('abcdefgh', k=6))} set to on for tenant t{i}" for i in range(10)]
    for t in flags:
        s.observe((), "feature " + t)
    s.observe((), "feature store lookup for entity <*> missed <*> features")
    assert s.apply((), "feature store lookup for entity <*> missed <*> features") == (
        "feature store lookup for entity <*> missed <*> features"
    )
    assert s.apply((), "feature " + flags[0]) == "feature flag <*> set to on for tenant <*>"


def test_long_lowercase_context_needs_one_value_fewer() -> None:
    s = Structure()
    for ns in ("alpha", "beta", "gamma"):
        s.observe((), f"pod <*> in namespace {ns} restarted after probe failure at <*>")
    assert s.apply((), "pod <*> in namespace beta restarted after probe failure at <*>") == (
        "pod <*> in namespace <*> restarted after probe failure at <*>"
    )
    # capitalised values are message text (methods, states): they need the full threshold
    c = Structure()
    for m in ("GET", "PUT", "POST"):
        c.observe((), f"<*> {m} <*> status: <*> len: <*> time: <*> via <*> and <*>")
    assert c.apply((), "<*> GET <*> status: <*> len: <*> time: <*> via <*> and <*>").split()[1] == "GET"


def test_explain_shows_what_the_token_rules_took() -> None:
    evs = [{"service": "s", "message": "run VLd9HlQ2BCPJ by ann@corp.example took 12ms"}]
    (row,) = extract_rows(Extractor(KEYS, "message", []), lines_of(evs), 1 << 20, explain=True)
    assert row["stage0"] == "run <*> by <*> took 12ms"
    assert row["rule_template"] == row["template"] == "run <*> by <*> took <*>"
    assert row["variables"] == []
