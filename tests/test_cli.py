"""The CLI as an operator meets it: the real console script, real files, a real daemon process."""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import pytest
from conftest import Daemon, cli, cli_json, wait_for, write_config
from telemetryd.cli import _parser
from telemetryd.config import Config, iter_keys

FLOAT_KEYS = [k for k, t in iter_keys() if t is float]
ENUM_KEYS = [(k, typing.get_args(t)) for k, t in iter_keys() if typing.get_origin(t) is Literal]

CONFIG = (
    '[patterns]\nkey_fields = ["kind", "service"]\ntemplate_field = "message"\n'
    '[checkpoint]\nevery_events = 50\nevery_seconds = 0.2\n[metrics]\nlisten = ""\n'
)


def _toml(key: str, value: str) -> str:
    table, name = key.split(".")
    return f"[{table}]\n{name} = {value}\n"


# --- config input that used to get through (issue 14) ------------------------------------------------


def test_huge_max_line_bytes_is_a_config_error_not_a_memory_error(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, "[sources]\nmax_line_bytes = 99999999999999999\n")
    r = cli("check-config", "--config", str(cfg), check=False)
    assert r.returncode == 2, r.stdout + r.stderr
    assert str(cfg) in r.stderr and "key sources.max_line_bytes" in r.stderr
    (tmp_path / "a.jsonl").write_text('{"event_type": "a"}\n')
    r = cli(
        "run", "--once", "--config", str(cfg), "--path", str(tmp_path / "*.jsonl"),
        "--state-dir", str(tmp_path / "st"), "--metrics-listen", "", check=False,
    )  # fmt: skip
    assert r.returncode == 2 and "key sources.max_line_bytes" in r.stderr, r.stderr
    assert "MemoryError" not in r.stderr


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("key", FLOAT_KEYS)
def test_every_float_key_rejects_non_finite_values(tmp_path: Path, key: str, value: str) -> None:
    cfg = write_config(tmp_path, _toml(key, value))
    r = cli("check-config", "--config", str(cfg), check=False)
    assert r.returncode == 2, f"{key} = {value} accepted:\n{r.stdout}"
    assert f"key {key}" in r.stderr and str(cfg) in r.stderr


def test_float_keys_cover_the_timers() -> None:
    # The walk above must see the keys the issue names, or the parametrization proves nothing.
    assert {"checkpoint.every_seconds", "sources.poll_seconds", "sources.rescan_seconds"} <= set(FLOAT_KEYS)


def test_a_config_that_is_not_utf8_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "latin1.toml"
    cfg.write_bytes('# réglages\n[log]\nlevel = "info"\n'.encode("latin-1"))
    for args in (("check-config",), ("status", "--state-dir", str(tmp_path))):
        r = cli(*args, "--config", str(cfg), check=False)
        assert r.returncode == 2, r.stderr
        assert str(cfg) in r.stderr and "not UTF-8" in r.stderr and "line 1" in r.stderr
        assert "Traceback" not in r.stderr


@pytest.mark.parametrize(("key", "allowed"), ENUM_KEYS)
def test_enum_errors_list_the_allowed_values(tmp_path: Path, key: str, allowed: tuple[str, ...]) -> None:
    cfg = write_config(tmp_path, _toml(key, '"middle"'))
    r = cli("check-config", "--config", str(cfg), check=False)
    assert r.returncode == 2
    assert f"key {key}" in r.stderr
    for v in allowed:
        assert f'"{v}"' in r.stderr, r.stderr


def test_enum_keys_are_found() -> None:
    assert {"sources.start_at", "sources.watch", "log.format", "log.level"} <= {k for k, _ in ENUM_KEYS}


# --- options and help ---------------------------------------------------------------------------------


@pytest.mark.parametrize("top", ["-1", "0", "x"])
def test_patterns_top_must_be_at_least_one(tmp_path: Path, top: str) -> None:
    r = cli("patterns", "--top", top, "--state-dir", str(tmp_path), check=False)
    assert r.returncode == 2 and "--top" in r.stderr, r.stderr


