"""Exact counts across kill -9 while patterns are being generalised: real writers, a real daemon."""

from __future__ import annotations

import collections
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import cli, cli_json, wait_for, write_config

SERVICE_WRITER = str(Path(__file__).with_name("service_writer.py"))
CONFIG = (
    '[patterns]\nkey_fields = ["service"]\ntemplate_field = "message"\n[checkpoint]\nevery_events = 50\n'
    'every_seconds = 0.1\n[metrics]\nlisten = ""\n[sources]\nrescan_seconds = 0.5\n'
)


def test_kill_9_during_generalisation_counts_stay_exact(tmp_path: Path, daemons) -> None:
    cfg = write_config(tmp_path, CONFIG)
    state = tmp_path / "state"
    files = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    writers = [
        subprocess.Popen([sys.executable, SERVICE_WRITER, str(f), "3000", "--seed", str(i), "--rate", "800"])
        for i, f in enumerate(files)
    ]
    args = ("--config", str(cfg), "--path", str(tmp_path / "*.jsonl"), "--state-dir", str(state))
    rnd = random.Random(5)
    for _ in range(12):
        d = daemons(*args)
        time.sleep(rnd.uniform(0.05, 0.5))
        d.kill(signal.SIGKILL)
        d.proc.wait()
        if state.exists():
            # every committed checkpoint: events_total is the sum of the live patterns plus overflow
            doc = cli_json("patterns", "--state-dir", str(state), "--config", str(cfg))
            assert doc["events_total"] == sum(p["count"] for p in doc["patterns"]) + doc["overflow_count"]
    for w in writers:
        assert w.wait(60) == 0
    d = daemons(*args)
    d.wait_ready()

    def caught_up() -> bool:
        doc = cli_json("status", "--state-dir", str(state), "--config", str(cfg))
        return bool(doc["events_total"] == 6000 and all(f["lag_bytes"] == 0 for f in doc["files"]))

    wait_for(lambda: state.exists() and caught_up(), timeout=90, what="catch-up")
    assert d.stop() == 0, d.log()
    doc = cli_json("patterns", "--state-dir", str(state), "--config", str(cfg))
    got = {p["id"]: p["count"] for p in doc["patterns"]}
    # what extract says over the bytes the writers left, read whole
    rows = cli("extract", "--config", str(cfg), "--json", *map(str, files)).stdout.splitlines()
    want = collections.Counter(json.loads(r)["id"] for r in rows)
    assert got == dict(want)
    assert doc["events_total"] == 6000 and doc["overflow_count"] == 0
    # the general patterns show what they absorbed
    general = [p for p in doc["patterns"] if "<*>" in (p["template"] or "") and p["absorbed"]]
    assert general and all(p["absorbed_count"] <= p["count"] for p in general)
