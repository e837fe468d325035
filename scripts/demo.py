#!/usr/bin/env python3
"""`make demo`, `make demo-watch`, `make demo-stop`: the daemon on a built-in sample workload.

start  writes sample telemetry under demo/, starts a writer (new events every second) and the daemon,
       both in the background, waits until the first checkpoint holds the sample, and shows status,
       patterns and a metrics excerpt. The daemon and the writer keep running afterwards.
       DEMO_SECONDS=N: refresh the view for N seconds, then stop both (bounded, for tests and CI).
watch  the same view every 2 s while events keep arriving, until Ctrl-C (the daemon keeps running).
stop   stops the writer and the daemon (SIGTERM: a final checkpoint, exit 0).

Env: DEMO_LISTEN=HOST:PORT for the metrics endpoint (default 127.0.0.1:9464, or a free port if that
one is taken), DEMO_RATE=events/s for the live writer (default 100).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "demo"
BIN = Path(sys.executable).parent
TELEMETRYD = str(BIN / "telemetryd")
SAMPLE = str(ROOT / "scripts" / "sample_events.py")
CONFIG = DEMO / "telemetryd.toml"
PIDS = DEMO / "pids.json"
INITIAL_EVENTS = 20000
METRICS = (
    "telemetryd_events_total",
    "telemetryd_patterns ",
    "telemetryd_files_tracked",
    "telemetryd_read_lag_bytes",
    "telemetryd_checkpoint_lag_events",
    "telemetryd_checkpoint_last_success_timestamp_seconds",
    'telemetryd_checkpoint_writes_total{result="ok"}',
)
T0 = time.monotonic()


def step(text: str) -> None:
    print(f"[demo {time.monotonic() - T0:5.1f}s] {text}", flush=True)


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _listen() -> str:
    if os.environ.get("DEMO_LISTEN"):
        return os.environ["DEMO_LISTEN"]
    if _port_free("127.0.0.1", 9464):
        return "127.0.0.1:9464"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    step(f"port 9464 is taken on this machine: using 127.0.0.1:{port} for metrics instead")
    return f"127.0.0.1:{port}"


def _ours(pid: int) -> bool:
    """The pid still runs one of our demo processes (pids are reused; never signal a stranger)."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"telemetryd" in cmd or b"sample_events.py" in cmd


def stop(quiet: bool = False) -> None:
    try:
        pids = json.loads(PIDS.read_text())
    except (OSError, ValueError):
        if not quiet:
            print("no demo is running (demo/pids.json not found)")
        return
    # The writer first, so the daemon's final checkpoint holds everything written.
    for name in ("writer", "daemon"):
        pid = pids.get(name)
        if pid and _ours(pid):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while _ours(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if not quiet:
                print(f"stopped the demo {name} (pid {pid})")
    PIDS.unlink(missing_ok=True)


def _spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    # A session of its own: the process outlives `make demo` and a Ctrl-C in this terminal.
    with open(log, "ab") as out:
        return subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True, cwd=ROOT
        )


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, r.read().decode()
    except OSError:
        return 0, ""


def _status() -> dict[str, object]:
    r = subprocess.run(
        [TELEMETRYD, "status", "--json", "--config", str(CONFIG)], capture_output=True, text=True
    )
    return json.loads(r.stdout) if r.returncode == 0 else {}


def view(listen: str) -> None:
    for args in (["status"], ["patterns", "--top", "8"]):
        print(f"\n$ telemetryd {' '.join(args)} --config demo/telemetryd.toml", flush=True)
        # A session of its own: Ctrl-C in `demo-watch` ends the loop, not a CLI run halfway.
        subprocess.run([TELEMETRYD, *args, "--config", str(CONFIG)], check=False, start_new_session=True)
    print(f"\n$ curl -s http://{listen}/metrics   (an excerpt)", flush=True)
    code, text = _get(f"http://{listen}/metrics")
    if code != 200:
        print(f"  (metrics endpoint did not answer: HTTP {code or 'no connection'})")
    for line in text.splitlines():
        if line.startswith(METRICS):
            print("  " + line)
    sys.stdout.flush()


