#!/usr/bin/env python3
"""Cost of one checkpoint with few vs many patterns held: it must not grow with the pattern count.

Usage: checkpoint_cost.py [--patterns 10 100000 ...] [--checkpoints N] [--touched K]
Each checkpoint follows K freshly counted events (a few patterns touched), as under steady appends, and is
timed from cutting the record to its fdatasync returning, the same span as
telemetryd_checkpoint_duration_seconds. The sizes are held at once and checkpoint in turn, one record
each, so they meet the same disk at the same moments; the RSS each table adds is printed too.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

from telemetryd import checkpoint as ck
from telemetryd.patterns import Extractor, PatternCounter


class Subject:
    """A pattern table of a given size and its own journal writer, checkpointing as the daemon does."""

    def __init__(self, n_patterns: int, touched: int, state_dir: Path) -> None:
        ex = Extractor(["k"], "", [])
        self.n, self.touched = n_patterns, touched
        self.c = PatternCounter(ex, n_patterns + 10, 1 << 20)
        self.c.process_block(b"".join(b'{"k": "p%d"}\n' % i for i in range(n_patterns)), 1.0)
        self.c.dirty = set()
        self.done = threading.Event()
        self.results: list[ck.WriteResult] = []
        self.w = ck.JournalWriter(str(state_dir), 0, None, ck.Settings(ex.digest, ["k"], ""), self._on)
        self.durations: list[float] = []

    def _on(self, r: ck.WriteResult) -> None:
        self.results.append(r)
        self.done.set()

    def checkpoint(self, i: int) -> None:
        c = self.c
        c.process_block(
            b"".join(b'{"k": "p%d"}\n' % ((i * 7 + j) % self.n) for j in range(self.touched)), 2.0
        )
        started = time.monotonic()
        delta = ck.Delta(
            i + 1,
            time.time(),
            ck.Totals(c.events_total, 0, 0, {}),
            [ck.FileEntry(1, 1, "/x", i, "", 0, "", 0)],
            [],
            list(c.dirty),
        )
        c.dirty = set()
        self.done.clear()
        self.w.append(ck.encode_delta(delta), i + 1, c.events_total, started)
        self.done.wait()
        self.durations.append(self.results[-1].duration)


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patterns", type=int, nargs="+", default=[10, 100_000])
    ap.add_argument("--checkpoints", type=int, default=1000)
    ap.add_argument("--touched", type=int, default=5)
    a = ap.parse_args()
    tmps = [Path(tempfile.mkdtemp(prefix="tlmd-ckpt-", dir="/var/tmp")) for _ in a.patterns]
    try:
        subjects = []
        for n, tmp in zip(a.patterns, tmps, strict=True):
            base = rss_mib()
            subjects.append(Subject(n, a.touched, tmp))
            grew = rss_mib() - base
            print(f"patterns={n:>9,} held: process RSS grew by {grew:6.1f} MiB (now {rss_mib():.0f} MiB)")
        # Interleaved, one checkpoint each in turn: every size sees the same disk at the same moments.
        for i in range(a.checkpoints):
            for s in subjects:
                s.checkpoint(i)
        base_p99 = None
        for s in subjects:
            s.w.close()
            d = sorted(s.durations)
            p50 = statistics.median(d)
            p99 = d[min(len(d) - 1, int(len(d) * 0.99))]
            base_p99 = base_p99 or p99
            print(
                f"patterns={s.n:>9,} checkpoints={len(d)} p50={p50 * 1e3:7.3f} ms  p99={p99 * 1e3:7.3f} ms"
                f"  p99 ratio to the first: {p99 / base_p99:.2f}"
            )
    finally:
        for tmp in tmps:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
