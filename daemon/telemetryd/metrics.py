"""Prometheus metrics and the HTTP endpoint. Observes the daemon; never steers it.

The main loop hands over plain numbers once per iteration (`Stats`); counters are advanced by the
difference, so the hot path never touches a metric object.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    gc_collector,
    make_wsgi_app,
    platform_collector,
    process_collector,
)

from . import __version__
from .events import SKIP_REASONS

# 100 µs .. 10 s, about three buckets a decade: checkpoint cost must be resolvable at both ends.
DURATION_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
INGEST_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
ROTATION_KINDS = ("rename", "truncate", "delete")
RECOVERY_OUTCOMES = ("fresh", "clean", "fallback", "quarantined")


@dataclass
class Stats:
    """What the main loop reports each iteration; totals are this process's own since start."""

    events: int = 0
    overflow: int = 0
    bytes_read: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    rotations: dict[str, int] = field(default_factory=dict)
    source_errors: dict[str, int] = field(default_factory=dict)
    patterns: int = 0
    files: int = 0
    read_lag_bytes: int = 0
    checkpoint_lag_bytes: int = 0
    checkpoint_lag_events: int = 0
    file_lags: list[tuple[str, int]] = field(default_factory=list)  # the top files by read lag
    top_patterns: list[tuple[str, str, int]] = field(default_factory=list)  # id, template, count
    truncate_loss_windows: int = 0


