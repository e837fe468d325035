"""The front door: README.md's quick start, run in a fresh clone of HEAD as CI would, and what it prints.

Only committed files are cloned, so a file the demo needs but that was never added fails here. The
venv install dominates the run time; pip's cache (~/.cache/pip) makes it a local copy after the first.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from conftest import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def quick_start_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"^## Quick start\n.*?```sh\n(.*?)```", text, re.M | re.S)
    assert m, "README.md has no ```sh block under '## Quick start'"
    return [
        line.split("#", 1)[0].strip() for line in m.group(1).splitlines() if line.split("#", 1)[0].strip()
    ]


def test_the_readme_quick_start_in_a_fresh_clone(tmp_path: Path) -> None:
    commands = quick_start_commands()
    assert commands[0] == "make demo", commands
    clone = tmp_path / "clone"
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    )
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "checkout", "-q", head.stdout.strip()], check=True)
    env = {
        k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "VIRTUAL_ENV")
    }
    port = free_port()
    env.update(DEMO_SECONDS="4", DEMO_LISTEN=f"127.0.0.1:{port}")
    outputs: dict[str, str] = {}
    try:
        for cmd in commands:
            if cmd == "make test":
                continue  # that is the suite running this test
            r = subprocess.run(
                shlex.split(cmd), cwd=clone, env=env, capture_output=True, text=True, timeout=600, check=False
            )
            assert r.returncode == 0, f"{cmd} -> {r.returncode}\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
            outputs[cmd] = r.stdout
    finally:
        subprocess.run(["make", "demo-stop"], cwd=clone, env=env, capture_output=True, check=False)
    out = outputs["make demo"]
    # Progress at each step, from the install on.
    assert "== installing telemetryd" in out and "== installed" in out
    steps = re.findall(r"^\[demo +([\d.]+)s\] (\[\d/4\])?", out, re.M)
    assert [s for _, s in steps if s] == ["[1/4]", "[2/4]", "[3/4]", "[4/4]"], out
    # The view: status with the running daemon, the pattern table, a metrics excerpt.
    assert re.search(r"^daemon: +running \(pid \d+\)$", out, re.M), out
    assert re.search(r"^checkpoint: \S+Z, [\d.]+ s ago", out, re.M), out
    assert re.search(r"^COUNT +LAST_SEEN +ID +EVENT_TYPE +SERVICE +LEVEL +EXAMPLE +TEMPLATE$", out, re.M), out
    assert "<*>" in out
    totals = [float(v) for v in re.findall(r"^  telemetryd_events_total (\S+)$", out, re.M)]
    # Shown at least twice in the bounded run, and the live writer's events arrived in between.
    assert len(totals) >= 2 and totals[-1] > totals[0] >= 20000, totals
    assert f"http://127.0.0.1:{port}/metrics" in out
    # Bounded: it stopped what it started, and said so.
    assert "stopped the demo daemon" in out and not (clone / "demo" / "pids.json").exists()
    status = subprocess.run(
        [
            str(clone / ".venv/bin/telemetryd"),
            "status",
            "--json",
            "--config",
            str(clone / "demo/telemetryd.toml"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    doc = json.loads(status.stdout)
    assert doc["daemon"]["running"] is False and doc["events_total"] >= totals[0]
