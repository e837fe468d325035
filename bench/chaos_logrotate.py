#!/usr/bin/env python3
"""The logrotate mode of the chaos round (bench/chaos.py --mode logrotate): services and a rotator as
operators run them, and the per-line verdict.

- A **service** (`service` mode) appends events to one file through one descriptor opened with O_APPEND,
  each line in 1-3 write() calls, and never pauses for rotation. On SIGHUP it reopens its path between
  two lines, as services do in logrotate's `postrotate`. Every line carries a unique `id` ("<service>-<seq>",
  seq from 0 without gaps); at SIGTERM it writes how many lines it wrote to its report file.
- The **rotator** (`rotator` mode) rotates every file every `--rotate-min`..`--rotate-max` seconds, like
  logrotate: the rotated names `app.jsonl.1`, `.2`, ... lie outside the daemon's glob (`*.jsonl`) and
  are shifted up by one at each rotation (`.1` -> `.2`, ...); with `--keep N` (logrotate's `rotate N`)
  the generation that would become `.N+1` is deleted (hard-linked into the graveyard first, so the
  harness still knows its lines; the daemon is not told where). Each rotation is one of
    rename        rename app.jsonl -> app.jsonl.1, create an empty app.jsonl, SIGHUP the service
    copytruncate  copy app.jsonl -> app.jsonl.1 (read to end of file, as cp does), truncate app.jsonl;
                  the service keeps writing all along, so lines written after the copy reached the end
                  and before the truncate end up in no file at all (and a line cut by the truncate
                  leaves half a line in the copy and its other half at the start of the truncated file)
  and is logged, with the wall clock, to the rotator's journal.
- The **verdict** (`verdict()`): from what each service wrote, the lines in every file, rotated copy and
  graveyard entry, and what the daemon counted per `id` (the pattern key is the line's own id, so the
  check is per line): duplicated = ids counted more than once (or never written); lost = ids that are
  in some file and were counted 0 times; window = ids written but in no file (lost to copytruncate's
  window whatever a tailer does: tolerated, counted 0 or 1 times). Lines lost only because their file
  was deleted (rotate N) while no daemon ran (from a fault to the next run's `ready`, or while
  SIGSTOPped) or shortly before a kill (within 1 s: not yet read to its end and
  committed) are tolerated and reported apart (`deleted_unread`).
"""

from __future__ import annotations

import argparse
import bisect
import collections
import datetime
import json
import os
import random
import re
import signal
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KINDS = ("rename", "copytruncate")


# --- the service ---------------------------------------------------------------------------------


def service_main(a: argparse.Namespace) -> int:
    stop = reopen = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    def on_hup(signum: int, frame: object) -> None:
        nonlocal reopen
        reopen = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_hup)
    rnd = random.Random(a.seed)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
    fd = os.open(a.path, flags, 0o644)
    t0 = time.monotonic()
    seq = 0
    try:
        while not stop:
            line = (
                json.dumps(
                    {"id": f"{a.id}-{seq}", "message": f"request {seq} took {rnd.randint(1, 999)} ms"}
                ).encode()
                + b"\n"
            )
            cuts = sorted(rnd.sample(range(1, len(line)), rnd.randint(0, 2)))
            prev = 0
            for c in [*cuts, len(line)]:
                os.write(fd, line[prev:c])
                prev = c
            seq += 1
            if reopen:
                reopen = False
                os.close(fd)
                fd = os.open(a.path, flags, 0o644)
            ahead = seq / a.rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
    finally:
        os.close(fd)
        Path(a.report).write_text(f"{seq}\n")
    return 0


# --- the rotator ---------------------------------------------------------------------------------


def _copy(src: str, dst: str) -> int:
    """cp: read the source to its end while the service keeps appending; returns the bytes copied."""
    n = 0
    with open(src, "rb") as s, open(dst, "xb") as d:
        while chunk := s.read(1 << 16):
            d.write(chunk)
            n += len(chunk)
    return n


