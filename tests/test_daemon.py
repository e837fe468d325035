"""The daemon process on real files: partial lines, malformed lines, the lock, SIGTERM, settings changes."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from conftest import KEY_CONFIG, cli, cli_json, wait_for, write_config


def _status(state: Path, cfg: Path) -> dict:
    return cli_json("status", "--state-dir", str(state), "--config", str(cfg))


def test_partial_line_waits_for_its_newline(tmp_path: Path, daemons) -> None:
    cfg = write_config(tmp_path, KEY_CONFIG)
    state, f = tmp_path / "state", tmp_path / "a.jsonl"
    fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.write(fd, b'{"k": "x"}\n{"k": "y", "message": "hal')
    d = daemons("--config", str(cfg), "--path", str(tmp_path / "*.jsonl"), "--state-dir", str(state))
    d.wait_ready()
    wait_for(lambda: state.exists() and _status(state, cfg)["events_total"] == 1, what="first line counted")
    time.sleep(0.5)
    doc = _status(state, cfg)
    assert doc["events_total"] == 1 and doc["files"][0]["offset"] == len(b'{"k": "x"}\n')
    os.write(fd, b'f"}\n')
    os.close(fd)
    wait_for(lambda: _status(state, cfg)["events_total"] == 2, what="completed line counted")
    assert d.stop() == 0
    doc = cli_json("patterns", "--state-dir", str(state), "--config", str(cfg))
    assert sorted((p["key"]["k"], p["count"]) for p in doc["patterns"]) == [("x", 1), ("y", 1)]


BAD_LINES = [
    (b"not json at all", "invalid_json"),
    (b'{"k": "a", "message": ', "invalid_json"),
    (b"[1, 2, 3]", "not_object"),
    (b'"just a string"', "not_object"),
    (b'{"k": "\xff\xfe"}', "invalid_utf8"),
    (b'{"other": "\xc3"}', "invalid_utf8"),  # invalid UTF-8 in a field nobody asked for still counts
    (b"", "empty"),
    (b"   ", "empty"),
    (b'{"k": "' + b"x" * 5000 + b'"}', "too_long"),
]


def test_malformed_lines_are_skipped_by_reason(tmp_path: Path, daemons) -> None:
    cfg = write_config(tmp_path, KEY_CONFIG + "max_line_bytes = 1024\n")
    state, f = tmp_path / "state", tmp_path / "a.jsonl"
    good = [b'{"k": "a"}', b'{"k": "b", "message": "fine"}', b'{"k": 7}', b'{"k": null}', b"{}"]
    lines = []
    for i, (bad, _) in enumerate(BAD_LINES):
        lines += [good[i % len(good)], bad]
    # A too-long line bigger than one read chunk, to exercise the skip-while-scanning path.
    lines += [b'{"k": "' + b"y" * (3 << 20) + b'"}', b'{"k": "z"}']
    f.write_bytes(b"\n".join(lines) + b"\n")
    d = daemons("--once", "--config", str(cfg), "--path", str(f), "--state-dir", str(state))
    assert d.proc.wait(60) == 0, d.log()
    doc = cli_json("checkpoint", "show", "--state-dir", str(state), "--config", str(cfg))
    expected: dict[str, int] = {}
    for _, reason in BAD_LINES:
        expected[reason] = expected.get(reason, 0) + 1
    expected["too_long"] += 1
    assert doc["totals"]["skipped"] == expected
    assert doc["totals"]["events"] == len(BAD_LINES) + 1
    pats = {tuple(p["key"].values()): p["count"] for p in doc["patterns"]}
    assert pats[("7",)] == 2 and pats[(None,)] >= 1 and pats[("null",)] >= 1 and pats[("z",)] == 1
    st = _status(state, cfg)
    assert st["lines_skipped_total"] == sum(expected.values())
    assert st["files"][0]["offset"] == f.stat().st_size


def test_second_instance_exits_3_and_names_the_holder(tmp_path: Path, daemons) -> None:
    cfg = write_config(tmp_path, KEY_CONFIG)
    (tmp_path / "a.jsonl").write_text('{"k": "a"}\n')
    args = ("--config", str(cfg), "--path", str(tmp_path / "*.jsonl"), "--state-dir", str(tmp_path / "state"))
    first = daemons(*args)
    first.wait_ready()
    before = sorted(os.listdir(tmp_path / "state"))
    second = daemons(*args)
    assert second.proc.wait(20) == 3
    assert str(first.proc.pid) in second.log()
    assert sorted(os.listdir(tmp_path / "state")) == before
    assert first.proc.poll() is None
    assert first.stop() == 0


def test_corrupt_snapshot_is_moved_aside_and_previous_generation_used(tmp_path: Path, daemons) -> None:
    cfg = write_config(tmp_path, KEY_CONFIG.replace("[checkpoint]\n", "[checkpoint]\ncompact_bytes = 4096\n"))
    state, f = tmp_path / "state", tmp_path / "a.jsonl"
    f.write_bytes(b"".join(b'{"k": "k%d"}\n' % (i % 300) for i in range(3000)))
    args = ("--config", str(cfg), "--path", str(f), "--state-dir", str(state))
    # Several runs over growing data make several generations (journals past compact_bytes are compacted).
    for round_ in range(4):
        with f.open("ab") as fh:
            fh.write(b"".join(b'{"k": "k%d"}\n' % (i % 300 + round_) for i in range(2000)))
        d = daemons("--once", *args)
        assert d.proc.wait(60) == 0, d.log()
    snaps = sorted(p for p in os.listdir(state) if p.startswith("snapshot."))
    assert snaps, os.listdir(state)
    newest = state / snaps[-1]
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    r = cli("checkpoint", "verify", "--state-dir", str(state), "--config", str(cfg), check=False)
    assert r.returncode == 1 and "checksum" in r.stdout
    d = daemons("--once", *args)
    assert d.proc.wait(60) == 0, d.log()
    rec = next(e for e in d.events() if e.get("event") == "recovered")
    assert rec["outcome"] == "quarantined" and rec["quarantined"]
    assert any(p.endswith(".corrupt") for p in os.listdir(state))
    total = len(f.read_bytes().splitlines())
    assert _status(state, cfg)["events_total"] == total
    assert cli("checkpoint", "verify", "--state-dir", str(state), "--config", str(cfg)).returncode == 0


def test_changed_key_fields_archive_old_counts_and_keep_offsets(tmp_path: Path, daemons) -> None:
    cfg = write_config(tmp_path, KEY_CONFIG)
    state, f = tmp_path / "state", tmp_path / "a.jsonl"
    f.write_text('{"k": "a", "j": "x"}\n{"k": "b", "j": "x"}\n')
    args = ("--config", str(cfg), "--path", str(f), "--state-dir", str(state))
    assert daemons("--once", *args).proc.wait(60) == 0
    cfg.write_text(KEY_CONFIG.replace('key_fields = ["k"]', 'key_fields = ["j"]'))
    with f.open("a") as fh:
        fh.write('{"k": "c", "j": "y"}\n')
    d = daemons("--once", *args)
    assert d.proc.wait(60) == 0, d.log()
    assert any(e.get("event") == "pattern_settings_changed" for e in d.events())
    archives = [p for p in os.listdir(state) if p.startswith("archive-")]
    assert len(archives) == 1
    old = json.loads((state / archives[0]).read_text())
    assert sorted((p["key"]["k"], p["count"]) for p in old["patterns"]) == [("a", 1), ("b", 1)]
    doc = cli_json("patterns", "--state-dir", str(state), "--config", str(cfg))
    # Offsets were kept: only the new line is counted under the new settings.
    assert [(p["key"], p["count"]) for p in doc["patterns"]] == [({"j": "y"}, 1)]


def test_bad_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, '[checkpoint]\nevery_events = "many"\n')
    r = cli("run", "--config", str(cfg), "--path", "x", check=False)
    assert r.returncode == 2 and "checkpoint.every_events" in r.stderr
    r = cli("check-config", "--config", str(cfg), check=False)
    assert r.returncode == 2 and "checkpoint.every_events" in r.stderr and "int" in r.stderr


def test_metrics_port_in_use_is_a_clear_start_error(tmp_path: Path, daemons) -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    port = s.getsockname()[1]
    try:
        d = daemons(
            "--path",
            str(tmp_path / "*.jsonl"),
            "--state-dir",
            str(tmp_path / "st"),
            "--metrics-listen",
            f"127.0.0.1:{port}",
        )
        assert d.proc.wait(20) == 1
        assert "metrics_listen_failed" in d.log() and str(port) in d.log()
    finally:
        s.close()
