#!/usr/bin/env python3
"""Latency from append to counted, at a steady event rate, seen from outside the daemon.

Usage: latency.py [--rate 10000] [--seconds 20] [--warmup 3] [--watch auto|poll] [--scrape-gap S]
                  [--workload reference|service] [--shared DIR]

A writer process appends reference-shaped events (shared/bench/gen_events.py's format) at --rate
events/s in batches every millisecond, logging (monotonic time after write(), lines written so far). A
poller process scrapes /metrics back to back, logging (send time, receive time, events_read_total). An
event's latency is the receive time of the first scrape whose count covers it, minus its write time:
an upper bound, too high by at most one scrape interval (printed, so the resolution is known). Both
processes use CLOCK_MONOTONIC, which is shared across processes. The daemon's own
telemetryd_ingest_delay_seconds histogram (wake-up to counted) is printed beside it.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

BIN = str(Path(sys.executable).parent / "telemetryd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def service_events(shared: str) -> Iterator[tuple[str, str, str]]:
    """(service, level, message) of ../shared/bench/gen_service.py, generated as the writer goes."""
    sys.path.insert(0, os.path.join(shared, "bench"))
    import gen_service  # type: ignore[import-not-found]

    for svc, level, msg, _ in gen_service.generate(10**12, 3):
        yield svc, level, msg


def writer(path: str, rate: int, until: float, out: mp.Queue, shared: str | None = None) -> None:  # type: ignore[type-arg]
    per_ms = max(1, rate // 1000)
    log = []
    n = 0
    service = service_events(shared) if shared else None
    with open(path, "ab", buffering=0) as f:
        tick = time.monotonic()
        while tick < until:
            lines = []
            for _ in range(per_ms):
                if service is not None:
                    svc, level, msg = next(service)
                    ev: dict[str, object] = {"ts": "2026-11-23T12:00:00.000000Z", "event_type": svc}
                    ev.update(service=svc, level=level, message=msg, duration_ms=1.5, attrs={"a": n})
                    lines.append(json.dumps(ev))
                    n += 1
                    continue
                ev = {
                    "ts": "2026-11-23T12:00:00.000000Z",
                    "event_type": ("tool_call", "query", "error")[n % 3],
                    "service": "api",
                    "level": "info",
                    "message": f"query took {n % 5000} ms rows={n % 97}",
                    "duration_ms": 1.5,
                    "attrs": {"a": n, "b": "x" * 10},
                }
                lines.append(json.dumps(ev))
                n += 1
            f.write(("\n".join(lines) + "\n").encode())
            log.append((time.monotonic(), n))
            tick += 0.001
            delay = tick - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    out.put(log)


def poller(port: int, until: float, gap: float, out: mp.Queue) -> None:  # type: ignore[type-arg]
    log = []
    while time.monotonic() < until:
        sent = time.monotonic()
        m = metrics(port)
        # [prom] counted by this process (fresh state dir); telemetryd_events_total waits for the checkpoint
        log.append((sent, time.monotonic(), int(m.get("telemetryd_events_read_total", 0))))
        if gap:
            time.sleep(gap)
    out.put(log)


def quantile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


def histogram_quantiles(m: dict[str, float], name: str) -> tuple[float, float, int]:
    buckets = sorted(
        (float(k.split('le="')[1].split('"')[0]), v) for k, v in m.items() if k.startswith(f"{name}_bucket{{")
    )
    total = int(m.get(f"{name}_count", 0))

    def q(x: float) -> float:
        for le, c in buckets:
            if c >= x * total:
                return le
        return float("inf")

    return q(0.5), q(0.99), total


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--watch", choices=["auto", "poll"], default="auto")
    # 0: scrape back to back (finest resolution; the daemon's CPU then includes serving the scrapes)
    ap.add_argument("--scrape-gap", type=float, default=0.0)
    # service: ../shared/bench/gen_service.py's messages (names, ids, pods...) instead of reference ones
    ap.add_argument("--workload", choices=["reference", "service"], default="reference")
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parent.parent.parent / "shared"))
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tlmd-latency-", dir="/var/tmp"))
    port = free_port()
    data = tmp / "events.jsonl"
    data.touch()
    cfg = tmp / "latency.toml"
    cfg.write_text(
        f'[sources]\npaths = ["{data}"]\nwatch = "{a.watch}"\n'
        '[patterns]\nkey_fields = ["event_type", "service", "level"]\ntemplate_field = "message"\n'
        f'[checkpoint]\nstate_dir = "{tmp / "state"}"\n[metrics]\nlisten = "127.0.0.1:{port}"\n'
        '[log]\nlevel = "warning"\n'
    )
    d = subprocess.Popen([BIN, "run", "--config", str(cfg)])
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                metrics(port)
                break
            except OSError:
                if time.monotonic() > deadline:
                    sys.exit("daemon did not come up")
                time.sleep(0.05)
        start = time.monotonic()
        until = start + a.warmup + a.seconds
        wq: mp.Queue = mp.Queue()  # type: ignore[type-arg]
        pq: mp.Queue = mp.Queue()  # type: ignore[type-arg]
        shared = a.shared if a.workload == "service" else None
        w = mp.Process(target=writer, args=(str(data), a.rate, until, wq, shared))
        p = mp.Process(target=poller, args=(port, until + 1.0, a.scrape_gap, pq))
        p.start()
        w.start()
        time.sleep(a.warmup)
        cpu0, t0 = cpu_seconds(d.pid), time.monotonic()
        wlog, plog = wq.get(), pq.get()
        w.join()
        p.join()
        cpu = (cpu_seconds(d.pid) - cpu0) / (time.monotonic() - t0)
        final = metrics(port)
    finally:
        d.send_signal(signal.SIGTERM)
        d.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)
    counts = [c for _, _, c in plog]
    lat = []
    for t, n in wlog:
        if t < start + a.warmup:
            continue
        i = bisect.bisect_left(counts, n)
        if i < len(plog):
            lat.append(plog[i][1] - t)
    lat.sort()
    rate = (wlog[-1][1] - wlog[0][1]) / (wlog[-1][0] - wlog[0][0])
    gaps = sorted(b[0] - a_[0] for a_, b in itertools.pairwise(plog))
    ms = {q: quantile(lat, q) * 1e3 for q in (0.5, 0.9, 0.99)}
    print(
        f"{a.workload} events written at {rate:,.0f}/s for {a.seconds:.0f} s after {a.warmup:.0f} s warm-up"
        f" ({a.watch})"
    )
    print(
        f"append -> counted (upper bound): p50 {ms[0.5]:.1f} ms  p90 {ms[0.9]:.1f} ms  p99 {ms[0.99]:.1f} ms"
        f"  max {lat[-1] * 1e3:.1f} ms  ({len(lat)} batches)"
    )
    g50, g99 = quantile(gaps, 0.5) * 1e3, quantile(gaps, 0.99) * 1e3
    print(f"scrape interval (the resolution): p50 {g50:.2f} ms  p99 {g99:.2f} ms")
    p50, p99, n = histogram_quantiles(final, "telemetryd_ingest_delay_seconds")
    print(
        f"daemon's ingest delay histogram (wake-up to counted, bucket bounds): p50 <= {p50 * 1e3:g} ms"
        f"  p99 <= {p99 * 1e3:g} ms  ({n} passes)"
    )
    print(f"daemon CPU while written to and scraped: {cpu * 100:.0f} % of a core")


if __name__ == "__main__":
    main()
