"""Faults the daemon must survive (issue 4): torn and corrupt checkpoints, a full or failing disk, hostile
input, pattern explosion, a second instance, SIGTERM under load. Real processes and real files; the
only injected fault is EIO, which no real file system here can be made to return."""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import (
    KEY_CONFIG,
    Daemon,
    cli,
    cli_json,
    counted_by_key,
    free_port,
    key_counts,
    scrape,
    start_writer,
    wait_for,
    write_config,
)
from telemetryd import checkpoint as ck

# --- helpers ---------------------------------------------------------------------------------------


def metric(port: int, series: str) -> float:
    try:
        return scrape(port).get(series, 0.0)
    except OSError:
        return -1.0


def stop(d: Daemon, timeout: float = 30.0) -> int:
    """SIGTERM; a daemon that hangs instead is sent SIGABRT so its stacks (PYTHONFAULTHANDLER) are in the
    log the assertion shows."""
    d.kill(signal.SIGTERM)
    try:
        return d.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        d.kill(signal.SIGABRT)
        d.proc.wait(10)
        raise AssertionError(f"no exit within {timeout}s of SIGTERM:\n{d.log()[-20000:]}") from None


FAULTHANDLER = {"PYTHONFAULTHANDLER": "1"}


def status(state: Path, cfg: Path) -> dict:
    return cli_json("status", "--state-dir", str(state), "--config", str(cfg))


def lines_in(*paths: Path) -> int:
    return sum(len(p.read_bytes().splitlines()) for p in paths)


