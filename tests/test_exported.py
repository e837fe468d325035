"""The exported counters (exported.py) and the series policy (series_policy.py), in process.

The property test drives the commit cycle the daemon runs (count, cut a record, the record becomes
durable or fails, crash and recover from what was committed, fold a pattern into another) and checks
what a scrape would show after every step: the series sum to events_total, no value ever goes down,
and a restart continues from exactly the last published values.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path

import hypothesis.strategies as st
import msgspec
import pytest
from hypothesis import given, settings
from prometheus_client import CollectorRegistry, generate_latest
from telemetryd.exported import (
    LABEL_VALUE_MAX_CHARS,
    OFFSETS_FILE,
    ExportedCounts,
    View,
    archive,
    label_names,
    load_offsets,
)
from telemetryd.patterns import PatternState
from telemetryd.series_policy import RECENT_PATTERNS, SeriesSlots, choose, series_value


def pattern(
    pid: str, count: int = 0, key: tuple[str | None, ...] = ("k",), tpl: str = "t <*>"
) -> PatternState:
    return PatternState(pid, key, tpl, count, 1000.0, 1000.0, "example")


def scrape(ex: ExportedCounts) -> dict[str, float]:
    """Sample text (name and labels) -> value, as Prometheus would read /metrics."""
    reg = CollectorRegistry()
    reg.register(ex)
    out: dict[str, float] = {}
    for line in generate_latest(reg).decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def series_of(view: View) -> dict[str, int]:
    out = {pid: v for pid, v, _ in view.series({})}
    out["other"] = view.events - sum(out.values())
    return out


def test_label_names_are_sanitised_and_unique() -> None:
    fields = ["event_type", "error.code", "pattern_id", "job", "1st", "__x", "a.b", "a_b", "template", "é"]
    assert label_names(fields) == (
        "event_type",
        "error_code",
        "key_pattern_id",
        "key_job",
        "key_1st",
        "key___x",
        "a_b",
        "a_b_2",
        "key_template",
        "_",
    )


def test_policy_grants_up_to_the_limit_largest_first_and_keeps_them() -> None:
    table = {p.id: p for p in (pattern("a", 5), pattern("b", 9), pattern("c", 1), pattern("d", 9))}
    slots = SeriesSlots(limit=2, min_events=2)
    slots.recovered({})
    granted = slots.grant(set(table.values()), table)
    assert [p.id for p in granted] == ["b", "d"]  # largest first, ties by id; c is below min_events
    assert table["b"].export_base == 0  # never committed before: its series holds its whole count
    assert table["a"].export_base == -1
    table["a"].count += 100
    assert slots.grant({table["a"]}, table) == []  # full: nothing is ever taken away
    assert [p.id for p in slots.held] == ["b", "d"]


def test_policy_base_is_the_direct_count_for_a_pattern_committed_before() -> None:
    old = pattern("old", 7)
    table = {"old": old}
    slots = SeriesSlots(limit=5, min_events=10)
    slots.recovered(table)  # committed with 7 events, all of them in `other`
    assert slots.grant({old}, table) == []
    old.count = 12
    new = pattern("new", 10)
    table["new"] = new
    assert {p.id for p in slots.grant({old, new}, table)} == {"old", "new"}
    assert (old.export_base, new.export_base) == (12, 0)
    assert (series_value(old), series_value(new)) == (0, 10)


def test_policy_skips_absorbed_patterns() -> None:
    p = pattern("p", 50)
    p.absorbed_into = "g"
    g = pattern("g", 80)
    g.absorbed = 60  # 20 counted directly
    assert [x.id for x in choose([p, g], free=5, min_events=20)] == ["g"]
    assert choose([p, g], free=5, min_events=21) == []


def test_nothing_before_recovery_then_committed_values() -> None:
    ex = ExportedCounts(["event_type"], series_limit=10)
    before = scrape(ex)
    assert "telemetryd_events_total" not in before, "a 0 before recovery would read as a counter reset"
    assert before["telemetryd_pattern_series_max"] == 10
    a, b = pattern("aa", 7, ("login",)), pattern("bb", 3, ("logout",))
    a.export_base, b.export_base = 2, 0
    ex.recovered(load_offsets("/nonexistent"), 20, 1, {"invalid_json": 4}, 5, [a, b])
    m = scrape(ex)
    assert m["telemetryd_events_total"] == 20
    assert m["telemetryd_overflow_events_total"] == 1
    assert m['telemetryd_lines_skipped_total{reason="invalid_json"}'] == 4
    assert m['telemetryd_lines_skipped_total{reason="too_long"}'] == 0
    assert m["telemetryd_patterns_created_total"] == 5
    assert m['telemetryd_pattern_events_total{event_type="login",pattern_id="aa"}'] == 5
    assert m['telemetryd_pattern_events_total{event_type="logout",pattern_id="bb"}'] == 3
    assert m['telemetryd_pattern_events_total{event_type="",pattern_id="other"}'] == 12
    assert m['telemetryd_pattern_info{event_type="login",pattern_id="aa",template="t <*>"}'] == 1
    assert m['telemetryd_pattern_first_seen_timestamp_seconds{pattern_id="aa"}'] == 1000.0
    assert m["telemetryd_pattern_series"] == 2


def test_capture_is_published_only_when_durable() -> None:
    ex = ExportedCounts(["k"], 10)
    p = pattern("p", 0)
    p.export_base = 0
    ex.recovered(load_offsets("/nonexistent"), 0, 0, {}, 1, [p])
    p.count = 5
    view = ex.capture(5, 0, {}, 1, [p])
    assert scrape(ex)["telemetryd_events_total"] == 0
    p.count = 9  # counted after the cut: not in this record
    ex.on_durable(view)
    m = scrape(ex)
    assert m["telemetryd_events_total"] == 5
    assert m['telemetryd_pattern_events_total{k="k",pattern_id="p"}'] == 5


def test_absorbed_pattern_series_is_frozen_and_labelled() -> None:
    ex = ExportedCounts(["k"], 10)
    p, g = pattern("p", 4), pattern("g", 6)
    p.export_base = g.export_base = 0
    p.absorbed_into = "g"
    g.count += p.count
    g.absorbed += p.count
    ex.recovered(load_offsets("/nonexistent"), 10, 0, {}, 2, [p, g])
    m = scrape(ex)
    assert m['telemetryd_pattern_events_total{k="k",pattern_id="p"}'] == 4
    assert m['telemetryd_pattern_events_total{k="k",pattern_id="g"}'] == 6
    assert m['telemetryd_pattern_events_total{k="",pattern_id="other"}'] == 0
    assert m['telemetryd_pattern_info{absorbed_into="g",k="k",pattern_id="p",template="t <*>"}'] == 1


def test_settings_change_continues_every_counter(tmp_path: Path) -> None:
    d = str(tmp_path)
    a, b, c = pattern("aa", 10, ("x",)), pattern("bb", 4, ("y",)), pattern("cc", 3, ("z",))
    a.export_base, b.export_base = 0, 1  # c has no series: its 3 events are in `other`
    old = ExportedCounts(["event_type"], 10)
    old.recovered(load_offsets(d), 18, 1, {"empty": 2}, 3, [a, b])
    before = scrape(old)
    off = archive(d, [a, b, c], (18, 1), "digest:7:18", ["event_type"])
    assert archive(d, [a, b, c], (18, 1), "digest:7:18", ["event_type"]) == off  # again after a crash: no-op
    assert msgspec.json.decode((tmp_path / OFFSETS_FILE).read_bytes())["events"] == 18
    # New settings (key field `level`): counting starts from zero, the exported counters do not.
    new = ExportedCounts(["level"], 10)
    new.recovered(load_offsets(d), 0, 0, {"empty": 2}, 0, [])
    after = scrape(new)
    for name in (
        "telemetryd_events_total",
        "telemetryd_overflow_events_total",
        "telemetryd_patterns_created_total",
    ):
        assert after[name] == before[name]
    assert after['telemetryd_pattern_events_total{event_type="x",pattern_id="aa"}'] == 10
    assert after['telemetryd_pattern_events_total{event_type="y",pattern_id="bb"}'] == 3
    assert after['telemetryd_pattern_events_total{level="",pattern_id="other"}'] == 5
    # The same id under the new settings is the same pattern: its series goes on from the archive.
    a2 = pattern("aa", 2, ("x",))
    a2.export_base = 0
    n = pattern("nn", 6, ("warn",))
    n.export_base = 0
    new.on_durable(new.capture(8, 0, {"empty": 2}, 2, [a2, n]))
    m = scrape(new)
    assert m["telemetryd_events_total"] == 26
    assert m['telemetryd_pattern_events_total{event_type="x",pattern_id="aa"}'] == 12
    assert m['telemetryd_pattern_events_total{level="warn",pattern_id="nn"}'] == 6
    assert m['telemetryd_pattern_events_total{level="",pattern_id="other"}'] == 5


def test_unreadable_offsets_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / OFFSETS_FILE).write_text("{not json")
    with pytest.raises(OSError, match=OFFSETS_FILE):
        load_offsets(str(tmp_path))


class Model:
    """The daemon's commit cycle around one pattern table, with a committed copy standing for the disk."""

    def __init__(self, limit: int, min_events: int) -> None:
        self.limit, self.min_events = limit, min_events
        self.committed: dict[str, PatternState] = {}
        self.committed_events = 0
        self.restart()

    def restart(self) -> None:
        self.table = copy.deepcopy(self.committed)
        self.events = self.committed_events
        self.dirty: set[PatternState] = set()
        self.inflight: tuple[View, list[PatternState], int] | None = None
        self.slots = SeriesSlots(self.limit, self.min_events)
        self.slots.recovered(self.table)
        self.ex = ExportedCounts(["k"], self.limit)
        self.ex.recovered(
            load_offsets("/nonexistent"),
            self.events,
            0,
            {},
            len(self.table),
            self.slots.held,
            self.slots.recent,
        )

    def count(self, pid: str, n: int) -> None:
        p = self.table.get(pid)
        if p is None:
            p = self.table[pid] = pattern(pid)
        while p.absorbed_into is not None:  # an absorbed pattern is frozen: its events go to the general one
            p = self.table[p.absorbed_into]
        p.count += n
        self.events += n
        self.dirty.add(p)

    def absorb(self, a: str, b: str) -> None:
        pa, pb = self.table.get(a), self.table.get(b)
        if pa is None or pb is None or pa is pb or pa.absorbed_into or pb.absorbed_into:
            return
        pa.absorbed_into = pb.id
        pb.count += pa.count
        pb.absorbed += pa.count
        self.dirty |= {pa, pb}

    def cut(self) -> None:
        if self.inflight is not None:
            return
        self.slots.grant(self.dirty, self.table)
        rec = [copy.copy(p) for p in self.dirty]
        view = self.ex.capture(self.events, 0, {}, len(self.table), self.slots.held, self.slots.recent)
        self.inflight = (view, list(self.dirty), self.events)
        self.dirty = set()
        self._record = rec

    def written(self, ok: bool) -> None:
        if self.inflight is None:
            return
        view, pats, events = self.inflight
        self.inflight = None
        if not ok:
            self.dirty.update(pats)
            return
        for p in self._record:
            self.committed[p.id] = p
        self.committed_events = events
        self.ex.on_durable(view)


