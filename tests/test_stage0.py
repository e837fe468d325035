"""Stage 0 and the hot path's cache keys (typed_values.py, _stage0.c).

- The C key and the Python definition give the same bytes, on generated texts and plans.
- A key is a sound cache key: counting through the caches (digit shapes, stage-0 keys, plans) gives the
  same pattern table, id by id and count by count, as masking every message on its own.
- `make test` builds the accelerator: with TELEMETRYD_REQUIRE_ACCEL=1 (set by the Makefile) a missing
  build fails here instead of passing on the slow path unnoticed.
"""

from __future__ import annotations

import json
import os
import random
import string
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from telemetryd import typed_values as tv
from telemetryd.events import EventSchema
from telemetryd.masking import Masker
from telemetryd.patterns import Extractor, PatternCounter, pattern_id
from telemetryd.structure import Structure

needs_c = pytest.mark.skipif(not tv.ACCELERATED, reason="the C accelerator is not built here")


def test_make_test_builds_the_accelerator() -> None:
    if os.environ.get("TELEMETRYD_REQUIRE_ACCEL") != "1":
        pytest.skip("TELEMETRYD_REQUIRE_ACCEL is not set (the Makefile sets it)")
    assert tv.ACCELERATED, "telemetryd._stage0 did not build: is a C compiler installed?"


@pytest.mark.parametrize(
    ("text", "stage0"),
    [
        ('search "blue suede shoes" by ann', "search <*> by ann"),
        ('"GET /x HTTP/1.1" 200', '"GET /x HTTP/1.1" 200'),
        ("session 2678dac2-02fe-43ba-916b-0576c76cae5c for bob", "session <*> for bob"),
        ("TLS with 2001:db8:1:2:3:4:5:6 failed", "TLS with <*> failed"),
        ("reset for ann.lee@mail.example.org. from x", "reset for <*>. from x"),
        ("mail a@b.c1 not an address", "mail a@b.c1 not an address"),
        ("uploaded /a/b/c.json (2MiB)", "uploaded <*> (2MiB)"),
        ("object bucket-prod/dir/x/62670bf026 deleted", "object <*> deleted"),
        ("seq/ack/win updated", "seq/ack/win updated"),
        ("run NKKYQG3WbIat still active", "run <*> still active"),
        ("key sk_live_FbKIYKLONVUEQkufZpHtKbIi revoked", "key <*> revoked"),
        ("getTodayTotalDetailSteps = 12", "getTodayTotalDetailSteps = 12"),
        ("FbKIYKLONVUEQkufZpH=1", "FbKIYKLONVUEQkufZpH=1"),
        ("pod web-7d4b9c8f6-x2x9z restarted", "pod <*> restarted"),
        ("host db-replica-07 down", "host db-replica-07 down"),
        ("upstream api-7.svc.cluster.local:443 slow", "upstream <*>:443 slow"),
        ("see e.g. x.py and foo.com=1", "see e.g. x.py and foo.com=1"),
    ],
)
def test_stage0_rules(text: str, stage0: str) -> None:
    assert tv.stage0(text) == tv.stage0_py(text) == stage0
    assert tv.key(text, {}) == tv.key_py(text, {}) == stage0.encode().translate(tv.DIGIT_SHAPE)


