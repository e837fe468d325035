"""Helpers for the file lifecycle tests: lines with known keys, a running daemon, exact count checks."""

from __future__ import annotations

import collections
import json
import os
import time
from pathlib import Path
from typing import Any

from conftest import KEY_CONFIG, cli_json, counted_by_key, wait_for, write_config

LC_CONFIG = KEY_CONFIG + "rotate_wait_seconds = 1.0\n"


def lines(key: str, n: int, start: int = 0) -> bytes:
    return b"".join(
        json.dumps({"k": key, "seq": start + i, "message": f"{key} request {start + i}"}).encode() + b"\n"
        for i in range(n)
    )


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


class Setup:
    """A config, a state dir and the daemon arguments for one test directory."""

    def __init__(self, tmp: Path, glob: str = "*.jsonl*", extra: str = "", rescan: float = 0.5) -> None:
        self.dir = tmp / "logs"
        self.dir.mkdir(exist_ok=True)
        self.state = tmp / "state"
        text = LC_CONFIG.replace("rescan_seconds = 0.5", f"rescan_seconds = {rescan}") + extra
        self.cfg = write_config(tmp, text)
        self.args = (
            *("--config", str(self.cfg), "--path", str(self.dir / glob)),
            *("--state-dir", str(self.state)),
        )

    def status(self) -> Any:
        return cli_json("status", "--state-dir", str(self.state), "--config", str(self.cfg))

    def events_total(self) -> int:
        if not self.state.exists():
            return 0
        try:
            return int(self.status()["events_total"])
        except (AssertionError, ValueError):
            return 0

    def wait_total(self, n: int, timeout: float = 30.0) -> None:
        wait_for(lambda: self.events_total() >= n, timeout=timeout, what=f"{n} events counted")

    def counts(self) -> collections.Counter[str]:
        return counted_by_key(self.state, self.cfg)


def settle(seconds: float = 2.0) -> None:
    """Give the daemon rescans and rotate_wait to do anything wrong (read a copy twice) before the
    exact counts are compared; never an assertion on its own."""
    time.sleep(seconds)


def expected(**per_key: int) -> collections.Counter[str]:
    return collections.Counter({k: v for k, v in per_key.items() if v})


def log_events(daemon_log: str, name: str) -> list[dict[str, Any]]:
    out = []
    for line in daemon_log.splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if e.get("event") == name:
            out.append(e)
    return out


def inode(path: Path) -> int:
    return os.stat(path).st_ino
