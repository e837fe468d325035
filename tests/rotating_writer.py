#!/usr/bin/env python3
"""A writer that keeps writing while its file is rotated the way logrotate does it, for the fast
rotation tests. Each line has a unique key `k` = "<tag>-<seq>", so "nothing twice" is checkable per line.

rename:       PATH -> PATH.N, then a new PATH (the writer reopens at once, as after a postrotate HUP).
copytruncate: copy PATH to PATH.N, then truncate PATH through a second descriptor while the writer thread
              goes on appending (never paused): lines written between the copy and the truncate are in
              no file, and are printed to stdout as `lost <first> <last>` ranges of seq.

Usage: rotating_writer.py PATH COUNT --mode rename|copytruncate --rate R [--every-min S] [--every-max S]
       [--seed N] [--tag T]
"""

import argparse
import json
import os
import random
import shutil
import sys
import threading
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("path")
    ap.add_argument("count", type=int)
    ap.add_argument("--mode", choices=["rename", "copytruncate"], required=True)
    ap.add_argument("--rate", type=float, default=1500.0)
    ap.add_argument("--every-min", type=float, default=0.3)
    ap.add_argument("--every-max", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tag", default="w")
    a = ap.parse_args()
    rnd = random.Random(a.seed)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
    lock = threading.Lock()
    state = {"fd": os.open(a.path, flags, 0o644), "seq": 0, "done": False}

    def write() -> None:
        t0 = time.monotonic()
        for i in range(a.count):
            line = json.dumps({"k": f"{a.tag}-{i}", "message": f"request {i} done"}).encode() + b"\n"
            cut = rnd.randrange(1, len(line))
            with lock:
                os.write(state["fd"], line[:cut])  # half a line now and then: never counted half
                os.write(state["fd"], line[cut:])
                state["seq"] = i + 1
            ahead = (i + 1) / a.rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
        state["done"] = True

    w = threading.Thread(target=write)
    w.start()
    n = 0
    while not state["done"]:
        time.sleep(rnd.uniform(a.every_min, a.every_max))
        if state["done"]:
            break
        n += 1
        rotated = f"{a.path}.{n}"
        if a.mode == "rename":
            with lock:
                os.close(state["fd"])
                os.rename(a.path, rotated)
                state["fd"] = os.open(a.path, flags, 0o644)
        else:
            # The writer is not paused: it appends during and after the copy.
            shutil.copyfile(a.path, rotated)
            copied = state["seq"]
            with lock:
                before = state["seq"]
                os.truncate(a.path, 0)
            # Lines written after the copy ended and before the truncate exist nowhere. The copy holds at
            # least every line complete when it started; `copied` is a bound taken after it ended.
            if before > copied:
                print(f"lost {copied} {before - 1}", flush=True)
            else:
                print(f"window {copied}", flush=True)
    w.join()
    os.close(state["fd"])
    sys.stdout.flush()


if __name__ == "__main__":
    main()