# Texts built from the pieces the alternatives look at, so that near misses are common.
_PIECES = st.sampled_from(
    [
        " ",
        "  ",
        "\t",
        "\n",
        "\x0b\x0c\r",
        "\x1c",
        '"',
        "'",
        "-",
        "_",
        ".",
        "..",
        "/",
        "//",
        ":",
        "@",
        "+",
        "=",
        "(",
        ")",
        ",",
        "a",
        "B",
        "0",
        "7",
        "f",
        "x",
        "ab12",
        "abcdef",
        "deadbeef",
        "k12",
        "GET ",
        "user",
        "from",
        "ms",
        "2678dac2-02fe-43ba-916b-0576c76cae5c",
        "2001:db8:0:1",
        "ann@corp.example",
        "a.b@c.io",
        "/var/log",
        "./x",
        "../y",
        "web-7d4b9c8f6-x2x9z",
        "r.io/img:1.2",
        "/ab:",
        "db-07:5432",
        "db-replica-07",
        "VLd9HlQ2BCPJx",
        "sk_live_",
        "FbKIYKLONVUEQkufZpHtKbIi",
        "abcdefghij",
        "ABCDEFGHIJKL",
        "eQBLhIEpqBwusYHW",
        "ABCdefghij",
        "xyzJunabcd",
        "superuser",
        "PowerUser",
        "wgnrgywe3Vgu",
        "deadbee5",
        "Monitoring",
        "é",
        "ü",
        "\x00",
    ]
)
_TEXTS = st.lists(_PIECES, max_size=40).map("".join) | st.text(max_size=60)


def _plans(*items: tuple[bytes, tv.Plan]) -> tv.Plans:
    plans: tv.Plans = {}
    for pk, plan in items:
        tv.put_plan(plans, pk, plan)
    return plans


def _plans_for(text: str, rnd: random.Random) -> tv.Plans:
    """Plans that apply, or nearly apply, to `text`: built from its own tokens."""
    toks = tv.stage0(text).encode().translate(tv.DIGIT_SHAPE).split()
    if len(toks) < 2:
        return _plans((b"x 2", ((1,), (), (), ())))
    n = len(toks)
    blank = tuple(sorted(rnd.sample(range(1, n), k=min(n - 1, rnd.randint(1, 3)))))
    keep_at = tuple(j for j in range(n) if j not in blank and rnd.random() < 0.3)
    shapes = tuple(toks[j] if rnd.random() < 0.9 else b"other" for j in keep_at)
    numbers = tuple(j for j in range(1, n) if j not in blank and j not in keep_at and rnd.random() < 0.5)
    if rnd.random() < 0.2:
        # what learn() never makes, which the two must still agree on: effects that meet at one
        # position, positions out of range
        numbers += tuple(rnd.sample(range(n + 2), k=min(n + 2, 3)))
        blank += (n + 1,)
    plan = (blank, keep_at, shapes, numbers)
    two, one = tv.plan_keys(toks)
    plans = _plans((two if rnd.random() < 0.5 else one, plan), (b"unrelated 3", ((1,), (), (), ())))
    if rnd.random() < 0.1:
        # an index entry that names both kinds, or none, whatever is stored: the two must agree
        plans[toks[0]] = rnd.choice([0, 3, -1, 2**70 + 1, "x"])  # type: ignore[assignment]
    return plans


@needs_c
@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_TEXTS, st.integers(0, 2**32))
def test_c_key_is_the_python_key(text: str, seed: int) -> None:
    plans = _plans_for(text, random.Random(seed))
    assert tv.stage0(text) == tv.stage0_py(text)
    assert tv.key(text, {}) == tv.key_py(text, {})
    assert tv.key(text, plans) == tv.key_py(text, plans)


@needs_c
def test_c_key_on_long_texts_and_many_tokens() -> None:
    rnd = random.Random(7)
    for _ in range(300):
        words = [
            rnd.choice(["a", "bb", "x1", "ann@corp.example", "/p/q", '"q w"', "k-1-2"]) for _ in range(300)
        ]
        text = " ".join(words)[: rnd.randint(1, 2000)]
        plans = _plans_for(text, rnd)
        assert tv.key(text, plans) == tv.key_py(text, plans)