def frames(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each framed record of a journal."""
    pos, out = len(ck.JOURNAL_MAGIC), []
    while pos < len(data):
        n = int.from_bytes(data[pos : pos + 4], "little")
        out.append((pos, pos + 8 + n))
        pos += 8 + n
    return out


def counts_of(state: ck.State) -> dict[str, int]:
    return {p.id: p.count for p in state.patterns.values()}


# --- 1. torn checkpoint ----------------------------------------------------------------------------


def test_daemon_journal_torn_at_every_byte_of_its_last_record(tmp_path: Path, daemons) -> None:
    """The journal the real daemon wrote, cut at each byte of its last record: recovery returns the
    state of the record before, and the daemon started on a cut journal counts every line exactly once."""
    cfg = write_config(tmp_path, KEY_CONFIG.replace("every_events = 200", "every_events = 500"))
    f, state = tmp_path / "a.jsonl", tmp_path / "state"
    args = ("--config", str(cfg), "--path", str(f), "--state-dir", str(state))
    # Each --once run appends records for what was added since: a journal of several records.
    for r in range(4):
        assert start_writer(f, 700, seed=r, keys=30, start=r * 700).wait(30) == 0
        assert daemons("--once", *args).proc.wait(60) == 0
    jname = ck.journal_name(0)
    journal = (state / jname).read_bytes()
    recs = frames(journal)
    assert len(recs) >= 4 and recs[-1][1] == len(journal)
    last_start = recs[-1][0]
    before = ck.recover(str(state), repair=False).state
    # The state committed by the record before the last one, built from the journal prefix.
    (tmp_path / "prefix").mkdir()
    (tmp_path / "prefix" / jname).write_bytes(journal[:last_start])
    expected = ck.recover(str(tmp_path / "prefix")).state
    assert expected.seq == before.seq - 1 and expected.totals.events < before.totals.events
    work = tmp_path / "work"
    for cut in range(last_start, len(journal)):
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        (work / jname).write_bytes(journal[:cut])
        rec = ck.recover(str(work))
        assert rec.outcome == ("clean" if cut == last_start else "fallback"), cut
        assert rec.state.seq == expected.seq and rec.state.totals == expected.totals, cut
        assert counts_of(rec.state) == counts_of(expected), cut
        assert {i: e.offset for i, e in rec.state.files.items()} == {
            i: e.offset for i, e in expected.files.items()
        }, cut
        assert (work / jname).stat().st_size == last_start
    # Through the real daemon: three cuts (inside the frame header, inside the payload, one byte short).
    for cut in (last_start + 3, (last_start + len(journal)) // 2, len(journal) - 1):
        shutil.rmtree(work)
        shutil.copytree(state, work)
        (work / jname).write_bytes(journal[:cut])
        d = daemons("--once", "--config", str(cfg), "--path", str(f), "--state-dir", str(work))
        assert d.proc.wait(60) == 0, d.log()
        assert next(e for e in d.events() if e.get("event") == "recovered")["outcome"] == "fallback"
        assert counted_by_key(work, cfg) == key_counts([f]), cut


def _generations(tmp: Path, daemons, rounds: int = 4) -> tuple[Path, Path, Path, tuple[str, ...]]:
    """A state dir with several generations (small compact_bytes), written by the real daemon."""
    cfg = write_config(tmp, KEY_CONFIG.replace("[checkpoint]\n", "[checkpoint]\ncompact_bytes = 4096\n"))
    state, f = tmp / "state", tmp / "a.jsonl"
    args = ("--config", str(cfg), "--path", str(f), "--state-dir", str(state))
    for r in range(rounds):
        assert start_writer(f, 1500, seed=r, keys=40, start=r * 1500).wait(30) == 0
        d = daemons("--once", *args)
        assert d.proc.wait(60) == 0, d.log()
    snaps, _ = ck.list_generations(str(state))
    assert snaps, os.listdir(state)
    return cfg, state, f, args


def test_snapshot_torn_at_every_byte_falls_back_to_previous_generation(tmp_path: Path, daemons) -> None:
    cfg, state, f, _ = _generations(tmp_path, daemons)
    snaps, _ = ck.list_generations(str(state))
    name = ck.snapshot_name(snaps[-1])
    good = (state / name).read_bytes()
    full = ck.recover(str(state), repair=False)
    assert full.outcome == "clean"
    for cut in range(len(good)):
        (state / name).write_bytes(good[:cut])
        rec = ck.recover(str(state), repair=False)
        # The previous generation's snapshot + journals rebuild exactly the same committed state.
        assert rec.outcome == "quarantined", cut
        assert rec.state.seq == full.state.seq and rec.state.totals == full.state.totals, cut
        assert counts_of(rec.state) == counts_of(full.state), cut
    (state / name).write_bytes(good[: len(good) // 3])
    with f.open("ab") as fh:
        fh.write(b'{"k": "after"}\n')
    d = daemons("--once", "--config", str(cfg), "--path", str(f), "--state-dir", str(state))
    assert d.proc.wait(60) == 0, d.log()
    assert any(n.startswith(name) and n.endswith(".corrupt") for n in os.listdir(state))
    assert counted_by_key(state, cfg) == key_counts([f])


# --- 2. corrupt checkpoint -------------------------------------------------------------------------


def _damage(path: Path, how: str, rnd: random.Random) -> None:
    data = bytearray(path.read_bytes())
    if how == "flip":
        for pos in rnd.sample(range(len(ck.SNAP_MAGIC), len(data)), 8):
            data[pos] ^= 1 << rnd.randrange(8)
    elif how == "magic":
        data[:8] = b"TLMDSNP9"
    elif how == "empty":
        data = bytearray()
    elif how == "future_schema":
        s = ck.read_snapshot(str(path))
        s.schema = ck.SCHEMA + 1
        data = bytearray(ck.SNAP_MAGIC + ck.frame(ck._encoder.encode(s)))
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["flip", "magic", "empty", "future_schema", "journal_flip"])
def test_corrupt_checkpoint_is_quarantined_counted_and_counts_stay_exact(
    tmp_path: Path, daemons, how: str
) -> None:
    cfg, state, f, args = _generations(tmp_path, daemons, rounds=3)
    snaps, journals = ck.list_generations(str(state))
    if how == "journal_flip":
        # A complete record that does not read back (checksum): cut off, kept aside, lines read again.
        j = state / ck.journal_name(journals[-1])
        data = bytearray(j.read_bytes())
        recs = frames(bytes(data))
        assert len(recs) >= 2  # the header, then records
        start, end = recs[-1]
        data[(start + 8 + end) // 2] ^= 0x5A
        j.write_bytes(bytes(data))
        victim = j.name
    else:
        victim = ck.snapshot_name(snaps[-1])
        _damage(state / victim, how, random.Random(how))
    assert cli(
        "checkpoint", "verify", "--state-dir", str(state), "--config", str(cfg), check=False
    ).returncode
    assert start_writer(f, 500, seed=9, keys=40, start=10_000).wait(30) == 0
    port = free_port()
    d = daemons(*args, "--metrics-listen", f"127.0.0.1:{port}", env=FAULTHANDLER)
    d.wait_ready()
    total = lines_in(f)
    assert metric(port, 'telemetryd_recoveries_total{outcome="quarantined"}') == 1.0
    assert metric(port, 'telemetryd_recoveries_total{outcome="clean"}') == 0.0
    wait_for(lambda: status(state, cfg)["events_total"] == total, timeout=60, what="catch-up")
    assert stop(d) == 0, d.log()
    rec = next(e for e in d.events() if e.get("event") == "recovered")
    assert rec["outcome"] == "quarantined" and any(q.startswith(victim) for q in rec["quarantined"])
    assert any(n.startswith(victim) and n.endswith(".corrupt") for n in os.listdir(state))
    assert counted_by_key(state, cfg) == key_counts([f])
    assert cli("checkpoint", "verify", "--state-dir", str(state), "--config", str(cfg)).returncode == 0


# --- 3. ENOSPC and EIO while writing a checkpoint ---------------------------------------------------

# EIO cannot be produced by a real file system on demand: this wrapper runs the real CLI with
# os.fdatasync failing while a flag file exists (the checkpoint writer is its only caller).
EIO_WRAPPER = """\
import errno, os, sys
from telemetryd.cli import main
flag = os.environ["FAULT_FLAG"]
real = os.fdatasync
def fdatasync(fd):
    if os.path.exists(flag):
        raise OSError(errno.EIO, os.strerror(errno.EIO))
    return real(fd)
os.fdatasync = fdatasync
sys.exit(main(sys.argv[1:]))
"""


class _Tmpfs:
    """A real, small file system for the state dir, so ENOSPC is the kernel's own."""

    def __init__(self, path: Path, size: str) -> None:
        path.mkdir()
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
        )
        if r.returncode != 0:
            pytest.fail(f"cannot mount a tmpfs (needs root and CAP_SYS_ADMIN): {r.stderr.decode()}")
        self.path = path
        self.filler = path / "filler"

    def fill(self) -> None:
        # Unbuffered: a buffered file would raise the last ENOSPC again from close().
        with open(self.filler, "ab", buffering=0) as fh:
            for size in (1 << 16, 4096, 1):  # down to the last byte a page still has room for
                try:
                    while fh.write(b"\0" * size):
                        pass
                except OSError as e:
                    assert e.errno == errno.ENOSPC, e

    def free(self) -> None:
        self.filler.unlink()

    def close(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False)


