"""The HTTP endpoint of a real daemon: every contract metric with its type, health, hostile clients."""

from __future__ import annotations

import socket
import time
import urllib.request
from pathlib import Path

from conftest import KEY_CONFIG, free_port, wait_for, write_config
from prometheus_client.parser import text_string_to_metric_families

# shared/contract.md, "Metrics": name (without the _total a counter family drops) -> type, labels.
CONTRACT = {
    "telemetryd_events": ("counter", set()),
    "telemetryd_lines_skipped": ("counter", {"reason"}),
    "telemetryd_bytes_read": ("counter", set()),
    "telemetryd_patterns": ("gauge", set()),
    "telemetryd_files_tracked": ("gauge", set()),
    "telemetryd_read_lag_bytes": ("gauge", set()),
    "telemetryd_checkpoint_lag_bytes": ("gauge", set()),
    "telemetryd_checkpoint_lag_events": ("gauge", set()),
    "telemetryd_checkpoint_last_success_timestamp_seconds": ("gauge", set()),
    "telemetryd_checkpoint_duration_seconds": ("histogram", set()),
    "telemetryd_checkpoint_writes": ("counter", {"result"}),
    "telemetryd_checkpoint_size_bytes": ("gauge", set()),
    "telemetryd_rotations": ("counter", {"kind"}),
    "telemetryd_recoveries": ("counter", {"outcome"}),
    "telemetryd_build_info": ("gauge", {"version"}),
}


def _get(port: int, path: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _families(port: int) -> dict:
    return {f.name: f for f in text_string_to_metric_families(_get(port, "/metrics")[1])}


def test_contract_metrics_health_and_hostile_clients(tmp_path: Path, daemons) -> None:
    cfg = write_config(tmp_path, KEY_CONFIG)
    f = tmp_path / "a.jsonl"
    f.write_text('{"k": "a"}\n{"k": "b"}\nnot json\n')
    port = free_port()
    d = daemons(
        "--config",
        str(cfg),
        "--path",
        str(tmp_path / "*.jsonl"),
        "--state-dir",
        str(tmp_path / "st"),
        "--metrics-listen",
        f"127.0.0.1:{port}",
    )
    d.wait_ready()
    wait_for(lambda: _get(port, "/readyz")[0] == 200, what="readyz")
    assert _get(port, "/healthz") == (200, "ok\n")
    assert _get(port, "/nope")[0] == 404

    def counted() -> bool:
        fam = _families(port)
        return fam["telemetryd_events"].samples[0].value == 2 and fam["telemetryd_checkpoint_writes"].samples

    wait_for(counted, what="events counted and checkpointed")
    fam = _families(port)
    for name, (kind, labels) in CONTRACT.items():
        assert name in fam, f"{name} missing"
        assert fam[name].type == kind, f"{name}: {fam[name].type} != {kind}"
        sample_labels = {k for s in fam[name].samples for k in s.labels if k != "le"}
        assert sample_labels == labels, f"{name}: labels {sample_labels} != {labels}"
    skipped = {
        s.labels["reason"]: s.value
        for s in fam["telemetryd_lines_skipped"].samples
        if s.name.endswith("_total")
    }
    assert skipped["invalid_json"] == 1
    assert {s.labels["outcome"] for s in fam["telemetryd_recoveries"].samples} >= {
        "fresh",
        "clean",
        "fallback",
        "quarantined",
    }
    wait_for(
        lambda: (
            _families(port)["telemetryd_checkpoint_last_success_timestamp_seconds"].samples[0].value
            > time.time() - 60
        ),
        what="last checkpoint time",
    )

    # Hostile clients: garbage bytes, and connections that say nothing at all.
    junk = socket.create_connection(("127.0.0.1", port))
    junk.sendall(b"\x00\xff GARBAGE \r\n\r\n" * 100)
    silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
    half = socket.create_connection(("127.0.0.1", port))
    half.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # headers never finished
    try:
        t0 = time.monotonic()
        assert _get(port, "/metrics")[0] == 200
        assert time.monotonic() - t0 < 5, "a silent client delayed /metrics"
        with f.open("a") as fh:
            fh.write('{"k": "c"}\n')
        wait_for(
            lambda: _families(port)["telemetryd_events"].samples[0].value == 3,
            what="counting goes on beside hostile clients",
        )
    finally:
        for s in [junk, half, *silent]:
            s.close()
    assert d.proc.poll() is None
    assert d.stop() == 0
