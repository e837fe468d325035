"""File lifecycle (issue 3): rotation, truncation, deletion, identity, on real files and a real daemon."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest
from conftest import free_port, scrape, wait_for
from lifecycle_helpers import Setup, append, expected, lines, log_events, settle


@pytest.mark.parametrize("glob", ["*.jsonl*", "*.jsonl"])
def test_rename_create_reads_old_to_end_then_new(tmp_path: Path, daemons, glob: str) -> None:
    """Case 1: app.jsonl -> app.jsonl.1 and a new app.jsonl; with *.jsonl* the rotated name still
    matches and is the same file, never read again."""
    s = Setup(tmp_path, glob)
    app = s.dir / "app.jsonl"
    d = daemons(*s.args)
    d.wait_ready()
    fd = os.open(app, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, lines("old", 100))
    s.wait_total(100)
    os.rename(app, s.dir / "app.jsonl.1")
    # The writer still holds the old file: its late lines land in app.jsonl.1.
    os.write(fd, lines("late", 30))
    os.close(fd)
    append(app, lines("new", 40))
    s.wait_total(170)
    settle()
    assert d.stop() == 0, d.log()
    assert s.counts() == expected(old=100, late=30, new=40)
    renamed = log_events(d.log(), "file_renamed") + [
        e for e in log_events(d.log(), "file_rotated_away") if e.get("kind") == "rename"
    ]
    assert renamed, d.log()
    assert not log_events(d.log(), "file_rewritten"), d.log()


def test_rename_counts_rotation_metric(tmp_path: Path, daemons) -> None:
    s = Setup(tmp_path)
    app = s.dir / "app.jsonl"
    port = free_port()
    d = daemons(*s.args, "--metrics-listen", f"127.0.0.1:{port}")
    d.wait_ready()
    append(app, lines("a", 10))
    s.wait_total(10)
    os.rename(app, s.dir / "app.jsonl.1")
    append(app, lines("b", 10))
    s.wait_total(20)
    wait_for(
        lambda: scrape(port).get('telemetryd_rotations_total{kind="rename"}', 0) >= 1, what="rename metric"
    )
    with open(app, "r+b") as f:
        f.truncate(0)
    append(app, lines("c", 5))
    s.wait_total(25)
    wait_for(
        lambda: scrape(port).get('telemetryd_rotations_total{kind="truncate"}', 0) >= 1,
        what="truncate metric",
    )
    os.unlink(s.dir / "app.jsonl.1")
    wait_for(lambda: scrape(port).get('telemetryd_rotations_total{kind="delete"}', 0) >= 1, what="delete")
    assert d.stop() == 0, d.log()
    assert s.counts() == expected(a=10, b=10, c=5)


def test_copytruncate_unread_lines_come_from_the_copy(tmp_path: Path, daemons) -> None:
    """Case 2: lines written after our last read exist only in the copy once the original is truncated:
    the copy takes over the original's offset; the truncated original starts again at 0."""
    s = Setup(tmp_path)
    app = s.dir / "app.jsonl"
    d = daemons(*s.args)
    d.wait_ready()
    append(app, lines("read", 100))
    s.wait_total(100)
    # Freeze the daemon so the next lines are not read before the truncation (a real SIGSTOP).
    d.kill(signal.SIGSTOP)
    try:
        append(app, lines("unread", 20))
        shutil.copyfile(app, s.dir / "app.jsonl.1")
        os.truncate(app, 0)
        append(app, lines("after", 10))
    finally:
        d.kill(signal.SIGCONT)
    s.wait_total(130)
    settle()
    assert d.stop() == 0, d.log()
    assert s.counts() == expected(read=100, unread=20, after=10)
    assert log_events(d.log(), "file_rewritten"), d.log()


def test_copy_made_while_caught_up_is_not_read_again(tmp_path: Path, daemons) -> None:
    """Case 2, the window: the copy exists while the original is not truncated yet. Rule: the original is
    read on; the copy follows it and takes over its offset only once the original is truncated."""
    s = Setup(tmp_path)
    app = s.dir / "app.jsonl"
    d = daemons(*s.args)
    d.wait_ready()
    append(app, lines("a", 100))
    s.wait_total(100)
    shutil.copyfile(app, s.dir / "app.jsonl.1")
    append(app, lines("b", 20))  # only in the original
    s.wait_total(120)
    settle(1.5)
    assert s.events_total() == 120
    os.truncate(app, 0)
    append(app, lines("c", 10))
    s.wait_total(130)
    settle()
    assert d.stop() == 0, d.log()
    assert s.counts() == expected(a=100, b=20, c=10)