class _Wrapped(Daemon):
    """The real daemon run through EIO_WRAPPER instead of the console script."""

    def __init__(self, tmp: Path, argv: list[str], flag: Path) -> None:
        self.log_path = tmp / f"daemon-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        env = {**os.environ, "FAULT_FLAG": str(flag), **FAULTHANDLER}
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, env=env)


@pytest.mark.parametrize("fault", ["enospc", "eio"])
def test_checkpoint_write_errors_lag_then_commit_everything(tmp_path: Path, daemons, fault: str) -> None:
    cfg = write_config(tmp_path, KEY_CONFIG.replace("every_events = 200", "every_events = 100"))
    f, state = tmp_path / "a.jsonl", tmp_path / "state"
    assert start_writer(f, 1000, seed=1, keys=40).wait(30) == 0
    port = free_port()
    args = ("--config", str(cfg), "--path", str(f), "--state-dir", str(state), "--metrics-listen")
    flag = tmp_path / "fail-now"
    fs: _Tmpfs | None = None
    if fault == "enospc":
        fs = _Tmpfs(state, "512k")
        d = daemons(*args, f"127.0.0.1:{port}", env=FAULTHANDLER)
    else:
        wrapper = tmp_path / "eio_wrapper.py"
        wrapper.write_text(EIO_WRAPPER)
        d = _Wrapped(tmp_path, [sys.executable, str(wrapper), "run", *args, f"127.0.0.1:{port}"], flag)
    try:
        d.wait_ready()
        wait_for(lambda: status(state, cfg)["events_total"] == 1000, what="first 1000 committed")
        wait_for(lambda: metric(port, "telemetryd_checkpoint_lag_events") == 0.0, what="no lag")
        errors0 = metric(port, 'telemetryd_checkpoint_writes_total{result="error"}')
        assert errors0 == 0.0
        if fs is not None:
            fs.fill()
        else:
            flag.touch()
        good = {n: (state / n).read_bytes() for n in ck.iter_state_files(str(state))}
        assert start_writer(f, 2000, seed=2, keys=40, start=1000, rate=4000).wait(30) == 0
        # Processing goes on while writes fail; the lag is visible and grows to everything not durable.
        wait_for(
            lambda: metric(port, 'telemetryd_checkpoint_writes_total{result="error"}') >= 3,
            what="failed checkpoint writes counted",
        )
        # [prom] events_read_total is what this process counted; events_total only what is durable.
        wait_for(lambda: metric(port, "telemetryd_events_read_total") == 3000.0, what="all 3000 counted")
        durable = status(state, cfg)["events_total"]
        # A tmpfs page may have had room for one small record after the fill; nothing more.
        assert 1000 <= durable < 3000
        assert metric(port, "telemetryd_events_total") == durable
        wait_for(
            lambda: metric(port, "telemetryd_checkpoint_lag_events") == 3000.0 - durable,
            what=f"lag of {3000 - durable} events",
        )
        assert metric(port, "telemetryd_checkpoint_lag_bytes") > 0
        failed = [e for e in d.events() if e.get("event") == "checkpoint_write_failed"]
        assert failed, d.log()
        want = "No space left" if fault == "enospc" else "Input/output error"
        assert want in failed[0]["error"], failed[0]
        # The committed checkpoint is untouched: failed appends were cut back off the journal.
        for n, data in good.items():
            assert (state / n).read_bytes()[: len(data)] == data, n
        assert status(state, cfg)["events_total"] == durable
        assert cli("checkpoint", "verify", "--state-dir", str(state), "--config", str(cfg)).returncode == 0
        if fs is not None:
            fs.free()
        else:
            flag.unlink()
        wait_for(lambda: status(state, cfg)["events_total"] == 3000, what="everything committed")
        wait_for(lambda: metric(port, "telemetryd_checkpoint_lag_events") == 0.0, what="lag back to 0")
        assert any(e.get("event") == "checkpoint_recovered" for e in d.events()), d.log()
        assert stop(d) == 0, d.log()
        assert counted_by_key(state, cfg) == key_counts([f])
    finally:
        d.close()
        if fs is not None:
            fs.close()