def test_c_lookup_events_is_the_python_one() -> None:
    """The two levels' block calls: the same entries as the definitions, by slot or by attribute,
    misses where the raw key values are unknown, and the definitions' errors."""
    if not tv.ACCELERATED:
        pytest.skip("the C accelerator is not built here")
    from telemetryd import _stage0  # type: ignore[attr-defined]

    schema = EventSchema(["service", "level"], "message")
    rnd = random.Random(5)
    msgs = ["user ann signed in", "user bob signed in", "disk /dev/sda at 91%", "héllo wörld 3", "x"]
    lines = [
        json.dumps({"service": rnd.choice(["a", "b", "c"]), "level": "i", "message": rnd.choice(msgs)})
        for _ in range(300)
    ]
    events = [schema.decoder.decode(ln) for ln in lines]
    plans = _plans((b"user 4", ((1,), (), (), ())))
    second: dict[Any, Any] = {
        ("a", "i"): (plans, {tv.key_py(m, plans): m for m in msgs[::2]}),
        ("b", "i"): ({}, {tv.key_py(m, {}): m.upper() for m in msgs}),
    }
    miss = object()
    want = tv.lookup_events_py(events, schema.key_attrs, schema.template_attr, second, miss)
    assert _stage0.lookup_events(events, schema.key_attrs, schema.template_attr, second, miss) == want
    assert want.count(miss) not in (0, len(want))

    class Plain:  # not a Struct: no slots, read by attribute
        def __init__(self, ev: Any) -> None:
            self.__dict__.update({a: getattr(ev, a) for a in ("f0", "f1", "f2")})

    mixed = [Plain(ev) if i % 3 else ev for i, ev in enumerate(events)]
    assert _stage0.lookup_events(mixed, schema.key_attrs, schema.template_attr, second, miss) == want
    bad = [schema.decoder.decode(json.dumps({"service": "a", "level": "i", "message": 5}))]
    for fn in (tv.lookup_events_py, _stage0.lookup_events):
        with pytest.raises(TypeError):
            fn(bad, schema.key_attrs, schema.template_attr, second, miss)
        with pytest.raises(AttributeError):
            fn([object()], schema.key_attrs, schema.template_attr, second, miss)
    unhashable = [schema.decoder.decode(json.dumps({"service": ["a"], "level": "i", "message": "x"}))]
    with pytest.raises(TypeError):
        _stage0.lookup_events(unhashable, schema.key_attrs, schema.template_attr, second, miss)

    # the first level: by (raw key values, digit shape of the UTF-8 text)
    fast: dict[Any, Any] = {}
    for ev in events:
        if ev.f0 != "c":
            fast[(ev.f0, ev.f1, ev.f2.encode().translate(tv.DIGIT_SHAPE))] = ev.f2
    want = tv.first_level_py(events, schema.key_attrs, schema.template_attr, fast, miss)
    assert _stage0.first_level(events, schema.key_attrs, schema.template_attr, fast, miss) == want
    assert _stage0.first_level(mixed, schema.key_attrs, schema.template_attr, fast, miss) == want
    assert want.count(miss) not in (0, len(want))
    surrogate = [schema.struct(f0="a", f1="i", f2="\ud800 x")]  # (not from the decoder, which refuses it)
    for fn in (tv.first_level_py, _stage0.first_level):
        with pytest.raises(TypeError):
            fn(bad, schema.key_attrs, schema.template_attr, fast, miss)
        with pytest.raises(UnicodeEncodeError):
            fn(surrogate, schema.key_attrs, schema.template_attr, fast, miss)
        with pytest.raises(TypeError):
            fn(unhashable, schema.key_attrs, schema.template_attr, fast, miss)


# --- soundness: the caches never change a count ---------------------------------------------------

