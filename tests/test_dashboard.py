"""Static checks of the Grafana dashboard: structure, variables, and that every query is valid PromQL
over metrics the daemon really exposes, scoped by the $job and $instance variables."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from promql import iter_panels, metric_names, raw_dashboard_exprs, regex_literal, substitute, vector_selectors
from telemetryd.metrics import Metrics

REPO = Path(__file__).resolve().parent.parent
DASHBOARD = REPO / "dashboards" / "telemetryd.json"
PROMTOOL = REPO / ".build" / "prometheus" / "usr" / "bin" / "promtool"

# The metric families agreed for the daemon, by type: the contract's list plus the agreed additions and
# prometheus_client's process/platform/GC collectors. The dashboard and the alerts are checked against
# the daemon's live registry; this list checks that the registry still has what was agreed.
DAEMON_METRICS: dict[str, str] = {
    "telemetryd_events_total": "counter",
    "telemetryd_lines_skipped_total": "counter",
    "telemetryd_bytes_read_total": "counter",
    "telemetryd_patterns": "gauge",
    "telemetryd_patterns_max": "gauge",
    "telemetryd_overflow_events_total": "counter",
    "telemetryd_pattern_events_total": "counter",
    "telemetryd_pattern_info": "gauge",
    "telemetryd_pattern_first_seen_timestamp_seconds": "gauge",
    "telemetryd_patterns_created_total": "counter",
    "telemetryd_pattern_series": "gauge",
    "telemetryd_pattern_series_max": "gauge",
    "telemetryd_events_read_total": "counter",
    "telemetryd_files_tracked": "gauge",
    "telemetryd_file_read_lag_bytes": "gauge",
    "telemetryd_read_lag_bytes": "gauge",
    "telemetryd_checkpoint_lag_bytes": "gauge",
    "telemetryd_checkpoint_lag_events": "gauge",
    "telemetryd_checkpoint_last_success_timestamp_seconds": "gauge",
    "telemetryd_checkpoint_duration_seconds": "histogram",
    "telemetryd_checkpoint_writes_total": "counter",
    "telemetryd_checkpoint_size_bytes": "gauge",
    "telemetryd_checkpoint_compactions_total": "counter",
    "telemetryd_rotations_total": "counter",
    "telemetryd_recoveries_total": "counter",
    "telemetryd_source_errors_total": "counter",
    "telemetryd_settings_changes_total": "counter",
    "telemetryd_ingest_delay_seconds": "histogram",
    "telemetryd_build_info": "gauge",
    "process_virtual_memory_bytes": "gauge",
    "process_resident_memory_bytes": "gauge",
    "process_start_time_seconds": "gauge",
    "process_cpu_seconds_total": "counter",
    "process_open_fds": "gauge",
    "process_max_fds": "gauge",
    "python_gc_objects_collected_total": "counter",
    "python_gc_objects_uncollectable_total": "counter",
    "python_gc_collections_total": "counter",
    "python_info": "gauge",
}

# Series Prometheus itself attaches to every scrape target.
SCRAPE_METRICS = {"up"}

_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("_sum", "_count"),
}


def registry_series_names() -> dict[str, str]:
    """Series name -> family type, as the daemon's registry exposes them. Families are read by type, so
    a labelled metric counts before its first child exists."""
    out: dict[str, str] = {}
    for family in Metrics(max_patterns=100).registry.collect():
        for suffix in _SUFFIXES.get(family.type, ("",)):
            out[family.name + suffix] = family.type
    return out


def exposed_series_names() -> set[str]:
    """Every series name a query may use."""
    return set(registry_series_names()) | SCRAPE_METRICS


def load() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


def content_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in iter_panels(dashboard["panels"]) if p.get("type") != "row"]


EXPRS = raw_dashboard_exprs(load())
EXPR_IDS = [f"{title}#{i}" for i, (title, _) in enumerate(EXPRS)]


def test_daemon_exposes_the_agreed_metrics() -> None:
    live = registry_series_names()
    for name, kind in DAEMON_METRICS.items():
        if kind == "histogram":
            for suffix in _SUFFIXES["histogram"]:
                assert live.get(name + suffix) == kind, f"the daemon does not expose histogram {name}"
        else:
            assert live.get(name) == kind, f"the daemon does not expose {kind} {name} (has {live.get(name)})"


def test_dashboard_metadata() -> None:
    d = load()
    assert d["schemaVersion"] >= 39
    assert d["uid"] == "telemetryd"
    assert d["title"]
    assert d.get("id") is None, "exported dashboards must not pin a database id"
    assert "telemetryd" in d["tags"]


def test_template_variables() -> None:
    variables = {v["name"]: v for v in load()["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource"
    assert ds["query"] == "prometheus"
    for name in ("job", "instance"):
        var = variables[name]
        assert var["type"] == "query"
        assert var["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert var["multi"] and var["includeAll"]
        # A catch-all like ".+" would also select other exporters' process_* series.
        assert not var.get("allValue")
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        assert query.startswith("label_values(telemetryd_build_info")
        assert query.endswith(f", {name})")
    instance_query = variables["instance"]["query"]["query"]
    assert 'job=~"$job"' in instance_query, "instances must follow the selected jobs"


def test_every_panel_queries_the_selected_datasource() -> None:
    panels = content_panels(load())
    assert len(panels) >= 20
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        targets = panel.get("targets", [])
        assert targets, f"panel {panel['title']!r} has no targets"
        for target in targets:
            assert target.get("expr", "").strip(), f"panel {panel['title']!r} has an empty query"
            assert target["datasource"] == panel["datasource"], panel["title"]
        ref_ids = [t["refId"] for t in targets]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]


def test_panel_titles_and_ids_are_unique() -> None:
    panels = list(iter_panels(load()["panels"]))
    titles = [p["title"] for p in panels]
    assert len(titles) == len(set(titles)), "the e2e test finds panels by title"
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))


def test_panels_do_not_overlap() -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in load()["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in taken, f"{panel['title']!r} overlaps {taken[(x, y)]!r}"
                taken[(x, y)] = panel["title"]


@pytest.mark.parametrize(("title", "expr"), EXPRS, ids=EXPR_IDS)
def test_expr_reads_only_exposed_metrics(title: str, expr: str) -> None:
    names = metric_names(expr)
    assert names, f"{title}: no metric found in {expr}"
    unknown = names - exposed_series_names()
    assert not unknown, f"{title}: {expr} reads metrics the daemon does not expose: {sorted(unknown)}"


@pytest.mark.parametrize(("title", "expr"), EXPRS, ids=EXPR_IDS)
def test_expr_is_scoped_by_job_and_instance(title: str, expr: str) -> None:
    selectors = vector_selectors(expr)
    assert selectors
    for sel in selectors:
        assert sel.has("job", "=~", "$job"), f'{title}: {sel.metric} lacks job=~"$job" in {expr}'
        assert sel.has("instance", "=~", "$instance"), f"{title}: {sel.metric} lacks instance in {expr}"


def test_required_views_are_present() -> None:
    """The views operators were promised; guards against a panel silently disappearing."""
    exprs = [" ".join(e.split()) for _, e in EXPRS]

    def has(*fragments: str) -> bool:
        return any(all(f in e for f in fragments) for e in exprs)

    required = {
        "events/s": ("rate(telemetryd_events_total{",),
        "bytes/s": ("rate(telemetryd_bytes_read_total{",),
        "read lag": ("telemetryd_read_lag_bytes{",),
        "checkpoint lag bytes": ("telemetryd_checkpoint_lag_bytes{",),
        "checkpoint lag events": ("telemetryd_checkpoint_lag_events{",),
        "seconds since checkpoint": ("time() - telemetryd_checkpoint_last_success_timestamp_seconds{",),
        "checkpoint p50": ("histogram_quantile(0.5,", "telemetryd_checkpoint_duration_seconds_bucket{"),
        "checkpoint p99": ("histogram_quantile(0.99,", "telemetryd_checkpoint_duration_seconds_bucket{"),
        "checkpoint size": ("telemetryd_checkpoint_size_bytes{",),
        "checkpoint errors": ("telemetryd_checkpoint_writes_total{", 'result="error"'),
        "skipped by reason": ("sum by (reason)", "telemetryd_lines_skipped_total{"),
        "rotations by kind": ("sum by (kind)", "telemetryd_rotations_total{"),
        "recoveries by outcome": ("sum by (outcome)", "telemetryd_recoveries_total{"),
        "patterns held": ("telemetryd_patterns{",),
        "patterns max": ("telemetryd_patterns_max{",),
        "overflow": ("telemetryd_overflow_events_total{",),
        "cpu": ("rate(process_cpu_seconds_total{",),
        "rss": ("process_resident_memory_bytes{",),
        "fds": ("process_open_fds{",),
        "files by lag": ("telemetryd_file_read_lag_bytes{",),
        "top patterns by rate, named by template": (
            "topk(10, sum by (pattern_id, template) (rate(telemetryd_pattern_events_total{",
            "group_left (template) telemetryd_pattern_info{",
        ),
        "share of other": (
            "telemetryd_pattern_events_total{",
            'pattern_id="other"',
            "/ sum(rate(telemetryd_events_total{",
        ),
        "new patterns": ("increase(telemetryd_patterns_created_total{",),
        "first seen": (
            "telemetryd_pattern_first_seen_timestamp_seconds{",
            "group_left (template) telemetryd_pattern_info{",
        ),
        "series held": ("telemetryd_pattern_series{",),
    }
    missing = [view for view, fragments in required.items() if not has(*fragments)]
    assert not missing, f"dashboard lacks: {missing}"


def test_exprs_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses every query (as a recording rule), so a syntax error fails here, not in Grafana."""
    assert PROMTOOL.exists(), f"{PROMTOOL} is missing: run `make prometheus` (make test does)"
    values = {
        "job": regex_literal("telemetryd"),
        "instance": regex_literal("127.0.0.1:9464"),
        "datasource": "prometheus",
        "__interval": "15s",
        "__interval_ms": "15000",
        "__rate_interval": "1m",
        "__range": "1h",
        "__range_s": "3600",
        "__range_ms": "3600000",
    }
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": substitute(expr, values)}
                    for i, (_, expr) in enumerate(EXPRS)
                ],
            }
        ]
    }
    # JSON is YAML, which spares a YAML dependency.
    rule_file = tmp_path / "dashboard_rules.yml"
    rule_file.write_text(json.dumps(rules, indent=1))
    proc = subprocess.run(
        [str(PROMTOOL), "check", "rules", str(rule_file)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(EXPRS)} rules found" in proc.stdout
