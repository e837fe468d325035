"""Exactly once as Prometheus sees it: a real Prometheus scrapes the daemon every second while real
writer processes append and the daemon is killed with SIGKILL at least 20 times.

Checked on every raw sample Prometheus stored: no event counter ever decreases (no reset, so no
`increase()` counts anything twice), the per-pattern series sum to `telemetryd_events_total` at every
scrape, and the last value minus the first equals the lines written in between, exactly: in total, per
pattern and for skipped lines. The files themselves are the ground truth of what was written.
"""

from __future__ import annotations

import collections
import itertools
import json
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import cli, free_port
from prom_helpers import (
    ProcessDied,
    PromAPI,
    http_get,
    prometheus_config,
    start_daemon,
    start_prometheus,
    stop,
    tail,
    wait_until,
)

pytestmark = pytest.mark.slow

WRITER = str(Path(__file__).parent / "writer.py")
JOB = "telemetryd"
KILLS = 20
KEYS = 6
WRITE_RATE = 80.0  # events/s per writer
COUNTERS = ("telemetryd_events_total", "telemetryd_pattern_events_total", "telemetryd_lines_skipped_total")


def complete_lines(path: Path) -> list[bytes]:
    """The lines a file holds, without a trailing partial line (a writer killed mid-line)."""
    data = path.read_bytes()
    return data[: data.rfind(b"\n") + 1].splitlines()


def written(src: Path) -> tuple[collections.Counter[str], int]:
    """Events per key and lines that are not events, over every file."""
    per_key: collections.Counter[str] = collections.Counter()
    bad = 0
    for f in sorted(src.glob("*.jsonl")):
        for line in complete_lines(f):
            try:
                per_key[json.loads(line)["k"]] += 1
            except ValueError:
                bad += 1
    return per_key, bad