# --- 4. hostile input --------------------------------------------------------------------------------

HOSTILE = [
    b"\x00",
    b'{"k": "a\x00b"}',
    b'{"k": "a\\u0000b", "message": "nul \\u0000 inside"}',
    b'{"k": "\\ud800", "message": "lone \\udfff"}',
    b'{"k": "\xed\xa0\x80"}',  # a surrogate encoded as UTF-8: not valid UTF-8
    b"[" * 100_000 + b"]" * 100_000,
    b'{"k": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
    b'{"k": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5001,
    b'{"k": 1e999, "message": -1e999}',
    b'{"k": ' + b"9" * 10_000 + b"}",
    b'{"k": 18446744073709551616, "message": 123456789012345678901234567890}',
    b'{"k": -0.0}',
    b'{"k": "a", "k": "b", "message": "dup", "message": 7}',
    b'{"k": null}',
    b'{"k": true}',
    b'{"k": false}',
    b'{"k": 1}',
    b'{"k": 1.0}',
    b'{"k": "1"}',
    b'{"k": [1, "x", null]}',
    b'{"k": {"b": 1, "a": [2]}}',
    b'{"k": {}}',
    b'{"k": []}',
    b'{"message": {"not": "text"}}',
    b'{"message": ["a", 1]}',
    b"\xff\xfe\xfd",
    b"{",
    b"}",
    b"null",
    b"1",
    b'"str"',
    b"\t \r",
]


def test_hostile_lines_through_the_daemon_each_counted_or_skipped(tmp_path: Path, daemons) -> None:
    cfg = write_config(tmp_path, KEY_CONFIG + "max_line_bytes = 300000\n")
    f, state = tmp_path / "a.jsonl", tmp_path / "state"
    f.write_bytes(b"\n".join(HOSTILE) + b"\n")
    d = daemons("--once", "--config", str(cfg), "--path", str(f), "--state-dir", str(state))
    assert d.proc.wait(60) == 0, d.log()
    st = status(state, cfg)
    assert st["events_total"] + st["lines_skipped_total"] == len(HOSTILE)
    assert st["files"][0]["offset"] == f.stat().st_size
    doc = cli_json("patterns", "--state-dir", str(state), "--config", str(cfg))
    assert sum(p["count"] for p in doc["patterns"]) + doc["overflow_count"] == st["events_total"]
    keys = {p["key"]["k"] for p in doc["patterns"]}
    # Every JSON type is a key of its own, as canonical JSON text; strings stay strings.
    assert {"null", "true", "false", "1", "1.0", '[1,"x",null]', '{"a":[2],"b":1}', "{}", "[]"} <= keys
    assert "1" in keys and None in keys and "b" in keys  # duplicate keys: the last one wins
    # extract agrees line by line: one answer per line, skipped ones with a reason.
    r = cli("extract", str(f), "--json", "--config", str(cfg))
    answers = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(answers) == len(HOSTILE)
    assert sum("skipped" in a for a in answers) == st["lines_skipped_total"]


# --- 5. pattern explosion ----------------------------------------------------------------------------