OPS = st.one_of(
    st.tuples(st.just("count"), st.sampled_from("abcdefgh"), st.integers(1, 5)),
    st.tuples(st.just("absorb"), st.sampled_from("abcdefgh"), st.sampled_from("abcdefgh")),
    st.tuples(st.just("cut"), st.none(), st.none()),
    st.tuples(st.just("written"), st.booleans(), st.none()),
    st.tuples(st.just("crash"), st.none(), st.none()),
)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 5), st.integers(1, 6), st.lists(OPS, max_size=80))
def test_series_sum_to_events_never_decrease_and_survive_crashes(
    limit: int, min_events: int, ops: list
) -> None:  # type: ignore[type-arg]
    m = Model(limit, min_events)
    last: Mapping[str, int] = {"other": 0}
    last_events = 0
    for op, x, y in ops:
        if op == "count":
            m.count(x, y)
        elif op == "absorb":
            m.absorb(x, y)
        elif op == "cut":
            m.cut()
        elif op == "written":
            m.written(x)
        else:
            m.restart()
        view = m.ex._view
        assert view is not None
        now = series_of(view)
        assert view.events == m.committed_events
        assert sum(now.values()) == view.events
        assert view.events >= last_events
        assert len(now) - 1 <= limit
        # Info of patterns without a series: only the ones committed last, only committed ones.
        assert len(view.recent) <= RECENT_PATTERNS
        assert {pid for pid, _ in view.recent} <= set(m.committed)
        for pid, v in last.items():
            assert now.get(pid, -1) >= v, (pid, last, now)
        last, last_events = now, view.events


