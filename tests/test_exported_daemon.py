"""The exported counters of a real daemon across a change of pattern settings, which archives the counts
and starts counting again: every counter continues (docs/operations.md, "Counters across restarts and
settings changes")."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from conftest import Daemon, free_port, scrape, wait_for, write_config

CONFIG = """
[patterns]
key_fields = {keys}
[checkpoint]
every_events = 5
every_seconds = 0.2
[sources]
rescan_seconds = 0.5
"""


def events(tag: str, n: int) -> str:
    return "".join(
        json.dumps({"k": f"k{i % 3}", "lvl": tag, "message": f"job {i} done"}) + "\n" for i in range(n)
    )


def per_pattern(m: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in m.items() if k.startswith("telemetryd_pattern_events_total{")}


def test_counters_continue_across_a_settings_change(tmp_path: Path, daemons: Callable[..., Daemon]) -> None:
    src = tmp_path / "a.jsonl"
    src.write_text(events("info", 30))
    port = free_port()
    args = (
        "--path",
        str(tmp_path / "*.jsonl"),
        "--state-dir",
        str(tmp_path / "st"),
        "--metrics-listen",
        f"127.0.0.1:{port}",
    )

    def run(keys: str, expect_events: int) -> dict[str, float]:
        cfg = write_config(tmp_path, CONFIG.format(keys=keys))
        d = daemons("--config", str(cfg), *args)
        d.wait_ready()
        m = wait_for(
            lambda: (s := scrape(port)).get("telemetryd_events_total") == expect_events and s,
            timeout=30,
            what=f"events_total {expect_events}",
        )
        assert d.stop() == 0, d.log()
        return m  # type: ignore[no-any-return]

    before = run('["k"]', 30)
    old = per_pattern(before)
    assert len(old) == 4 and old['telemetryd_pattern_events_total{k="",pattern_id="other"}'] == 0
    assert before["telemetryd_patterns_created_total"] == 3

    src.open("a").write(events("warn", 12))
    after = run('["k", "lvl"]', 42)  # new settings: counting starts again, the counters do not
    assert list(tmp_path.glob("st/archive-*.json")), "the old counts are archived"
    new = per_pattern(after)
    for series, value in old.items():
        if "other" not in series:
            assert new[series] == value, f"{series}: {value} before the change, {new.get(series)} after"
    fresh = {k: v for k, v in new.items() if "lvl=" in k and 'pattern_id="other"' not in k}
    assert sorted(fresh.values()) == [4, 4, 4] and all('lvl="warn"' in k for k in fresh)
    assert sum(new.values()) == after["telemetryd_events_total"] == 42
    assert after["telemetryd_patterns_created_total"] == 6
    assert after["telemetryd_settings_changes_total"] == 1

    again = run('["k", "lvl"]', 42)  # a plain restart adds nothing
    assert per_pattern(again) == new
    assert again["telemetryd_patterns_created_total"] == 6