_TEMPLATES = [
    "user {user} signed in via {idp}",
    "session {uuid} for {user} refreshed, expires in {sec}",
    "feature flag {flag} set to {bool} for tenant {user}",
    "feature store lookup for entity {uuid} missed {small} features",
    "inference batch of {small} for {model} took {ms} (p99 {ms})",
    "cache miss for key k{small}",
    "model {model} v{small}.{small} loaded on gpu{digit} in {sec}",
    "query on {table} took {ms} rows={int} plan={plan}",
    "search {quoted} by {user} returned {int} hits",
    "password reset requested for {email} from {ip}",
    "consumer {pod} joined group {queue} generation={int}",
    # a clock time after a month name: the rules read the length of the day number before it ("Jun 7
    # 07:07:00" is one date, "Jun 777 07:07:00" is not), so no plan may collapse numbers there; a clock
    # time with no month name in the text reads no length, and numbers collapse
    "backup of {user} took {small} at Jun {small} {clock}",
    "backup of {user} took {small} at {clock}",
    # random ids of letters only, which plans blank once the structural stage masks them; some hold
    # what a rule spanning tokens reads: a month name (the date rule then reads the next two tokens), a
    # final "user" (the "user NAME" rule masks the next token), three capitals (a time zone after a date)
    "cron {user} skipped: previous run {alpha_id} still active",
    "backup of {user} took {small} at {alpha_id} {small} {clock}",
    "backup of {user} took {small} at Jun {small} {clock} {alpha_id} {small}",
    "grant {alpha_id} bob from {idp}",
    "evicted {alpha_id} KB for {user}",
    "grant {user}{userish} bob from {idp}",
    # a name before "-" and a digit (plans blank it: blank_head), with names that rules read: values
    # ("root"), named encodings ("utf-8"), units after a number ("< 5 ms-3"), the clause words of the
    # "user NAME" rule ("bob from-3"), "unknown", and a size unit after the token
    "upstream {head}:{port} responded slowly ({ms}), retrying",
    "replica {head} lag is {sec} behind primary",
    "login user {user} {head} done",
    "user {head} from {idp}",
    "latency < {small} {head} ok",
    "fetched {head} KB from cache",
    # a name between "/" and ":" (plans blank it: blank_segment), with names that rules read there: hex
    # groups when more colons follow ("dead:1:2:3"), a drive letter before ":\\", a URL scheme, values
    "image {registry}/{segment}:{tag} pulled in {sec}",
    "mounted {registry}/{segment}:{tag} at {clock}",
]


# names that a rule reads, before "-" and a digit
_READ_NAMES = ["root", "admin", "true", "utf", "ucs", "iso", "windows", "sha", "from", "to", "ms", "s"]
_READ_NAMES += ["unknown", "user", "superuser", "bf", "x", "i"]