def test_long_label_values_are_cut() -> None:
    ex = ExportedCounts(["k"], 10)
    p = pattern("p", 1, ("é" * 5000,), "x " * 3000)
    p.export_base = 0
    ex.recovered(load_offsets("/nonexistent"), 1, 0, {}, 1, [p])
    view = ex._view
    assert view is not None
    info = view.info["p"]
    assert len(info.template) == LABEL_VALUE_MAX_CHARS and info.template.endswith("…")
    assert len(info.labels["k"].encode()) <= 2048 and info.labels["k"].endswith("…")


def test_new_patterns_are_described_when_every_series_is_taken() -> None:
    table: dict[str, PatternState] = {}
    slots = SeriesSlots(limit=1, min_events=1)
    slots.recovered(table)
    ex = ExportedCounts(["k"], 1)
    ex.recovered(load_offsets("/nonexistent"), 0, 0, {}, 0, slots.held, slots.recent)
    for i in range(RECENT_PATTERNS + 5):
        p = table[f"p{i}"] = pattern(f"p{i}", 1, (f"v{i}",))
        slots.grant({p}, table)
        ex.on_durable(ex.capture(i + 1, 0, {}, len(table), slots.held, slots.recent))
    m = scrape(ex)
    counters = [k for k in m if k.startswith("telemetryd_pattern_events_total{")]
    assert len(counters) == 2  # p0 and other
    newest = f"p{RECENT_PATTERNS + 4}"
    assert (
        m[f'telemetryd_pattern_info{{k="v{RECENT_PATTERNS + 4}",pattern_id="{newest}",template="t <*>"}}']
        == 1
    )
    assert m[f'telemetryd_pattern_first_seen_timestamp_seconds{{pattern_id="{newest}"}}'] == 1000.0
    described = [k for k in m if k.startswith("telemetryd_pattern_info{")]
    assert len(described) == RECENT_PATTERNS + 1  # p0 with its series, the last RECENT_PATTERNS
    assert not any('pattern_id="p1"' in k for k in described)  # dropped out of the recent ones


