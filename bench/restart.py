#!/usr/bin/env python3
"""Restart to READY with many patterns and many files held in the checkpoint.

Usage: restart.py [--patterns 1000000] [--files 10000] [--runs 3]

Builds the state with the real daemon (`run --once` over --files one-line files plus one file of
--patterns lines with distinct key values; max_patterns raised to fit), then starts `telemetryd run`
with a real unix datagram socket as NOTIFY_SOCKET and times exec -> READY=1 (recovery done, sources
open), with the RSS at READY. Each restart is stopped with SIGTERM, which writes nothing new.
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = str(Path(sys.executable).parent / "telemetryd")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def build(tmp: Path, patterns: int, files: int) -> Path:
    data = tmp / "data"
    data.mkdir()
    for i in range(files):
        (data / f"f{i:05d}.jsonl").write_text(f'{{"k": "small", "message": "hello {i}"}}\n')
    with open(data / "big.jsonl", "w") as f:
        for i in range(patterns):
            f.write(f'{{"k": "p{i}", "message": "m"}}\n')
    cfg = tmp / "restart.toml"
    cfg.write_text(
        f'[sources]\npaths = ["{data}/*.jsonl"]\n'
        f'[patterns]\nkey_fields = ["k"]\ntemplate_field = "message"\nmax_patterns = {patterns + 100}\n'
        f'[checkpoint]\nstate_dir = "{tmp / "state"}"\n[metrics]\nlisten = ""\n[log]\nlevel = "warning"\n'
    )
    t0 = time.monotonic()
    subprocess.run([BIN, "run", "--once", "--config", str(cfg)], check=True)
    print(f"built: {patterns:,} patterns, {files + 1:,} files in {time.monotonic() - t0:.1f} s")
    return cfg


def time_to_ready(cfg: Path, tmp: Path) -> tuple[float, float]:
    sock_path = str(tmp / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(sock_path)
        sock.settimeout(60)
        env = dict(os.environ, NOTIFY_SOCKET=sock_path)
        t0 = time.monotonic()
        p = subprocess.Popen([BIN, "run", "--config", str(cfg)], env=env)
        try:
            while True:
                msg = sock.recv(4096).decode()
                if "READY=1" in msg.split("\n"):
                    took = time.monotonic() - t0
                    rss = rss_mib(p.pid)
                    break
        finally:
            p.send_signal(signal.SIGTERM)
            p.wait(60)
    os.unlink(sock_path)
    return took, rss


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patterns", type=int, default=1_000_000)
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    # An installed wheel ships bytecode; an editable install under PYTHONDONTWRITEBYTECODE (as in CI and
    # this sandbox) would compile every module at each start and bill ~50 ms to the daemon.
    import telemetryd

    compileall.compile_dir(os.path.dirname(telemetryd.__file__), quiet=1)
    tmp = Path(tempfile.mkdtemp(prefix="tlmd-restart-", dir="/var/tmp"))
    try:
        cfg = build(tmp, a.patterns, a.files)
        times = []
        for i in range(a.runs):
            took, rss = time_to_ready(cfg, tmp)
            times.append(took)
            print(f"restart {i + 1}: READY after {took:.2f} s, RSS at READY {rss:.0f} MiB")
        print(f"best: {min(times):.2f} s to READY with {a.patterns:,} patterns and {a.files + 1:,} files")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
