"""End to end: the real daemon tails real files, a real Prometheus scrapes it, and every dashboard query
returns data while the alert rules stay silent.

A separate writer process appends events at a known rate (rotating, truncating and deleting files on
the way); the test then checks the rates and counts Prometheus reports against what was written, and
that both lags come back to zero once the writer stops.
"""

from __future__ import annotations

import json
import math
import signal
import statistics
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import free_port
from prom_helpers import (
    PROMETHEUS,
    REPO,
    TELEMETRYD,
    TIMEOUT,
    ProcessDied,
    PromAPI,
    http_get,
    stop,
    tail,
    wait_until,
)
from promql import dashboard_exprs

pytestmark = pytest.mark.slow

DASHBOARD = REPO / "dashboards" / "telemetryd.json"
ALERTS = REPO / "dashboards" / "alerts.yml"

JOB = "telemetryd"  # the alert rules select this job name
RATE_WINDOW = "10s"  # $__rate_interval: ten 1 s scrapes
WRITE_RATE = 100.0  # events/s
WRITE_SECONDS = 24.0
MAX_LINE_BYTES = 4096

EVENT_TYPES = ("login", "logout", "purchase", "error")
MESSAGES = ("cache hit", "cache miss")  # no variable parts: patterns do not depend on the masks

# Queries allowed to return an empty (but valid) vector, and why. Everything else must return data.
ALLOWED_EMPTY = {
    "Source errors by reason": "counted only when a source cannot be read, which a healthy run (as root) "
    "cannot arrange; its reasons are open-ended, so there is no series to pre-initialise",
    "annotation: Restarts": "marks process restarts, and the daemon must not restart in this run",
}

WRITER = textwrap.dedent(
    """
    import json, os, sys, time

    src, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    types, messages = json.loads(sys.argv[4]), json.loads(sys.argv[5])
    a = os.path.join(src, "a.jsonl")
    total = int(rate * seconds)
    actions = {int(total * 0.3): "truncate", int(total * 0.4): "delete", int(total * 0.5): "rename"}
    out = open(a, "ab", buffering=0)
    # A writer caught mid-line: the daemon must leave the half line unread (and show it as lag).
    half = b'{"event_type": "login", "message": "cache'
    partial = open(os.path.join(src, "p.jsonl"), "ab", buffering=0)
    partial.write(half)
    written = 0
    start = time.time()
    for i in range(total):
        delay = start + i / rate - time.time()
        if delay > 0:
            time.sleep(delay)
        action = actions.get(i)
        if action == "truncate":  # copytruncate-style rotation
            os.truncate(os.path.join(src, "c.jsonl"), 0)
        elif action == "delete":
            os.unlink(os.path.join(src, "d.jsonl"))
        elif action == "rename":  # logrotate-style: move away, write to a new file
            out.close()
            os.rename(a, a + ".1")
            out = open(a, "ab", buffering=0)
        event = {"event_type": types[i % len(types)], "message": messages[(i // len(types)) % len(messages)]}
        line = (json.dumps(event) + "\\n").encode()
        out.write(line)  # one write per line: the daemon never sees half a line for long
        written += len(line)
    end = time.time()
    out.close()
    partial.write(b' hit"}\\n')
    partial.close()
    print(json.dumps({"start": start, "end": end, "events": total, "bytes": written, "partial": len(half)}))
    """
)


def event_line(i: int) -> bytes:
    event = {"event_type": EVENT_TYPES[i % len(EVENT_TYPES)], "message": MESSAGES[i % len(MESSAGES)]}
    return (json.dumps(event) + "\n").encode()


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Every process the test starts; all are stopped at teardown, whatever happened."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in reversed(procs):
        stop(proc)


