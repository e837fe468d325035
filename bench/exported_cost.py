#!/usr/bin/env python3
"""Cost of the exported per-pattern series: what a checkpoint cut pays to capture the committed values
(ExportedCounts.capture, on the main thread) and what one scrape of the exported families costs (on the
HTTP thread), for K patterns holding a series.

Usage: exported_cost.py [--k 100 1000] [--cuts 2000] [--scrapes 200]
"""

from __future__ import annotations

import argparse
import statistics
import time

from prometheus_client import CollectorRegistry, generate_latest
from telemetryd.exported import ExportedCounts, Offsets
from telemetryd.patterns import PatternState


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--k", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--cuts", type=int, default=2000)
    ap.add_argument("--scrapes", type=int, default=200)
    a = ap.parse_args()
    for k in a.k:
        held = []
        for i in range(k):
            p = PatternState(
                f"{i:016x}", (f"svc{i % 7}",), f"request <*> took <*> ms variant {i}", i * 10, 1e9, 1e9, ""
            )
            p.export_base = 0
            held.append(p)
        ex = ExportedCounts(["service"], k)
        ex.recovered(Offsets(), 10**9, 0, {}, k, held)
        cuts = []
        for _ in range(a.cuts):
            t = time.perf_counter()
            view = ex.capture(10**9, 0, {"invalid_json": 3}, k, held)
            cuts.append(time.perf_counter() - t)
        ex.on_durable(view)
        reg = CollectorRegistry()
        reg.register(ex)
        scrapes = []
        for _ in range(a.scrapes):
            t = time.perf_counter()
            body = generate_latest(reg)
            scrapes.append(time.perf_counter() - t)
        print(
            f"K={k}: capture per cut p50 {statistics.median(cuts) * 1e6:.1f} us; "
            f"scrape of the exported families p50 {statistics.median(scrapes) * 1e3:.2f} ms, "
            f"{len(body)} bytes"
        )


if __name__ == "__main__":
    main()
