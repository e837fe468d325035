"""Issue 14, item 3: the bugs behind the exactly-once promise, each reproduced on a real daemon.

Faults that cannot be made for real on demand (an exception inside counting, EIO from one pread) are
injected by a wrapper around the real CLI, as in tests/test_faults.py.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

from conftest import BIN, KEY_CONFIG, cli, free_port, scrape, wait_for, write_config
from lifecycle_helpers import Setup, append, expected, lines, settle
from telemetryd import checkpoint as ck

# A bug in counting, on the second block after the flag appears. The first block after the flag makes
# the file's new offset part of the next record; to make the second block come in the same turn, the
# wrapper appends it itself (as a writer would) right after the first is counted.
CRASH_WRAPPER = """\
import json, os, sys
from telemetryd import patterns
from telemetryd.entry import main
flag, target = os.environ["FAULT_FLAG"], os.environ["FAULT_APPEND"]
real = patterns.PatternCounter.process_block
calls = []
def process_block(self, block, now, end=None):
    if os.path.exists(flag):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("injected: a bug in counting")
        n = real(self, block, now, end)
        with open(target, "ab") as f:
            f.write(b"".join(json.dumps({"k": "c", "seq": i}).encode() + b"\\n" for i in range(20)))
        return n
    return real(self, block, now, end)
patterns.PatternCounter.process_block = process_block
main()
"""


# EIO from the pread that fetches the bytes before the new offset of a short block (the file's last 64
# bytes): in the old reader it came after the offset had moved.
PREAD_WRAPPER = """\
import errno, os, stat, sys
from telemetryd.entry import main
flag = os.environ["FAULT_FLAG"]
real = os.pread
def pread(fd, n, pos):
    if n == 64 and os.path.exists(flag):
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and pos + n == st.st_size:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
    return real(fd, n, pos)
