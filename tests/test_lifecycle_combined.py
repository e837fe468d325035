"""All of it at once: writers rotating by rename and by copytruncate at a steady rate, the daemon killed
with SIGKILL at random moments and restarted; the final counts equal the lines written."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import key_counts
from lifecycle_helpers import Setup, settle

WRITER = str(Path(__file__).parent / "lifecycle_writer.py")


def test_rotating_writers_and_kill_9_counts_exact(tmp_path: Path, daemons) -> None:
    s = Setup(tmp_path, "*.jsonl*")
    per_writer, writers_n = 6000, 3
    writers = [
        subprocess.Popen(
            [
                *(sys.executable, WRITER, str(s.dir / f"w{i}.jsonl"), str(per_writer)),
                *("--every", "500", "--seed", str(i), "--rate", "1000"),
            ]
        )
        for i in range(writers_n)
    ]
    rnd = random.Random(11)
    kills = 0
    try:
        while any(w.poll() is None for w in writers):
            d = daemons(*s.args)
            time.sleep(rnd.uniform(0.1, 0.8))
            d.kill(signal.SIGKILL)
            d.proc.wait()
            kills += 1
    finally:
        for w in writers:
            assert w.wait(120) == 0
    assert kills >= 5
    total = per_writer * writers_n
    files = sorted(s.dir.glob("*.jsonl*"))
    truth = key_counts(files)
    assert sum(truth.values()) == total
    d = daemons(*s.args)
    s.wait_total(total, timeout=90)
    settle()
    assert d.stop() == 0, d.log()
    counted = s.counts()
    assert counted == truth, (counted - truth, truth - counted)
