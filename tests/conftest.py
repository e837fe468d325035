"""Shared helpers: the real `telemetryd` console script, real writer processes, polling waits."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

BIN = str(Path(sys.executable).parent / "telemetryd")
WRITER = str(Path(__file__).parent / "writer.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[str, float]:
    """Series -> value from /metrics, e.g. 'telemetryd_checkpoint_writes_total{result="error"}' -> 3.0."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def wait_for(
    cond: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05, what: str = "condition"
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def cli(*args: str, check: bool = True, input: bytes | None = None) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        [BIN, *args],
        capture_output=True,
        text=True,
        timeout=60,
        input=input.decode() if input is not None else None,
    )
    if check and r.returncode != 0:
        raise AssertionError(f"telemetryd {' '.join(args)} -> {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


def cli_json(*args: str) -> Any:
    return json.loads(cli(*args, "--json").stdout)


def key_counts(paths: list[Path]) -> collections.Counter[str]:
    """What an exact count must be: computed from the bytes the writers left in the files."""
    c: collections.Counter[str] = collections.Counter()
    for p in paths:
        for line in p.read_bytes().splitlines():
            c[json.loads(line)["k"]] += 1
    return c


def counted_by_key(state_dir: Path, config: Path | None = None) -> collections.Counter[str]:
    args = ["patterns", "--state-dir", str(state_dir)]
    if config:
        args += ["--config", str(config)]
    doc = cli_json(*args)
    c: collections.Counter[str] = collections.Counter()
    for p in doc["patterns"]:
        c[p["key"]["k"]] += p["count"]
    return c


class Daemon:
    """A real daemon process. stderr goes to a file so a test can show the log when it fails."""

    def __init__(self, tmp: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.log_path = tmp / f"daemon-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [BIN, "run", *args], stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log().splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def wait_ready(self, timeout: float = 20.0) -> None:
        wait_for(
            lambda: any(e.get("event") == "ready" for e in self.events()) or self.proc.poll() is not None,
            timeout,
            what="daemon ready",
        )
        assert self.proc.poll() is None, self.log()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> int:
        self.kill(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Daemon:
        d = Daemon(tmp_path, *args, env=env)
        started.append(d)
        return d

    yield start
    for d in started:
        d.close()


def start_writer(
    path: Path, count: int, *, seed: int = 1, rate: float = 0.0, keys: int = 50, start: int = 0
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            WRITER,
            str(path),
            str(count),
            "--seed",
            str(seed),
            "--rate",
            str(rate),
            "--keys",
            str(keys),
            "--start",
            str(start),
        ]
    )


def write_config(tmp: Path, text: str) -> Path:
    p = tmp / "telemetryd.toml"
    p.write_text(text)
    return p


KEY_CONFIG = (
    '[patterns]\nkey_fields = ["k"]\ntemplate_field = ""\n[checkpoint]\nevery_events = 200\n'
    'every_seconds = 0.2\n[metrics]\nlisten = ""\n[sources]\nrescan_seconds = 0.5\n'
)
