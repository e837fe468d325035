from __future__ import annotations

import pytest
from telemetryd.config import Config, ConfigError, Overrides, apply_overrides, parse_config


def test_defaults_match_the_contract() -> None:
    c = parse_config(b"")
    assert c == Config()
    assert c.sources.start_at == "beginning" and c.sources.rescan_seconds == 5.0
    assert c.sources.max_line_bytes == 1048576
    assert c.patterns.key_fields == ["event_type"] and c.patterns.template_field == "message"
    assert c.patterns.max_patterns == 100000
    assert c.checkpoint.state_dir == "/var/lib/telemetryd"
    assert (c.checkpoint.every_events, c.checkpoint.every_seconds) == (1000, 1.0)
    assert c.metrics.listen == "127.0.0.1:9464" and c.log.format == "auto" and c.log.level == "info"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (b'[checkpoint]\nevery_events = "x"', "key checkpoint.every_events: Expected `int`, got `str`"),
        (b'[sources]\npaths = "*.jsonl"', "key sources.paths: Expected `array`"),
        (b"[sources]\nnope = 1", "unknown field `nope`"),
        (b"[bogus]\n", "unknown field `bogus`"),
        (b'[sources]\nstart_at = "middle"', "key sources.start_at"),
        (b'[log]\nformat = "xml"', "key log.format"),
        (b"[checkpoint]\nevery_events = 0", "key checkpoint.every_events: must be >= 1"),
        (b'[metrics]\nlisten = "nohost"', "key metrics.listen"),
        (b'[patterns]\nmasks = [{regex = "("}]', "key patterns.masks[0].regex"),
        (b'[patterns]\nkey_fields = ["a..b"]', "key patterns.key_fields[0]"),
        (b"[sources\n", "not valid TOML"),
    ],
)
def test_errors_name_the_file_and_key(text: bytes, needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(text, "/etc/telemetryd/t.toml")
    assert "/etc/telemetryd/t.toml" in str(e.value)
    assert needle in str(e.value)


def test_overrides_add_paths_and_replace_state_dir() -> None:
    c = parse_config(b'[sources]\npaths = ["/a/*.jsonl"]')
    c = apply_overrides(c, Overrides(paths=("/b/*.jsonl",), state_dir="/tmp/s", metrics_listen=""))
    assert c.sources.paths == ["/a/*.jsonl", "/b/*.jsonl"]
    assert c.checkpoint.state_dir == "/tmp/s" and c.metrics.listen == ""
