"""systemd notify protocol (placeholder: the full implementation lands with the systemd work)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Mapping

try:
    from systemd import daemon as _sd
except ImportError:  # pragma: no cover - systemd-python is a hard dependency; tolerate odd installs
    _sd = None


class Notifier:
    def __init__(
        self, environ: Mapping[str, str] | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        env = os.environ if environ is None else environ
        self.enabled = bool(env.get("NOTIFY_SOCKET")) and _sd is not None
        self._clock = clock
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        self.watchdog_interval: float | None = None
        if self.enabled and usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 2e6
        self._last_ping = clock()

    def _send(self, msg: str) -> None:
        if self.enabled and _sd is not None:
            with contextlib.suppress(OSError):
                _sd.notify(msg)

    def ready(self, status: str | None = None) -> None:
        self._send("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def status(self, text: str) -> None:
        self._send(f"STATUS={text}")

    def tick(self) -> None:
        if self.watchdog_interval is None:
            return
        now = self._clock()
        if now - self._last_ping >= self.watchdog_interval:
            self._last_ping = now
            self._send("WATCHDOG=1")

    def next_deadline(self) -> float | None:
        if self.watchdog_interval is None:
            return None
        return self._last_ping + self.watchdog_interval

    def reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def extend_timeout(self, seconds: float) -> None:
        self._send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}")