class Metrics:
    def __init__(self, max_patterns: int) -> None:
        r = self.registry = CollectorRegistry()
        process_collector.ProcessCollector(registry=r)
        platform_collector.PlatformCollector(registry=r)
        gc_collector.GCCollector(registry=r)
        self.events = Counter(
            "telemetryd_events", "Events counted into patterns (overflow included)", registry=r
        )
        self.overflow = Counter(
            "telemetryd_overflow_events", "Events counted in the overflow bucket", registry=r
        )
        self.skipped = Counter(
            "telemetryd_lines_skipped", "Lines not counted, by reason", ["reason"], registry=r
        )
        self.bytes_read = Counter("telemetryd_bytes_read", "Bytes consumed from sources", registry=r)
        self.patterns = Gauge("telemetryd_patterns", "Distinct patterns held", registry=r)
        self.patterns_max = Gauge("telemetryd_patterns_max", "Configured patterns.max_patterns", registry=r)
        self.files = Gauge("telemetryd_files_tracked", "Files being tailed", registry=r)
        self.read_lag = Gauge(
            "telemetryd_read_lag_bytes", "Sum over files of size minus read offset", registry=r
        )
        self.file_lag = Gauge(
            "telemetryd_file_read_lag_bytes", "Read lag of the files that lag most", ["path"], registry=r
        )
        self.ckpt_lag_bytes = Gauge(
            "telemetryd_checkpoint_lag_bytes", "Sum over files of size minus checkpointed offset", registry=r
        )
        self.ckpt_lag_events = Gauge(
            "telemetryd_checkpoint_lag_events",
            "Events counted but not yet in a durable checkpoint",
            registry=r,
        )
        self.ckpt_last = Gauge(
            "telemetryd_checkpoint_last_success_timestamp_seconds",
            "Unix time of the last durable checkpoint",
            registry=r,
        )
        self.ckpt_duration = Histogram(
            "telemetryd_checkpoint_duration_seconds",
            "One checkpoint: serialize, write, fsync",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.ckpt_writes = Counter(
            "telemetryd_checkpoint_writes", "Checkpoint writes by result", ["result"], registry=r
        )
        self.ckpt_size = Gauge(
            "telemetryd_checkpoint_size_bytes", "Bytes written by the last checkpoint", registry=r
        )
        self.compactions = Counter(
            "telemetryd_checkpoint_compactions", "Journal compactions by result", ["result"], registry=r
        )
        self.rotations = Counter("telemetryd_rotations", "File rotations seen, by kind", ["kind"], registry=r)
        self.loss_windows = Counter(
            "telemetryd_truncate_loss_windows",
            "Truncations of a file read past its start: lines written after the last read and before the"
            " truncation may be in no file (docs/design.md, Delivery guarantee)",
            registry=r,
        )
        self.recoveries = Counter(
            "telemetryd_recoveries", "Recoveries at start, by outcome", ["outcome"], registry=r
        )
        self.settings_changes = Counter(
            "telemetryd_settings_changes",
            "Starts that archived counts because pattern settings changed",
            registry=r,
        )
        self.source_errors = Counter(
            "telemetryd_source_errors", "Files that could not be read, by reason", ["reason"], registry=r
        )
        self.ingest_delay = Histogram(
            "telemetryd_ingest_delay_seconds",
            "From a change notification to its lines being counted",
            buckets=INGEST_BUCKETS,
            registry=r,
        )
        self.pattern_events = Counter(
            "telemetryd_pattern_events", "Events of the top patterns", ["pattern_id", "template"], registry=r
        )
        self.build = Gauge("telemetryd_build_info", "Build information", ["version"], registry=r)
        self.build.labels(__version__).set(1)
        self.patterns_max.set(max_patterns)
        for reason in SKIP_REASONS:
            self.skipped.labels(reason)
        for kind in ROTATION_KINDS:
            self.rotations.labels(kind)
        for outcome in RECOVERY_OUTCOMES:
            self.recoveries.labels(outcome)
        for result in ("ok", "error"):
            self.ckpt_writes.labels(result)
            self.compactions.labels(result)
        self._prev = Stats()
        self._file_lag_paths: set[str] = set()
        self._pattern_seen: dict[str, int] = {}

    def observe_counts(self, events: int, overflow: int, bytes_read: int, checkpoint_lag_events: int) -> None:
        """The cheap totals, after each read pass: a scrape sees an event counted the moment it is."""
        p = self._prev
        self.events.inc(events - p.events)
        self.overflow.inc(overflow - p.overflow)
        self.bytes_read.inc(bytes_read - p.bytes_read)
        self.ckpt_lag_events.set(checkpoint_lag_events)
        p.events, p.overflow, p.bytes_read = events, overflow, bytes_read

    def observe(self, s: Stats) -> None:
        self.observe_counts(s.events, s.overflow, s.bytes_read, s.checkpoint_lag_events)
        p = self._prev
        _inc_labelled(self.skipped, s.skipped, p.skipped)
        _inc_labelled(self.rotations, s.rotations, p.rotations)
        _inc_labelled(self.source_errors, s.source_errors, p.source_errors)
        self.patterns.set(s.patterns)
        self.files.set(s.files)
        self.read_lag.set(s.read_lag_bytes)
        self.ckpt_lag_bytes.set(s.checkpoint_lag_bytes)
        paths = {path for path, _ in s.file_lags}
        for gone in self._file_lag_paths - paths:
            self.file_lag.remove(gone)
        for path, lag in s.file_lags:
            self.file_lag.labels(path).set(lag)
        self._file_lag_paths = paths
        # `count` is the pattern's events since process start, so a pattern entering the top K late
        # still reports everything this process counted for it.
        for pid, tpl, count in s.top_patterns:
            before = self._pattern_seen.get(pid, 0)
            child = self.pattern_events.labels(pid, tpl)
            if count > before:
                child.inc(count - before)
            self._pattern_seen[pid] = count
        self.loss_windows.inc(s.truncate_loss_windows - p.truncate_loss_windows)
        self._prev = Stats(
            s.events, s.overflow, s.bytes_read, dict(s.skipped), dict(s.rotations), dict(s.source_errors)
        )
        self._prev.truncate_loss_windows = s.truncate_loss_windows

    def checkpoint_written(self, ok: bool, duration: float, nbytes: int, when: float) -> None:
        self.ckpt_writes.labels("ok" if ok else "error").inc()
        if ok:
            self.ckpt_duration.observe(duration)
            self.ckpt_size.set(nbytes)
            self.ckpt_last.set(when)


def _inc_labelled(c: Counter, now: dict[str, int], before: dict[str, int]) -> None:
    for label, v in now.items():
        d = v - before.get(label, 0)
        if d:
            c.labels(label).inc(d)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    # A slow or silent client must not hold a thread forever.
    timeout = 5

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Health:
    started: float = field(default_factory=time.monotonic)
    last_loop: float = field(default_factory=time.monotonic)
    ready: bool = False
    stale_after: float = 30.0

    def alive(self) -> bool:
        return time.monotonic() - self.last_loop < self.stale_after


Environ = dict[str, Any]
StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def make_app(metrics: Metrics, health: Health) -> Callable[[Environ, StartResponse], Iterable[bytes]]:
    metrics_app = make_wsgi_app(metrics.registry)

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/healthz":
            ok = health.alive()
            start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"ok\n" if ok else b"main loop stalled\n"]
        if path == "/readyz":
            ok = health.ready and health.alive()
            start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"ready\n" if ok else b"not ready\n"]
        if path in ("/metrics", "/"):
            return metrics_app(environ, start_response)  # type: ignore[no-any-return]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: try /metrics, /healthz, /readyz\n"]

    return app


class HttpServer:
    def __init__(
        self, host: str, port: int, app: Callable[[Environ, StartResponse], Iterable[bytes]]
    ) -> None:
        if ":" in host:
            _Server.address_family = socket.AF_INET6
        self._server = make_server(host, port, app, server_class=_Server, handler_class=_QuietHandler)
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-http", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