os.pread = pread
main()
"""


def state_args(state: Path) -> list[str]:
    return ["--state-dir", str(state)]


class Wrapped:
    def __init__(self, tmp: Path, wrapper: str, flag: Path, *args: str, target: Path | None = None) -> None:
        self.log_path = tmp / f"wrapped-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        env = {**os.environ, "FAULT_FLAG": str(flag), "FAULT_APPEND": str(target)}
        argv = [sys.executable, "-c", wrapper, "run", *args]
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def test_unexpected_exception_commits_no_unread_lines(tmp_path: Path) -> None:
    """Before: `finally: _shutdown()` committed the offset read_block had already moved, for lines never
    counted: the 20 lines of the block being counted when the bug struck were lost for good."""
    s = Setup(tmp_path, "*.jsonl")
    flag = tmp_path / "crash"
    f = s.dir / "a.jsonl"
    append(f, lines("a", 100))
    d = Wrapped(tmp_path, CRASH_WRAPPER, flag, *s.args, target=f)
    try:
        s.wait_total(100)
        flag.touch()
        append(f, lines("b", 50))
        code = d.proc.wait(30)
    finally:
        d.close()
    flag.unlink()
    r = subprocess.run([BIN, "run", "--once", *s.args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert s.counts() == expected(a=100, b=50, c=20)
    assert code == 1 and '"crashed"' in d.log(), d.log()


def test_pread_error_after_a_short_block_loses_nothing(tmp_path: Path) -> None:
    """Before: the offset moved past a short block, then the pread of the bytes before the new offset
    failed with EIO: the block was never counted."""
    s = Setup(tmp_path, "*.jsonl")
    flag = tmp_path / "eio"
    f = s.dir / "a.jsonl"
    append(f, lines("a", 20))
    d = Wrapped(tmp_path, PREAD_WRAPPER, flag, *s.args)
    try:
        s.wait_total(20)
        flag.touch()
        append(f, b'{"k":"s"}\n')  # 10 bytes: the tail must come from the file
        wait_for(lambda: '"read_failed"' in d.log(), what="the injected EIO")
        flag.unlink()
        append(f, lines("c", 5))
        s.wait_total(26)
        settle(1.0)
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(30) == 0, d.log()
    finally:
        d.close()
    assert s.counts() == expected(a=20, s=1, c=5)


def _generations(tmp_path: Path) -> tuple[Path, Path]:
    cfg = write_config(tmp_path, KEY_CONFIG.replace("[checkpoint]\n", "[checkpoint]\ncompact_bytes = 4096\n"))
    state, f = tmp_path / "state", tmp_path / "a.jsonl"
    for r in range(5):
        # 400 keys a round: each record holds a few kB of pattern entries, so journals rotate.
        append(f, b"".join(lines(f"r{r}-{i}", 1) for i in range(400)))
        r_ = subprocess.run(
            [BIN, "run", "--once", "--config", str(cfg), "--path", str(f), "--state-dir", str(state)],
            capture_output=True,
            timeout=60,
        )
        assert r_.returncode == 0, r_.stderr
    return cfg, state


def test_gap_in_the_journal_chain_is_not_clean(tmp_path: Path) -> None:
    cfg, state = _generations(tmp_path)
    snaps, journals = ck.list_generations(str(state))
    # Recovery starts from the oldest snapshot once the newer ones are gone; then the journal of that
    # generation goes missing while a later one exists: a gap in the chain.
    base = snaps[0] if snaps else 0
    for g in snaps[1:]:
        (state / ck.snapshot_name(g)).unlink()
    chain = [g for g in journals if g >= base]
    assert len(chain) >= 2, os.listdir(state)
    (state / ck.journal_name(chain[0])).unlink()
    rec = ck.recover(str(state), repair=False)
    assert rec.outcome == "quarantined", rec
    assert any("missing" in n for n in rec.notes)
    r = cli("checkpoint", "verify", "--state-dir", str(state), "--config", str(cfg), check=False)
    assert r.returncode == 1, r.stdout
    assert "UNUSABLE" in r.stdout


def test_state_dir_0700_and_every_file_0600_even_corrupt_ones(tmp_path: Path) -> None:
    cfg, state = _generations(tmp_path)
    os.chmod(state, 0o755)
    # Corrupt the last record of the active journal: recovery moves its bytes aside to a .corrupt file.
    _, journals = ck.list_generations(str(state))
    j = state / ck.journal_name(journals[-1])
    data = bytearray(j.read_bytes())
    data[-3] ^= 0xFF
    j.write_bytes(bytes(data))
    os.chmod(j, 0o644)
    r = subprocess.run(
        [BIN, "run", "--once", "--config", str(cfg), "--path", str(tmp_path / "a.jsonl"), *state_args(state)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    names = os.listdir(state)
    assert any(n.endswith(".corrupt") for n in names), names
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
    for n in names:
        mode = stat.S_IMODE(os.stat(state / n).st_mode)
        assert mode & 0o077 == 0, f"{n}: {oct(mode)}"


def test_journal_replaced_by_a_directory_is_a_clean_error(tmp_path: Path) -> None:
    cfg, state = _generations(tmp_path)
    _, journals = ck.list_generations(str(state))
    j = state / ck.journal_name(journals[-1])
    j.unlink()
    j.mkdir()
    for cmd in (["status"], ["patterns"], ["checkpoint", "verify"], ["checkpoint", "show"]):
        r = cli(*cmd, "--state-dir", str(state), "--config", str(cfg), check=False)
        assert r.returncode in (1, 2), (cmd, r.returncode, r.stderr)
        assert "Traceback" not in r.stderr, r.stderr
        assert str(j) in r.stderr, r.stderr
    r = subprocess.run(
        [BIN, "run", "--once", "--config", str(cfg), "--path", str(tmp_path / "a.jsonl"), *state_args(state)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert str(j) in r.stderr


def _caught_signals(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return int(line.split()[1], 16)
    return 0


def test_sigterm_while_starting_exits_0(tmp_path: Path) -> None:
    """Before: SIGTERM in the first ~0.3 s (while modules load) killed the daemon: exit 143. The handler
    must be in place before anything slow runs: before the first log line."""
    s = Setup(tmp_path, "*.jsonl")
    append(s.dir / "a.jsonl", lines("a", 10))
    log = tmp_path / "early.log"
    with open(log, "wb") as out:
        p = subprocess.Popen([BIN, "run", *s.args], stdout=out, stderr=subprocess.STDOUT)
        bit = 1 << (signal.SIGTERM - 1)
        wait_for(lambda: _caught_signals(p.pid) & bit or p.poll() is not None, 20, 0.001, "SIGTERM handler")
        logged_before = log.read_bytes()
        p.send_signal(signal.SIGTERM)
        code = p.wait(30)
    assert logged_before == b"", f"the handler came only after: {logged_before[:300]!r}"
    assert code == 0, log.read_text()


def test_reload_keeps_reader_and_counter_line_limits_in_step(tmp_path: Path, daemons) -> None:
    """Before: after SIGHUP the reader had the new max_line_bytes and the pattern counter the old one, so
    a line between the two limits was counted instead of skipped as too long."""
    s = Setup(tmp_path, "*.jsonl", extra="max_line_bytes = 4096\n")
    f = s.dir / "a.jsonl"
    d = daemons(*s.args)
    d.wait_ready()
    append(f, lines("a", 10))
    s.wait_total(10)
    s.cfg.write_text(s.cfg.read_text().replace("max_line_bytes = 4096", "max_line_bytes = 200"))
    d.kill(signal.SIGHUP)
    wait_for(lambda: any(e.get("event") == "reloaded" for e in d.events()), what="reload")
    long_line = json.dumps({"k": "long", "message": "x" * 1000}).encode() + b"\n"
    append(f, long_line + lines("b", 3))
    s.wait_total(13)
    settle(1.0)
    assert d.stop() == 0, d.log()
    doc = s.status()
    assert doc["lines_skipped"].get("too_long") == 1, doc
    assert s.counts() == expected(a=10, b=3)


def test_reload_leaves_the_series_keys_to_the_restart_and_series_stay_exact(tmp_path: Path, daemons) -> None:
    """Before: turning pattern_series on by reload started the series from a base built at that moment,
    and only if it had been on at start. Now which patterns hold a series is committed state
    (export_base), so the [metrics] keys take effect at the next start and a reload leaves the series
    exact: they continue from the committed counts and sum to events_total."""
    s = Setup(tmp_path, "*.jsonl")
    f = s.dir / "a.jsonl"
    append(f, lines("a", 100))
    assert daemons("--once", *s.args).proc.wait(60) == 0
    port = free_port()
    d = daemons(*s.args, "--metrics-listen", f"127.0.0.1:{port}")
    d.wait_ready()
    s.cfg.write_text(s.cfg.read_text().replace("[metrics]\n", "[metrics]\npattern_series = 5\n"))
    d.kill(signal.SIGHUP)
    wait_for(lambda: any(e.get("event") == "reloaded" for e in d.events()), what="reload")
    assert any(e.get("event") == "reload_restart_needed" for e in d.events()), d.log()
    append(f, lines("a", 10))
    s.wait_total(110)

    def series() -> float:
        m = scrape(port)
        return sum(v for k, v in m.items() if k.startswith("telemetryd_pattern_events_total{"))

    wait_for(lambda: series() >= 110, what="per-pattern series")
    m = scrape(port)
    assert series() == 110 == m["telemetryd_events_total"]
    assert d.stop() == 0, d.log()


def test_glob_directory_created_after_start_is_watched(tmp_path: Path, daemons) -> None:
    """Before: the watcher watched only directories that existed at start; a directory created later had
    its files followed by rescans only, so a generation renamed away between two rescans was lost."""
    s = Setup(tmp_path, "*.jsonl", rescan=3.0)
    later = tmp_path / "later"
    args = [a if not a.endswith("*.jsonl") else str(later / "*.jsonl") for a in s.args]
    d = daemons(*args)
    d.wait_ready()
    later.mkdir()
    app = later / "app.jsonl"
    append(app, lines("g0", 10))
    s.wait_total(10)
    # The rescan that found the file also started watching its directory; give the watcher thread a
    # moment to be in place (not an assertion: the counts below are).
    time.sleep(1.0)
    for g in range(1, 4):
        os.rename(app, later / f"app.jsonl.{g}")
        append(app, lines(f"g{g}", 10))
        time.sleep(0.3)
    s.wait_total(40, timeout=20)
    settle()
    assert d.stop() == 0, d.log()
    assert s.counts() == expected(g0=10, g1=10, g2=10, g3=10)


# A copy still being written (a slow cp) grows between any two looks at it: each fstat of the copy's
# descriptor appends its next line. The old check took one fstat, then the copy decision took another
# and moved the offset, and the offset was compared with the first, stale size: a false truncation, and
# the copy read again from 0.
GROWING_COPY_WRAPPER = """\
import os
from telemetryd.entry import main
copy, source = os.environ["FAULT_COPY"], os.environ["FAULT_SOURCE"]
pending = open(source, "rb").read().splitlines(keepends=True)
real = os.fstat
def fstat(fd):
    if pending and os.path.exists(copy):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if target == copy:
            with open(copy, "ab") as f:
                f.write(pending.pop(0))
    return real(fd)