def test_metrics_app_serves_the_whole_registry_and_each_durable_record() -> None:
    """/metrics renders the committed families once per durable record and splices them in: the text
    has every family the whole registry has (either format, gzip too), one OpenMetrics end marker, and
    a new durable record shows at the next scrape."""
    import gzip

    from prometheus_client.exposition import choose_encoder
    from telemetryd.listener import metrics_app
    from telemetryd.metrics import Metrics

    m = Metrics(100, ["k"], 10)
    p = pattern("p", 0)
    p.export_base = 0
    m.exported.recovered(load_offsets("/nonexistent"), 0, 0, {}, 1, [p])
    app = metrics_app(m)
    renders = []
    real = m.exported.collect
    m.exported.collect = lambda: renders.append(1) or real()  # type: ignore[method-assign]

    def get(accept: str = "", encoding: str = "") -> tuple[dict[str, str], bytes]:
        environ = {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": "/metrics",
            "QUERY_STRING": "",
            "HTTP_ACCEPT": accept,
        }
        environ["HTTP_ACCEPT_ENCODING"] = encoding
        got: dict[str, str] = {}

        def start(status: str, headers: list[tuple[str, str]], exc_info: object = None) -> None:
            got.update(headers, status=status)

        return got, b"".join(app(environ, start))

    def ours(text: bytes) -> set[str]:  # the process and GC samples move between two renders
        return {ln for ln in text.decode().splitlines() if ln.startswith(("telemetryd_", "# HELP", "# TYPE"))}

    for accept in ("", "application/openmetrics-text; version=1.0.0"):
        headers, body = get(accept)
        encoder, content_type = choose_encoder(accept)
        assert headers["status"] == "200 OK" and headers["Content-Type"] == content_type
        assert ours(body) == ours(encoder(m.registry))
        assert body.count(b"# EOF") == (1 if accept else 0) and body.endswith(b"# EOF\n" if accept else b"\n")
        assert b"telemetryd_events_total 0.0" in body
    headers, zipped = get("", "gzip")
    assert headers["Content-Encoding"] == "gzip" and ours(gzip.decompress(zipped)) == ours(get()[1])
    n = len(renders)
    get()
    assert len(renders) == n  # the same view: rendered once per content type
    p.count = 5
    m.exported.on_durable(m.exported.capture(5, 0, {}, 1, [p]))
    body = get()[1]
    assert len(renders) == n + 1
    assert (
        b"telemetryd_events_total 5.0" in body
        and b'telemetryd_pattern_events_total{k="k",pattern_id="p"} 5.0' in body
    )
