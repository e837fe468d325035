"""The CI-sized chaos round: bench/chaos.py with live rotating writers and the real daemon killed 20 times."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

CHAOS = str(Path(__file__).parent.parent / "bench" / "chaos.py")


def test_chaos_round_rename_rotation_is_exact(tmp_path: Path) -> None:
    r = subprocess.run(
        [
            sys.executable,
            CHAOS,
            "--kills",
            "20",
            "--writers",
            "2",
            "--rate",
            "800",
            "--rotate",
            "rename,copytruncate",
            "--seed",
            "11",
            "--workdir",
            str(tmp_path / "round"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    summary = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
    m = re.fullmatch(r"kills=(\d+) events=(\d+) lost=(\d+) duplicated=(\d+)", summary)
    assert m, f"no summary line\n{r.stdout}\n{r.stderr}"
    kills, events, lost, dup = map(int, m.groups())
    assert (lost, dup) == (0, 0), r.stderr
    assert r.returncode == 0, r.stderr
    assert kills == 20 and events > 1000, summary
    # The writers did rotate during the round: rotated files are there.
    assert any(p.name.endswith((".1", ".2")) for p in (tmp_path / "round" / "data").iterdir()), r.stderr


def test_chaos_exits_nonzero_when_counts_differ(tmp_path: Path) -> None:
    """The harness itself can fail: a state dir with counts that do not match the files is reported."""
    r = subprocess.run(
        [
            sys.executable,
            CHAOS,
            "--kills",
            "1",
            "--writers",
            "1",
            "--rate",
            "200",
            "--rotate",
            "none",
            "--workdir",
            str(tmp_path / "round"),
            "--inject-loss",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1, r.stdout + r.stderr
    assert re.search(r"kills=1 events=\d+ lost=5 duplicated=0$", r.stdout.strip()), r.stdout + r.stderr
