"""The idle shortcut of the rescan: a directory that did not change is not globbed and stat'ed again.

SourceSet.unchanged_since_scan() lets the daemon skip a periodic rescan while change notifications
work; it must say "changed" whenever a rescan could find something, or a file would wait for the next
full scan. Real files, real directories; the daemon-level behaviour (new files, rotation under idle)
is covered by the lifecycle tests.
"""

from __future__ import annotations

import os
from pathlib import Path

import structlog
from telemetryd.config import SourcesConfig
from telemetryd.sources import SourceSet


def sources(*paths: str) -> SourceSet:
    return SourceSet(SourcesConfig(paths=list(paths)), structlog.get_logger())


def test_unchanged_directory_needs_no_rescan_and_every_entry_change_does(tmp_path: Path) -> None:
    d = tmp_path / "logs"
    d.mkdir()
    (d / "a.jsonl").write_text('{"k": 1}\n')
    s = sources(f"{d}/*.jsonl")
    assert not s.unchanged_since_scan()  # never scanned
    s.scan(0.0)
    assert s.unchanged_since_scan()
    with open(d / "a.jsonl", "a") as f:
        f.write('{"k": 2}\n')  # writes come from notifications, not from rescans
    assert s.unchanged_since_scan()
    for change in (
        lambda: (d / "b.jsonl").write_text("x\n"),  # created
        lambda: os.rename(d / "b.jsonl", d / "c.jsonl"),  # renamed
    ):
        # An old mtime first, so the change surely moves it (mtimes come from a coarse clock).
        os.utime(d, ns=(10**9, 10**9))
        s.scan(0.0)
        assert s.unchanged_since_scan()
        change()
        assert not s.unchanged_since_scan()
        s.scan(0.0)
        assert s.unchanged_since_scan()


def test_a_file_rotated_away_keeps_full_rescans_until_released(tmp_path: Path) -> None:
    d = tmp_path / "logs"
    d.mkdir()
    (d / "a.jsonl").write_text('{"k": 1}\n')
    s = sources(f"{d}/*.jsonl")
    s.scan(0.0)
    os.rename(d / "a.jsonl", tmp_path / "a.old")
    s.scan(1.0)
    assert [t.path for t in s.gone] == [str(d / "a.jsonl")]
    assert not s.unchanged_since_scan()  # a rotated-away file is still being decided
    for t in list(s.files.values()):
        s.close_file(t)
    s.release_finished(1.0 + s.cfg.rotate_wait_seconds + 1)
    assert s.gone == [] and s.files == {}
    s.scan(10.0)
    assert s.unchanged_since_scan()


def test_wildcard_directories_always_rescan(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "a.jsonl").write_text("{}\n")
    s = sources(f"{tmp_path}/*/a.jsonl")
    s.scan(0.0)
    assert not s.unchanged_since_scan()