def rotator_main(a: argparse.Namespace) -> int:
    stop = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    rnd = random.Random(a.seed)
    paths = a.files.split(",")
    pids = [int(p) for p in a.pids.split(",")]
    kinds = a.kinds.split(",")
    # Each rotated generation of each file, .1 first: the rotation kind that made it and the wall-clock
    # span in which its lines were written under the live name, in the glob (from the rotation before).
    gens: list[list[dict[str, Any]]] = [[] for _ in paths]
    since = [time.time() for _ in paths]  # the last rotation of each live name (or the start)
    now = time.monotonic()
    due = [now + rnd.uniform(a.rotate_min, a.rotate_max) for _ in paths]
    graveyard = Path(a.graveyard)
    graveyard.mkdir(parents=True, exist_ok=True)
    with open(a.journal, "a", buffering=1) as log:

        def note(**kw: Any) -> None:
            log.write(json.dumps({"t": time.time(), **kw}) + "\n")

        while not stop:
            i = min(range(len(paths)), key=lambda j: due[j])
            wait = due[i] - time.monotonic()
            if wait > 0:
                time.sleep(min(wait, 0.05))
                continue
            path = paths[i]
            kind = rnd.choice(kinds)
            # Shift the rotated generations up by one, oldest first; past --keep the oldest goes.
            top = len(gens[i])
            if a.keep and top >= a.keep:
                victim = f"{path}.{top}"
                grave = graveyard / f"{Path(path).name}.{top}.deleted-{time.time_ns()}"
                os.link(victim, grave)
                os.unlink(victim)
                note(op="delete", path=victim, grave=str(grave), **gens[i].pop())
                top -= 1
            for g in range(top, 0, -1):
                os.rename(f"{path}.{g}", f"{path}.{g + 1}")
            if kind == "rename":
                os.rename(path, f"{path}.1")
                gens[i].insert(0, {"kind": kind, "in_glob": [since[i], time.time()]})
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)  # logrotate's `create`
                since[i] = time.time()
                os.close(fd)
                os.kill(pids[i], signal.SIGHUP)  # postrotate: the service reopens its log
                note(op="rename", path=path)
            else:
                copied = _copy(path, f"{path}.1")
                os.truncate(path, 0)
                gens[i].insert(0, {"kind": kind, "in_glob": [since[i], time.time()]})
                since[i] = time.time()
                note(op="copytruncate", path=path, copied=copied)
            due[i] = time.monotonic() + rnd.uniform(a.rotate_min, a.rotate_max)
        for path, g in zip(paths, gens, strict=True):
            note(op="final", path=path, gens=g, born=since[paths.index(path)])
    return 0


# --- the verdict ---------------------------------------------------------------------------------


def _iso(s: str) -> float:
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def ready_times(logs: Iterable[Path]) -> dict[int, float]:
    """Run number -> wall-clock time at which that daemon run logged `ready` (logs named run-<n>.log)."""
    out = {}
    for p in logs:
        m = re.fullmatch(r"run-(\d+)\.log", p.name)
        if not m:
            continue
        for line in p.read_bytes().splitlines():
            if b'"ready"' not in line:
                continue
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if e.get("event") == "ready" and "timestamp" in e:
                out[int(m.group(1))] = _iso(e["timestamp"])
    return out


def down_intervals(
    faults: list[tuple[float, str, float, int]], ready: dict[int, float], grace: float = 0.0
) -> list[tuple[float, float]]:
    """(start, end) wall-clock spans in which a deleted file's unread lines may be lost to any tailer: a
    kill or SIGTERM until the next run's `ready`, and `grace` seconds before it (a deleted file lives
    only in the daemon's descriptor until it has read it to the end and committed it; a stop in that
    time loses the rest); a SIGSTOP until its SIGCONT. `faults` holds (time, kind, end, run): end is the
    SIGCONT time, run the number of the run the fault hit; the span ends at the `ready` of the first
    later run that got that far (runs killed during their start never log it). Not "the next `ready`
    logged after the fault": a run stopped during its start can still log `ready` after the signal."""
    spans = []
    runs = sorted(ready)
    for t, kind, end, run in faults:
        if kind == "sigstop":
            spans.append((t, end))
        else:
            j = bisect.bisect_right(runs, run)
            spans.append((t - grace, ready[runs[j]] if j < len(runs) else float("inf")))
    return spans


