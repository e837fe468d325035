"""Exactly once across kill -9: real writer processes, a real daemon killed at random moments."""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

from conftest import KEY_CONFIG, cli_json, counted_by_key, key_counts, start_writer, wait_for, write_config


def _caught_up(state_dir: Path, files: list[Path], cfg: Path) -> bool:
    doc = cli_json("status", "--state-dir", str(state_dir), "--config", str(cfg))
    total = sum(len(p.read_bytes().splitlines()) for p in files)
    return doc["events_total"] == total and all(f["lag_bytes"] == 0 for f in doc["files"])


def test_kill_9_many_times_counts_stay_exact(tmp_path: Path, daemons) -> None:
    cfg = write_config(tmp_path, KEY_CONFIG)
    state = tmp_path / "state"
    files = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    writers = [start_writer(f, 6000, seed=i, rate=1500) for i, f in enumerate(files)]
    rnd = random.Random(7)
    args = ("--config", str(cfg), "--path", str(tmp_path / "*.jsonl"), "--state-dir", str(state))
    kills = 0
    while kills < 20:
        d = daemons(*args)
        # Kill anywhere: during recovery, mid-read, mid-checkpoint.
        time.sleep(rnd.uniform(0.05, 0.5))
        d.kill(signal.SIGKILL)
        d.proc.wait()
        kills += 1
    for w in writers:
        assert w.wait(60) == 0
    d = daemons(*args)
    # The state may already be caught up from the last killed daemon: SIGTERM only once it listens.
    d.wait_ready()
    wait_for(lambda: state.exists() and _caught_up(state, files, cfg), timeout=60, what="catch-up")
    assert d.stop() == 0, d.log()
    expected = key_counts(files)
    assert sum(expected.values()) == 12000
    assert counted_by_key(state, cfg) == expected
    doc = cli_json("status", "--state-dir", str(state), "--config", str(cfg))
    assert doc["events_total"] == 12000 and doc["lines_skipped_total"] == 0


def test_sigterm_commits_everything_and_restart_adds_only_new_lines(tmp_path: Path, daemons) -> None:
    cfg = write_config(
        tmp_path,
        KEY_CONFIG.replace("every_events = 200", "every_events = 1000000").replace(
            "every_seconds = 0.2", "every_seconds = 3600"
        ),
    )
    state = tmp_path / "state"
    f = tmp_path / "a.jsonl"
    assert start_writer(f, 3000, seed=3).wait(30) == 0
    args = ("--config", str(cfg), "--path", str(tmp_path / "*.jsonl"), "--state-dir", str(state))
    d = daemons(*args)
    d.wait_ready()
    # With checkpoints due only by count/time far away, everything durable comes from the final one.
    wait_for(lambda: any(e.get("event") == "file_opened" for e in d.events()), what="file opened")
    time.sleep(1.0)
    assert d.stop() == 0, d.log()
    assert counted_by_key(state, cfg) == key_counts([f])
    assert start_writer(f, 500, seed=4, start=3000).wait(30) == 0
    d = daemons("--once", *args)
    assert d.proc.wait(60) == 0, d.log()
    assert counted_by_key(state, cfg) == key_counts([f])
    assert sum(counted_by_key(state, cfg).values()) == 3500


def test_once_reads_everything_and_exits(tmp_path: Path, daemons) -> None:
    cfg = write_config(tmp_path, KEY_CONFIG)
    state = tmp_path / "state"
    files = [tmp_path / f"f{i}.jsonl" for i in range(3)]
    for i, f in enumerate(files):
        assert start_writer(f, 1000 + i, seed=i).wait(30) == 0
    d = daemons(
        "--once", "--config", str(cfg), "--path", str(tmp_path / "*.jsonl"), "--state-dir", str(state)
    )
    assert d.proc.wait(60) == 0, d.log()
    assert counted_by_key(state, cfg) == key_counts(files)
    # A second --once over unchanged files counts nothing twice.
    d = daemons(
        "--once", "--config", str(cfg), "--path", str(tmp_path / "*.jsonl"), "--state-dir", str(state)
    )
    assert d.proc.wait(60) == 0, d.log()
    assert counted_by_key(state, cfg) == key_counts(files)