def start() -> int:
    step("installed; starting the demo (a previous demo, if any, is stopped first)")
    stop(quiet=True)
    for sub in ("logs", "state"):
        (DEMO / sub).mkdir(parents=True, exist_ok=True)
    # A new demo starts from nothing: old logs and state would mix two runs.
    for old in [*(DEMO / "logs").iterdir(), *(DEMO / "state").iterdir()]:
        old.unlink()
    listen = _listen()
    CONFIG.write_text(
        f'[sources]\npaths = ["{DEMO}/logs/*.jsonl"]\nrescan_seconds = 1.0\n\n'
        '[patterns]\nkey_fields = ["event_type", "service", "level"]\ntemplate_field = "message"\n\n'
        f'[checkpoint]\nstate_dir = "{DEMO}/state"\n\n[metrics]\nlisten = "{listen}"\n\n'
        '[log]\nformat = "json"\n'
    )
    step(f"[1/4] writing {INITIAL_EVENTS:,} sample events to demo/logs/app.jsonl")
    subprocess.run([sys.executable, SAMPLE, str(DEMO / "logs/app.jsonl"), str(INITIAL_EVENTS)], check=True)
    rate = float(os.environ.get("DEMO_RATE", "100"))
    # At most an hour of live events, so a forgotten demo cannot fill the disk.
    writer = _spawn(
        [
            sys.executable,
            SAMPLE,
            str(DEMO / "logs/app.jsonl"),
            str(int(rate * 3600)),
            "--rate",
            str(rate),
            "--seed",
            "2",
        ],
        DEMO / "writer.log",
    )
    step(f"[2/4] starting the daemon (log: demo/telemetryd.log); a writer adds {rate:g} events/s")
    daemon = _spawn([TELEMETRYD, "run", "--config", str(CONFIG)], DEMO / "telemetryd.log")
    PIDS.write_text(json.dumps({"daemon": daemon.pid, "writer": writer.pid, "listen": listen}))
    step(f"[3/4] waiting for the daemon to be ready and to commit the sample (pid {daemon.pid})")
    deadline = time.monotonic() + 60
    ready = False
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            print(f"the daemon exited with {daemon.returncode}; its log:", file=sys.stderr)
            print((DEMO / "telemetryd.log").read_text(errors="replace"), file=sys.stderr)
            stop(quiet=True)
            return 1
        if not ready and _get(f"http://{listen}/readyz")[0] == 200:
            ready = True
            step(f"      ready: metrics at http://{listen}/metrics")
        if ready:
            events = _status().get("events_total")
            if isinstance(events, int) and events >= INITIAL_EVENTS:
                step(f"      first checkpoint holds {events:,} events")
                break
        time.sleep(0.2)
    else:
        print("the daemon did not commit the sample within 60 s; see demo/telemetryd.log", file=sys.stderr)
        stop(quiet=True)
        return 1
    step("[4/4] the view (while new events keep arriving)")
    view(listen)
    bounded = os.environ.get("DEMO_SECONDS")
    if bounded:
        end = time.monotonic() + float(bounded)
        while time.monotonic() < end:
            time.sleep(min(3.0, max(0.0, end - time.monotonic())))
            step("the view again: counts have grown")
            view(listen)
        stop()
        return 0
    print(
        f"\nThe daemon keeps running (pid {daemon.pid}); the writer keeps adding events (pid {writer.pid}).\n"
        f"  make demo-watch     this view every 2 s, until Ctrl-C\n"
        f"  make demo-stop      stop both (or: kill {daemon.pid} {writer.pid})\n"
        f"  metrics: http://{listen}/metrics   health: /healthz /readyz   log: demo/telemetryd.log"
    )
    return 0


def watch() -> int:
    try:
        listen = json.loads(PIDS.read_text())["listen"]
    except (OSError, ValueError, KeyError):
        print("no demo is running: start one with `make demo`", file=sys.stderr)
        return 1
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            print("\033[H\033[2J" if sys.stdout.isatty() else "", end="")
            step("Ctrl-C to leave (the daemon keeps running; `make demo-stop` stops it)")
            view(listen)
            time.sleep(2)
    return 0


def main() -> int:
    cmd = sys.argv[1] if len(sys.argv) > 1 else "start"
    if cmd == "stop":
        stop()
        return 0
    return {"start": start, "watch": watch}[cmd]()


if __name__ == "__main__":
    sys.exit(main())
