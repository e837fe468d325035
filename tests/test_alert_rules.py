"""The Prometheus alert rules: valid for promtool, unit-tested case by case, documented in the runbook.

The rule file is read with a small reader for the block-style YAML it is written in (no YAML library is
a dependency); promtool's own rule count cross-checks that reader.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from promql import metric_names, vector_selectors
from test_dashboard import exposed_series_names

REPO = Path(__file__).resolve().parent.parent
ALERTS = REPO / "dashboards" / "alerts.yml"
ALERT_TESTS = REPO / "dashboards" / "alerts_test.yml"
OPERATIONS = REPO / "docs" / "operations.md"
PROMTOOL = REPO / ".build" / "prometheus" / "usr" / "bin" / "promtool"

SEVERITIES = {"critical", "warning", "info"}
RUNBOOK_PARTS = ("**Meaning**", "**Likely causes**", "**What to check**", "**How to fix**")
# Metrics every exporter has: an alert on them must say which job it means.
SHARED_METRIC_PREFIXES = ("up", "process_", "python_")

_KEY = re.compile(r"^(\s*)([A-Za-z_][A-Za-z0-9_]*):(?:\s+(.*?))?\s*$")
_RULE_START = re.compile(r"^(\s*)- (alert|record):\s*(\S+)\s*$")


@dataclass
class Node:
    value: str
    start: int  # line index of the key
    end: int  # line index just past the value
    children: dict[str, Node] = field(default_factory=dict)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _is_content(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def _scalar(text: str) -> str:
    if text.startswith('"') and text.endswith('"'):
        value = json.loads(text)
        assert isinstance(value, str)
        return value
    if text.startswith("'") and text.endswith("'"):
        return text[1:-1].replace("''", "'")
    return text


def _mapping(lines: list[str], start: int, end: int) -> dict[str, Node]:
    """The block mapping in lines[start:end], whose keys sit at the indentation of its first line."""
    out: dict[str, Node] = {}
    body = [i for i in range(start, end) if _is_content(lines[i])]
    if not body:
        return out
    indent = _indent(lines[body[0]])
    i = body[0]
    while i < end:
        line = lines[i]
        if not _is_content(line):
            i += 1
            continue
        m = _KEY.match(line)
        assert m and len(m.group(1)) == indent, f"{ALERTS.name}:{i + 1}: unexpected line {line!r}"
        j = i + 1
        while j < end and (not _is_content(lines[j]) or _indent(lines[j]) > indent):
            j += 1
        rest = m.group(3) or ""
        inner = [lines[k].strip() for k in range(i + 1, j) if lines[k].strip()]
        if rest in ("|", "|-"):
            node = Node("\n".join(inner), i, j)
        elif rest in (">", ">-"):
            node = Node(" ".join(inner), i, j)
        elif rest:
            node = Node(_scalar(rest), i, j)
        else:
            node = Node("", i, j, _mapping(lines, i + 1, j))
        out[m.group(2)] = node
        i = j
    return out


@dataclass
class Rule:
    kind: str  # "alert" or "record"
    name: str
    start: int
    end: int
    fields: dict[str, Node]


def read_rules(text: str) -> list[Rule]:
    lines = text.splitlines()
    starts = [(i, m) for i, line in enumerate(lines) if (m := _RULE_START.match(line))]
    rules: list[Rule] = []
    for i, m in starts:
        dash = len(m.group(1))
        end = i + 1
        while end < len(lines) and (not _is_content(lines[end]) or _indent(lines[end]) > dash):
            end += 1
        rules.append(Rule(m.group(2), m.group(3), i, end, _mapping(lines, i + 1, end)))
    return rules


def alerts() -> list[Rule]:
    return [r for r in read_rules(ALERTS.read_text()) if r.kind == "alert"]


ALERT_NAMES = [r.name for r in alerts()]


def github_anchor(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def runbook_sections() -> dict[str, str]:
    """Anchor -> text of each `###` section under `## Alerts runbook`."""
    text = OPERATIONS.read_text()
    m = re.search(r"^## Alerts runbook\s*$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert m, f"{OPERATIONS} has no '## Alerts runbook' section"
    parts = re.split(r"^### (.+)$", m.group(1), flags=re.M)
    return {github_anchor(parts[k]): parts[k + 1] for k in range(1, len(parts), 2)}


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL.exists(), f"{PROMTOOL} is missing: run `make prometheus` (make test does)"
    return subprocess.run(
        [str(PROMTOOL), *args], capture_output=True, text=True, timeout=300, cwd=cwd, check=False
    )


def test_promtool_accepts_the_rules() -> None:
    proc = promtool("check", "rules", str(ALERTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = re.search(r"SUCCESS: (\d+) rules found", proc.stdout)
    assert found, proc.stdout
    assert int(found.group(1)) == len(read_rules(ALERTS.read_text())), "this test's reader missed rules"
    assert len(ALERT_NAMES) == len(set(ALERT_NAMES)), "duplicate alert names"


def test_rule_unit_tests_pass() -> None:
    proc = promtool("test", "rules", str(ALERT_TESTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_required_alerts_exist() -> None:
    exprs = {r.name: " ".join(r.fields["expr"].value.split()) for r in alerts()}
    joined = "\n".join(exprs.values())
    for fragment in (
        'up{job="telemetryd"} == 0',
        "time() - telemetryd_checkpoint_last_success_timestamp_seconds",
        'telemetryd_checkpoint_writes_total{result="error"}',
        "telemetryd_checkpoint_lag_events",
        "telemetryd_checkpoint_lag_bytes",
        "telemetryd_read_lag_bytes",
        "process_start_time_seconds",
        'telemetryd_recoveries_total{outcome="quarantined"}',
        "telemetryd_lines_skipped_total",
        "telemetryd_patterns / telemetryd_patterns_max > 0.9",
        "telemetryd_overflow_events_total",
    ):
        assert fragment in joined, f"no alert uses {fragment}"


@pytest.mark.parametrize("name", ALERT_NAMES)
def test_alert_is_labelled_and_annotated(name: str) -> None:
    rule = next(r for r in alerts() if r.name == name)
    labels = rule.fields["labels"].children
    assert labels["severity"].value in SEVERITIES
    annotations = rule.fields["annotations"].children
    for key in ("summary", "description", "runbook_url"):
        assert key in annotations and annotations[key].value.strip(), f"{name} lacks annotation {key}"
    url = annotations["runbook_url"].value
    prefix = "docs/operations.md#"
    assert url.startswith(prefix), url
    sections = runbook_sections()
    anchor = url.removeprefix(prefix)
    assert anchor in sections, f"{OPERATIONS.name} has no runbook section #{anchor}"
    missing = [part for part in RUNBOOK_PARTS if part not in sections[anchor]]
    assert not missing, f"runbook section #{anchor} lacks {missing}"


def test_runbook_documents_only_existing_alerts() -> None:
    anchors = {github_anchor(n) for n in ALERT_NAMES}
    stale = set(runbook_sections()) - anchors
    assert not stale, f"runbook sections without an alert: {sorted(stale)}"


@pytest.mark.parametrize("name", ALERT_NAMES)
def test_alert_reads_only_exposed_metrics(name: str) -> None:
    expr = next(r for r in alerts() if r.name == name).fields["expr"].value
    names = metric_names(expr)
    assert names
    assert not names - exposed_series_names(), (
        f"{name} reads unknown metrics {names - exposed_series_names()}"
    )
    for sel in vector_selectors(expr):
        if sel.metric.startswith(SHARED_METRIC_PREFIXES):
            assert sel.has("job", "=", "telemetryd"), f'{name}: {sel.metric} must select job="telemetryd"'


def _mutated_run(tmp_path: Path, expr: str, drop_for: bool) -> dict[str, set[str]]:
    """Run the unit tests against rules whose every expr is replaced; per alert, how its cases failed.

    Returns alert name -> {"quiet"} if a case expecting no alert saw one, {"fire"} if a case expecting
    alerts saw none.
    """
    lines = ALERTS.read_text().splitlines()
    for rule in sorted(alerts(), key=lambda r: r.start, reverse=True):
        node = rule.fields["expr"]
        indent = " " * _indent(lines[node.start])
        replaced = [*lines[: node.start], f"{indent}expr: {expr}", *lines[node.end :]]
        if drop_for and "for" in rule.fields:
            f = rule.fields["for"]
            shift = (node.end - node.start) - 1 if f.start > node.start else 0
            del replaced[f.start - shift : f.end - shift]
        lines = replaced
    (tmp_path / ALERTS.name).write_text("\n".join(lines) + "\n")
    shutil.copy(ALERT_TESTS, tmp_path / ALERT_TESTS.name)
    checked = promtool("check", "rules", ALERTS.name, cwd=tmp_path)
    assert checked.returncode == 0, "mutating the rules broke them:\n" + checked.stdout + checked.stderr
    proc = promtool("test", "rules", ALERT_TESTS.name, cwd=tmp_path)
    failures: dict[str, set[str]] = {}
    for chunk in (proc.stdout + proc.stderr).split("alertname: ")[1:]:
        name = chunk.split(",", 1)[0].strip()
        compact = "".join(chunk.split())
        if "exp:[]" in compact:
            failures.setdefault(name, set()).add("quiet")
        if "got:[]" in compact:
            failures.setdefault(name, set()).add("fire")
    return failures


def test_every_alert_has_a_case_where_it_fires(tmp_path: Path) -> None:
    """With rules that never fire, every alert must have a failing case that expected it to fire."""
    failures = _mutated_run(tmp_path, "vector(1) == 0", drop_for=False)
    untested = [n for n in ALERT_NAMES if "fire" not in failures.get(n, set())]
    assert not untested, f"no test case expects these alerts to fire: {untested}"


def test_every_alert_has_a_case_where_it_stays_quiet(tmp_path: Path) -> None:
    """With rules that always fire at once, every alert must have a failing case that expected silence."""
    failures = _mutated_run(tmp_path, "vector(1)", drop_for=True)
    untested = [n for n in ALERT_NAMES if "quiet" not in failures.get(n, set())]
    assert not untested, f"no test case expects these alerts to stay quiet: {untested}"