def test_counters_exact_in_prometheus_across_kill9(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    state = tmp_path / "state"
    daemon_log = tmp_path / "telemetryd.log"
    prom_log = tmp_path / "prometheus.log"
    metrics_port, prom_port = free_port(), free_port()
    instance = f"127.0.0.1:{metrics_port}"
    sel = f'job="{JOB}", instance="{instance}"'
    config = tmp_path / "telemetryd.toml"
    # Checkpoints every 2 s only: at each kill, up to two seconds of counted events are not durable, and
    # Prometheus scrapes every second. Counters that showed counted rather than committed events would
    # show them and then drop after the restart.
    config.write_text(
        textwrap.dedent(
            """
            [sources]
            rescan_seconds = 0.5
            [patterns]
            key_fields = ["k"]
            [checkpoint]
            every_events = 1000000
            every_seconds = 2.0
            [metrics]
            pattern_series = 20
            [log]
            format = "json"
            """
        )
    )
    # Events before the start, so each pattern has a series whose first value is known.
    init = [
        json.dumps({"k": f"key{i % KEYS}", "message": f"request {i} took 5 ms"}) for i in range(10 * KEYS)
    ]
    (src / "init.jsonl").write_text("\n".join(init) + "\n")
    prom_config = tmp_path / "prometheus.yml"
    prometheus_config(prom_config, {JOB: [instance]})
    procs: list[subprocess.Popen[bytes]] = []
    daemon: subprocess.Popen[bytes] | None = None

    def context() -> str:
        return tail(daemon_log) + "\n" + tail(prom_log, 15)

    try:
        prom_proc = start_prometheus(tmp_path, prom_config, prom_port, prom_log)
        procs.append(prom_proc)
        prom = PromAPI(f"http://127.0.0.1:{prom_port}")

        def launch() -> subprocess.Popen[bytes]:
            return start_daemon(config, f"{src}/*.jsonl", state, instance, daemon_log, tmp_path)

        def scraped(expr: str, expected: float) -> bool | None:
            if prom_proc.poll() is not None:
                raise ProcessDied(f"prometheus exited with {prom_proc.returncode}\n{context()}")
            if daemon is not None and daemon.poll() is not None:
                raise ProcessDied(f"telemetryd exited with {daemon.returncode}\n{context()}")
            return True if prom.value(expr) == expected else None

        daemon = launch()
        wait_until("Prometheus ready", lambda: http_get(f"{prom.base}/-/ready", 2)[0] == 200 or None, context)
        wait_until(
            "the initial events in Prometheus",
            lambda: scraped(f"telemetryd_events_total{{{sel}}}", len(init)),
            context,
        )
        wait_until(
            "a series per pattern",
            lambda: scraped(f'count(telemetryd_pattern_events_total{{{sel}, pattern_id!="other"}})', KEYS),
            context,
        )
        first_at = time.time()
        first_keys, first_bad = written(src)
        assert first_bad == 0 and sum(first_keys.values()) == len(init)

        writers = [
            subprocess.Popen(
                [
                    sys.executable,
                    WRITER,
                    str(src / f"w{n}.jsonl"),
                    "10000000",
                    "--seed",
                    str(n),
                    "--rate",
                    str(WRITE_RATE),
                    "--keys",
                    str(KEYS),
                    "--start",
                    str(n * 10_000_000),
                ]
            )
            for n in range(2)
        ]
        procs.extend(writers)
        rnd = random.Random(7)
        starts: set[float] = set()
        for kill in range(KILLS):
            # Each process lives until Prometheus has scraped it, then a random while longer: some kills
            # land just after a checkpoint, most with up to two seconds of events not yet durable.
            pid_start = wait_until(
                f"process {kill} scraped",
                lambda: next(
                    (
                        s.value
                        for s in prom.query(f"process_start_time_seconds{{{sel}}}")
                        if s.value not in starts
                    ),
                    None,
                ),
                context,
            )
            starts.add(pid_start)
            time.sleep(rnd.uniform(0.2, 2.5))
            assert all(w.poll() is None for w in writers), "a writer died"
            daemon.send_signal(signal.SIGKILL)
            daemon.wait(timeout=30)
            with (src / "bad.jsonl").open("ab") as f:  # skipped lines must be exact too
                f.write(b"not json\n" * rnd.randint(0, 3))
            daemon = launch()
        for w in writers:
            w.send_signal(signal.SIGTERM)
            w.wait(timeout=30)
        keys, bad = written(src)
        total = sum(keys.values())
        wait_until(
            "every event committed and scraped",
            lambda: scraped(f"telemetryd_events_total{{{sel}}}", total),
            context,
            timeout=180,
        )
        wait_until(
            "the skipped lines",
            lambda: scraped(f"sum(telemetryd_lines_skipped_total{{{sel}}})", bad),
            context,
        )
        # One scrape more, so the last samples below are the final values.
        time.sleep(2.5)
        last_at = time.time()

        assert len(starts) == KILLS
        seen = prom.value(f"changes(process_start_time_seconds{{{sel}}}[{int(last_at - first_at) + 60}s])")
        assert seen is not None and seen >= KILLS, f"Prometheus saw {seen} restarts"

        per_scrape: dict[float, dict[str, float]] = collections.defaultdict(dict)
        for name in COUNTERS:
            series = prom.raw(f"{name}{{{sel}}}", first_at - 1, last_at)
            assert series, name
            for labels, samples in series:
                values = [v for _, v in samples]
                drops = [(a, b) for a, b in itertools.pairwise(values) if b < a]
                assert not drops, f"{name}{labels} decreased: {drops[:5]}"
                tag = labels.get("pattern_id") or labels.get("reason") or ""
                for t, v in samples:
                    per_scrape[t][f"{name}/{tag}"] = v
        # At every scrape the pattern series (and `other`) sum to events_total.
        checked = 0
        for t, values in per_scrape.items():
            patterns = [v for k, v in values.items() if k.startswith("telemetryd_pattern_events_total/")]
            if "telemetryd_events_total/" in values and patterns:
                assert sum(patterns) == values["telemetryd_events_total/"], (t, values)
                checked += 1
        assert checked >= KILLS, f"only {checked} scrapes held both"

        def delta(expr: str) -> float:
            a, b = prom.value(expr, at=first_at), prom.value(expr, at=last_at)
            assert a is not None and b is not None, expr
            return b - a

        assert delta(f"telemetryd_events_total{{{sel}}}") == total - len(init)
        assert delta(f"sum(telemetryd_lines_skipped_total{{{sel}}})") == bad
        assert prom.value(f"resets(telemetryd_events_total{{{sel}}}[{int(last_at - first_at) + 60}s])") == 0
        by_key = {
            s.labels["k"]: s.labels["pattern_id"]
            for s in prom.query(f'telemetryd_pattern_events_total{{{sel}, pattern_id!="other"}}')
        }
        assert set(by_key) == {f"key{i}" for i in range(KEYS)}, by_key
        for key, pid in by_key.items():
            got = delta(f'telemetryd_pattern_events_total{{{sel}, pattern_id="{pid}"}}')
            assert got == keys[key] - first_keys[key], (
                f"{key}: Prometheus {got}, written {keys[key] - first_keys[key]}"
            )
        assert delta(f'telemetryd_pattern_events_total{{{sel}, pattern_id="other"}}') == 0
        # And Prometheus agrees with the committed table: each pattern got its series in the record that
        # first committed it, so the series holds its whole count.
        doc = json.loads(cli("patterns", "--json", "--state-dir", str(state)).stdout)
        table = {p["id"]: p["count"] for p in doc["patterns"]}
        final = {
            s.labels["pattern_id"]: s.value
            for s in prom.query(f"telemetryd_pattern_events_total{{{sel}}}", at=last_at)
        }
        assert final.pop("other") == 0
        assert final == table
    finally:
        if daemon is not None:
            stop(daemon)
        for p in reversed(procs):
            stop(p)
