"""The commit owner (commit.py) with a real journal writer on a real state dir: one record per cut of
everything changed, observers told only what became durable, a failed append carried into the next."""

from __future__ import annotations

import json
import queue
from pathlib import Path

from telemetryd import checkpoint as ck
from telemetryd.commit import Changes, Committer
from telemetryd.patterns import Extractor, PatternCounter
from telemetryd.reader import TailedFile
from telemetryd.records import Delta


class Observer:
    def __init__(self) -> None:
        self.start: ck.State | None = None
        self.records: list[Delta] = []

    def recovered(self, state: ck.State) -> None:
        self.start = state

    def durable(self, record: Delta) -> None:
        self.records.append(record)


def block(key: str, n: int) -> bytes:
    return b"".join(json.dumps({"k": key, "i": i}).encode() + b"\n" for i in range(n))


def setup(tmp: Path) -> tuple[Committer, PatternCounter, queue.Queue[ck.WriteResult], Changes]:
    ex = Extractor(["k"], "", [])
    table = PatternCounter(ex, 1000, 1 << 20)
    results: queue.Queue[ck.WriteResult] = queue.Queue()
    writer = ck.JournalWriter(str(tmp), 0, None, ck.Settings(ex.digest, ["k"], ""), results.put)
    changes = Changes()
    return Committer(writer, table, 0, 0, changes), table, results, changes


def test_observer_sees_each_durable_record_with_committed_values(tmp_path: Path) -> None:
    com, table, results, changes = setup(tmp_path)
    obs = Observer()
    start = ck.State()
    com.subscribe(obs, start)
    assert obs.start is start
    table.process_block(block("a", 5), 0.0)
    f = tmp_path / "f.jsonl"
    f.write_bytes(b"x\n")
    t = TailedFile(1, 2, str(f))
    changes.new_file(t)
    assert com.due(10**6, 3600.0, 0.0)  # a new file makes a cut due at once
    assert com.cut()
    # Counted after the cut: not in the record the observer will see.
    table.process_block(block("a", 3), 0.0)
    assert not com.cut()  # one record in flight at a time
    done = com.finished(results.get(timeout=10), {t.ident: t})
    assert done.ok and done.lag_events == 3
    [rec] = obs.records
    assert rec.totals.events == 5
    assert [(p.key, p.count) for p in rec.patterns] == [(("a",), 5)]
    assert [e.path for e in rec.files] == [str(f)]
    # The next record carries what came after, and replaying the journal gives the table's state.
    assert com.cut()
    com.finished(results.get(timeout=10), {t.ident: t})
    assert [r.totals.events for r in obs.records] == [5, 8]
    com.writer.close()
    state = ck.recover(str(tmp_path), repair=False).state
    assert state.totals.events == 8 and next(iter(state.patterns.values())).count == 8


def test_failed_append_goes_into_the_next_record(tmp_path: Path) -> None:
    com, table, results, changes = setup(tmp_path)
    obs = Observer()
    com.subscribe(obs, ck.State())
    table.process_block(block("a", 4), 0.0)
    f = tmp_path / "f.jsonl"
    f.write_bytes(b"x\n")
    t = TailedFile(1, 2, str(f))
    changes.new_file(t)
    assert com.cut()
    r = results.get(timeout=10)
    # The writer's verdict for that record, as an ENOSPC would have made it.
    failed = ck.WriteResult("append", False, r.seq, r.events_total, r.nbytes, r.duration, "No space left")
    done = com.finished(failed, {t.ident: t})
    assert not done.ok and done.lag_events == 4
    assert obs.records == []
    assert com.dirty() and t in changes.files and table.dirty
    assert com.cut()
    com.finished(results.get(timeout=10), {t.ident: t})
    [rec] = obs.records
    assert rec.totals.events == 4 and [p.count for p in rec.patterns] == [4]
    assert [e.path for e in rec.files] == [str(f)]
    com.writer.close()
