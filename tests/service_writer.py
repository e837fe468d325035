#!/usr/bin/env python3
"""Service-like telemetry for the pattern tests: word variables (names drawn from random pools) beside
typed ones (ids, numbers), so the structural stage has work to do. Its own code and pools, made up per
seed: nothing here is the benchmark generator's vocabulary.

As a script it is a real writer process: appends COUNT lines to PATH, some in several write() calls.
Usage: service_writer.py PATH COUNT [--seed S] [--rate EVENTS_PER_S]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import string
import time

TEMPLATES = (
    ("auth", "account {name} logged on through {small}"),
    ("auth", "token {hexid} granted to {name} for {int} seconds"),
    ("db", "table {word} scanned in {int} ms, planner chose {small}"),
    ("db", "vacuum of {word} finished"),
    ("queue", "worker {name} picked job {int} from lane {word}"),
    ("queue", "lane {word} drained"),
    ("cache", "evicted {int} entries from shard {word}"),
)


def pools(seed: int) -> dict[str, list[str]]:
    r = random.Random(seed * 7919 + 1)

    def words(n: int) -> list[str]:
        return sorted({"".join(r.choices(string.ascii_lowercase, k=r.randint(4, 9))) for _ in range(n)})

    return {"name": words(400), "word": words(60), "small": words(5)}


def messages(n: int, seed: int) -> list[dict[str, str]]:
    r = random.Random(seed)
    p = pools(seed)
    out = []
    for _ in range(n):
        svc, t = r.choice(TEMPLATES)
        msg = t.format(
            name=r.choice(p["name"]),
            word=r.choice(p["word"]),
            small=r.choice(p["small"]),
            hexid=f"{r.getrandbits(64):016x}",
            int=r.randint(0, 100000),
        )
        out.append({"service": svc, "message": msg})
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("path")
    ap.add_argument("count", type=int)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rate", type=float, default=0.0)
    a = ap.parse_args()
    rnd = random.Random(a.seed + 1000)
    fd = os.open(a.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    t0 = time.monotonic()
    for i, ev in enumerate(messages(a.count, a.seed)):
        line = json.dumps(ev).encode() + b"\n"
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
