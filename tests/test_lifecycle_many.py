"""Many files (case 7) and unreadable / vanishing files (case 8), with a real daemon process."""

from __future__ import annotations

import ctypes
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import BIN, cli_json, wait_for
from lifecycle_helpers import Setup, append, expected, lines, log_events, settle

MAX_OPEN = 64
PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE = 1
CAP_DAC_READ_SEARCH = 2


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_ten_thousand_files_bounded_descriptors(tmp_path: Path, daemons) -> None:
    s = Setup(tmp_path, "*.jsonl", extra=f"max_open_files = {MAX_OPEN}\n", rescan=2.0)
    n = 10_000
    for i in range(n):
        (s.dir / f"f{i:05}.jsonl").write_bytes(b'{"k":"init"}\n')
    d = daemons(*s.args)
    peak = 0

    def caught_up() -> bool:
        nonlocal peak
        assert d.proc.poll() is None, d.log()[-3000:]
        peak = max(peak, _fds(d.proc.pid))
        return s.events_total() >= n

    wait_for(caught_up, timeout=180, interval=0.2, what="10,000 files read")
    # Files written after the initial scan: closed idle files are reopened by identity when they change.
    for i in range(0, n, 500):
        append(s.dir / f"f{i:05}.jsonl", b'{"k":"later"}\n')
    append(s.dir / "new.jsonl", b'{"k":"new"}\n')
    wait_for(caught_up_more := lambda: s.events_total() >= n + 21, timeout=60, what="later lines")
    assert caught_up_more()
    peak = max(peak, _fds(d.proc.pid))
    # The descriptors beyond tailed files: stdio, state dir lock and journal, inotify, pipes.
    assert peak <= MAX_OPEN + 32, peak
    settle(1.0)
    assert d.stop() == 0, d.log()
    assert s.status()["events_total"] == n + 21
    assert cli_json("patterns", "--state-dir", str(s.state), "--config", str(s.cfg))["events_total"] == n + 21
    assert not log_events(d.log(), "source_error"), d.log()[-3000:]


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory an unprivileged user can enter (pytest's tmp_path is private to root)."""
    d = Path(tempfile.mkdtemp(prefix="telemetryd-perm-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_unreadable_and_odd_matches_logged_once_retried(shared_dir: Path) -> None:
    """Case 8: permission denied, a directory and a dangling symlink that match the glob, and files
    vanishing between listing and opening: each logged once with its path, counted, retried on the next
    rescan; the daemon keeps running and reads the rest."""
    s = Setup(shared_dir, "*.jsonl", rescan=0.2)
    root = os.geteuid() == 0
    s.state.mkdir()
    ok = s.dir / "ok.jsonl"
    ok.write_bytes(lines("ok", 10))
    secret = s.dir / "secret.jsonl"
    secret.write_bytes(lines("secret", 5))
    secret.chmod(0o600 if root else 0o000)
    if root:
        # Root reads any file through CAP_DAC_OVERRIDE: the daemon runs without it (dropped from the
        # bounding set before exec), and the file belongs to nobody, so the denial is real.
        nobody = pwd.getpwnam("nobody")
        os.chown(secret, nobody.pw_uid, nobody.pw_gid)
    (s.dir / "dir.jsonl").mkdir()
    (s.dir / "dangling.jsonl").symlink_to(s.dir / "missing")
    s.dir.chmod(0o755)
    s.cfg.chmod(0o644)
    log_path = shared_dir / "daemon.log"

    def demote() -> None:
        if root:
            libc = ctypes.CDLL(None, use_errno=True)
            for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
                if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                    raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")

    with open(log_path, "wb") as logf:
        proc = subprocess.Popen(
            [BIN, "run", *s.args], stdout=logf, stderr=subprocess.STDOUT, preexec_fn=demote
        )
        try:
            s.wait_total(10)
            # Files appearing and vanishing at once, while the daemon rescans every 0.2 s.
            for i in range(200):
                p = s.dir / f"flash{i}.jsonl"
                p.write_bytes(b'{"k":"flash"}\n')
                p.unlink()
            log = log_path.read_text()
            wait_for(
                lambda: all(
                    f'"{r}"' in log_path.read_text()
                    for r in ("permission_denied", "not_regular_file", "dangling_symlink")
                ),
                what="source errors logged",
            )
            settle(1.5)  # several rescans: each problem still logged only once
            log = log_path.read_text()
            errs = log_events(log, "source_error")
            keys = [(e["path"], e["reason"]) for e in errs]
            assert len(keys) == len(set(keys)), errs
            paths = {e["path"] for e in errs}
            assert str(secret) in paths and str(s.dir / "dir.jsonl") in paths
            assert str(s.dir / "dangling.jsonl") in paths
            assert proc.poll() is None, log
            # Fixed: read on the next rescan.
            secret.chmod(0o644)
            append(ok, lines("ok", 1, start=10))
            wait_for(lambda: s.counts()["secret"] == 5 and s.counts()["ok"] == 11, what="secret read")
            assert proc.poll() is None
        finally:
            proc.terminate()
            code = proc.wait(30)
    assert code == 0, log_path.read_text()
    c = s.counts()
    # A flash file the daemon opened before it vanished is read (its bytes existed); never twice.
    assert c["flash"] <= 200
    assert c == expected(ok=11, secret=5, flash=c["flash"])
