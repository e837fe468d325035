"""The fleet recording rules: valid for promtool, unit-tested, reading only what the daemon exposes, and
every one of them rid of the `instance` label."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from promql import metric_names
from test_dashboard import exposed_series_names

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "dashboards" / "recording.yml"
RULE_TESTS = REPO / "dashboards" / "recording_test.yml"
PROMTOOL = REPO / ".build" / "prometheus" / "usr" / "bin" / "promtool"

# The rules are written as `- record: NAME` then `expr: ...` (one line, or a `|` block indented deeper).
_RULE = re.compile(r"^\s*- record: (\S+)\n\s*expr: (?:\|\n((?:\s{10,}.*\n)+)|(.*)\n)", re.M)


def rules() -> list[tuple[str, str]]:
    text = RULES.read_text()
    return [(m.group(1), " ".join((m.group(2) or m.group(3)).split())) for m in _RULE.finditer(text)]


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL.exists(), f"{PROMTOOL} is missing: run `make prometheus` (make test does)"
    return subprocess.run([str(PROMTOOL), *args], capture_output=True, text=True, timeout=120, cwd=REPO)


def test_promtool_accepts_and_unit_tests_the_rules() -> None:
    proc = promtool("check", "rules", str(RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = re.search(r"SUCCESS: (\d+) rules found", proc.stdout)
    assert found and int(found.group(1)) == len(rules()), "this test's reader missed rules"
    proc = promtool("test", "rules", str(RULE_TESTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tested = set(re.findall(r"^\s*- expr: (\S+)$", RULE_TESTS.read_text(), re.M))
    assert tested == {name for name, _ in rules()}, "every rule has a unit test"


@pytest.mark.parametrize(("name", "expr"), rules(), ids=[n for n, _ in rules()])
def test_rule_aggregates_the_fleet(name: str, expr: str) -> None:
    assert re.fullmatch(r"[a-z_]+:[a-z_]+:[a-z0-9_]+", name), f"{name}: not level:metric:operations"
    assert "without (instance" in expr, f"{name} keeps the instance label: {expr}"
    assert not metric_names(expr) - exposed_series_names(), f"{name} reads metrics the daemon lacks"
