"""Change notification: watchfiles (inotify) in a thread wakes the main loop; polling is the fallback."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

# The class behind watchfiles.watch(): its watch() takes the step per call, which watch() does not
# offer. watchfiles is pinned to a major version in pyproject.toml for it.
from watchfiles._rust_notify import RustNotify

from .wakeup import Wakeup

# Low debounce: the library's 1.6 s default would put seconds between a write and its count.
DEBOUNCE_MS = 10
# The notify thread sleeps `step` between looks and takes the GIL at each. Busy (a change in the last
# BUSY_SECONDS): 2 ms, so a steady stream is counted within milliseconds. Idle: 20 ms, 50 wake-ups a
# second instead of 500, for the first line after a quiet spell at most 20 ms more.
STEP_BUSY_MS = 2
STEP_IDLE_MS = 20
BUSY_SECONDS = 2.0
POLL_DELAY_MS = 300


class Watcher:
    """Collects changed paths and sets `wake`. The main loop decides what to read; this only signals."""

    def __init__(
        self, roots: Sequence[tuple[str, bool]], wake: Wakeup, log: Any, force_polling: bool = False
    ) -> None:
        self.roots = list(roots)
        self.wake = wake
        self.log = log
        self.failed = False
        self._lock = threading.Lock()
        self._changed: set[str] = set()
        self._stop = threading.Event()
        self._force_polling = force_polling
        self._thread = threading.Thread(target=self._run, name="watcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        paths = [r for r, _ in self.roots]
        recursive = any(rec for _, rec in self.roots)
        try:
            with RustNotify(paths, False, self._force_polling, POLL_DELAY_MS, recursive, True) as notify:
                last_change = 0.0
                while True:
                    busy = time.monotonic() - last_change < BUSY_SECONDS
                    step = STEP_BUSY_MS if busy else STEP_IDLE_MS
                    raw = notify.watch(DEBOUNCE_MS, step, 1000, self._stop)
                    if raw == "stop":
                        return
                    if isinstance(raw, str):  # "timeout"; "signal" is never seen off the main thread
                        continue
                    last_change = time.monotonic()
                    with self._lock:
                        self._changed.update(p for _, p in raw)
                    self.wake.set()
        except Exception as e:  # the daemon keeps going on rescans and polling
            self.failed = True
            self.log.warning("watcher_failed", error=str(e), roots=paths)
            self.wake.set()

    def drain(self) -> set[str]:
        with self._lock:
            changed, self._changed = self._changed, set()
        return changed

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
