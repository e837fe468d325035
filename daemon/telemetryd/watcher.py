"""Change notification: watchfiles (inotify) in a thread wakes the main loop; polling is the fallback."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import watchfiles

from .wakeup import Wakeup

# Low debounce: the library's 1.6 s default would put seconds between a write and its count.
DEBOUNCE_MS = 10
STEP_MS = 5


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
            for changes in watchfiles.watch(
                *paths,
                watch_filter=None,
                debounce=DEBOUNCE_MS,
                step=STEP_MS,
                stop_event=self._stop,
                rust_timeout=1000,
                yield_on_timeout=False,
                raise_interrupt=False,
                recursive=recursive,
                force_polling=self._force_polling,
                ignore_permission_denied=True,
            ):
                with self._lock:
                    self._changed.update(p for _, p in changes)
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