@dataclass
class Verdict:
    written: int = 0
    in_files: int = 0
    window: int = 0  # written, in no file after a truncate
    window_counted: int = 0
    lost: int = 0
    lost_copy_tail: int = 0  # of `lost`: the unread end of a copytruncate copy (see verdict())
    lost_deleted_while_down: int = 0
    lost_unseen: int = 0  # in a generation that left the glob before any daemon run could commit it
    duplicated: int = 0  # extra counts: an id counted n > 1 times adds n - 1
    phantom: int = 0  # counted ids never written
    fragments: int = 0  # half lines left by truncates (in the copy's end or the truncated file's start)
    problems: list[str] = field(default_factory=list)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def ok(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.phantom == 0 and not self.problems


def lines_in(p: Path) -> tuple[list[str], int]:
    """Ids of the complete lines of a file, and how many complete lines were not whole events (halves)."""
    ids, frags = [], 0
    data = p.read_bytes()
    end = data.rfind(b"\n") + 1
    for line in data[:end].splitlines():
        try:
            ids.append(json.loads(line)["id"])
        except (ValueError, KeyError, TypeError):
            frags += 1
    return ids, frags


def written_ids(written: dict[int, int]) -> set[str]:
    """The ids a set of services wrote: service id -> lines written, seq from 0 without gaps."""
    return {f"{w}-{s}" for w, n in written.items() for s in range(n)}


def verdict(
    all_ids: set[str],
    files: list[Path],
    counted: dict[str, int],
    deleted_at: dict[str, float],
    down: list[tuple[float, float]],
    kinds: dict[str, str],
    unseen: set[str] | None = None,
) -> Verdict:
    """`all_ids`: every line written (complete); `files`: every live file, rotated copy and graveyard entry;
    `counted`: the daemon's count per id; `deleted_at`: graveyard path -> wall time of its deletion;
    `kinds`: file name -> "live" or the rotation kind that made it; `unseen`: names of files whose lost
    lines are tolerated because no daemon run was up long enough while they were in the glob.

    Of the lost lines, those that form the end of a copytruncate copy (no counted line after them in the
    copy) are also reported as `lost_copy_tail`: lines written after the daemon's last read of the
    original and before the truncate, which exist only in a copy outside the globs. They still count as
    lost: the copy is in the rotated file's directory, where a tailer can find it."""
    v = Verdict()
    home: dict[str, str] = {}
    tail: set[str] = set()
    for p in files:
        ids, frags = lines_in(p)
        v.fragments += frags
        if kinds.get(p.name) == "copytruncate":
            for i in reversed(ids):
                if counted.get(i, 0):
                    break
                tail.add(i)
        for i in ids:
            if i in home:
                v.problems.append(f"harness bug: line {i} in {home[i]} and {p}")
            home[i] = str(p)
    v.written = len(all_ids)
    v.in_files = len(home)
    stray = set(home) - all_ids
    if stray:
        v.problems.append(
            f"harness bug: {len(stray)} lines in files that no service reports, e.g. {sorted(stray)[:3]}"
        )
    lost, lost_down, dup, window = [], [], [], []
    for i in sorted(all_ids):
        n = counted.get(i, 0)
        if n > 1:
            v.duplicated += n - 1
            dup.append(f"{i} x{n} ({home.get(i, 'in no file')})")
        if i not in home:
            window.append(i)
            v.window_counted += n == 1
        elif n == 0:
            t = deleted_at.get(home[i])
            if t is not None and any(s <= t <= e for s, e in down):
                lost_down.append(i)
            elif Path(home[i]).name in (unseen or set()):
                v.lost_unseen += 1
            else:
                lost.append(f"{i} ({home[i]})")
                v.lost_copy_tail += i in tail
    phantom = sorted(set(counted) - all_ids)
    v.window, v.lost, v.lost_deleted_while_down, v.phantom = (
        len(window),
        len(lost),
        len(lost_down),
        len(phantom),
    )
    v.examples = {"lost": lost[:20], "duplicated": dup[:20], "phantom": phantom[:20], "window": window[:20]}
    return v


def kinds_of_files(journal: list[dict[str, Any]]) -> dict[str, str]:
    """File name -> how it came to be: "live", or the rotation kind that made that generation."""
    return {name: kind for name, (kind, _) in generations(journal).items()}


def generations(journal: list[dict[str, Any]]) -> dict[str, tuple[str, tuple[float, float] | None]]:
    """File name -> (kind, the span in which its lines were written under the live name, in the glob:
    from the rotation before it to its own)."""
    out: dict[str, tuple[str, tuple[float, float] | None]] = {}
    ops: dict[str, list[float]] = collections.defaultdict(list)  # live path -> its rotation times
    for e in journal:
        if e["op"] in KINDS:
            ops[e["path"]].append(e["t"])
        if e["op"] == "final":
            out[Path(e["path"]).name] = ("live", (e["born"], float("inf")))
            times = ops[e["path"]]
            for g, gen in enumerate(e["gens"], 1):
                span = tuple(gen["in_glob"]) if gen["in_glob"] else None
                k = len(times) - g
                if span is None and 0 <= k < len(times):
                    # Journals written before copies had a span: from the rotation before, by its note.
                    span = (times[k - 1] if k else 0.0, times[k])
                out[f"{Path(e['path']).name}.{g}"] = (gen["kind"], span)
        elif e["op"] == "delete":
            out[Path(e["grave"]).name] = (e["kind"], tuple(e["in_glob"]) if e["in_glob"] else None)
    return out


def longest_up(span: tuple[float, float], down: list[tuple[float, float]]) -> float:
    """The longest stretch of `span` that no down interval covers: how long one daemon run could see it."""
    lo, hi = span
    best, t = 0.0, lo
    for s, e in sorted(down):
        if e <= t:
            continue
        if s >= hi:
            break
        best = max(best, min(s, hi) - t)
        t = max(t, e)
    return max(best, hi - t)


def unseen_files(journal: list[dict[str, Any]], down: list[tuple[float, float]], need: float) -> set[str]:
    """Names of rotated generations whose lines were written under the live name in a span with no
    `need` seconds of one daemon run up: no run could read and commit them before they left the glob
    (renamed away, or copied and truncated), so after a restart nothing leads to them (they are outside
    the glob, and the checkpoint knows the file only as it was before). Their lost lines are tolerated."""
    out = set()
    for name, (kind, span) in generations(journal).items():
        if kind in KINDS and span is not None and longest_up(span, down) < need:
            out.add(name)
    return out


def per_file_figures(
    files: list[Path], counted: dict[str, int], kinds: dict[str, str]
) -> dict[str, dict[str, Any]]:
    """Lost and duplicated lines per file: where a bug shows up (for the report, not the verdict)."""
    out: dict[str, dict[str, Any]] = {}
    for p in files:
        ids, _ = lines_in(p)
        f = out.setdefault(p.name, {"kind": kinds.get(p.name, "?"), "lines": 0, "lost": 0, "dup": 0})
        for i in ids:
            n = counted.get(i, 0)
            f["lines"] += 1
            f["lost"] += n == 0
            f["dup"] += max(0, n - 1)
    return {k: v for k, v in out.items() if v["lost"] or v["dup"]}


def by_kind(per_file: dict[str, dict[str, Any]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = collections.defaultdict(lambda: {"files": 0, "lost": 0, "dup": 0})
    for f in per_file.values():
        k = out[f["kind"]]
        k["files"] += 1
        k["lost"] += f["lost"]
        k["dup"] += f["dup"]
    return dict(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("service")
    s.add_argument("--path", required=True)
    s.add_argument("--id", type=int, required=True)
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--rate", type=float, default=1000.0)
    s.add_argument("--report", required=True)
    r = sub.add_parser("rotator")
    r.add_argument("--files", required=True, help="comma-separated live paths")
    r.add_argument("--pids", required=True, help="the service writing each path, same order")
    r.add_argument("--kinds", default="rename,copytruncate")
    r.add_argument("--rotate-min", type=float, default=0.3)
    r.add_argument("--rotate-max", type=float, default=2.0)
    r.add_argument("--keep", type=int, default=0, help="logrotate's rotate N; 0 keeps every generation")
    r.add_argument("--graveyard", required=True)
    r.add_argument("--journal", required=True)
    r.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    return service_main(a) if a.mode == "service" else rotator_main(a)


if __name__ == "__main__":
    sys.exit(main())
