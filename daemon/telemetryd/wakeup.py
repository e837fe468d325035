"""The main loop's wake-up: a self-pipe, because signal handlers must be able to set it.

threading.Event.set() takes a lock; a signal handler that runs while the main thread holds that lock
(inside wait() or clear()) waits for itself forever. Writing a byte to a non-blocking pipe takes none.
"""

from __future__ import annotations

import contextlib
import os
import select


class Wakeup:
    def __init__(self) -> None:
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def set(self) -> None:
        # A full pipe already means "wake up": nothing is lost by dropping the byte.
        with contextlib.suppress(BlockingIOError):
            os.write(self._w, b"\0")

    def wait(self, timeout: float) -> bool:
        return bool(select.select([self._r], [], [], timeout)[0])

    def clear(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._r, 4096):
                pass

    def close(self) -> None:
        os.close(self._r)
        os.close(self._w)
