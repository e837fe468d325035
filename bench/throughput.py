#!/usr/bin/env python3
"""Throughput of `telemetryd run --once` on the reference workload, beside the bare-loop ceiling.

Usage: throughput.py [--lines N] [--shared DIR] [--runs R]
Both are measured in the same run on the same file (page cache warm), and the ratio is printed.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec

HERE = Path(__file__).resolve().parent
BIN = str(Path(sys.executable).parent / "telemetryd")
CONFIG = '[patterns]\nkey_fields = ["event_type", "service", "level"]\ntemplate_field = "message"\n'


class Ev(msgspec.Struct):
    event_type: str = ""
    service: str = ""
    level: str = ""


def bare_loop(path: Path) -> float:
    """The practical ceiling: decode the key fields and count, no offsets, no templates."""
    dec = msgspec.json.Decoder(Ev)
    c: collections.Counter[tuple[str, str, str]] = collections.Counter()
    t0 = time.perf_counter()
    with open(path, "rb") as f:
        for line in f:
            e = dec.decode(line)
            c[(e.event_type, e.service, e.level)] += 1
    return time.perf_counter() - t0


def daemon_once(path: Path, tmp: Path) -> float:
    state = tmp / "state"
    shutil.rmtree(state, ignore_errors=True)
    cfg = tmp / "bench.toml"
    cfg.write_text(CONFIG + f'[checkpoint]\nstate_dir = "{state}"\n[log]\nlevel = "warning"\n')
    t0 = time.perf_counter()
    subprocess.run([BIN, "run", "--once", "--config", str(cfg), "--path", str(path)], check=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--shared", default=str(HERE.parent.parent / "shared"))
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tlmd-bench-"))
    try:
        data = tmp / "events.jsonl"
        subprocess.run(
            [sys.executable, os.path.join(a.shared, "bench", "gen_events.py"), str(data), str(a.lines)],
            check=True,
        )
        size_mb = data.stat().st_size / 1e6
        bare, daemon = [], []
        for _ in range(a.runs):
            bare.append(bare_loop(data))
            daemon.append(daemon_once(data, tmp))
        b, d = min(bare), min(daemon)
        print(f"lines={a.lines} size={size_mb:.0f}MB runs={a.runs} (best of)")
        print(f"bare loop:           {a.lines / b:>10,.0f} lines/s  {size_mb / b:7.1f} MB/s")
        print(
            f"telemetryd --once:   {a.lines / d:>10,.0f} events/s {size_mb / d:7.1f} MB/s  "
            f"ratio {b / d:.2f} x bare loop (process start and final checkpoint included)"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