def test_pattern_explosion_stops_at_max_patterns(tmp_path: Path, daemons) -> None:
    sys.path.insert(0, str(Path(__file__).parent.parent / "bench"))
    from pattern_explosion import distinct_message, write_events

    cfg = write_config(
        tmp_path,
        '[patterns]\nkey_fields = []\ntemplate_field = "message"\nmax_patterns = 1000\n'
        '[metrics]\nlisten = ""\n[checkpoint]\nevery_events = 5000\n',
    )
    assert len({distinct_message(i) for i in range(20_000)}) == 20_000
    f, state = tmp_path / "a.jsonl", tmp_path / "state"
    write_events(f, 20_000)
    d = daemons("--once", "--config", str(cfg), "--path", str(f), "--state-dir", str(state))
    assert d.proc.wait(120) == 0, d.log()
    doc = cli_json("patterns", "--state-dir", str(state), "--config", str(cfg))
    assert len(doc["patterns"]) == 1000
    assert doc["overflow_count"] == 19_000 and doc["events_total"] == 20_000
    # No two messages share a template: masking left them apart, so every pattern holds one event.
    assert {p["count"] for p in doc["patterns"]} == {1}


# --- 6. a second instance ----------------------------------------------------------------------------


def test_second_instance_leaves_state_byte_identical(tmp_path: Path, daemons) -> None:
    cfg = write_config(tmp_path, KEY_CONFIG)
    f, state = tmp_path / "a.jsonl", tmp_path / "state"
    w = start_writer(f, 4000, seed=1, rate=2000)
    args = ("--config", str(cfg), "--path", str(f), "--state-dir", str(state))
    first = daemons(*args, env=FAULTHANDLER)
    first.wait_ready()
    wait_for(lambda: status(state, cfg)["events_total"] > 0, what="first checkpoint")
    # Freeze the first instance so that any change to the state dir could only come from the second.
    first.kill(signal.SIGSTOP)
    try:
        time.sleep(0.3)
        before = {p.name: p.read_bytes() for p in state.iterdir()}
        second = daemons(*args, "--once")
        assert second.proc.wait(30) == 3, second.log()
        third = daemons(*args)
        assert third.proc.wait(30) == 3, third.log()
        assert {p.name: p.read_bytes() for p in state.iterdir()} == before
    finally:
        first.kill(signal.SIGCONT)
    assert w.wait(30) == 0
    wait_for(lambda: status(state, cfg)["events_total"] == 4000, timeout=60, what="catch-up")
    assert stop(first) == 0, first.log()
    assert counted_by_key(state, cfg) == key_counts([f])


# --- 7. SIGTERM under full load ----------------------------------------------------------------------


def test_sigterm_under_full_load_commits_and_exits_within_5s(tmp_path: Path, daemons) -> None:
    # Checkpoints only by count and far apart: the final one carries a lot.
    cfg = write_config(
        tmp_path,
        KEY_CONFIG.replace("every_events = 200", "every_events = 100000").replace(
            "every_seconds = 0.2", "every_seconds = 30"
        ),
    )
    state = tmp_path / "state"
    files = [tmp_path / f"w{i}.jsonl" for i in range(2)]
    # A backlog to chew on, then writers at full speed while the daemon runs.
    for i, p in enumerate(files):
        assert start_writer(p, 60_000, seed=i, keys=300).wait(60) == 0
    writers = [start_writer(p, 10**7, seed=10 + i, keys=300, start=60_000) for i, p in enumerate(files)]
    try:
        d = daemons("--config", str(cfg), "--path", str(tmp_path / "*.jsonl"), "--state-dir", str(state))
        d.wait_ready()
        wait_for(lambda: any(e.get("event") == "file_opened" for e in d.events()), what="files opened")
        time.sleep(1.5)
        assert d.proc.poll() is None
        t0 = time.monotonic()
        d.kill(signal.SIGTERM)
        code = d.proc.wait(30)
        took = time.monotonic() - t0
    finally:
        for w in writers:
            w.kill()
            w.wait()
    assert code == 0, d.log()
    assert took < 5.0, f"exit took {took:.1f}s"
    stopped = next(e for e in d.events() if e.get("event") == "stopped")
    st = status(state, cfg)
    # The final checkpoint holds everything the process counted.
    assert st["events_total"] == stopped["events_total"] > 0
    # And it is consistent: finishing the files from it gives exact counts.
    for p in files:
        # A writer killed mid-line leaves a partial last line: not an event yet, and never finished.
        data = p.read_bytes()
        os.truncate(p, data.rfind(b"\n") + 1)
    expected = key_counts(files)
    d2 = daemons(
        "--once", "--config", str(cfg), "--path", str(tmp_path / "*.jsonl"), "--state-dir", str(state)
    )
    assert d2.proc.wait(120) == 0, d2.log()
    assert counted_by_key(state, cfg) == expected
