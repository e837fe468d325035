"""Journal logging through systemd-python, received on a real datagram socket at journald's own path."""

from __future__ import annotations

import os
import socket
import struct
from pathlib import Path

import pytest
from conftest import KEY_CONFIG, write_config

JOURNAL_SOCKET = "/run/systemd/journal/socket"


def _parse(dgram: bytes) -> dict[str, str]:
    """journald's native protocol: KEY=value lines, or KEY\\n<u64 le length>value\\n for binary values."""
    fields: dict[str, str] = {}
    i = 0
    while i < len(dgram):
        nl = dgram.index(b"\n", i)
        line = dgram[i:nl]
        if b"=" in line:
            k, v = line.split(b"=", 1)
            i = nl + 1
        else:
            (n,) = struct.unpack_from("<Q", dgram, nl + 1)
            k, v = line, dgram[nl + 9 : nl + 9 + n]
            i = nl + 9 + n + 1
        fields[k.decode()] = v.decode(errors="replace")
    return fields


@pytest.fixture
def journal() -> socket.socket:
    if os.path.exists(JOURNAL_SOCKET):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            probe.connect(JOURNAL_SOCKET)
        except ConnectionRefusedError:
            os.unlink(JOURNAL_SOCKET)  # left behind by an interrupted run of this test
        finally:
            probe.close()
    if os.path.exists(JOURNAL_SOCKET):
        pytest.fail(f"{JOURNAL_SOCKET} exists: a journald runs here; this test needs the path for itself")
    os.makedirs(os.path.dirname(JOURNAL_SOCKET), exist_ok=True)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(JOURNAL_SOCKET)
    s.settimeout(0.2)
    yield s
    s.close()
    os.unlink(JOURNAL_SOCKET)


@pytest.mark.parametrize("how", ["config", "journal_stream"])
def test_structured_fields_reach_the_journal(
    tmp_path: Path, daemons, journal: socket.socket, how: str
) -> None:
    text = KEY_CONFIG + ('[log]\nformat = "journal"\n' if how == "config" else "")
    cfg = write_config(tmp_path, text)
    (tmp_path / "a.jsonl").write_text('{"k": "a"}\n')
    # Under systemd, JOURNAL_STREAM is set and format "auto" must choose the journal.
    env = {"JOURNAL_STREAM": "8:12345"} if how == "journal_stream" else {}
    d = daemons(
        "--once",
        "--config",
        str(cfg),
        "--path",
        str(tmp_path / "*.jsonl"),
        "--state-dir",
        str(tmp_path / "st"),
        env=env,
    )
    assert d.proc.wait(30) == 0, d.log()
    entries = []
    while True:
        try:
            entries.append(_parse(journal.recv(1 << 20)))
        except TimeoutError:
            break
    by_event = {e.get("EVENT"): e for e in entries}
    assert {"starting", "recovered", "file_opened", "ready", "stopped"} <= set(by_event), entries
    opened = by_event["file_opened"]
    assert opened["MESSAGE"] == "file_opened" and opened["PRIORITY"] == "6"
    assert opened["PATH"] == str(tmp_path / "a.jsonl") and opened["SYSLOG_IDENTIFIER"] == "telemetryd"
    assert by_event["stopped"]["EVENTS_TOTAL"] == "1"
    # Nothing printed as text: the journal got the structured entries instead.
    assert '"event"' not in d.log()
