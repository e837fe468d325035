"""`pip install .` without libsystemd's headers: systemd-python is an extra, and the daemon still speaks
sd_notify (a real $NOTIFY_SOCKET here) and says what it lost (README.md, "Without libsystemd")."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

from notify_listener import NotifyListener

ROOT = Path(__file__).resolve().parent.parent
TELEMETRYD = Path(sys.executable).parent / "telemetryd"


def test_systemd_python_is_an_extra_not_a_requirement() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any(d.startswith("systemd-python") for d in project["dependencies"])
    assert any(d.startswith("systemd-python") for d in project["optional-dependencies"]["systemd"])
    # The Makefile's own venv and `make install` take the extra, so the tests and a service get it.
    assert ".[dev,systemd]" in (ROOT / "Makefile").read_text()
    assert ".[systemd]" in (ROOT / "mk" / "install.mk").read_text()


def test_the_daemon_notifies_without_systemd_python(tmp_path: Path) -> None:
    """What a `pip install .` without the systemd extra runs: the module cannot be imported at all."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text("import sys\nsys.modules['systemd'] = None\n")
    (tmp_path / "a.jsonl").write_text('{"event_type": "a"}\n')
    sock = NotifyListener.bind()
    env = {
        k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "WATCHDOG_PID", "WATCHDOG_USEC")
    }
    env.update(NOTIFY_SOCKET=str(sock.path), PYTHONPATH=str(hook))
    log = tmp_path / "daemon.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(TELEMETRYD), "run", "--path", str(tmp_path / "*.jsonl"), "--state-dir", str(tmp_path / "st"),
             "--metrics-listen", "", "--config", str(_journal_config(tmp_path))],
            env=env, stdout=out, stderr=out,
        )  # fmt: skip
    try:
        _, ready = sock.wait_key("READY", 30)
        assert ready.pid == proc.pid
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        _, stopping = sock.wait_key("STOPPING", 5)
        assert stopping.pid == proc.pid
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()
    text = log.read_text()
    # Asked for the journal, it says what it uses instead and how to get the journal back.
    assert "journal_logging_unavailable" in text and "telemetryd[systemd]" in text, text


def _journal_config(tmp: Path) -> Path:
    p = tmp / "journal.toml"
    p.write_text('[log]\nformat = "journal"\n')
    return p
