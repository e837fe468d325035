"""The console script's entry: SIGTERM / SIGINT are caught before anything slow is imported.

Importing the daemon (prometheus_client, structlog, watchfiles, msgspec) takes a few hundred
milliseconds; a SIGTERM in that time used to kill the process with the default action (exit 143), so a
`systemctl stop` right after a start looked like a failure. Here a stop request is only noted; the
daemon installs its own handlers later and honours a request noted before them (Daemon.run).
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

_requested: list[int] = []


def _note(signum: int, frame: FrameType | None) -> None:
    _requested.append(signum)


def stop_requested() -> bool:
    """A SIGTERM or SIGINT arrived before the daemon's own handlers were installed."""
    return bool(_requested)


def main() -> None:
    signal.signal(signal.SIGTERM, _note)
    signal.signal(signal.SIGINT, _note)
    from .cli import main as cli_main

    raise SystemExit(cli_main(sys.argv[1:]))