def test_copy_found_only_after_a_crash_takes_over(tmp_path: Path, daemons) -> None:
    """Case 2 across a crash: the daemon sees the truncation and commits it, then dies before it finds
    the copy. The restarted daemon must still know what the truncated file held, or it reads the copy
    from 0 and counts every line twice (found by the chaos round)."""
    s = Setup(tmp_path)
    app = s.dir / "app.jsonl"
    d = daemons(*s.args)
    d.wait_ready()
    append(app, lines("read", 100))
    s.wait_total(100)
    # The copy is made where the globs do not look: this daemon sees only the truncation.
    shutil.copyfile(app, tmp_path / "app.copy")
    os.truncate(app, 0)
    append(app, lines("after", 10))
    s.wait_total(110)  # the truncation was seen and checkpointed
    d.kill(signal.SIGKILL)
    d.proc.wait()
    os.rename(tmp_path / "app.copy", s.dir / "app.jsonl.1")
    d = daemons(*s.args)
    d.wait_ready()
    settle()
    assert d.stop() == 0, d.log()
    assert s.counts() == expected(read=100, after=10)
    assert log_events(d.log(), "file_copy_found"), d.log()


@pytest.mark.parametrize("how", ["rename", "rename_unmatched", "copytruncate"])
def test_rotation_while_daemon_is_down(tmp_path: Path, daemons, how: str) -> None:
    """Case 3: rotated while killed; on restart each file is matched to its checkpoint entry by identity
    wherever its name is now, and unread tails are finished."""
    s = Setup(tmp_path, "*.jsonl" if how == "rename_unmatched" else "*.jsonl*")
    app = s.dir / "app.jsonl"
    append(app, lines("first", 200))
    d = daemons(*s.args)
    s.wait_total(200)
    d.kill(signal.SIGKILL)
    d.proc.wait()
    append(app, lines("tail", 30))
    if how == "copytruncate":
        shutil.copyfile(app, s.dir / "app.jsonl.1")
        os.truncate(app, 0)
    else:
        os.rename(app, s.dir / "app.jsonl.1")
    append(app, lines("new", 40))
    d = daemons(*s.args)
    s.wait_total(270)
    settle()
    assert d.stop() == 0, d.log()
    assert s.counts() == expected(first=200, tail=30, new=40)


def test_deleted_file_read_to_end_released_and_recreated(tmp_path: Path, daemons) -> None:
    """Case 4."""
    s = Setup(tmp_path)
    app = s.dir / "app.jsonl"
    d = daemons(*s.args)
    d.wait_ready()
    fd = os.open(app, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, lines("a", 100))
    s.wait_total(100)
    os.unlink(app)
    os.write(fd, lines("b", 20))  # still open: read to the end
    s.wait_total(120)
    os.close(fd)
    wait_for(lambda: log_events(d.log(), "file_released"), what="release after rotate_wait")
    wait_for(lambda: s.status()["files"] == [], what="state dropped")
    append(app, lines("c", 30))
    s.wait_total(150)
    settle()
    assert d.stop() == 0, d.log()
    assert s.counts() == expected(a=100, b=20, c=30)
    assert [e["kind"] for e in log_events(d.log(), "file_rotated_away")] == ["delete"]


def test_inode_reuse_told_apart_by_fingerprint(tmp_path: Path, daemons) -> None:
    """Case 5: a new file that gets a checkpointed file's inode is a new file (read from 0)."""
    s = Setup(tmp_path)
    old = s.dir / "a.jsonl"
    append(old, lines("old", 50))
    d = daemons("--once", *s.args)
    assert d.proc.wait(60) == 0, d.log()
    ino = os.stat(old).st_ino
    os.unlink(old)
    # ext4 hands a freed inode out again, but when depends on its journal; try for a while. To the
    # daemon the outcome is the same either way: the checkpointed (dev, ino) now holds other bytes,
    # so when the allocator does not oblige, the same inode is given new content in place.
    got = None
    deadline = time.monotonic() + 3
    i = 0
    while got is None and time.monotonic() < deadline:
        i += 1
        p = s.dir / f"b{i}.jsonl"
        p.write_bytes(b"")
        if os.stat(p).st_ino == ino:
            got = p
        else:
            p.unlink()
            time.sleep(0.01)
    if got is None:
        got = s.dir / "b.jsonl"
        got.write_bytes(lines("old", 50))
        d = daemons("--once", *s.args)
        assert d.proc.wait(60) == 0, d.log()
        ino = os.stat(got).st_ino
        os.truncate(got, 0)
    # Longer than the old file, so only the fingerprint can tell it apart.
    got.write_bytes(lines("reuse", 80))
    assert os.stat(got).st_ino == ino
    d = daemons("--once", *s.args)
    assert d.proc.wait(60) == 0, d.log()
    assert s.counts() == expected(old=s.counts()["old"], reuse=80)
    assert s.counts()["old"] in (50, 100)
    assert log_events(d.log(), "file_rewritten"), d.log()


