#!/usr/bin/env python3
"""Built-in sample workload for `make demo`: JSONL events shaped like the reference workload.

Usage: sample_events.py OUT COUNT [--rate EVENTS_PER_S] [--seed S]
"""

import argparse
import json
import random
import time

TYPES = ["tool_call", "llm_request", "error", "query", "cache_hit", "cache_miss"]
MESSAGES = [
    "connection to 10.0.{a}.{b} timed out after {n} ms",
    "user {u} loaded page /items/{n}",
    "query took {n} ms rows={m}",
    "cache miss for key k{n}",
    "tool {t} failed with code {m}",
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("count", type=int)
    ap.add_argument("--rate", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rnd = random.Random(a.seed)
    t0 = time.monotonic()
    with open(a.out, "a", buffering=1 if a.rate else -1) as f:
        for i in range(a.count):
            msg = rnd.choice(MESSAGES).format(
                a=rnd.randint(0, 255),
                b=rnd.randint(0, 255),
                n=rnd.randint(1, 5000),
                u=rnd.randint(1, 10**6),
                m=rnd.randint(0, 99),
                t=rnd.choice(["grep", "read", "bash"]),
            )
            ev = {
                "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "event_type": rnd.choice(TYPES),
                "service": rnd.choice(["api", "worker", "agent"]),
                "level": rnd.choice(["info", "warn", "error"]),
                "message": msg,
                "duration_ms": round(rnd.random() * 100, 3),
            }
            f.write(json.dumps(ev) + "\n")
            if a.rate:
                ahead = (i + 1) / a.rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)


if __name__ == "__main__":
    main()
