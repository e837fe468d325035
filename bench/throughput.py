#!/usr/bin/env python3
"""Throughput of `telemetryd run --once` on the reference workload, beside the bare-loop ceiling.

Usage: throughput.py [--workload reference|service] [--lines N] [--files 1 16 256] [--runs R]
                     [--shared DIR] [--profile] [--instructions]

The workload is ../shared/bench/gen_events.py's (reference: digit variables) or gen_service.py's
(service: UUIDs, names, emails, pods..., with the true template of each line), generated once; for
F files the same lines are cut into F consecutive parts. Per round, the bare loop and the daemon
(default settings: key fields event_type, service, level; template of message; durable checkpoints
every 1000 events; fresh state dir) run one after the other on the same files with the page cache warm;
the best of R rounds is
reported, with its ratio to the best bare loop, and the median and range of each round's own ratio.
The daemon's figure includes process start, recovery and the final checkpoint; its checkpoint count
and p50/p99 come from the summary it logs at stop. Beside the speed: the live pattern count, the
events in the overflow bucket, the distinct (key values, true template) pairs of the input (service
workload) and the daemon's peak RSS.
--profile also runs the daemon's code once under cProfile (in this process) and prints where the
time goes. --instructions also counts the CPU instructions of both (one file, each a whole process,
under valgrind's callgrind): a figure this shared machine's noise cannot move, for comparing changes.
"""

from __future__ import annotations

import argparse
import collections
import compileall
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec

HERE = Path(__file__).resolve().parent
BIN = str(Path(sys.executable).parent / "telemetryd")
CONFIG = """[patterns]
key_fields = ["event_type", "service", "level"]
template_field = "message"
[checkpoint]
state_dir = "{state}"
[log]
format = "json"
level = "info"
"""


class Ev(msgspec.Struct):
    event_type: str = ""
    service: str = ""
    level: str = ""


def bare_loop(paths: list[Path]) -> float:
    """The practical ceiling: decode the key fields and count, no offsets, no templates."""
    dec = msgspec.json.Decoder(Ev)
    c: collections.Counter[tuple[str, str, str]] = collections.Counter()
    t0 = time.perf_counter()
    for path in paths:
        with open(path, "rb") as f:
            for line in f:
                e = dec.decode(line)
                c[(e.event_type, e.service, e.level)] += 1
    return time.perf_counter() - t0


@dataclass
class DaemonRun:
    seconds: float
    cpu: float
    events: int
    summary: dict[str, object]
    patterns: int = 0
    overflow: int = 0
    rss_mb: float = 0.0


def daemon_once(directory: Path, tmp: Path) -> DaemonRun:
    state = tmp / "state"
    shutil.rmtree(state, ignore_errors=True)
    cfg = tmp / "bench.toml"
    cfg.write_text(CONFIG.format(state=state))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    log = tmp / "daemon.log"
    rss_file = tmp / "rss.txt"
    # The peak RSS of the daemon itself: GNU time reports it from the exec'd process. (A forked child's
    # own ru_maxrss would start at this bench process's size, which holds the bare loop's data.)
    timer = ["/usr/bin/time", "-f", "%M", "-o", str(rss_file)] if os.path.exists("/usr/bin/time") else []
    with open(log, "wb") as logf:
        p = subprocess.run(
            [*timer, BIN, "run", "--once", "--config", str(cfg), "--path", str(directory / "*.jsonl")],
            stderr=logf,
            check=False,
        )
    seconds = time.perf_counter() - t0
    err = log.read_text()
    if p.returncode:
        sys.exit(f"daemon failed:\n{err}")
    rss = int(rss_file.read_text().split()[-1]) / 1024 if timer else float("nan")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    summary: dict[str, object] = {}
    for line in err.splitlines():
        if '"stopped"' in line:
            summary = json.loads(line)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    doc = json.loads(
        subprocess.run(
            [BIN, "patterns", "--json", "--config", str(cfg)], check=True, capture_output=True, text=True
        ).stdout
    )
    return DaemonRun(
        seconds,
        cpu,
        int(summary.get("events_total", 0)),  # type: ignore[call-overload]
        summary,
        len(doc["patterns"]),
        int(doc["overflow_count"]),
        rss,
    )


def true_pairs(data: Path) -> int:
    """Distinct (key values, true template) pairs: what a perfect extractor's pattern count would be."""
    dec = msgspec.json.Decoder(Ev)
    pairs = set()
    with open(data, "rb") as f, open(str(data) + ".truth", "rb") as t:
        for line, tpl in zip(f, t, strict=True):
            e = dec.decode(line)
            pairs.add((e.event_type, e.service, e.level, tpl))
    return len(pairs)