def _service_events(seed: int, n: int) -> list[dict[str, str]]:
    rnd = random.Random(seed)

    def word(lo: int = 3, hi: int = 7) -> str:
        return "".join(rnd.choices(string.ascii_lowercase, k=rnd.randint(lo, hi)))

    def alpha_id() -> str:
        w = "".join(rnd.choices(string.ascii_letters, k=rnd.randint(6, 16)))
        if rnd.random() < 0.4:  # one digit: kept by the rules unless stage 0 took it for a random id
            at = rnd.randint(0, len(w))
            w = w[:at] + str(rnd.randint(0, 9)) + w[at:]
        if rnd.random() < 0.05:
            w = "".join(rnd.choices("abcdefABCDEF", k=len(w) - 1)) + str(rnd.randint(0, 9))  # hex
        odd = rnd.random()
        if odd < 0.1:
            return w[:4] + rnd.choice(["Jun", "Mon", "Dec"]) + w[4:]
        if odd < 0.2:
            return "EST" + w
        if odd < 0.3:
            return w + rnd.choice(["user", "User", "USER"])
        return w

    users = [word() for _ in range(rnd.randint(3, 30))]
    tables = [word() for _ in range(8)]
    values = {
        "user": lambda: rnd.choice(users),
        "idp": lambda: rnd.choice(["okta", "google", "saml"]),
        "uuid": lambda: "-".join(f"{rnd.getrandbits(4 * w):0{w}x}" for w in (8, 4, 4, 4, 12)),
        "sec": lambda: f"{rnd.random() * 120:.2f}s",
        "flag": lambda: rnd.choice(users) + "_" + rnd.choice(users),
        "bool": lambda: rnd.choice(["true", "false"]),
        "small": lambda: str(rnd.randint(0, 120)),
        "digit": lambda: str(rnd.randint(0, 7)),
        "ms": lambda: f"{rnd.randint(1, 9999)}ms",
        "model": lambda: rnd.choice(users) + "-" + rnd.choice(["small", "large"]),
        "table": lambda: rnd.choice(tables),
        "int": lambda: str(rnd.randint(0, 10**6)),
        "plan": lambda: rnd.choice(["seqscan", "hashjoin"]),
        "quoted": lambda: '"' + " ".join(word() for _ in range(rnd.randint(1, 3))) + '"',
        "email": lambda: f"{rnd.choice(users)}@{rnd.choice(['example.com', 'corp.example'])}",
        "ip": lambda: ".".join(str(rnd.randint(0, 255)) for _ in range(4)),
        "pod": lambda: f"{rnd.choice(users)}-{rnd.getrandbits(36):09x}-{word(5, 5)}",
        "queue": lambda: rnd.choice(users) + "." + rnd.choice(tables),
        "clock": lambda: f"{rnd.randint(0, 23):02d}:{rnd.randint(0, 59):02d}:{rnd.randint(0, 59):02d}",
        "alpha_id": alpha_id,
        "userish": lambda: rnd.choice(["", "user", "User", "s"]),
        "head": lambda: (
            rnd.choice([*users[:6], *_READ_NAMES])
            + "-"
            + rnd.choice(["7", "07", "8", "16", "8859-1", "1252", "5:5432", "18:6379", "3.internal", "7:80"])
        ),
        "port": lambda: str(rnd.randint(1, 65535)),
        "registry": lambda: rnd.choice(["registry.example.com", "ghcr.io/acme", "x", "(x", "10.0.0.7:5000"]),
        "segment": lambda: rnd.choice([*users[:6], *_READ_NAMES, "dead", "beef", "c", "ab", "abcd"]),
        "tag": lambda: rnd.choice(
            ["1.4.2", "v2", "latest", "1:2:3", "be:ef.1", ":1", "\\x\\y", "//h/p", "3.0.0-rc1", "a=1", "7"]
        ),
    }
    out = []
    for _ in range(n):
        t = rnd.choice(_TEMPLATES)
        msg = t
        while "{" in msg:
            a = msg.index("{")
            b = msg.index("}", a)
            msg = msg[:a] + values[msg[a + 1 : b]]() + msg[b + 1 :]
        out.append(
            {"service": rnd.choice(["api", "auth"]), "level": rnd.choice(["info", "warn"]), "message": msg}
        )
    return out


def _uncached_table(events: list[dict[str, str]]) -> dict[str, int]:
    """Counts by final pattern id, each message masked on its own, the structural stage fed every rule
    template: no cache anywhere."""
    masker = Masker()
    st = Structure()
    rows = []
    for ev in events:
        key = (ev["service"], ev["level"])
        tpl = masker.template(ev["message"])
        st.observe(key, tpl)
        rows.append((key, tpl))
    counts: dict[str, int] = {}
    for key, tpl in rows:
        fid = pattern_id(["service", "level"], key, st.apply(key, tpl))
        counts[fid] = counts.get(fid, 0) + 1
    return counts


def _cached_table(events: list[dict[str, str]], block: int) -> dict[str, int]:
    pc = PatternCounter(Extractor(["service", "level"], "message", []), 1_000_000, 1 << 20)
    lines = [json.dumps(ev).encode() + b"\n" for ev in events]
    for i in range(0, len(lines), block):
        pc.process_block(b"".join(lines[i : i + block]), 0.0)
    assert pc.events_total == len(events)
    live = {p.id: p.count for p in pc.table.values() if p.absorbed_into is None and p.count}
    assert sum(live.values()) == len(events)
    return live