def test_dashboard_queries_against_real_prometheus(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    assert PROMETHEUS.exists(), f"{PROMETHEUS} is missing: run `make prometheus` (make test does)"
    assert TELEMETRYD.exists(), f"{TELEMETRYD} is missing: install the project into the venv"

    src = tmp_path / "src"
    state = tmp_path / "state"
    src.mkdir()
    daemon_log = tmp_path / "telemetryd.log"
    prom_log = tmp_path / "prometheus.log"

    def context() -> str:
        return tail(daemon_log) + "\n" + tail(prom_log, 15)

    # Files that exist before the daemon starts: two to rotate later, one of lines it must skip.
    pre_events = 0
    for name, count in (("c.jsonl", 200), ("d.jsonl", 100)):
        (src / name).write_bytes(b"".join(event_line(pre_events + i) for i in range(count)))
        pre_events += count
    too_long = json.dumps({"event_type": "login", "message": "x" * MAX_LINE_BYTES}).encode()
    bad_lines = [
        b"this is not json",
        b"[1, 2, 3]",
        b'{"event_type": "login", "message": "\xff\xfe"}',
        too_long,
    ]
    (src / "bad.jsonl").write_bytes(b"\n".join(bad_lines) + b"\n")
    (src / "a.jsonl").touch()

    metrics_port = free_port()
    instance = f"127.0.0.1:{metrics_port}"
    config = tmp_path / "telemetryd.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [sources]
            rescan_seconds = 0.5
            max_line_bytes = {MAX_LINE_BYTES}

            [checkpoint]
            every_seconds = 1.0

            [metrics]
            pattern_series = 50

            [log]
            format = "json"
            """
        )
    )

    prom_port = free_port()
    prom_config = tmp_path / "prometheus.yml"
    # JSON is YAML, which spares a YAML dependency.
    prom_config.write_text(
        json.dumps(
            {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(ALERTS)],
                "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [instance]}]}],
            }
        )
    )
    with prom_log.open("wb") as log:
        prom_proc = subprocess.Popen(
            [
                str(PROMETHEUS),
                f"--config.file={prom_config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
        processes.append(prom_proc)
    with daemon_log.open("wb") as log:
        daemon = subprocess.Popen(
            [
                str(TELEMETRYD),
                "run",
                "--config",
                str(config),
                "--path",
                f"{src}/*.jsonl",
                "--state-dir",
                str(state),
                "--metrics-listen",
                instance,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
        processes.append(daemon)
    prom = PromAPI(f"http://127.0.0.1:{prom_port}")

    def alive(what: str) -> None:
        for proc, name in ((prom_proc, "prometheus"), (daemon, "telemetryd")):
            if proc.poll() is not None:
                raise ProcessDied(
                    f"{name} exited with {proc.returncode} while waiting for {what}\n{context()}"
                )

    def ready(url: str, what: str) -> Callable[[], bool | None]:
        def probe() -> bool | None:
            alive(what)
            return True if http_get(url, timeout=2)[0] == 200 else None

        return probe

    wait_until("Prometheus ready", ready(f"{prom.base}/-/ready", "Prometheus ready"), context)
    wait_until("telemetryd /readyz", ready(f"http://{instance}/readyz", "telemetryd /readyz"), context)

    sel = f'job="{JOB}", instance="{instance}"'

    def scraped(expr: str, expected: float) -> Callable[[], bool | None]:
        def probe() -> bool | None:
            alive(expr)
            return True if prom.value(expr) == expected else None

        return probe

    # The files present at start are counted exactly once, and Prometheus has scraped that.
    wait_until(
        "the initial files counted", scraped(f"sum(telemetryd_events_total{{{sel}}})", pre_events), context
    )
    wait_until("the bad lines skipped", scraped(f"sum(telemetryd_lines_skipped_total{{{sel}}})", 4), context)

    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            WRITER,
            str(src),
            str(WRITE_RATE),
            str(WRITE_SECONDS),
            json.dumps(EVENT_TYPES),
            json.dumps(MESSAGES),
        ],
        stdout=subprocess.PIPE,
    )
    processes.append(writer)
    out, _ = writer.communicate(timeout=WRITE_SECONDS * 4 + TIMEOUT)
    assert writer.returncode == 0, "the writer failed"
    written = json.loads(out)
    total_events = pre_events + written["events"] + 1  # and the line completed at the end

    # Exactly once, seen through Prometheus; and nothing left to read or to commit.
    wait_until("all events counted", scraped(f"sum(telemetryd_events_total{{{sel}}})", total_events), context)
    exprs = dict(dashboard_exprs(DASHBOARD, JOB, instance, RATE_WINDOW, range_="5m"))
    for title in ("Read lag (bytes)", "Checkpoint lag (bytes)", "Checkpoint lag (events)"):
        wait_until(f"{title} back to 0", scraped(exprs[title], 0.0), context)

    # Every dashboard query, as Grafana would send it, at an instant when events were flowing.
    active = written["end"] - 1.0
    problems = []
    for title, expr in dashboard_exprs(DASHBOARD, JOB, instance, RATE_WINDOW, range_="5m"):
        samples = prom.query(expr, at=active)
        if title in ALLOWED_EMPTY:
            continue
        if not samples:
            problems.append(f"{title}: no data for {expr}")
        elif not any(math.isfinite(s.value) for s in samples):
            problems.append(f"{title}: only {[s.value for s in samples]} for {expr}")
    assert not problems, "dashboard queries without data:\n" + "\n".join(problems) + "\n" + context()

    # The throughput panels report what the writer did, where the rate window lies inside the writing.
    write_rate = written["events"] / (written["end"] - written["start"])
    byte_rate = written["bytes"] / (written["end"] - written["start"])
    window = float(RATE_WINDOW.removesuffix("s"))
    instants = list(range(math.ceil(written["start"] + window + 1), int(written["end"])))
    assert len(instants) >= 5
    panel_exprs: dict[str, list[str]] = {}
    for title, expr in dashboard_exprs(DASHBOARD, JOB, instance, RATE_WINDOW, range_="5m"):
        panel_exprs.setdefault(title, []).append(expr)
    for title, expected in (
        ("Events/s", write_rate),
        ("Bytes read/s", byte_rate),
        ("Events/s by pattern (fleet)", write_rate),  # the top patterns and `other`
    ):
        seen = [sum(s.value for e in panel_exprs[title] for s in prom.query(e, at=t)) for t in instants]
        median = statistics.median(seen)
        assert abs(median - expected) <= 0.2 * expected, (
            f"{title}: median {median:.1f}, wrote {expected:.1f}/s"
        )

    # The conditions the writer created show up under their contract names.
    kinds = {
        s.labels["kind"]: s.value for s in prom.query(f"max by (kind) (telemetryd_rotations_total{{{sel}}})")
    }
    assert all(kinds.get(k, 0) >= 1 for k in ("rename", "truncate", "delete")), kinds
    reasons = {
        s.labels["reason"]: s.value
        for s in prom.query(f"sum by (reason) (telemetryd_lines_skipped_total{{{sel}}})")
    }
    assert sum(reasons.values()) == len(bad_lines), reasons
    assert all(reasons.get(r, 0) >= 1 for r in ("invalid_json", "not_object", "too_long")), reasons
    patterns = len(EVENT_TYPES) * len(MESSAGES)
    assert prom.value(f"telemetryd_patterns{{{sel}}}") == patterns
    per_pattern = prom.query(f"telemetryd_pattern_events_total{{{sel}}}")
    assert len({s.labels["pattern_id"] for s in per_pattern}) == patterns + 1, per_pattern  # and `other`
    # Every pattern got a series when first committed, so the series sum to the events counted.
    assert sum(s.value for s in per_pattern) == total_events
    assert prom.value(f'telemetryd_pattern_events_total{{{sel}, pattern_id="other"}}') == 0
    top = prom.query(panel_exprs["Events/s by pattern (fleet)"][0], at=active)
    assert {s.labels["template"] for s in top} == set(MESSAGES), "the top patterns are named by template"
    # While the writer ran, the half line was the only lag of its file.
    half = prom.query(f'telemetryd_file_read_lag_bytes{{{sel}, path=~".*/p\\\\.jsonl"}}', at=active)
    assert [s.value for s in half] == [written["partial"]], half
    # a, bad, c (truncated) and p remain; d was deleted and a.jsonl.1 no longer matches the glob.
    wait_until("4 files tracked", scraped(f"telemetryd_files_tracked{{{sel}}}", 4), context)

    # A healthy run raises no alert and every rule evaluates cleanly. Only TelemetrydDown may be pending:
    # one late scrape on a loaded machine is enough to make `up` 0 for an evaluation.
    rules = [r for g in prom.api("rules")["groups"] for r in g["rules"]]
    assert rules and all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]
    assert prom.query('ALERTS{alertstate="firing"}') == []
    assert prom.query('ALERTS{alertname!="TelemetrydDown"}') == []

    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=TIMEOUT) == 0, "SIGTERM must end the daemon cleanly\n" + context()
