#!/usr/bin/env python3
"""Cost of one checkpoint with few vs many patterns held: it must not grow with the pattern count.

Usage: checkpoint_cost.py [--patterns 10 100000 ...] [--checkpoints N] [--touched K]
Each checkpoint follows K freshly counted events (a few patterns touched), as under steady appends, and is
timed from cutting the record to its fdatasync returning, the same span as
telemetryd_checkpoint_duration_seconds.
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


def run(n_patterns: int, checkpoints: int, touched: int, state_dir: Path) -> list[float]:
    ex = Extractor(["k"], "", [])
    c = PatternCounter(ex, n_patterns + 10, 1 << 20)
    c.process_block(b"".join(b'{"k": "p%d"}\n' % i for i in range(n_patterns)), 1.0)
    c.dirty = set()
    done = threading.Event()
    results: list[ck.WriteResult] = []

    def on(r: ck.WriteResult) -> None:
        results.append(r)
        done.set()

    w = ck.JournalWriter(str(state_dir), 0, None, ck.Settings(ex.digest, ["k"], ""), on)
    durations = []
    for i in range(checkpoints):
        c.process_block(b"".join(b'{"k": "p%d"}\n' % ((i * 7 + j) % n_patterns) for j in range(touched)), 2.0)
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
        done.clear()
        w.append(ck.encode_delta(delta), i + 1, c.events_total, started)
        done.wait()
        durations.append(results[-1].duration)
    w.close()
    return durations


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patterns", type=int, nargs="+", default=[10, 100_000])
    ap.add_argument("--checkpoints", type=int, default=300)
    ap.add_argument("--touched", type=int, default=5)
    a = ap.parse_args()
    for n in a.patterns:
        tmp = Path(tempfile.mkdtemp(prefix="tlmd-ckpt-", dir="/var/tmp"))
        try:
            d = sorted(run(n, a.checkpoints, a.touched, tmp))
            p50 = statistics.median(d)
            p99 = d[min(len(d) - 1, int(len(d) * 0.99))]
            print(f"patterns={n:>9,} checkpoints={len(d)} p50={p50 * 1e3:7.3f} ms  p99={p99 * 1e3:7.3f} ms")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
