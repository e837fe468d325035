"""What TLS and basic auth cost a scrape, side by side in one run, and what a wrong-password flood does.

Starts one real daemon per setting (plain HTTP; TLS + basic auth at bcrypt cost 10) on the same small
source, then times GET /metrics (a new connection each time, as Prometheus does without keep-alive):
- plain: no TLS, no auth;
- tls+auth: the first request (one bcrypt check), then cached ones;
- tls+auth under a flood: 8 threads sending wrong passwords as fast as they are answered.

    .venv/bin/python bench/listener_auth.py [--requests 50] [--flood-seconds 5]
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import bcrypt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from tlsutil import CA, bcrypt_hash

BIN = str(Path(sys.executable).parent / "telemetryd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def auth(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def get(port: int, ctx: ssl.SSLContext | None, headers: dict[str, str]) -> tuple[int, float]:
    t0 = time.perf_counter()
    conn = (
        http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=30)
        if ctx
        else http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    )
    try:
        conn.request("GET", "/metrics", headers=headers)
        r = conn.getresponse()
        r.read()
        return r.status, time.perf_counter() - t0
    finally:
        conn.close()


def start(tmp: Path, name: str, port: int, web: Path | None) -> subprocess.Popen[bytes]:
    cfg = tmp / f"{name}.toml"
    extra = f'web_config = "{web}"\n' if web else ""
    cfg.write_text(
        f'[sources]\npaths = ["{tmp}/src/*.jsonl"]\n[checkpoint]\nstate_dir = "{tmp / name}"\n'
        f'[metrics]\nlisten = "127.0.0.1:{port}"\n{extra}[log]\nformat = "json"\n'
    )
    return subprocess.Popen(
        [BIN, "run", "--config", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def wait_up(port: int, ctx: ssl.SSLContext | None, headers: dict[str, str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if get(port, ctx, headers)[0] == 200:
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"daemon on port {port} did not come up")


def summary(xs: list[float]) -> str:
    xs = sorted(xs)
    p99 = xs[min(len(xs) - 1, len(xs) * 99 // 100)]
    return (
        f"p50 {statistics.median(xs) * 1000:7.2f} ms  p99 {p99 * 1000:7.2f} ms  max {xs[-1] * 1000:7.2f} ms"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=50)
    ap.add_argument("--flood-seconds", type=float, default=5.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "src").mkdir()
        (tmp / "src" / "a.jsonl").write_text(
            "".join(json.dumps({"event_type": f"e{i % 20}", "message": f"m {i}"}) + "\n" for i in range(1000))
        )
        ca = CA(tmp, "ca")
        server = ca.issue("server", server=True)
        hashed = bcrypt_hash("s3cret", cost=10)
        t0 = time.perf_counter()
        for _ in range(5):
            bcrypt.checkpw(b"s3cret", hashed.encode())
        print(f"bcrypt checkpw, cost 10: {(time.perf_counter() - t0) / 5 * 1000:.1f} ms")
        web = tmp / "web.yml"
        web.write_text(
            f"tls_server_config:\n  cert_file: {server.cert}\n  key_file: {server.key}\n"
            f"basic_auth_users:\n  prometheus: '{hashed}'\n"
        )
        plain_port, tls_port = free_port(), free_port()
        procs = [start(tmp, "plain", plain_port, None), start(tmp, "tls", tls_port, web)]
        ctx = ssl.create_default_context(cafile=str(ca.path))
        good = auth("prometheus", "s3cret")
        try:
            wait_up(plain_port, None, {})
            # The first authorised request pays the one bcrypt check.
            deadline = time.monotonic() + 30
            while True:
                try:
                    status, first = get(tls_port, ctx, good)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            assert status == 200
            print(f"tls+auth first request (uncached bcrypt): {first * 1000:.1f} ms")
            rounds: dict[str, list[float]] = {"plain": [], "tls+auth cached": []}
            for _ in range(args.requests):  # interleaved: both see the same machine noise
                rounds["plain"].append(get(plain_port, None, {})[1])
                rounds["tls+auth cached"].append(get(tls_port, ctx, good)[1])
            for name, xs in rounds.items():
                print(f"{name:28s} {summary(xs)}")
            stop = threading.Event()
            refused = [0]

            def flood(n: int) -> None:
                i = 0
                while not stop.is_set():
                    i += 1
                    if get(tls_port, ctx, auth("prometheus", f"guess-{n}-{i}"))[0] in (401, 503):
                        refused[0] += 1

            threads = [threading.Thread(target=flood, args=(n,), daemon=True) for n in range(8)]
            for t in threads:
                t.start()
            time.sleep(1)
            t0 = time.perf_counter()
            under = []
            while time.perf_counter() - t0 < args.flood_seconds:  # a scrape every 100 ms
                under.append(get(tls_port, ctx, good)[1])
                time.sleep(0.1)
            elapsed = time.perf_counter() - t0
            stop.set()
            for t in threads:
                t.join()
            print(f"{'tls+auth cached, flood':28s} {summary(under)}")
            print(f"flood: {refused[0]} wrong passwords refused in {elapsed + 1:.1f} s")
        finally:
            for p in procs:
                p.terminate()
                p.wait(timeout=30)


if __name__ == "__main__":
    main()