def split_into(data: Path, files: int, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    lines = data.read_bytes().splitlines(keepends=True)
    paths = []
    for i in range(files):
        part = out / f"part{i:04d}.jsonl"
        part.write_bytes(b"".join(lines[i * len(lines) // files : (i + 1) * len(lines) // files]))
        paths.append(part)
    return paths


BARE_SCRIPT = """
import sys, collections, msgspec
class Ev(msgspec.Struct):
    event_type: str = ""
    service: str = ""
    level: str = ""
dec = msgspec.json.Decoder(Ev)
c = collections.Counter()
for path in sys.argv[1:]:
    with open(path, "rb") as f:
        for line in f:
            e = dec.decode(line)
            c[(e.event_type, e.service, e.level)] += 1
"""


def instructions(cmd: list[str]) -> int:
    """Instructions a whole process executes, counted by callgrind (exact, unlike time here)."""
    p = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *cmd],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=True,
    )
    for line in p.stderr.splitlines():
        if "Collected :" in line:
            return int(line.rsplit(":", 1)[1])
    raise SystemExit(f"no instruction count from valgrind:\n{p.stderr}")


def count_instructions(paths: list[Path], directory: Path, tmp: Path, lines: int) -> None:
    if shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind (apt-get install valgrind)")
    bare = instructions([sys.executable, "-c", BARE_SCRIPT, *map(str, paths)])
    state = tmp / "state-instructions"
    cfg = tmp / "instructions.toml"
    cfg.write_text(CONFIG.format(state=state))
    daemon = instructions([BIN, "run", "--once", "--config", str(cfg), "--path", str(directory / "*.jsonl")])
    print(f"\ninstructions, whole process, {lines:,} lines ({directory.name}; callgrind):")
    print(f"  bare loop:         {bare / lines:8,.0f} per line")
    print(f"  telemetryd --once: {daemon / lines:8,.0f} per event  ratio {bare / daemon:.2f} x bare loop")


def profile(directory: Path, tmp: Path, top: int = 14) -> None:
    import cProfile
    import pstats

    from telemetryd import cli

    state = tmp / "state-profile"
    cfg = tmp / "profile.toml"
    cfg.write_text(CONFIG.format(state=state).replace('level = "info"', 'level = "warning"'))
    argv = ["run", "--once", "--config", str(cfg), "--path", str(directory / "*.jsonl")]
    prof = cProfile.Profile()
    prof.enable()
    with contextlib.suppress(SystemExit):
        cli.main(argv)
    prof.disable()
    print(f"\ncProfile of run --once ({directory.name}), top {top} by own time:")
    pstats.Stats(prof).sort_stats("tottime").print_stats(top)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workload", choices=["reference", "service"], default="reference")
    ap.add_argument("--lines", type=int, default=2_000_000)
    ap.add_argument("--files", type=int, nargs="+", default=[1, 16, 256])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--shared", default=str(HERE.parent.parent / "shared"))
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--instructions", action="store_true")
    a = ap.parse_args()
    # An installed wheel ships bytecode; an editable install under PYTHONDONTWRITEBYTECODE (as in CI and
    # this sandbox) would compile every module at each start and bill ~50 ms to the daemon.
    import telemetryd

    compileall.compile_dir(os.path.dirname(telemetryd.__file__), quiet=1)
    tmp = Path(tempfile.mkdtemp(prefix="tlmd-bench-"))
    try:
        data = tmp / "events.jsonl"
        if a.workload == "service":
            gen = [os.path.join(a.shared, "bench", "gen_service.py"), "events", str(data), str(a.lines)]
        else:
            gen = [os.path.join(a.shared, "bench", "gen_events.py"), str(data), str(a.lines)]
        subprocess.run([sys.executable, *gen], check=True)
        size_mb = data.stat().st_size / 1e6
        truth_pairs = true_pairs(data) if a.workload == "service" else None
        sets = {n: split_into(data, n, tmp / f"f{n}") for n in a.files}
        data.unlink()
        bare: dict[int, list[float]] = {n: [] for n in a.files}
        runs: dict[int, list[DaemonRun]] = {n: [] for n in a.files}
        for _ in range(a.runs):
            for n in a.files:
                bare[n].append(bare_loop(sets[n]))
                r = daemon_once(tmp / f"f{n}", tmp)
                if r.events != a.lines:
                    sys.exit(f"daemon counted {r.events} events, expected {a.lines}")
                runs[n].append(r)
        print(
            f"workload={a.workload} lines={a.lines} size={size_mb:.0f}MB rounds={a.runs} (best of),"
            f" machine: {os.cpu_count()} CPUs"
        )
        for n in a.files:
            b = min(bare[n])
            d = min(runs[n], key=lambda r: r.seconds)
            s = d.summary
            print(f"files={n}")
            print(f"  bare loop:         {a.lines / b:>10,.0f} lines/s  {size_mb / b:7.1f} MB/s")
            print(
                f"  telemetryd --once: {a.lines / d.seconds:>10,.0f} events/s {size_mb / d.seconds:7.1f} MB/s"
                f"  ratio {b / d.seconds:.2f} x bare loop"
                f"  (CPU {d.cpu:.2f} s = {a.lines / d.cpu:,.0f} events per CPU-s)"
            )
            # Each round's pair ran back to back, so a slow spell of the machine hits both alike.
            pairs = sorted(bt / r.seconds for bt, r in zip(bare[n], runs[n], strict=True))
            print(
                f"  per-round ratios: median {pairs[len(pairs) // 2]:.2f},"
                f" range {pairs[0]:.2f}-{pairs[-1]:.2f}"
            )
            print(
                f"  checkpoints: {s.get('checkpoints_written')} written, p50 {s.get('checkpoint_p50_ms')} ms,"
                f" p99 {s.get('checkpoint_p99_ms')} ms, max {s.get('checkpoint_max_ms')} ms"
            )
            truth = f", true (key, template) pairs {truth_pairs}" if truth_pairs is not None else ""
            ratio = f" = {d.patterns / truth_pairs:.2f} x" if truth_pairs else ""
            print(
                f"  patterns {d.patterns}{truth}{ratio}, overflow {d.overflow},"
                f" peak RSS {max(r.rss_mb for r in runs[n]):.0f} MB"
            )
        if a.profile:
            profile(tmp / f"f{a.files[0]}", tmp)
        if a.instructions:
            n = a.files[0]
            count_instructions(sets[n], tmp / f"f{n}", tmp, a.lines)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