os.fstat = fstat
main()
"""


def test_a_copy_growing_between_two_looks_is_not_taken_for_truncated(tmp_path: Path) -> None:
    s = Setup(tmp_path, "*.jsonl*")
    app, copy = s.dir / "app.jsonl", s.dir / "app.jsonl.1"
    rest = tmp_path / "rest"
    append(app, lines("a", 10))
    content = app.read_bytes()
    half = b"".join(content.splitlines(keepends=True)[:5])
    rest.write_bytes(content[len(half) :] + lines("more", 3))
    port = free_port()
    env = {**os.environ, "FAULT_COPY": str(copy), "FAULT_SOURCE": str(rest)}
    log = tmp_path / "growing.log"
    with open(log, "wb") as out:
        p = subprocess.Popen(
            [
                sys.executable,
                "-c",
                GROWING_COPY_WRAPPER,
                "run",
                *s.args,
                "--metrics-listen",
                f"127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            s.wait_total(10)
            p.send_signal(signal.SIGSTOP)
            try:
                copy.write_bytes(half)  # cp has copied half of it so far
                os.truncate(app, 0)
            finally:
                p.send_signal(signal.SIGCONT)
            s.wait_total(13)
            settle(3.0)
            truncations = scrape(port).get('telemetryd_rotations_total{kind="truncate"}')
            p.send_signal(signal.SIGTERM)
            assert p.wait(30) == 0, log.read_text()
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert copy.read_bytes() == content + lines("more", 3)
    assert s.counts() == expected(a=10, more=3), log.read_text()
    assert truncations == 1
