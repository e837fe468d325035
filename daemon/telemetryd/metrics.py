"""Prometheus metrics. Observes the daemon; never steers it; served by `listener`.

The main loop hands over plain numbers once per iteration (`Stats`); counters are advanced by the
difference, so the hot path never touches a metric object.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    gc_collector,
    platform_collector,
    process_collector,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from . import __version__
from .exported import ExportedCounts

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
    bytes_read: int = 0
    rotations: dict[str, int] = field(default_factory=dict)
    source_errors: dict[str, int] = field(default_factory=dict)
    patterns: int = 0
    files: int = 0
    read_lag_bytes: int = 0
    checkpoint_lag_bytes: int = 0
    checkpoint_lag_events: int = 0
    file_lags: list[tuple[str, int]] = field(default_factory=list)  # the top files by read lag
    truncate_loss_windows: int = 0


class _Both(Collector):
    def __init__(self, live: CollectorRegistry, exported: ExportedCounts) -> None:
        self.live, self.exported = live, exported

    def collect(self) -> Iterable[Metric]:
        return [*self.live.collect(), *self.exported.collect()]


class Metrics:
    def __init__(self, max_patterns: int, key_fields: Sequence[str] = (), pattern_series: int = 0) -> None:
        # Two registries: `live`, rendered at every scrape, and the committed event counters and
        # per-pattern series (exported.py), rendered once per durable record (listener.metrics_app);
        # `registry` is both, for anything that wants every family at once.
        r = self.live = CollectorRegistry()
        process_collector.ProcessCollector(registry=r)
        platform_collector.PlatformCollector(registry=r)
        gc_collector.GCCollector(registry=r)
        # The counter below (events_read) is this process's own view of what it has read, committed or
        # not.
        self.exported = ExportedCounts(key_fields, pattern_series)
        # (no describe(): the registry then lets ?name[]= filter what it collects, whatever it holds)
        self.registry = CollectorRegistry(support_collectors_without_names=True)
        self.registry.register(_Both(r, self.exported))
        self.events_read = Counter(
            "telemetryd_events_read",
            "Events counted by this process since it started, committed or not (resets at restart)",
            registry=r,
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
        self.build = Gauge("telemetryd_build_info", "Build information", ["version"], registry=r)
        self.build.labels(__version__).set(1)
        self.patterns_max.set(max_patterns)
        for kind in ROTATION_KINDS:
            self.rotations.labels(kind)
        for outcome in RECOVERY_OUTCOMES:
            self.recoveries.labels(outcome)
        for result in ("ok", "error"):
            self.ckpt_writes.labels(result)
            self.compactions.labels(result)
        self._prev = Stats()
        self._file_lag_paths: set[str] = set()

    def observe_counts(self, events: int, bytes_read: int, checkpoint_lag_events: int) -> None:
        """The cheap since-start totals, after each read pass (the committed counters are exported.py's)."""
        p = self._prev
        self.events_read.inc(events - p.events)
        self.bytes_read.inc(bytes_read - p.bytes_read)
        self.ckpt_lag_events.set(checkpoint_lag_events)
        p.events, p.bytes_read = events, bytes_read

    def observe(self, s: Stats) -> None:
        self.observe_counts(s.events, s.bytes_read, s.checkpoint_lag_events)
        p = self._prev
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
        self.loss_windows.inc(s.truncate_loss_windows - p.truncate_loss_windows)
        # The main loop hands over a new Stats each pass: it can be kept as the previous one as it is.
        self._prev = s

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
