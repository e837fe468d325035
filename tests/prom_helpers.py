"""Helpers for tests that run a real Prometheus (and VictoriaMetrics) against real daemons. No tests here.

The binaries are the Debian packages unpacked by mk/prometheus.mk and mk/victoria-metrics.mk.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parent.parent
PROMETHEUS = REPO / ".build" / "prometheus" / "usr" / "bin" / "prometheus"
PROMTOOL = REPO / ".build" / "prometheus" / "usr" / "bin" / "promtool"
VICTORIA_METRICS = REPO / ".build" / "victoria-metrics" / "usr" / "bin" / "victoria-metrics"
TELEMETRYD = Path(sys.executable).parent / "telemetryd"
# Generous: the machine is small and shared. Every wait polls and returns as soon as it can.
TIMEOUT = 90.0

T = TypeVar("T")


class ProcessDied(Exception):
    """A process the test depends on exited: waiting longer cannot help."""


def wait_until(
    what: str, probe: Callable[[], T | None], context: Callable[[], str], timeout: float = TIMEOUT
) -> T:
    """Poll `probe` until it returns something other than None; fail with `context()` on timeout."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
            if value is not None:
                return value
        except (OSError, ValueError, AssertionError, KeyError) as e:
            last = e
        time.sleep(0.25)
    raise AssertionError(
        f"timed out after {timeout:.0f}s waiting for {what} (last error: {last!r})\n{context()}"
    )


def http_get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@dataclass
class Sample:
    labels: dict[str, str]
    value: float


class PromAPI:
    """The Prometheus HTTP query API, as Prometheus and VictoriaMetrics both serve it."""

    def __init__(self, base: str) -> None:
        self.base = base

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.base}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        status, body = http_get(url)
        data = json.loads(body)
        assert status == 200 and data["status"] == "success", f"{url}: {status} {body[:500]!r}"
        return data["data"]

    def query(self, expr: str, at: float | None = None) -> list[Sample]:
        params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
        data = self.api("query", **params)
        assert data["resultType"] == "vector", f"{expr}: {data['resultType']}"
        return [Sample(r["metric"], float(r["value"][1])) for r in data["result"]]

    def value(self, expr: str, at: float | None = None) -> float | None:
        """The single value of `expr`, or None while it has no data."""
        samples = self.query(expr, at)
        assert len(samples) <= 1, f"{expr}: expected one series, got {samples}"
        return samples[0].value if samples else None

    def raw(
        self, selector: str, start: float, end: float
    ) -> list[tuple[dict[str, str], list[tuple[float, float]]]]:
        """Every raw sample of `selector` in (start, end]: (labels, [(time, value), ...]) per series."""
        window = max(1, int(end - start + 0.999))
        data = self.api("query", query=f"{selector}[{window}s]", time=f"{end:.3f}")
        assert data["resultType"] == "matrix", data["resultType"]
        return [(r["metric"], [(float(t), float(v)) for t, v in r["values"]]) for r in data["result"]]


def stop(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


def tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return f"({path.name}: no output)"
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return f"--- {path.name} (last {len(text)} lines) ---\n" + "\n".join(text)


def prometheus_config(
    path: Path,
    jobs: dict[str, Sequence[str]],
    rule_files: Sequence[Path] = (),
    remote_write: str | None = None,
) -> None:
    """A Prometheus config scraping every second. JSON is YAML, which spares a YAML dependency."""
    config: dict[str, Any] = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": list(targets)}]} for job, targets in jobs.items()
        ],
    }
    if remote_write is not None:
        # Small batches sent at once: the test waits for the store to catch up, not for full shards.
        config["remote_write"] = [
            {"url": remote_write, "queue_config": {"batch_send_deadline": "1s", "max_samples_per_send": 2000}}
        ]
    path.write_text(json.dumps(config))


def start_prometheus(tmp: Path, config: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    assert PROMETHEUS.exists(), f"{PROMETHEUS} is missing: run `make prometheus` (make test does)"
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                str(PROMETHEUS),
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp,
        )


def start_daemon(
    config: Path, src_glob: str, state: Path, listen: str, log: Path, cwd: Path
) -> subprocess.Popen[bytes]:
    assert TELEMETRYD.exists(), f"{TELEMETRYD} is missing: install the project into the venv"
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                str(TELEMETRYD),
                "run",
                "--config",
                str(config),
                "--path",
                src_glob,
                "--state-dir",
                str(state),
                "--metrics-listen",
                listen,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
        )
