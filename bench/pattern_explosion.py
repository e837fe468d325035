#!/usr/bin/env python3
"""Pattern explosion: N events whose messages share no template (nothing for the masks to fold), read by
the real daemon (`run --once`). Patterns must stop at max_patterns, the rest go to the overflow bucket,
and memory must stay bounded: the daemon's peak RSS is reported for each size (from wait4's rusage).

Usage: pattern_explosion.py [--sizes 200000,1000000] [--max-patterns 100000] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Letters only, and none of a-f: no digit, hex, id or date mask can apply, so every message is its own
# template.
_LETTERS = "ghijklmnopqrstuvwxyz"


def distinct_message(i: int) -> str:
    # Bijective base 20: every i gets its own word, no two words alike, no digits anywhere.
    word = ""
    n = i + 1
    while n:
        n, r = divmod(n - 1, len(_LETTERS))
        word += _LETTERS[r]
    # Wrapped in "k": a bare word could be one the masks know ("null", "nil"). First: the structural
    # stage never masks a message's first word, so no two of these ever fold into one pattern.
    return f"k{word}k lookup failed"


def write_events(path: Path, n: int) -> None:
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"message": distinct_message(i)}) + "\n")


def _telemetryd() -> str:
    here = Path(sys.executable).parent / "telemetryd"
    return str(here) if here.exists() else "telemetryd"


def run_one(work: Path, n: int, max_patterns: int) -> dict[str, object]:
    d = work / f"n{n}"
    d.mkdir(parents=True, exist_ok=True)
    data, state, cfg = d / "events.jsonl", d / "state", d / "telemetryd.toml"
    write_events(data, n)
    cfg.write_text(
        f'[patterns]\nkey_fields = []\ntemplate_field = "message"\nmax_patterns = {max_patterns}\n'
        '[metrics]\nlisten = ""\n[checkpoint]\nevery_events = 100000\n[log]\nlevel = "warning"\n'
    )
    bin_ = _telemetryd()
    common = ["--config", str(cfg), "--state-dir", str(state)]
    t0 = time.monotonic()
    p = subprocess.Popen([bin_, "run", "--once", "--path", str(data), *common])
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    took = time.monotonic() - t0
    if p.returncode != 0:
        raise SystemExit(f"telemetryd run --once exited {p.returncode}")
    doc = json.loads(
        subprocess.run([bin_, "patterns", "--json", *common], capture_output=True, check=True).stdout
    )
    return {
        "events": n,
        "events_total": doc["events_total"],
        "patterns": len(doc["patterns"]),
        "overflow": doc["overflow_count"],
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),  # ru_maxrss is KiB on Linux
        "seconds": round(took, 1),
        "ok": doc["events_total"] == n
        and len(doc["patterns"]) == min(n, max_patterns)
        and doc["overflow_count"] == max(0, n - max_patterns),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="200000,1000000")
    ap.add_argument("--max-patterns", type=int, default=100_000)
    ap.add_argument("--workdir", default="")
    a = ap.parse_args()
    work = Path(a.workdir) if a.workdir else Path(tempfile.mkdtemp(prefix="telemetryd-explosion-"))
    ok = True
    try:
        for n in (int(x) for x in a.sizes.split(",")):
            r = run_one(work, n, a.max_patterns)
            print(json.dumps(r), flush=True)
            ok = ok and bool(r["ok"])
    finally:
        if not a.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
