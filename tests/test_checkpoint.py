"""Checkpoint format and recovery rules, on real files in a temporary state dir."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import msgspec
import pytest
from telemetryd import checkpoint as ck
from telemetryd.patterns import PatternState

SETTINGS = ck.Settings("d1", ["k"], "message")


def _delta(seq: int, count: int) -> ck.Delta:
    return ck.Delta(
        seq,
        1000.0 + seq,
        ck.Totals(count, 0, count * 10, {"invalid_json": seq}),
        [ck.FileEntry(1, 2, "/x/a.jsonl", count * 10, "fp", 10, "tl", 8)],
        [],
        [PatternState("p1", ("a",), "t <*>", count, 1.0, 2.0, "t 1")],
    )


def _write_journal(state_dir: Path, n: int) -> list[ck.WriteResult]:
    results: list[ck.WriteResult] = []
    done = threading.Event()

    def on(r: ck.WriteResult) -> None:
        results.append(r)
        if len(results) == n:
            done.set()

    w = ck.JournalWriter(str(state_dir), 0, None, SETTINGS, on)
    for i in range(1, n + 1):
        w.append(ck.encode_delta(_delta(i, i * 100)), i, i * 100, 0.0)
    assert done.wait(10)
    w.close()
    return results


def test_roundtrip(tmp_path: Path) -> None:
    assert all(r.ok for r in _write_journal(tmp_path, 3))
    rec = ck.recover(str(tmp_path))
    assert rec.outcome == "clean" and rec.state.seq == 3
    assert rec.state.totals == ck.Totals(300, 0, 3000, {"invalid_json": 3})
    assert rec.state.files[(1, 2)].offset == 3000
    assert rec.state.patterns["p1"].count == 300


def test_torn_last_record_at_every_byte_position(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    _write_journal(src, 3)
    journal = (src / ck.journal_name(0)).read_bytes()
    full = ck.scan_journal(str(src / ck.journal_name(0)))
    # The start of the last record: where the journal stood after two appends.
    last_start = len(journal) - len(ck.frame(ck.encode_delta(_delta(3, 300))))
    assert full.good_size == len(journal)
    for cut in range(last_start, len(journal)):
        d = tmp_path / f"cut{cut}"
        d.mkdir()
        (d / ck.journal_name(0)).write_bytes(journal[:cut])
        rec = ck.recover(str(d))
        assert rec.state.seq == 2, cut
        assert rec.state.patterns["p1"].count == 200 and rec.state.files[(1, 2)].offset == 2000
        assert rec.outcome == ("clean" if cut == last_start else "fallback")
        # Repaired: the journal was cut back to its last good record, ready for appends.
        assert (d / ck.journal_name(0)).stat().st_size == last_start
        shutil.rmtree(d)


@pytest.mark.parametrize("damage", ["flip", "magic", "empty", "future_schema"])
def test_corrupt_snapshot_falls_back_to_previous_generation(tmp_path: Path, damage: str) -> None:
    _write_journal(tmp_path, 2)
    ck.compact_missing(str(tmp_path), 1)  # snapshot.1 = journal.0 folded
    w = ck.JournalWriter(str(tmp_path), 1, None, SETTINGS, lambda r: None)
    w.close()
    snap = tmp_path / ck.snapshot_name(1)
    data = bytearray(snap.read_bytes())
    if damage == "flip":
        data[-5] ^= 0x55
    elif damage == "magic":
        data[:8] = b"XXXXXXXX"
    elif damage == "empty":
        data = bytearray()
    else:
        s = ck.read_snapshot(str(snap))
        s.schema = 99
        data = bytearray(ck.SNAP_MAGIC + ck.frame(ck._encoder.encode(s)))
    snap.write_bytes(bytes(data))
    rec = ck.recover(str(tmp_path))
    assert rec.outcome == "quarantined"
    assert rec.state.seq == 2 and rec.state.patterns["p1"].count == 200
    assert not snap.exists() and any(
        n.startswith(ck.snapshot_name(1)) and n.endswith(".corrupt") for n in os.listdir(tmp_path)
    )


def test_corrupt_journal_record_is_cut_off_and_kept_aside(tmp_path: Path) -> None:
    _write_journal(tmp_path, 3)
    j = tmp_path / ck.journal_name(0)
    data = bytearray(j.read_bytes())
    data[-3] ^= 0xFF  # inside the last record's payload: checksum mismatch
    j.write_bytes(bytes(data))
    rec = ck.recover(str(tmp_path))
    assert rec.outcome == "quarantined" and rec.state.seq == 2
    assert any(n.endswith(".corrupt") for n in os.listdir(tmp_path))
    assert ck.recover(str(tmp_path)).outcome == "clean"


def test_no_checkpoint_is_a_fresh_start(tmp_path: Path) -> None:
    rec = ck.recover(str(tmp_path))
    assert rec.outcome == "fresh" and rec.state.seq == 0


def test_snapshot_write_leaves_no_temp_files(tmp_path: Path) -> None:
    _write_journal(tmp_path, 2)
    ck.compact_missing(str(tmp_path), 1)
    assert not [n for n in os.listdir(tmp_path) if ".tmp." in n]
    snap = ck.read_snapshot(str(tmp_path / ck.snapshot_name(1)))
    assert snap.generation == 1 and snap.seq == 2 and snap.patterns[0].count == 200


def test_failed_append_is_cut_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results: list[ck.WriteResult] = []
    ev = threading.Event()

    def on(r: ck.WriteResult) -> None:
        results.append(r)
        ev.set()

    w = ck.JournalWriter(str(tmp_path), 0, None, SETTINGS, on)
    real_write = os.write
    calls = {"n": 0}

    def enospc(fd: int, data: bytes) -> int:
        # Write half, then fail: what a full disk does to a record.
        calls["n"] += 1
        if calls["n"] == 1:
            real_write(fd, bytes(data[: len(data) // 2]))
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(ck.os, "write", enospc)
    w.append(ck.encode_delta(_delta(1, 100)), 1, 100, 0.0)
    assert ev.wait(5)
    ev.clear()
    assert not results[0].ok and "space" in results[0].error
    w.append(ck.encode_delta(_delta(2, 200)), 2, 200, 0.0)
    assert ev.wait(5)
    w.close()
    assert results[1].ok
    rec = ck.recover(str(tmp_path))
    assert rec.outcome == "clean" and rec.state.seq == 2 and rec.state.patterns["p1"].count == 200


def test_truncated_files_survive_journal_snapshot_and_older_records(tmp_path: Path) -> None:
    # The memory of truncated files is part of the committed state: a delta replaces it; a delta
    # without it (None, or a record written before the field existed) leaves it as it was; a snapshot
    # carries it.
    mem = [ck.TruncatedEntry(1000.0, "fp", 10, "tl", 8, 4096)]
    d2 = _delta(2, 200)
    d2.truncated = mem

    class OldDelta(msgspec.Struct, tag="d"):  # a record as the first release wrote it
        seq: int
        time: float
        totals: ck.Totals
        files: list[ck.FileEntry]
        dropped: list[ck.FileIdent]
        patterns: list[PatternState]

    old = msgspec.msgpack.encode(OldDelta(4, 1004.0, ck.Totals(400), [], [], []))
    records = [ck.encode_delta(_delta(1, 100)), ck.encode_delta(d2), ck.encode_delta(_delta(3, 300)), old]
    header = msgspec.msgpack.encode(ck.JournalHeader(ck.SCHEMA, 0, 1000.0, SETTINGS))
    (tmp_path / ck.journal_name(0)).write_bytes(
        ck.JOURNAL_MAGIC + b"".join(ck.frame(r) for r in [header, *records])
    )
    rec = ck.recover(str(tmp_path))
    assert rec.outcome == "clean" and rec.state.seq == 4, rec.notes
    assert rec.state.truncated == mem
    ck.write_snapshot(str(tmp_path), rec.state.to_snapshot(1))
    snap = ck.read_snapshot(str(tmp_path / ck.snapshot_name(1)))
    assert snap.truncated == mem
    assert ck.State.from_snapshot(snap).truncated == mem
