"""Checkpoints never stall reading: when the disk is slow, records are coalesced (group commit).

A slow disk cannot be made on demand here, so the real CLI runs with os.fdatasync slowed down (the
checkpoint writer is its only caller). 300 files of 100 lines are read one block each, and a checkpoint
is due after each (every_events = 100). Without coalescing, each would wait for its own fdatasync: 300
records at 0.1 s each. With it, reading runs on and each record carries everything counted while the
previous one was being written.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import cli_json, write_config

SLOW_WRAPPER = """\
import os, sys, time
from telemetryd.cli import main
real = os.fdatasync
def fdatasync(fd):
    time.sleep(0.1)
    return real(fd)
os.fdatasync = fdatasync
sys.exit(main(sys.argv[1:]))
"""


def test_slow_disk_coalesces_checkpoints_and_loses_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    files, per_file = 300, 100
    n = files * per_file
    for j in range(files):
        lines = (json.dumps({"event_type": f"t{i % 7}", "message": f"took {i} ms"}) for i in range(per_file))
        (data / f"f{j:03d}.jsonl").write_text("".join(ln + "\n" for ln in lines))
    state = tmp_path / "state"
    cfg = write_config(
        tmp_path,
        f'[sources]\npaths = ["{data}/*.jsonl"]\n[patterns]\nkey_fields = ["event_type"]\n'
        f'[checkpoint]\nstate_dir = "{state}"\nevery_events = 100\n[metrics]\nlisten = ""\n'
        '[log]\nformat = "json"\n',
    )
    r = subprocess.run(
        [sys.executable, "-c", SLOW_WRAPPER, "run", "--once", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    stopped = next(json.loads(ln) for ln in r.stderr.splitlines() if '"stopped"' in ln)
    assert stopped["events_total"] == n
    # 300 records if each block waited for its own fdatasync
    assert 1 <= stopped["checkpoints_written"] < 100, stopped
    # and what was written is all of it: offsets and counts durable together
    doc = cli_json("patterns", "--json", "--config", str(cfg))
    assert doc["events_total"] == n
    assert sum(p["count"] for p in doc["patterns"]) == n
    status = cli_json("status", "--json", "--config", str(cfg))
    assert len(status["files"]) == files
    assert all(f["offset"] == f["size"] and f["lag_bytes"] == 0 for f in status["files"])