def test_small_files_read_promptly_identity_settles(tmp_path: Path, daemons) -> None:
    """Case 6: a file below the fingerprint size is read at once; its fingerprint grows without
    rereading, and a restart resumes it."""
    s = Setup(tmp_path)
    f = s.dir / "small.jsonl"
    d = daemons(*s.args)
    d.wait_ready()
    append(f, b'{"k":"s"}\n')
    s.wait_total(1)
    for n in range(2, 40):
        append(f, b'{"k":"s"}\n')
        s.wait_total(n)
    assert f.stat().st_size > 256
    assert d.stop() == 0, d.log()
    d = daemons(*s.args)
    d.wait_ready()
    append(f, b'{"k":"t"}\n')
    s.wait_total(40)
    settle(1.0)
    assert d.stop() == 0, d.log()
    assert s.counts() == expected(s=39, t=1)
    assert not log_events(d.log(), "file_rewritten"), d.log()


def test_start_at_end_new_files_at_end_known_files_resume(tmp_path: Path, daemons) -> None:
    """Case 9."""
    s = Setup(tmp_path, extra='start_at = "end"\n')
    f = s.dir / "a.jsonl"
    append(f, lines("before", 100))
    d = daemons(*s.args)
    d.wait_ready()
    wait_for(lambda: log_events(d.log(), "file_opened"), what="file opened")
    append(f, lines("during", 10))
    s.wait_total(10)
    assert d.stop() == 0, d.log()
    append(f, lines("down", 5))
    d = daemons(*s.args)
    s.wait_total(15)
    settle(1.0)
    assert d.stop() == 0, d.log()
    assert s.counts() == expected(during=10, down=5)


def test_polling_fallback(tmp_path: Path, daemons) -> None:
    """Case 10: watch = "poll" (no inotify at all): appends, rename rotation and truncation still work."""
    s = Setup(tmp_path, extra='watch = "poll"\n')
    app = s.dir / "app.jsonl"
    d = daemons(*s.args)
    d.wait_ready()
    append(app, lines("a", 50))
    s.wait_total(50)
    os.rename(app, s.dir / "app.jsonl.1")
    append(app, lines("b", 20))
    s.wait_total(70)
    os.truncate(app, 0)
    append(app, lines("c", 5))
    s.wait_total(75)
    settle()
    assert d.stop() == 0, d.log()
    assert s.counts() == expected(a=50, b=20, c=5)


HEADER = b'{"k":"header","message":"' + b"x" * 300 + b'"}\n'


def test_identical_headers_all_read_once(tmp_path: Path, daemons) -> None:
    """Case 11: first lines byte-for-byte equal (longer than the fingerprint): every file is read, once,
    including one created later and one that is, for a while, a prefix of another."""
    s = Setup(tmp_path)
    for i in range(5):
        (s.dir / f"f{i}.jsonl").write_bytes(HEADER + lines(f"f{i}", 10 + i))
    d = daemons(*s.args)
    s.wait_total(5 + sum(10 + i for i in range(5)))
    (s.dir / "late.jsonl").write_bytes(HEADER + lines("late", 7))
    s.wait_total(65 + 8)
    prefix = s.dir / "prefix.jsonl"
    prefix.write_bytes(HEADER)  # for now a prefix of every other file: held until its bytes decide
    append(prefix, lines("prefix", 3))
    s.wait_total(73 + 4)
    settle()
    assert d.stop() == 0, d.log()
    want = expected(header=7, late=7, prefix=3, **{f"f{i}": 10 + i for i in range(5)})
    assert s.counts() == want


def test_resume_check_rejects_rewritten_content(tmp_path: Path, daemons) -> None:
    """Case 12: before resuming at a saved offset the bytes before it must be unchanged."""
    s = Setup(tmp_path)
    f = s.dir / "a.jsonl"
    g = s.dir / "b.jsonl"
    f.write_bytes(lines("a1", 50))
    g.write_bytes(lines("b1", 50))
    d = daemons("--once", *s.args)
    assert d.proc.wait(60) == 0, d.log()
    # Same size, same first bytes, different last line: only the tail check sees it.
    data = f.read_bytes()
    last = data.rstrip(b"\n").rsplit(b"\n", 1)[1]
    f.write_bytes(data[: -len(last) - 1] + last.replace(b"a1", b"a2") + b"\n")
    # Same size, different first bytes.
    g.write_bytes(g.read_bytes().replace(b"b1", b"b2", 1))
    d = daemons("--once", *s.args)
    assert d.proc.wait(60) == 0, d.log()
    assert s.counts() == expected(a1=50 + 49, a2=1, b1=50 + 49, b2=1)
    assert len(log_events(d.log(), "file_rewritten")) == 2, d.log()
