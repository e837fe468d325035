"""Service-manager notifications (sd_notify(3)) for telemetryd.

The daemon's main loop owns the one :class:`Notifier` and calls it from the loop itself: the watchdog
ping has to prove that the loop is making progress, so it must never come from a helper thread that
would keep pinging while the loop is stuck.

Everything here is best effort: a notification that cannot be delivered is logged and forgotten,
because a daemon that dies for want of a status line would be worse than one without it.

Where the messages go: sd_notify reads ``$NOTIFY_SOCKET`` from the process environment itself, so
``enabled`` follows the process environment too. The ``environ``
argument of :class:`Notifier` is only where ``WATCHDOG_USEC``/``WATCHDOG_PID`` are read from (tests
pass their own); it cannot redirect the messages.

Two senders, one protocol: ``systemd.daemon.notify`` from systemd-python when it is installed (the
``systemd`` extra), else ``datagram_notify`` below. systemd-python needs libsystemd's headers to
build, and sd_notify is only a datagram on a unix socket, so a machine without them still gets
READY/STATUS/WATCHDOG/STOPPING (README.md, "Without libsystemd").
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog

__all__ = ["BACKEND", "Notifier", "datagram_notify", "format_status"]

_log: Any = structlog.get_logger(__name__)

# How often maybe_status() refreshes STATUS=; `systemctl status` is read by people, not scrapers.
DEFAULT_STATUS_EVERY = 5.0
_EINTR_RETRIES = 10


def datagram_notify(message: str) -> None:
    """sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET (a path, or @name: abstract).

    Blocks while the manager's queue is full, as sd_notify does; Python retries a send that a signal
    interrupts (PEP 475). Errors are raised for Notifier._send to log.
    """
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        # vsock: addresses (VMs) need libsystemd; say so rather than send nowhere.
        raise OSError(f"unsupported NOTIFY_SOCKET {address!r} (install the systemd extra)")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        s.sendto(message.encode(), address)


_notify: Callable[[str], Any]
try:
    from systemd import daemon as _sd_daemon
except ImportError:
    BACKEND = "datagram"
    _notify = datagram_notify
else:
    BACKEND = "systemd-python"
    _notify = _sd_daemon.notify


def _monotonic_usec() -> int:
    # systemd compares MONOTONIC_USEC with its own CLOCK_MONOTONIC, so this must be the real clock,
    # never the injectable one used for the watchdog schedule.
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def _one_line(text: str) -> str:
    # A newline would end the STATUS= assignment and let the rest be read as another one
    # (e.g. a file name containing "\nREADY=1"), so the text is flattened.
    return " ".join(text.split())


def _watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """Seconds between pings (half of WATCHDOG_USEC), as sd_watchdog_enabled(3) decides it."""
    raw_usec = environ.get("WATCHDOG_USEC")
    if raw_usec is None:
        return None
    try:
        usec = int(raw_usec)
    except ValueError:
        _log.warning("notify_watchdog_usec_invalid", value=raw_usec)
        return None
    if usec <= 0:
        _log.warning("notify_watchdog_usec_invalid", value=raw_usec)
        return None
    raw_pid = environ.get("WATCHDOG_PID")
    if raw_pid is not None:
        try:
            pid = int(raw_pid)
        except ValueError:
            _log.warning("notify_watchdog_pid_invalid", value=raw_pid)
            return None
        if pid != os.getpid():
            # The variables were inherited from a parent that the manager is watching, not us.
            return None
    return usec / 1_000_000 / 2


def format_status(
    files: int,
    events_per_second: float,
    checkpoint_lag_events: int,
    checkpoint_lag_bytes: int | None = None,
) -> str:
    """The one-line STATUS= summary shown by `systemctl status telemetryd`."""
    text = f"{files} files, {events_per_second:.0f} events/s, checkpoint lag {checkpoint_lag_events} events"
    if checkpoint_lag_bytes is not None:
        text += f" / {checkpoint_lag_bytes} bytes"
    return text


class Notifier:
    """sd_notify client for the daemon loop; every method is a cheap no-op without $NOTIFY_SOCKET."""

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        status_every: float = DEFAULT_STATUS_EVERY,
    ) -> None:
        self._clock = clock
        self._status_every = status_every
        self.enabled: bool = bool(os.environ.get("NOTIFY_SOCKET"))
        watchdog_env = os.environ if environ is None else environ
        self.watchdog_interval: float | None = _watchdog_interval(watchdog_env) if self.enabled else None
        self._last_ping: float | None = None
        self._last_status_at: float | None = None
        self._last_status: str | None = None
        self._status_replaced = False
        self._failing = False

    def _send(self, message: str) -> None:
        if not self.enabled:
            return
        try:
            for _attempt in range(_EINTR_RETRIES):
                try:
                    _notify(message)
                    break
                except InterruptedError:
                    # sd_notify blocks while the manager's queue is full, and a signal (SIGHUP,
                    # SIGTERM) then interrupts it; the C binding does not retry as Python's own calls
                    # do (PEP 475), and a lost READY=1 would leave a reload hanging.
                    continue
            else:
                raise InterruptedError("sd_notify interrupted by signals on every attempt")
        except Exception as exc:
            # Logged once per outage: the watchdog alone would otherwise log twice per interval.
            if not self._failing:
                self._failing = True
                _log.warning("notify_failed", message=message.split("\n", 1)[0], error=repr(exc))
            return
        if self._failing:
            self._failing = False
            _log.info("notify_recovered")

    def ready(self, status: str | None = None) -> None:
        """Startup or a reload is complete: READY=1 (with an optional STATUS=)."""
        message = "READY=1"
        if status is not None:
            message += "\nSTATUS=" + self._remember_status(status)
        elif self._status_replaced and self._last_status is not None:
            # reloading() put its own STATUS= up; bring back the summary it replaced.
            message += "\nSTATUS=" + self._last_status
        self._status_replaced = False
        self._send(message)

    def status(self, text: str) -> None:
        """Set the one-line STATUS= shown by `systemctl status`."""
        self._send("STATUS=" + self._remember_status(text))

    def maybe_status(self, make_text: Callable[[], str]) -> None:
        """Refresh STATUS= if ``status_every`` seconds have passed; ``make_text`` runs only then."""
        if not self.enabled:
            return
        now = self._clock()
        if self._last_status_at is not None and now - self._last_status_at < self._status_every:
            return
        try:
            text = make_text()
        except Exception as exc:
            _log.warning("notify_status_text_failed", error=repr(exc))
            self._last_status_at = now
            return
        self.status(text)

    def _remember_status(self, text: str) -> str:
        line = _one_line(text)
        self._last_status = line
        self._last_status_at = self._clock()
        return line

    def tick(self) -> None:
        """Call on every loop iteration: sends WATCHDOG=1 once ``watchdog_interval`` has elapsed."""
        interval = self.watchdog_interval
        if interval is None:
            return
        now = self._clock()
        last = self._last_ping
        # The same expression as next_deadline(): "now - last < interval" can disagree with it by one
        # rounding step, and a loop woken at its deadline would then not ping.
        if last is not None and now < last + interval:
            return
        # Even a failed send counts as the ping, so a broken socket costs one syscall per interval.
        self._last_ping = now
        self._send("WATCHDOG=1")

    def next_deadline(self) -> float | None:
        """Clock time by which tick() must run again; None when no watchdog is expected."""
        interval = self.watchdog_interval
        if interval is None:
            return None
        if self._last_ping is None:
            return self._clock()
        return self._last_ping + interval

    def reloading(self) -> None:
        """A SIGHUP reload starts: RELOADING=1 with MONOTONIC_USEC; follow with ready() when done."""
        self._status_replaced = True
        self._send(f"RELOADING=1\nMONOTONIC_USEC={_monotonic_usec()}\nSTATUS=reloading configuration")

    def stopping(self, status: str | None = None) -> None:
        """Shutdown has begun: STOPPING=1."""
        message = "STOPPING=1"
        if status is not None:
            message += "\nSTATUS=" + self._remember_status(status)
        self._send(message)

    def extend_timeout(self, seconds: float) -> None:
        """Ask for ``seconds`` more before the start/stop timeout fires (long recovery, final checkpoint).

        It must be repeated before the extension runs out if the work goes on.
        """
        usec = int(seconds * 1_000_000)
        if usec <= 0:
            return
        self._send(f"EXTEND_TIMEOUT_USEC={usec}")