def _subparsers(p: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    out = [("telemetryd", p)]
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sp in a.choices.items():
                out += [(f"{n} {name}" if n != "telemetryd" else name, q) for n, q in _subparsers(sp)]
    return out


def test_every_option_has_help_text() -> None:
    missing = [
        f"{cmd}: {a.option_strings or a.dest}"
        for cmd, p in _subparsers(_parser())
        for a in p._actions
        if not isinstance(a, argparse._SubParsersAction) and not (a.help and a.help.strip())
    ]
    assert not missing, f"options without help text: {missing}"


def test_help_lists_commands_exit_codes_and_default_paths() -> None:
    out = cli("--help").stdout
    for cmd in ("run", "status", "patterns", "extract", "checkpoint", "check-config"):
        assert re.search(rf"^\s+{cmd}\s+\S", out, re.M), f"command {cmd} not listed"
    for code in ("0", "1", "2", "3"):
        assert re.search(rf"^\s+{code}\s+\S", out, re.M), f"exit code {code} not explained"
    assert Config().checkpoint.state_dir in out
    assert "/etc/telemetryd/telemetryd.toml" in out


@pytest.fixture
def counted(tmp_path: Path) -> tuple[Path, Path]:
    """A state dir holding a checkpoint of known lines (one without the `service` key field)."""
    cfg = write_config(tmp_path, CONFIG)
    src = tmp_path / "a.jsonl"
    lines = [
        {"kind": "login", "service": "api", "message": f"user {i} logged in from 10.0.0.{i}"}
        for i in range(30)
    ]
    lines += [{"kind": "crash", "message": "worker " + "x" * 200 + " died"}]
    src.write_text("".join(json.dumps(x) + "\n" for x in lines))
    state = tmp_path / "state"
    r = cli("run", "--once", "--config", str(cfg), "--path", str(src), "--state-dir", str(state), check=False)
    assert r.returncode == 0, r.stderr
    return cfg, state


@pytest.mark.parametrize(
    "order",
    [
        lambda c, s, cmd: ["--config", c, "--state-dir", s, *cmd],
        lambda c, s, cmd: [*cmd, "--config", c, "--state-dir", s],
        lambda c, s, cmd: ["--state-dir", s, *cmd, "--config", c],
        lambda c, s, cmd: [cmd[0], "--state-dir", s, *cmd[1:], "--config", c],
    ],
    ids=["before", "after", "split", "between"],
)
@pytest.mark.parametrize("cmd", [["status"], ["patterns"], ["checkpoint", "verify"], ["checkpoint", "show"]])
def test_global_options_before_or_after_the_command(
    counted: tuple[Path, Path], order: Callable[..., list[str]], cmd: list[str]
) -> None:
    cfg, state = counted
    doc = cli_json(*order(str(cfg), str(state), cmd))
    assert doc["events_total" if cmd[0] in ("status", "patterns") else "generation"] is not None
    if cmd[0] == "patterns":
        # The config was applied too: its key fields name the columns.
        assert set(doc["patterns"][0]["key"]) == {"kind", "service"}
    if cmd == ["checkpoint", "verify"]:
        assert doc["ok"] and doc["events_total"] == 31


def test_a_later_option_wins_and_an_unset_one_does_not_reset(
    counted: tuple[Path, Path], tmp_path: Path
) -> None:
    cfg, state = counted
    # --state-dir given before the command must survive the subcommand's own (unset) option.
    assert cli_json("--state-dir", str(state), "status", "--config", str(cfg))["events_total"] == 31
    r = cli("--state-dir", str(state), "status", "--state-dir", str(tmp_path / "nowhere"), check=False)
    assert r.returncode == 1 and "nowhere" in r.stderr


# --- what the commands print ----------------------------------------------------------------------------


def test_patterns_table_has_a_header_aligned_columns_and_dashes(counted: tuple[Path, Path]) -> None:
    cfg, state = counted
    out = cli("patterns", "--config", str(cfg), "--state-dir", str(state)).stdout.splitlines()
    header, rows = out[1], out[2:]
    assert header.split() == ["COUNT", "LAST_SEEN", "ID", "KIND", "SERVICE", "EXAMPLE", "TEMPLATE"]
    assert len(rows) == 2
    # Every column starts where its header starts (COUNT is right-aligned under its header's end).
    for name in ("LAST_SEEN", "ID", "KIND", "SERVICE", "EXAMPLE", "TEMPLATE"):
        col = header.index(name)
        for row in rows:
            assert row[col - 2 : col] == "  " and row[col] != " ", (name, row)
    login, crash = rows
    assert login.split()[0] == "30" and crash.split()[0] == "1"
    assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", login)
    assert crash.split()[3:5] == ["crash", "-"] and "None" not in crash
    example = crash[header.index("EXAMPLE") : header.index("TEMPLATE")].strip()
    assert example.startswith("worker xxx") and example.endswith("…") and len(example) <= 40
    assert "<*>" in login[header.index("TEMPLATE") :]


def test_patterns_json_keeps_the_whole_example_and_null(counted: tuple[Path, Path]) -> None:
    cfg, state = counted
    doc = cli_json("patterns", "--config", str(cfg), "--state-dir", str(state), "--top", "1")
    assert len(doc["patterns"]) == 1 and doc["patterns"][0]["count"] == 30
    crash = cli_json("patterns", "--config", str(cfg), "--state-dir", str(state))["patterns"][1]
    assert crash["key"] == {"kind": "crash", "service": None} and len(crash["example"]) > 200


def test_extract_prints_a_dash_for_a_missing_key_field(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, CONFIG)
    r = cli("extract", "-", "--config", str(cfg), input=b'{"kind": "a", "message": "took 5 ms"}\n')
    cols = r.stdout.rstrip("\n").split("\t")
    assert cols[0] == "1" and cols[2] == "kind=a service=-" and "None" not in r.stdout


def test_checkpoint_show_names_every_field(counted: tuple[Path, Path]) -> None:
    cfg, state = counted
    doc = cli_json("checkpoint", "show", "--config", str(cfg), "--state-dir", str(state))
    assert doc["totals"]["events"] == 31 and isinstance(doc["totals"]["skipped"], dict)
    (f,) = doc["files"]
    assert f["path"].endswith("a.jsonl") and f["offset"] > 0 and isinstance(f["ino"], int)
    top = doc["patterns"][0]
    assert top["count"] == 30 and top["key"] == {"kind": "login", "service": "api"}
    assert isinstance(top["first_seen"], float) and top["example"].startswith("user ")

    def no_struct_arrays(v: Any, where: str) -> None:
        # Lists may hold objects or strings (key_fields, notes), never a struct flattened to a row.
        if isinstance(v, dict):
            for k, x in v.items():
                no_struct_arrays(x, f"{where}.{k}")
        elif isinstance(v, list):
            assert all(not isinstance(x, list) for x in v), where
            for x in v:
                no_struct_arrays(x, where + "[]")

    no_struct_arrays(doc, "$")
    # The default output is the same document, indented for people.
    text = cli("checkpoint", "show", "--config", str(cfg), "--state-dir", str(state)).stdout
    assert json.loads(text) == doc and "\n  " in text


def test_status_shows_the_checkpoint_age_and_the_running_daemon(
    tmp_path: Path, daemons: Callable[..., Daemon]
) -> None:
    cfg = write_config(tmp_path, CONFIG)
    src, state = tmp_path / "a.jsonl", tmp_path / "state"
    src.write_text('{"kind": "a", "message": "hello"}\n')
    d = daemons("--config", str(cfg), "--path", str(src), "--state-dir", str(state))
    d.wait_ready()
    doc = wait_for(
        lambda: (
            (s := cli_json("status", "--config", str(cfg), "--state-dir", str(state)))["events_total"] and s
        ),
        what="first checkpoint",
    )
    assert doc["daemon"] == {"running": True, "pid": d.proc.pid}
    assert 0 <= doc["checkpoint_age_seconds"] < 60
    text = cli("status", "--config", str(cfg), "--state-dir", str(state)).stdout
    assert f"daemon:     running (pid {d.proc.pid})" in text
    assert re.search(r"checkpoint: \S+Z, [\d.]+ s ago", text), text
    assert re.search(r"^\s+OFFSET\s+SIZE\s+LAG_BYTES\s+PATH$", text, re.M), text
    assert d.stop() == 0
    doc = cli_json("status", "--config", str(cfg), "--state-dir", str(state))
    assert doc["daemon"] == {"running": False, "pid": d.proc.pid}
    assert "not running" in cli("status", "--config", str(cfg), "--state-dir", str(state)).stdout


def test_status_reads_the_holder_from_the_kernel_lock_table(tmp_path: Path) -> None:
    # Any process holding the flock counts, whatever pid the file says: the file can be stale.
    cfg = write_config(tmp_path, CONFIG)
    state = tmp_path / "state"
    state.mkdir()
    (state / "lock").write_text("4242\n")
    assert cli_json("status", "--config", str(cfg), "--state-dir", str(state))["daemon"] == {
        "running": False,
        "pid": 4242,
    }
    fd = os.open(state / "lock", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        doc = cli_json("status", "--config", str(cfg), "--state-dir", str(state))
        assert doc["daemon"] == {"running": True, "pid": os.getpid()}
    finally:
        os.close(fd)


@pytest.mark.parametrize("cmd", [["status"], ["patterns"], ["checkpoint", "verify"], ["checkpoint", "show"]])
def test_an_unreadable_journal_is_one_line_not_a_traceback(
    counted: tuple[Path, Path], cmd: list[str]
) -> None:
    cfg, state = counted
    (journal,) = state.glob("journal.*")
    journal.unlink()
    journal.mkdir()
    r = cli(*cmd, "--config", str(cfg), "--state-dir", str(state), check=False)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("telemetryd: ") and journal.name in r.stderr
