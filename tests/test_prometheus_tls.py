"""A real Prometheus scrapes real daemons over TLS with basic auth and with client certificates (mTLS),
and is refused with a wrong password, with no password, over plain HTTP, by an untrusted server
certificate, and without (or with a foreign) client certificate."""

from __future__ import annotations

import json
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port, wait_for
from tlsutil import CA, bcrypt_hash

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
PROMETHEUS = REPO / ".build" / "prometheus" / "usr" / "bin" / "prometheus"


def api(port: int, path: str, **params: str) -> Any:
    url = f"http://127.0.0.1:{port}/api/v1/{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=10) as r:
        data = json.loads(r.read())
    assert data["status"] == "success", data
    return data["data"]


def test_prometheus_scrapes_over_tls_with_basic_auth_and_is_refused_without(
    tmp_path: Path, daemons: Any
) -> None:
    assert PROMETHEUS.exists(), f"{PROMETHEUS} is missing: run `make prometheus` (make test does)"
    ca = CA(tmp_path, "ca")
    server = ca.issue("server", server=True)
    web = tmp_path / "web.yml"
    web.write_text(
        f"tls_server_config:\n  cert_file: {server.cert}\n  key_file: {server.key}\n"
        f"basic_auth_users:\n  prometheus: '{bcrypt_hash('s3cret', cost=10)}'\n"
    )
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.jsonl").write_text("".join(json.dumps({"event_type": f"e{i % 3}"}) + "\n" for i in range(30)))
    port = free_port()
    cfg = tmp_path / "telemetryd.toml"
    cfg.write_text(
        f'[sources]\npaths = ["{src}/*.jsonl"]\n[checkpoint]\nstate_dir = "{tmp_path / "state"}"\n'
        f'[metrics]\nlisten = "127.0.0.1:{port}"\nweb_config = "{web}"\n[log]\nformat = "json"\n'
    )
    d = daemons("--config", str(cfg))
    d.wait_ready()
    # A second daemon that wants client certificates (mTLS) from the same CA.
    client = ca.issue("prometheus", server=False)
    stranger = CA(tmp_path, "other-ca").issue("stranger", server=False)
    mtls_web = tmp_path / "mtls.yml"
    mtls_web.write_text(
        f"tls_server_config:\n  cert_file: {server.cert}\n  key_file: {server.key}\n"
        f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {ca.path}\n"
    )
    mtls_port = free_port()
    mtls_cfg = tmp_path / "mtls.toml"
    mtls_cfg.write_text(
        f'[sources]\npaths = ["{src}/*.jsonl"]\n[checkpoint]\nstate_dir = "{tmp_path / "state2"}"\n'
        f'[metrics]\nlisten = "127.0.0.1:{mtls_port}"\nweb_config = "{mtls_web}"\n[log]\nformat = "json"\n'
    )
    d2 = daemons("--config", str(mtls_cfg))
    d2.wait_ready()

    target = {"static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
    tls = {"scheme": "https", "tls_config": {"ca_file": str(ca.path)}}
    jobs = {
        "good": {**target, **tls, "basic_auth": {"username": "prometheus", "password": "s3cret"}},
        "wrong_password": {**target, **tls, "basic_auth": {"username": "prometheus", "password": "nope"}},
        "no_password": {**target, **tls},
        "plain_http": {**target, "basic_auth": {"username": "prometheus", "password": "s3cret"}},
        "untrusted_ca": {
            **target,
            "scheme": "https",
            "basic_auth": {"username": "prometheus", "password": "s3cret"},
        },
    }
    mtls_target = {"static_configs": [{"targets": [f"127.0.0.1:{mtls_port}"]}], "scheme": "https"}
    jobs["mtls_good"] = {
        **mtls_target,
        "tls_config": {"ca_file": str(ca.path), "cert_file": str(client.cert), "key_file": str(client.key)},
    }
    jobs["mtls_no_cert"] = {**mtls_target, "tls_config": {"ca_file": str(ca.path)}}
    jobs["mtls_foreign_cert"] = {
        **mtls_target,
        "tls_config": {
            "ca_file": str(ca.path),
            "cert_file": str(stranger.cert),
            "key_file": str(stranger.key),
        },
    }
    prom_config = tmp_path / "prometheus.yml"
    prom_config.write_text(
        json.dumps(
            {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                "scrape_configs": [{"job_name": name, **job} for name, job in jobs.items()],
            }
        )
    )
    prom_port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    prom = subprocess.Popen(
        [
            str(PROMETHEUS),
            f"--config.file={prom_config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    try:

        def targets() -> dict[str, dict[str, Any]] | None:
            try:
                active = api(prom_port, "targets")["activeTargets"]
            except OSError:
                return None
            by_job = {t["labels"]["job"]: t for t in active}
            if set(by_job) != set(jobs) or any(t["health"] == "unknown" for t in by_job.values()):
                return None
            return by_job

        by_job = wait_for(targets, timeout=90, interval=0.5, what="every target scraped once")
        assert by_job["good"]["health"] == "up", by_job["good"]
        assert by_job["mtls_good"]["health"] == "up", by_job["mtls_good"]
        for name in ("mtls_no_cert", "mtls_foreign_cert"):
            assert by_job[name]["health"] == "down", by_job[name]
        for name in ("wrong_password", "no_password"):
            assert by_job[name]["health"] == "down"
            assert "401" in by_job[name]["lastError"], by_job[name]["lastError"]
        assert by_job["plain_http"]["health"] == "down"
        assert "400" in by_job["plain_http"]["lastError"], by_job["plain_http"]["lastError"]
        assert by_job["untrusted_ca"]["health"] == "down"
        assert "certificate" in by_job["untrusted_ca"]["lastError"], by_job["untrusted_ca"]["lastError"]

        def events(job: str) -> list[Any]:
            return api(prom_port, "query", query=f'telemetryd_events_total{{job="{job}"}}')["result"]  # type: ignore[no-any-return]

        got = wait_for(
            lambda: [r for r in events("good") if float(r["value"][1]) == 30],
            timeout=60,
            interval=0.5,
            what="30 events scraped over TLS",
        )
        assert got
        # The refused jobs have `up` 0 and no telemetryd series at all: nothing leaked into Prometheus.
        assert wait_for(lambda: events("mtls_good"), timeout=60, interval=0.5, what="mTLS scrape stored")
        for name in (
            "wrong_password",
            "no_password",
            "plain_http",
            "untrusted_ca",
            "mtls_no_cert",
            "mtls_foreign_cert",
        ):
            assert events(name) == []
            up = api(prom_port, "query", query=f'up{{job="{name}"}}')["result"]
            assert [float(r["value"][1]) for r in up] == [0.0], (name, up)
    finally:
        prom.terminate()
        prom.wait(timeout=30)
        log.close()
    assert d.stop() == 0
    assert d2.stop() == 0
