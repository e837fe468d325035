#!/usr/bin/env python3
"""A real writer process for the tests: appends JSONL events, often in several write() calls per line,
so the daemon sees partial lines. Each event has a unique `seq` and a key `k` from a small set.

Usage: writer.py PATH COUNT [--seed S] [--rate EVENTS_PER_S] [--keys N] [--start SEQ]
"""

import argparse
import json
import os
import random
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("path")
    ap.add_argument("count", type=int)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rate", type=float, default=0.0, help="events/s; 0 = as fast as possible")
    ap.add_argument("--keys", type=int, default=50)
    ap.add_argument("--start", type=int, default=0)
    a = ap.parse_args()
    rnd = random.Random(a.seed)
    fd = os.open(a.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    t0 = time.monotonic()
    for i in range(a.count):
        seq = a.start + i
        line = (
            json.dumps(
                {
                    "seq": seq,
                    "k": f"key{rnd.randrange(a.keys)}",
                    "message": f"request {seq} took {rnd.randint(1, 999)} ms",
                }
            ).encode()
            + b"\n"
        )
        # Split the line into 1-3 pieces written separately: the daemon must never count a half line.
        cuts = sorted(rnd.sample(range(1, len(line)), rnd.randint(0, 2)))
        prev = 0
        for c in [*cuts, len(line)]:
            os.write(fd, line[prev:c])
            prev = c
        if a.rate:
            ahead = (i + 1) / a.rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
    os.close(fd)


if __name__ == "__main__":
    main()
