#!/usr/bin/env python3
"""Chaos round: live writers with partial writes and rotation, the real daemon killed over and over.

Writers (child processes of this script, `--writer` mode) append JSONL events with a unique `seq` and a
key `k` drawn from `--keys` values, each line in 1-3 write() calls, and rotate their own file at random
moments, between two of their own lines, so that every line they wrote ends up in exactly one file:
  rename        rename w0.jsonl -> w0.jsonl.N, reopen w0.jsonl
  copytruncate  copy w0.jsonl -> w0.jsonl.N, then truncate w0.jsonl (the writer pauses meanwhile)
Meanwhile the real `telemetryd run` is killed at random moments (SIGKILL mostly, SIGTERM sometimes,
SIGSTOP/SIGCONT now and then) and restarted each time. At the end it catches up and stops; the counts in
`patterns --json` are compared, per key and in total, with the counts of every line in every file.

`--mode logrotate` runs the same faults against services and a rotator as operators run them
(bench/chaos_logrotate.py): the daemon globs `*.jsonl` only, rotated names lie outside it, rename and
copytruncate every 0.3-2 s with the service never paused, and the check is per line (each line's unique
id is its pattern key): nothing counted twice, nothing lost but the lines that were in no file after a
truncate.

Prints one summary line `kills=K events=E lost=L duplicated=D` (logrotate mode adds `window=W ...`) and
exits 1 unless L = D = 0. See docs/reliability.md.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import chaos_logrotate as lr

ROTATE_KINDS = ("rename", "copytruncate", "none")


# --- writer mode -----------------------------------------------------------------------------------


def writer_main(a: argparse.Namespace) -> int:
    stop = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    rnd = random.Random(a.seed)
    path = a.path
    kinds = [k for k in a.rotate.split(",") if k and k != "none"]
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    rotated = 0
    next_rotate = time.monotonic() + rnd.uniform(a.rotate_min, a.rotate_max)
    t0 = time.monotonic()
    seq = 0
    while not stop and (a.count == 0 or seq < a.count):
        line = (
            json.dumps(
                {
                    "w": a.id,
                    "seq": seq,
                    "k": f"key{rnd.randrange(a.keys)}",
                    "message": f"request {seq} took {rnd.randint(1, 999)} ms",
                }
            ).encode()
            + b"\n"
        )
        # 1-3 write() calls per line: the daemon must never count half a line.
        cuts = sorted(rnd.sample(range(1, len(line)), rnd.randint(0, 2)))
        prev = 0
        for c in [*cuts, len(line)]:
            os.write(fd, line[prev:c])
            prev = c
        seq += 1
        if kinds and time.monotonic() >= next_rotate:
            rotated += 1
            dst = f"{path}.{rotated}"
            if rnd.choice(kinds) == "rename":
                os.rename(path, dst)
                os.close(fd)
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            else:
                # Between two of our own lines: nothing is written while the copy is made, so each line
                # is either in the copy or, written after the truncate, in the live file.
                shutil.copyfile(path, dst)
                os.ftruncate(fd, 0)
            next_rotate = time.monotonic() + rnd.uniform(a.rotate_min, a.rotate_max)
        if a.rate:
            ahead = seq / a.rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
    os.close(fd)
    return 0


# --- the round -------------------------------------------------------------------------------------


def _telemetryd() -> str:
    here = Path(sys.executable).parent / "telemetryd"
    return str(here) if here.exists() else "telemetryd"


# A file deleted (rotate N) this long before a kill or SIGTERM may not be read to its end and committed
# yet (the daemon reads at once and commits every 0.2 s; 1 s allows for a loaded machine): its unread
# lines are lost to any tailer and tolerated (deleted_unread), like those of a file deleted while down.
DELETE_GRACE = 1.0
# A generation renamed out of the glob is the daemon's to find again only if some run saw it and
# committed it: one that spent less than this in the glob while one run was up (ready, not stopped) may
# be unknown to every run, and its lost lines are tolerated (unseen). The run opens it at once (at its
# start scan, before `ready`, or on the change notice) and commits within every_seconds (0.2 s). In
# the rounds so far every generation lost this way had no run ready at all while it was in the glob,
# and generations with 0.04 s of a ready run were counted.
UNSEEN_NEED = 0.3
CONFIG = """\
[sources]
rescan_seconds = {rescan_seconds}
rotate_wait_seconds = 2.0
[patterns]
key_fields = ["{key}"]
template_field = ""
max_patterns = {max_patterns}
[checkpoint]
every_events = {every_events}
every_seconds = 0.2
compact_bytes = {compact_bytes}
[metrics]
listen = ""
[log]
format = "json"
level = "info"
"""


class Round:
    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.rnd = random.Random(a.seed)
        self.work = Path(a.workdir) if a.workdir else Path(tempfile.mkdtemp(prefix="telemetryd-chaos-"))
        self.data = self.work / "data"
        self.state = self.work / "state"
        self.logs = self.work / "logs"
        for d in (self.data, self.logs):
            d.mkdir(parents=True, exist_ok=True)
        self.cfg = self.work / "telemetryd.toml"
        self.logrotate = a.mode == "logrotate"
        if not (a.reverdict and self.cfg.exists()):  # a round judged again keeps the config it ran with
            self.cfg.write_text(
                CONFIG.format(
                    every_events=a.every_events,
                    compact_bytes=a.compact_bytes,
                    rescan_seconds=a.rescan_seconds,
                    # Per-line check: every line is its own pattern, so the table holds every line written.
                    key="id" if self.logrotate else "k",
                    max_patterns=10_000_000 if self.logrotate else 100_000,
                )
            )
        self.bin = _telemetryd()
        self.faults: collections.Counter[str] = collections.Counter()
        self.problems: list[str] = []
        self.runs = 0
        self._last_total, self._since = -1, 0.0
        # (wall time, kind, end) of each fault: the spans when no daemon could read (logrotate verdict).
        self.fault_log: list[tuple[float, str, float, int]] = []
        self.rotator: subprocess.Popen[bytes] | None = None

    def common(self) -> list[str]:
        return ["--config", str(self.cfg), "--state-dir", str(self.state)]

    def start_daemon(self) -> subprocess.Popen[bytes]:
        self.runs += 1
        log = open(self.logs / f"run-{self.runs:05d}.log", "wb")  # noqa: SIM115
        # Rotated names match too: a renamed file stays the same tracked file wherever the daemon finds it.
        paths = ["--path", str(self.data / "*.jsonl")]
        if self.a.glob_rotated and not self.logrotate:
            paths += ["--path", str(self.data / "*.jsonl.*")]
        # faulthandler: a daemon that does not stop on SIGTERM gets SIGABRT and leaves its stacks in the log.
        env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
        p = subprocess.Popen(
            [self.bin, "run", *self.common(), *paths], stdout=log, stderr=subprocess.STDOUT, env=env
        )
        log.close()
        return p

    def start_writers(self) -> list[subprocess.Popen[bytes]]:
        if self.logrotate:
            return self.start_services()
        ws = []
        for i in range(self.a.writers):
            ws.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        __file__,
                        "--writer",
                        "--id",
                        str(i),
                        "--path",
                        str(self.data / f"w{i}.jsonl"),
                        "--seed",
                        str(self.a.seed * 1000 + i),
                        "--rate",
                        str(self.a.rate),
                        "--keys",
                        str(self.a.keys),
                        "--rotate",
                        self.a.rotate,
                        "--rotate-min",
                        str(self.a.rotate_min),
                        "--rotate-max",
                        str(self.a.rotate_max),
                    ]
                )
            )
        return ws

    def code_under_test(self) -> str:
        """Where the daemon's package is imported from (PYTHONPATH can point at another checkout)."""
        r = subprocess.run(
            [sys.executable, "-c", "import telemetryd, os; print(os.path.dirname(telemetryd.__file__))"],
            capture_output=True,
            text=True,
        )
        return r.stdout.strip() or r.stderr.strip()[-200:]

    def start_services(self) -> list[subprocess.Popen[bytes]]:
        """logrotate mode: one service per file, and one rotator for all of them."""
        lrpy = str(Path(__file__).with_name("chaos_logrotate.py"))
        (self.work / "reports").mkdir(exist_ok=True)
        ws, paths = [], []
        for i in range(self.a.writers):
            path = self.data / f"app{i}.jsonl"
            paths.append(str(path))
            ws.append(
                subprocess.Popen(
                    [
                        *(sys.executable, lrpy, "service", "--path", str(path), "--id", str(i)),
                        *("--seed", str(self.a.seed * 1000 + i), "--rate", str(self.a.rate)),
                        *("--report", str(self.work / "reports" / f"{i}.count")),
                    ]
                )
            )
        # The services create their files; the rotator must not find them missing.
        deadline = time.monotonic() + 30
        while not all(os.path.exists(p) for p in paths) and time.monotonic() < deadline:
            time.sleep(0.01)
        self.rotator = subprocess.Popen(
            [
                *(sys.executable, lrpy, "rotator", "--files", ",".join(paths)),
                *("--pids", ",".join(str(w.pid) for w in ws), "--kinds", self.a.rotate),
                *("--rotate-min", str(self.a.rotate_min), "--rotate-max", str(self.a.rotate_max)),
                *("--keep", str(self.a.keep_rotated), "--seed", str(self.a.seed)),
                *(
                    "--graveyard",
                    str(self.work / "graveyard"),
                    "--journal",
                    str(self.work / "rotations.jsonl"),
                ),
            ]
        )
        return ws

    def stop(self, d: subprocess.Popen[bytes], what: str) -> None:
        d.send_signal(signal.SIGTERM)
        try:
            code = d.wait(self.a.term_timeout)
        except subprocess.TimeoutExpired:
            self.problems.append(
                f"{what}: no exit within {self.a.term_timeout} s of SIGTERM ({self.log_of()})"
            )
            d.send_signal(signal.SIGABRT)
            try:
                d.wait(10)
            except subprocess.TimeoutExpired:
                d.kill()
            code = d.wait()
        if code == -signal.SIGTERM and b'"recovered"' not in Path(self.log_of()).read_bytes():
            # Killed by the default action before the daemon installed its handler (interpreter start-up):
            # nothing was read or committed yet, so nothing is lost.
            self.faults["sigterm_before_handler"] += 1
        elif code != 0:
            self.problems.append(f"{what}: exit code {code} after SIGTERM ({self.log_of()})")

    def fault(self, d: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
        """One fault at a random moment; returns the daemon process that runs afterwards."""
        # Mostly short lives (kills during recovery, mid-read, mid-checkpoint), sometimes long enough to
        # compact and to see rotations settle.
        life = self.rnd.uniform(0.05, 0.8) if self.rnd.random() < 0.85 else self.rnd.uniform(0.8, 3.0)
        if self.a.after_ready and self.rnd.random() < self.a.after_ready:
            # This life counts from the run's `ready`: it gets to read and commit, so what it could have
            # seen is held to account (see UNSEEN_NEED), not excused because every run died starting.
            self.wait_ready(d)
        time.sleep(life)
        x = self.rnd.random()
        if x < self.a.p_stop:
            self.faults["sigstop"] += 1
            t = time.time()
            d.send_signal(signal.SIGSTOP)
            time.sleep(self.rnd.uniform(0.1, 1.5))
            d.send_signal(signal.SIGCONT)
            self.fault_log.append((t, "sigstop", time.time(), self.runs))
            if d.poll() is not None:
                self.problems.append(f"run {self.runs}: exited {d.returncode} after SIGSTOP/SIGCONT")
                return self.start_daemon()
            return d
        if x < self.a.p_stop + self.a.p_term:
            self.faults["sigterm"] += 1
            self.fault_log.append((time.time(), "sigterm", 0.0, self.runs))
            self.stop(d, f"run {self.runs}")
        else:
            self.faults["sigkill"] += 1
            self.fault_log.append((time.time(), "sigkill", 0.0, self.runs))
            d.kill()
            d.wait()
        return self.start_daemon()

    def wait_ready(self, d: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
        log = Path(self.log_of())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and d.poll() is None:
            if b'"event": "ready"' in log.read_bytes():
                return
            time.sleep(0.01)

    def log_of(self) -> str:
        return str(self.logs / f"run-{self.runs:05d}.log")

    def cli_json(self, *args: str) -> Any:
        r = subprocess.run(
            [self.bin, *args, *self.common(), "--json"], capture_output=True, text=True, timeout=120
        )
        if r.returncode != 0:
            raise RuntimeError(f"telemetryd {' '.join(args)} -> {r.returncode}: {r.stderr.strip()[-500:]}")
        return json.loads(r.stdout)

    def expected(self) -> collections.Counter[str]:
        """Every line in every file the writers left, checked for exactly-once placement by (w, seq)."""
        c: collections.Counter[str] = collections.Counter()
        seen: dict[tuple[int, int], int] = collections.Counter()
        for p in sorted(self.data.iterdir()):
            for line in p.read_bytes().splitlines():
                ev = json.loads(line)
                c[ev["k"]] += 1
                seen[(ev["w"], ev["seq"])] += 1
        dup = [k for k, n in seen.items() if n > 1]
        if dup:
            self.problems.append(f"writer bug: {len(dup)} lines in more than one file, e.g. {dup[:3]}")
        for w in range(self.a.writers):
            n = sum(1 for k in seen if k[0] == w)
            if n and max(s for ww, s in seen if ww == w) != n - 1:
                self.problems.append(f"writer bug: writer {w} has gaps in its sequence numbers")
        return c

    def caught_up(self, total: int) -> bool:
        """All lines counted; or, when some are lost, nothing left to read and no progress for a while."""
        try:
            st = self.cli_json("status")
        except (RuntimeError, ValueError):
            return False
        idle = all(f["lag_bytes"] == 0 for f in st["files"])
        # logrotate mode: lines read before a truncate may be in no file, so a total reached proves
        # nothing; wait for quiet instead (a copy read twice shows up only after rotate_wait).
        if st["events_total"] >= total and idle and not self.logrotate:
            return True
        now = time.monotonic()
        if not idle or st["events_total"] != self._last_total:
            self._last_total, self._since = st["events_total"], now
            return False
        return now - self._since >= self.a.settle_seconds

    def run(self) -> int:
        a = self.a
        started = time.monotonic()
        writers = self.start_writers()
        d = self.start_daemon()
        try:
            n = 0
            while n < a.kills:
                d = self.fault(d)
                n += 1
                if a.progress and n % a.progress == 0:
                    print(f"... {n} faults, {time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)
            # A round without faults (baseline for a rotation kind) still needs time to write and rotate.
            # A quiet spell after the faults: with a restart every half second each new run's start scan
            # finds what a running daemon might miss, so bugs of the running daemon need time without.
            time.sleep(max(a.quiet_seconds, a.min_seconds - (time.monotonic() - started)))
            if self.rotator is not None:
                self.rotator.send_signal(signal.SIGTERM)
                if self.rotator.wait(30) != 0:
                    self.problems.append(f"rotator exited {self.rotator.returncode}")
            for w in writers:
                w.send_signal(signal.SIGTERM)
            for w in writers:
                if w.wait(30) != 0:
                    self.problems.append(f"writer exited {w.returncode}")
            expected = self.expected() if not self.logrotate else collections.Counter()
            total = sum(expected.values()) if not self.logrotate else len(self.truth_files())
            deadline = time.monotonic() + a.catchup_timeout
            while not self.caught_up(total):
                if time.monotonic() > deadline:
                    self.problems.append(f"not caught up within {a.catchup_timeout}s")
                    break
                if d.poll() is not None:
                    self.problems.append(f"daemon exited {d.returncode} during catch-up ({self.log_of()})")
                    d = self.start_daemon()
                time.sleep(0.3)
            self.stop(d, "final stop")
        finally:
            for w in [*writers, *([self.rotator] if self.rotator else [])]:
                if w.poll() is None:
                    w.kill()
            if d.poll() is None:
                d.kill()
                d.wait()
        if self.logrotate:
            return self.logrotate_verdict(started)
        if a.inject_loss:
            # Self-test of the checker: lines the daemon never saw must show up as lost.
            with open(self.data / "injected.jsonl", "w") as f:
                for i in range(a.inject_loss):
                    f.write(json.dumps({"w": -1, "seq": i, "k": "key0"}) + "\n")
            expected = self.expected()
            total = sum(expected.values())
        doc = self.cli_json("patterns")
        got: collections.Counter[str] = collections.Counter()
        for p in doc["patterns"]:
            got[p["key"]["k"]] += p["count"]
        lost = sum(max(0, n - got[k]) for k, n in expected.items())
        dup = sum(max(0, n - expected[k]) for k, n in got.items())
        if doc["events_total"] != total:
            self.problems.append(f"events_total {doc['events_total']} != lines written {total}")
        if doc["overflow_count"]:
            self.problems.append(f"overflow_count {doc['overflow_count']}")
        files = sum(1 for _ in self.data.iterdir())
        print(
            f"faults: {dict(self.faults)} daemon runs={self.runs} files={files} "
            f"seconds={time.monotonic() - started:.0f} workdir={self.work}",
            file=sys.stderr,
        )
        for p in self.problems:
            print(f"problem: {p}", file=sys.stderr)
        kills = sum(n for f, n in self.faults.items() if f != "sigterm_before_handler")
        print(f"kills={kills} events={total} lost={lost} duplicated={dup}", flush=True)
        ok = lost == 0 and dup == 0 and not self.problems
        if ok and not a.keep and not a.workdir:
            shutil.rmtree(self.work, ignore_errors=True)
        return 0 if ok else 1

    # --- logrotate mode ---------------------------------------------------------------------------

    def truth_files(self) -> list[Path]:
        """Every file that holds lines: live files, rotated copies, and deleted generations (graveyard)."""
        grave = self.work / "graveyard"
        return sorted(self.data.iterdir()) + (sorted(grave.iterdir()) if grave.exists() else [])

    def reverdict(self) -> int:
        """The verdict of a kept logrotate round again (after a change to the harness's tolerances),
        from its files, rotator journal, fault log, run logs and state dir."""
        doc = json.loads((self.work / "faults.json").read_text())
        run = 1
        for f in doc["faults"]:
            if len(f) == 3:  # written before faults carried their run number: kill/term start a new one
                f = [*f, run]
            self.fault_log.append((f[0], f[1], f[2], f[3]))
            if f[1] != "sigstop":
                run = f[3] + 1
            self.faults[f[1]] += 1
        self.runs = sum(1 for p in self.logs.iterdir() if p.name.startswith("run-"))
        return self.logrotate_verdict(time.monotonic())

    def logrotate_verdict(self, started: float) -> int:
        a = self.a
        written = {}
        for i in range(a.writers):
            rep = self.work / "reports" / f"{i}.count"
            written[i] = int(rep.read_text()) if rep.exists() else 0
            if not rep.exists():
                self.problems.append(f"service {i} left no report")
        if a.inject_loss:
            # Self-test of the checker: lines the daemon never saw, in a file outside its glob.
            with open(self.data / "injected.jsonl.1", "w") as f:
                for s in range(a.inject_loss):
                    f.write(json.dumps({"id": f"{a.writers}-{s}"}) + "\n")
            written[a.writers] = a.inject_loss
        files = self.truth_files()
        deleted_at = {}
        rotations: collections.Counter[str] = collections.Counter()
        jpath = self.work / "rotations.jsonl"
        journal = [json.loads(line) for line in (jpath.read_text().splitlines() if jpath.exists() else [])]
        for e in journal:
            if e["op"] != "final":
                rotations[e["op"]] += 1
            if e["op"] == "delete":
                deleted_at[e["grave"]] = e["t"]
        ready = lr.ready_times(sorted(self.logs.iterdir()))
        down = lr.down_intervals(self.fault_log, ready, grace=DELETE_GRACE)
        # Before the first run was ready nothing could be seen either.
        before = [(0.0, ready.get(1, float("inf")))]
        unseen = lr.unseen_files(journal, before + lr.down_intervals(self.fault_log, ready), UNSEEN_NEED)
        (self.work / "faults.json").write_text(json.dumps({"faults": self.fault_log, "ready": ready}) + "\n")
        doc = self.cli_json("patterns")
        counted: dict[str, int] = {}
        for p in doc["patterns"]:
            counted[p["key"]["id"]] = counted.get(p["key"]["id"], 0) + p["count"]
        kinds = lr.kinds_of_files(journal)
        v = lr.verdict(lr.written_ids(written), files, counted, deleted_at, down, kinds, unseen)
        if a.tolerate_copy_tail:
            v.lost -= v.lost_copy_tail
        if doc["overflow_count"]:
            self.problems.append(f"overflow_count {doc['overflow_count']}")
        if doc["events_total"] != sum(counted.values()):
            self.problems.append(
                f"events_total {doc['events_total']} != sum of counts {sum(counted.values())}"
            )
        self.problems += v.problems
        report = {
            "seed": a.seed,
            "code": self.code_under_test(),
            "faults": dict(self.faults),
            "rotations": dict(rotations),
            **{k: getattr(v, k) for k in ("written", "in_files", "window", "window_counted", "lost")},
            "lost_copy_tail": v.lost_copy_tail,
            "lost_unseen": v.lost_unseen,
            "unseen_files": sorted(unseen),
            **{k: getattr(v, k) for k in ("lost_deleted_while_down", "duplicated", "phantom", "fragments")},
            "examples": v.examples,
        }
        per_file = lr.per_file_figures(files, counted, kinds)
        report["by_kind"] = lr.by_kind(per_file)
        report["per_file"] = per_file
        (self.work / "verdict.json").write_text(json.dumps(report, indent=1) + "\n")
        print(
            f"faults: {dict(self.faults)} rotations: {dict(rotations)} daemon runs={self.runs} "
            f"files={len(files)} seconds={time.monotonic() - started:.0f} workdir={self.work} "
            f"code={self.code_under_test()}",
            file=sys.stderr,
        )
        if report["by_kind"]:
            print(f"lost/duplicated by the kind of file they were in: {report['by_kind']}", file=sys.stderr)
        for kind in ("lost", "duplicated", "phantom"):
            if v.examples[kind]:
                print(f"{kind}, e.g.: {', '.join(v.examples[kind][:8])}", file=sys.stderr)
        for p in self.problems:
            print(f"problem: {p}", file=sys.stderr)
        kills = sum(n for f, n in self.faults.items() if f != "sigterm_before_handler")
        print(
            f"kills={kills} events={v.written} lost={v.lost} duplicated={v.duplicated} window={v.window} "
            f"window_counted={v.window_counted} copy_tail={v.lost_copy_tail} "
            f"deleted_unread={v.lost_deleted_while_down} unseen={v.lost_unseen} "
            f"in_files={v.in_files} phantom={v.phantom}",
            flush=True,
        )
        ok = v.ok() and not self.problems
        if ok and not a.keep and not a.workdir:
            shutil.rmtree(self.work, ignore_errors=True)
        return 0 if ok else 1


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=20, help="faults to inject (default 20)")
    ap.add_argument(
        "--mode",
        choices=("classic", "logrotate"),
        default="classic",
        help="classic: writers rotate their own files, paused; logrotate: see bench/chaos_logrotate.py",
    )
    ap.add_argument(
        "--keep-rotated", type=int, default=0, help="logrotate mode: logrotate's rotate N (0: keep all)"
    )
    ap.add_argument(
        "--tolerate-copy-tail",
        action="store_true",
        help="logrotate mode: lines lost only at the unread end of a copy outside the glob pass (the "
        "weaker reading of issue 14 item 2); still reported as copy_tail",
    )
    ap.add_argument("--writers", type=int, default=2)
    ap.add_argument("--rate", type=float, default=1000.0, help="events/s per writer")
    ap.add_argument("--keys", type=int, default=300)
    ap.add_argument(
        "--rotate",
        default=None,
        help="comma-separated rotation kinds: rename,copytruncate,none (default rename; logrotate mode both)",
    )
    ap.add_argument(
        "--rotate-min", type=float, default=None, help="seconds between rotations (1.0; logrotate mode 0.3)"
    )
    ap.add_argument("--rotate-max", type=float, default=None, help="(4.0; logrotate mode 2.0)")
    ap.add_argument(
        "--no-glob-rotated",
        dest="glob_rotated",
        action="store_false",
        help="the daemon watches *.jsonl only, not the rotated *.jsonl.N",
    )
    ap.add_argument(
        "--after-ready",
        type=float,
        default=None,
        help="share of runs whose life counts from their `ready`, not their start (0; logrotate mode 0.5)",
    )
    ap.add_argument("--p-term", type=float, default=0.12, help="share of faults that are SIGTERM")
    ap.add_argument("--p-stop", type=float, default=0.08, help="share of faults that are SIGSTOP/SIGCONT")
    ap.add_argument(
        "--rescan-seconds",
        type=float,
        default=None,
        help="sources.rescan_seconds (0.5; logrotate mode: the default 5, as a new user runs it)",
    )
    ap.add_argument("--every-events", type=int, default=200)
    ap.add_argument(
        "--compact-bytes",
        type=int,
        default=None,
        help="small, so compaction happens too (64 KiB; logrotate mode, one pattern per line: 1 MiB)",
    )
    ap.add_argument("--catchup-timeout", type=float, default=120.0)
    ap.add_argument("--min-seconds", type=float, default=3.0, help="let writers run at least this long")
    ap.add_argument(
        "--quiet-seconds",
        type=float,
        default=0.0,
        help="after the faults, writers run on this long untouched",
    )
    ap.add_argument("--settle-seconds", type=float, default=5.0, help="no progress this long = caught up")
    ap.add_argument("--term-timeout", type=float, default=30.0, help="SIGTERM to exit, else a problem")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workdir", default="", help="default: a new temp dir, removed when the round passes")
    ap.add_argument("--inject-loss", type=int, default=0, help="self-test: add N lines the daemon never sees")
    ap.add_argument("--keep", action="store_true", help="keep the work dir even when the round passes")
    ap.add_argument(
        "--reverdict",
        action="store_true",
        help="logrotate mode: judge the kept round in --workdir again (same --writers), run nothing",
    )
    ap.add_argument("--progress", type=int, default=0, help="print progress every N faults")
    # Writer mode (internal).
    ap.add_argument("--writer", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--id", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--path", default="", help=argparse.SUPPRESS)
    ap.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.reverdict and not (a.workdir and a.mode == "logrotate"):
        ap.error("--reverdict needs --mode logrotate and --workdir")
    lrm = a.mode == "logrotate"
    if a.rotate_min is None:
        a.rotate_min = 0.3 if lrm else 1.0
    if a.rotate_max is None:
        a.rotate_max = 2.0 if lrm else 4.0
    if a.after_ready is None:
        a.after_ready = 0.5 if lrm else 0.0
    if a.rescan_seconds is None:
        a.rescan_seconds = 5.0 if lrm else 0.5
    if a.compact_bytes is None:
        a.compact_bytes = (1 << 20) if lrm else 64 * 1024
    if a.rotate is None:
        a.rotate = "rename,copytruncate" if lrm else "rename"
    if lrm and ("none" in a.rotate.split(",") or not a.rotate):
        ap.error("--mode logrotate: --rotate takes rename and/or copytruncate")
    for k in a.rotate.split(","):
        if k not in ROTATE_KINDS:
            ap.error(f"--rotate: unknown kind {k!r} (choose from {', '.join(ROTATE_KINDS)})")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    if a.writer:
        return writer_main(a)
    if a.reverdict:
        return Round(a).reverdict()
    return Round(a).run()


if __name__ == "__main__":
    sys.exit(main())
