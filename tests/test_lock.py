"""The state dir lock never follows a planted link: the daemon refuses with exit 2 and writes nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import KEY_CONFIG, write_config
from telemetryd.lock import LockUnsafe, StateLock

EXIT_USAGE = 2


def _args(tmp: Path) -> tuple[str, ...]:
    cfg = write_config(tmp, KEY_CONFIG)
    (tmp / "a.jsonl").write_text('{"k": "a"}\n')
    return ("--config", str(cfg), "--path", str(tmp / "*.jsonl"), "--state-dir", str(tmp / "state"))


def _snapshot(p: Path) -> tuple[bytes, int, int]:
    st = p.stat()
    return p.read_bytes(), st.st_mtime_ns, st.st_mode


@pytest.mark.parametrize("once", [False, True])
def test_lock_symlink_to_a_file_is_refused_and_the_target_unchanged(
    tmp_path: Path, daemons, once: bool
) -> None:
    args = _args(tmp_path)
    state = tmp_path / "state"
    state.mkdir()
    victim = tmp_path / "passwd"
    victim.write_bytes(b"root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/:/usr/sbin/nologin\n")
    os.chmod(victim, 0o644)
    before = _snapshot(victim)
    (state / "lock").symlink_to(victim)
    d = daemons(*(("--once",) if once else ()), *args)
    assert d.proc.wait(30) == EXIT_USAGE, d.log()
    assert _snapshot(victim) == before
    assert (state / "lock").is_symlink()
    # The error names the lock path and why, and nothing was started or written in the state dir.
    log = d.log()
    assert "state_dir_lock_unsafe" in log and str(state / "lock") in log and "symbolic link" in log, log
    assert sorted(os.listdir(state)) == ["lock"]
    # Once the operator removes it, the daemon starts as usual.
    (state / "lock").unlink()
    d = daemons("--once", *args)
    assert d.proc.wait(30) == 0, d.log()
    assert (state / "lock").read_text().strip().isdigit()
    assert _snapshot(victim) == before


def test_dangling_lock_symlink_creates_nothing(tmp_path: Path, daemons) -> None:
    """O_CREAT through a dangling symlink would create its target: it must not."""
    args = _args(tmp_path)
    state = tmp_path / "state"
    state.mkdir()
    target = tmp_path / "elsewhere" / "created-by-daemon"
    target.parent.mkdir()
    (state / "lock").symlink_to(target)
    d = daemons(*args)
    assert d.proc.wait(30) == EXIT_USAGE, d.log()
    assert not target.exists()
    assert os.listdir(target.parent) == []


def test_lock_hard_link_is_refused_and_the_other_name_unchanged(tmp_path: Path, daemons) -> None:
    args = _args(tmp_path)
    state = tmp_path / "state"
    state.mkdir()
    other = tmp_path / "shadow"
    other.write_bytes(b"secret\n")
    before = _snapshot(other)
    os.link(other, state / "lock")
    d = daemons(*args)
    assert d.proc.wait(30) == EXIT_USAGE, d.log()
    assert "hard links" in d.log(), d.log()
    assert _snapshot(other) == before


def test_lock_fifo_is_refused_without_hanging(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "lock")
    with pytest.raises(LockUnsafe, match="not a regular file"):
        StateLock(str(tmp_path)).acquire()


def test_plain_lock_file_is_taken_and_names_the_holder(tmp_path: Path) -> None:
    (tmp_path / "lock").write_text("stale 12345\n")
    lock = StateLock(str(tmp_path))
    lock.acquire()
    try:
        assert (tmp_path / "lock").read_text() == f"{os.getpid()}\n"
    finally:
        lock.release()
