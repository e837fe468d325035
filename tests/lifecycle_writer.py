#!/usr/bin/env python3
"""A writer process that rotates its own file, alternating rename+create and copytruncate, for the
combined lifecycle test. Rotated names are PATH.1, PATH.2, ...; every line written ends up in exactly
one file (the copy holds what the truncation removed), so the lines in all files are the truth.

Usage: lifecycle_writer.py PATH COUNT --every N [--seed S] [--rate EVENTS_PER_S]
"""

import argparse
import json
import os
import random
import shutil
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("path")
    ap.add_argument("count", type=int)
    ap.add_argument("--every", type=int, required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rate", type=float, default=0.0)
    a = ap.parse_args()
    rnd = random.Random(a.seed)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
    fd = os.open(a.path, flags, 0o644)
    rotations = 0
    t0 = time.monotonic()
    for i in range(a.count):
        line = json.dumps({"k": f"w{a.seed}-{rnd.randrange(20)}", "seq": i, "message": f"n {i}"}).encode()
        line += b"\n"
        cut = rnd.randrange(1, len(line))
        os.write(fd, line[:cut])  # a half line now and then: never counted half
        os.write(fd, line[cut:])
        if (i + 1) % a.every == 0:
            rotations += 1
            rotated = f"{a.path}.{rotations}"
            if rotations % 2:
                os.close(fd)
                os.rename(a.path, rotated)
                fd = os.open(a.path, flags, 0o644)
            else:
                shutil.copyfile(a.path, rotated)
                os.ftruncate(fd, 0)
        if a.rate:
            ahead = (i + 1) / a.rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
    os.close(fd)


if __name__ == "__main__":
    main()