@pytest.mark.parametrize("accelerated", [True, False])
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32), block=st.sampled_from([1, 7, 100, 5000]))
def test_caches_never_change_a_count(
    accelerated: bool, seed: int, block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    if accelerated and not tv.ACCELERATED:
        pytest.skip("the C accelerator is not built here")
    if not accelerated:
        monkeypatch.setattr(tv, "key", tv.key_py)
        monkeypatch.setattr(tv, "lookup_events", tv.lookup_events_py)
        monkeypatch.setattr(tv, "first_level", tv.first_level_py)
        monkeypatch.setattr(tv, "_stage0_ascii", None)
    events = _service_events(seed, 3000)
    assert _cached_table(events, block) == _uncached_table(events)


def test_no_key_fields_counts_every_event() -> None:
    """A counter with no key fields: the second level once dropped its misses (zip() of nothing)."""
    pc = PatternCounter(Extractor([], "message", []), 10, 1 << 20)
    block = b"".join(
        json.dumps({"message": f"k{w}k lookup failed"}).encode() + b"\n" for w in "abcdefghijklmnopqrst"
    )
    assert pc.process_block(block, 0.0) == 20
    assert len(pc.table) == 10 and pc.overflow_count == 10


def test_plans_blank_names_only_where_the_structure_masks_them() -> None:
    """After the structural stage masks the user position, messages with new users hit the cache."""
    pc = PatternCounter(Extractor(["service"], "message", []), 1000, 1 << 20)
    users = ["ann", "bob", "cyd", "dan", "eve", "fay"]
    block = b"".join(
        json.dumps({"service": "a", "message": f"user {u} signed in via okta"}).encode() + b"\n"
        for u in users
    )
    pc.process_block(block, 0.0)
    plans = pc._second[("a",)][0]
    assert any(type(plan) is tuple and plan[0] == (1,) for plan in plans.values()), plans
    calls = []
    real = pc._lookup
    pc._lookup = lambda k, m, now: calls.append(m) or real(k, m, now)  # type: ignore[method-assign]
    fresh = b"".join(
        json.dumps({"service": "a", "message": f"user {u} signed in via okta"}).encode() + b"\n"
        for u in ["gil", "hal", "ivy"]
    )
    pc.process_block(fresh, 0.0)
    assert calls == []  # no slow path: one key for every name
    (live,) = [p for p in pc.table.values() if p.absorbed_into is None]
    assert live.template == "user <*> signed in via okta" and live.count == 9
    # A word a rule reads is never blanked: "via" stays in the key
    assert not tv.blankable(b"via") and not tv.blankable(b"ms") and tv.blankable(b"gil")


def test_plans_blank_the_name_of_a_host_port_token() -> None:
    """Once the structural stage masks the host name of `name-NN:port`, a new host name, of any length,
    hits the cache: the name is blanked and only the shape of the rest stays in the key."""
    pc = PatternCounter(Extractor(["service"], "message", []), 1000, 1 << 20)

    def block(hosts: list[str]) -> bytes:
        return b"".join(
            json.dumps({"service": "a", "message": f"upstream {h}:5432 responded slowly"}).encode() + b"\n"
            for h in hosts
        )

    pc.process_block(block(["db-07", "cache-12", "auth-03", "queue-44", "search-91"]), 0.0)
    calls = []
    real = pc._lookup
    pc._lookup = lambda k, m, now: calls.append(m) or real(k, m, now)  # type: ignore[method-assign]
    pc.process_block(block(["payments-18", "x-55", "ledgerwriter-20"]), 0.0)
    assert calls == []
    (live,) = [p for p in pc.table.values() if p.absorbed_into is None]
    assert live.template == "upstream <*>:<*> responded slowly" and live.count == 8
    # the rest of the token stays: another digit count is another key
    pc.process_block(block(["db-7"]), 0.0)
    assert len(calls) == 1
    assert tv.blank_head(b"db-07:5432") == 2
    assert tv.blank_head(b"from-3") == tv.blank_head(b"Db-07") == tv.blank_head(b"db-x") == 0


def test_a_text_that_teaches_nothing_is_not_stored_under_a_plan() -> None:
    """A date merges tokens ("Jun 12 07:07:00" is one value), so such a text cannot be planned; the plan
    its neighbours taught ("Jun 123 07:07:00" is not a date) must not take its entry."""
    users = ["ann", "bob", "cyd", "dan", "eve", "fay"]
    events = [
        {"service": "a", "level": "i", "message": f"backup of {u} took 5 at Jun 123 07:07:00"} for u in users
    ]
    events += [
        {"service": "a", "level": "i", "message": f"backup of {u} took 5 at Jun 12 07:07:00"}
        for u in ["zed", "amy"]
    ]
    cached = _cached_table(events, 1)
    assert cached == _uncached_table(events)
    assert len(cached) == 3  # the 3-digit day group folded; zed and amy kept apart


def test_ready_says_whether_keys_run_in_c(tmp_path: Path) -> None:
    """An operator can tell from the log whether the C build is in use (a host without a compiler runs
    the pure path, slower)."""
    log = tmp_path / "a.jsonl"
    log.write_text('{"message": "hello 1"}\n')
    cfg = tmp_path / "t.toml"
    cfg.write_text(
        f'[checkpoint]\nstate_dir = "{tmp_path / "state"}"\n[metrics]\nlisten = ""\n[log]\nformat = "json"\n'
    )
    p = subprocess.run(
        [
            str(Path(sys.executable).parent / "telemetryd"),
            "run",
            "--once",
            "--config",
            str(cfg),
            "--path",
            str(log),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    ready = [e for e in map(json.loads, p.stderr.splitlines()) if e.get("event") == "ready"]
    assert len(ready) == 1 and ready[0]["pattern_keys_in_c"] is tv.ACCELERATED


def test_a_plan_cut_early_grows_again_once_the_structure_has() -> None:
    """A text seen before its sub-group generalised cuts the plan (its template masks nothing); once
    the structure has masked more, the plan grows again, so names and letter ids stop missing."""
    pc = PatternCounter(Extractor(["service"], "message", []), 1000, 1 << 20)

    def block(pairs: list[tuple[str, str]]) -> bytes:
        msgs = [f"cron {n} skipped: previous run {i} still active" for n, i in pairs]
        return b"".join(json.dumps({"service": "a", "message": m}).encode() + b"\n" for m in msgs)

    uuid = "2678dac2-02fe-43ba-916b-0576c76cae5c"
    pc.process_block(block([(n, uuid) for n in ["ann", "bob", "cyd", "dan", "eve", "fay"]]), 0.0)
    assert pc._second[("a",)][0][b"cron 8"][0] == (1,)
    # alone in its sub-group: literal, so the plan is cut to nothing
    pc.process_block(block([("gil", "QZszceMaSOMh")]), 0.0)
    assert pc._second[("a",)][0][b"cron 8"][0] == ()
    # two more letter ids: the id position varies, the structure changes, the plan grows back
    pc.process_block(block([("hal", "wNtMwVGPZQxz"), ("ivy", "fBlMeJuvDEry")]), 0.0)
    assert pc._second[("a",)][0][b"cron 8"][0] == (1, 5)
    calls: list[str] = []
    real = pc._lookup
    pc._lookup = lambda k, m, now: calls.append(m) or real(k, m, now)  # type: ignore[method-assign]
    fresh = [("jon", "RcEMOtFqJNVf"), ("kim", "oRKgQclqhrNuNgZK"), ("lee", "MkgZDePrfDAi")]
    pc.process_block(block(fresh), 0.0)
    assert calls == []
    live = [p for p in pc.table.values() if p.absorbed_into is None]
    assert [p.template for p in live if p.count] == ["cron <*> skipped: previous run <*> still active"]
    assert sum(p.count for p in live) == 12
