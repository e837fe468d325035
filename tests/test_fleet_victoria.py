"""A fleet summed by an existing engine: three daemons (three log dirs and state dirs, standing for three
hosts), one real Prometheus scraping them and remote-writing into a real VictoriaMetrics.

`sum by (pattern_id)` queried from VictoriaMetrics must equal, for every pattern, the sum of the three
daemons' `telemetryd patterns --json` counts; the fleet recording rules must arrive there without the
instance label.
"""

from __future__ import annotations

import collections
import json
import subprocess
import textwrap
from pathlib import Path

import pytest
from conftest import cli, free_port, start_writer
from prom_helpers import (
    VICTORIA_METRICS,
    ProcessDied,
    PromAPI,
    http_get,
    prometheus_config,
    start_daemon,
    start_prometheus,
    stop,
    tail,
    wait_until,
)

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
RECORDING = REPO / "dashboards" / "recording.yml"
JOB = "telemetryd"
HOSTS = 3


def host_events(host: int) -> str:
    """Patterns only this host has, next to the ones all hosts share (from the writers)."""
    lines = [
        {"k": f"only-h{host}", "message": f"cache {'hit' if i % 2 else 'miss'} for {i}"}
        for i in range(5 * host + 7)
    ]
    return "".join(json.dumps(e) + "\n" for e in lines)


def test_fleet_sum_in_victoriametrics_equals_the_daemons_tables(tmp_path: Path) -> None:
    assert VICTORIA_METRICS.exists(), (
        f"{VICTORIA_METRICS} is missing: run `make victoria-metrics` (make test does)"
    )
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []

    def context() -> str:
        return "\n".join(tail(p, 15) for p in logs)

    def alive() -> None:
        for p in procs:
            if p.poll() is not None and p.returncode != 0:
                raise ProcessDied(f"{p.args[0]} exited with {p.returncode}\n{context()}")

    try:
        vm_port = free_port()
        vm_log = tmp_path / "victoria-metrics.log"
        logs.append(vm_log)
        with vm_log.open("wb") as out:
            procs.append(
                subprocess.Popen(
                    [
                        str(VICTORIA_METRICS),
                        f"-storageDataPath={tmp_path / 'vm-data'}",
                        f"-httpListenAddr=127.0.0.1:{vm_port}",
                        "-retentionPeriod=1d",
                        # Answer with the newest samples: by default the last 30 s are held back.
                        "-search.latencyOffset=0s",
                        "-search.disableCache",
                        "-loggerLevel=WARN",
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=tmp_path,
                )
            )
        vm = PromAPI(f"http://127.0.0.1:{vm_port}")
        wait_until(
            "VictoriaMetrics ready", lambda: http_get(f"{vm.base}/health", 2)[0] == 200 or None, context
        )

        hosts = []
        config = tmp_path / "telemetryd.toml"
        config.write_text(
            textwrap.dedent(
                """
                [patterns]
                key_fields = ["k"]
                [checkpoint]
                every_seconds = 0.5
                [sources]
                rescan_seconds = 0.5
                [log]
                format = "json"
                """
            )
        )
        for h in range(HOSTS):
            root = tmp_path / f"host{h}"
            src = root / "log"
            src.mkdir(parents=True)
            (src / "local.jsonl").write_text(host_events(h))
            port = free_port()
            log = root / "telemetryd.log"
            logs.append(log)
            procs.append(
                start_daemon(config, f"{src}/*.jsonl", root / "state", f"127.0.0.1:{port}", log, root)
            )
            hosts.append((root, src, f"127.0.0.1:{port}"))

        prom_port = free_port()
        prom_config = tmp_path / "prometheus.yml"
        prometheus_config(
            prom_config,
            {JOB: [instance for _, _, instance in hosts]},
            rule_files=[RECORDING],
            remote_write=f"{vm.base}/api/v1/write",
        )
        prom_log = tmp_path / "prometheus.log"
        logs.append(prom_log)
        procs.append(start_prometheus(tmp_path, prom_config, prom_port, prom_log))
        prom = PromAPI(f"http://127.0.0.1:{prom_port}")

        # Real writers on every host; the same keys everywhere, so most patterns are shared by the fleet.
        writers = [
            start_writer(src / "app.jsonl", 300 + 100 * h, seed=h, rate=200.0, keys=4)
            for h, (_, src, _) in enumerate(hosts)
        ]
        for w in writers:
            assert w.wait(timeout=120) == 0, "a writer failed"
        expected_events = {
            instance: sum(len(f.read_bytes().splitlines()) for f in src.glob("*.jsonl"))
            for _, src, instance in hosts
        }

        def all_counted() -> bool | None:
            alive()
            got = {
                s.labels["instance"]: s.value for s in prom.query(f'telemetryd_events_total{{job="{JOB}"}}')
            }
            return True if got == expected_events else None

        wait_until("every host's events committed and scraped", all_counted, context)

        expected: collections.Counter[str] = collections.Counter()
        for root, _, _ in hosts:
            doc = json.loads(cli("patterns", "--json", "--state-dir", str(root / "state")).stdout)
            for p in doc["patterns"]:
                expected[p["id"]] += p["count"]
        # The writers' 4 keys with one template, shared by every host; 2 templates of each host's own key.
        assert len(expected) == 4 + 2 * HOSTS, sorted(expected)

        def fleet_sum() -> dict[str, float] | None:
            alive()
            got = {
                s.labels["pattern_id"]: s.value
                for s in vm.query(f'sum by (pattern_id) (telemetryd_pattern_events_total{{job="{JOB}"}})')
            }
            return (
                got
                if got.get("other") == 0 and {k: v for k, v in got.items() if k != "other"} == expected
                else None
            )

        got = wait_until(
            "VictoriaMetrics' fleet sum to match the daemons' tables", fleet_sum, context, timeout=120
        )
        assert len(got) == len(expected) + 1
        total = vm.value(f'sum(telemetryd_events_total{{job="{JOB}"}})')
        assert total == sum(expected_events.values()) == sum(expected.values())

        # The recording rules reach the long-term store, without the instance label, one series per pattern.
        def recorded() -> list[dict[str, str]] | None:
            alive()
            samples = vm.query('job_pattern_id:telemetryd_pattern_info:max{job="telemetryd"}')
            return [s.labels for s in samples] if len(samples) == len(expected) else None

        info = wait_until("the recorded pattern info in VictoriaMetrics", recorded, context)
        assert all("instance" not in labels and labels["template"] for labels in info), info
        assert {labels["pattern_id"] for labels in info} == set(expected)
        hosts_per_pattern = {
            s.labels["pattern_id"]: s.value
            for s in wait_until(
                "the recorded host counts",
                lambda: vm.query("job_pattern_id:telemetryd_pattern_hosts:count") or None,
                context,
            )
        }
        assert sorted(hosts_per_pattern.values()) == [1] * 2 * HOSTS + [HOSTS] * 4, hosts_per_pattern
    finally:
        for p in reversed(procs):
            stop(p)
