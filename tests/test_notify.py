"""Notifier against a real unix datagram socket standing in for the service manager."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from notify_listener import NotifyListener
from telemetryd import notify
from telemetryd.notify import Notifier, format_status


@pytest.fixture(scope="module", autouse=True, params=["systemd-python", "datagram"])
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test here runs against both senders: systemd-python's sd_notify and the pure datagram
    used when systemd-python is not installed. Both send to the same real socket."""
    saved = notify._notify
    if request.param == "datagram":
        notify._notify = notify.datagram_notify
    else:
        from systemd import daemon as sd_daemon

        notify._notify = sd_daemon.notify
    try:
        yield request.param
    finally:
        notify._notify = saved


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def listener(monkeypatch: pytest.MonkeyPatch) -> Iterator[NotifyListener]:
    sock = NotifyListener.bind()
    monkeypatch.setenv("NOTIFY_SOCKET", str(sock.path))
    try:
        yield sock
    finally:
        sock.close()


def only(listener: NotifyListener) -> dict[str, str]:
    """The one message a call must have sent (sd_notify has delivered it when it returns)."""
    received = listener.drain()
    assert len(received) == 1, [m.fields for m in received]
    return received[0].fields


def test_ready_with_status(listener: NotifyListener) -> None:
    notifier = Notifier(environ={})
    assert notifier.enabled
    notifier.ready("3 files, 10 events/s")
    message = listener.drain()
    assert [m.fields for m in message] == [{"READY": "1", "STATUS": "3 files, 10 events/s"}]
    # systemd accepts messages only from the main pid (NotifyAccess=main): it must be us, not a helper.
    assert message[0].pid == os.getpid()


def test_ready_without_status(listener: NotifyListener) -> None:
    Notifier(environ={}).ready()
    assert only(listener) == {"READY": "1"}


def test_status_is_flattened_to_one_line(listener: NotifyListener) -> None:
    # A newline in a file name must not become a second assignment such as READY=1.
    Notifier(environ={}).status("lag on /var/log/a\nREADY=1.jsonl\r\n  now")
    assert only(listener) == {"STATUS": "lag on /var/log/a READY=1.jsonl now"}


def test_reloading_carries_the_monotonic_clock(listener: NotifyListener) -> None:
    notifier = Notifier(environ={})
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    message = only(listener)
    assert message["RELOADING"] == "1"
    assert before <= int(message["MONOTONIC_USEC"]) <= after


def test_reloading_uses_the_real_clock_not_the_injected_one(listener: NotifyListener) -> None:
    notifier = Notifier(environ={}, clock=FakeClock(5.0))
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.reloading()
    assert int(only(listener)["MONOTONIC_USEC"]) >= before


def test_ready_after_reload_restores_the_summary(listener: NotifyListener) -> None:
    notifier = Notifier(environ={})
    notifier.status("2 files, 0 events/s")
    notifier.reloading()
    notifier.ready()
    messages = [m.fields for m in listener.drain()]
    assert messages[1]["STATUS"] == "reloading configuration"
    assert messages[2] == {"READY": "1", "STATUS": "2 files, 0 events/s"}


def test_stopping(listener: NotifyListener) -> None:
    Notifier(environ={}).stopping()
    assert only(listener) == {"STOPPING": "1"}


def test_stopping_with_status(listener: NotifyListener) -> None:
    Notifier(environ={}).stopping("writing final checkpoint")
    assert only(listener) == {"STOPPING": "1", "STATUS": "writing final checkpoint"}


def test_extend_timeout_in_microseconds(listener: NotifyListener) -> None:
    notifier = Notifier(environ={})
    notifier.extend_timeout(90)
    assert only(listener) == {"EXTEND_TIMEOUT_USEC": "90000000"}
    notifier.extend_timeout(0.25)
    assert only(listener) == {"EXTEND_TIMEOUT_USEC": "250000"}
    notifier.extend_timeout(0)
    assert listener.drain() == []


def test_watchdog_interval_is_half_of_watchdog_usec(listener: NotifyListener) -> None:
    assert Notifier(environ={"WATCHDOG_USEC": "10000000"}).watchdog_interval == 5.0
    assert Notifier(environ={}).watchdog_interval is None


def test_watchdog_period_with_injected_clock(listener: NotifyListener) -> None:
    clock = FakeClock(1000.0)
    notifier = Notifier(environ={"WATCHDOG_USEC": "10000000"}, clock=clock)
    # Nothing sent yet: the first tick is due at once.
    assert notifier.next_deadline() == 1000.0
    notifier.tick()
    assert only(listener) == {"WATCHDOG": "1"}
    assert notifier.next_deadline() == 1005.0

    for now in (1000.0, 1001.0, 1004.999):
        clock.now = now
        notifier.tick()
    assert listener.drain() == []

    clock.now = 1005.0
    notifier.tick()
    assert only(listener) == {"WATCHDOG": "1"}
    notifier.tick()
    assert listener.drain() == []
    assert notifier.next_deadline() == 1010.0

    # A late loop pings at once and the schedule restarts from that ping.
    clock.now = 1017.5
    notifier.tick()
    assert only(listener) == {"WATCHDOG": "1"}
    assert notifier.next_deadline() == 1022.5


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(st.floats(min_value=0.0, max_value=3.0, allow_nan=False), min_size=1, max_size=60))
def test_watchdog_never_early_never_skipped(steps: list[float]) -> None:
    # Property: pings are at least one interval apart, and any tick at or past next_deadline() pings.
    sock = NotifyListener.bind()
    saved = os.environ.get("NOTIFY_SOCKET")
    os.environ["NOTIFY_SOCKET"] = str(sock.path)
    try:
        clock = FakeClock(0.0)
        notifier = Notifier(environ={"WATCHDOG_USEC": "2000000"}, clock=clock)
        interval = notifier.watchdog_interval
        assert interval == 1.0
        last_ping: float | None = None
        for step in steps:
            clock.now += step
            deadline = notifier.next_deadline()
            assert deadline is not None
            due = clock.now >= deadline
            notifier.tick()
            pinged = [m.fields for m in sock.drain()]
            assert pinged == ([{"WATCHDOG": "1"}] if due else [])
            if due:
                assert last_ping is None or clock.now >= last_ping + interval
                last_ping = clock.now
            assert last_ping is not None  # the first tick is always due
            assert notifier.next_deadline() == last_ping + interval
    finally:
        if saved is None:
            del os.environ["NOTIFY_SOCKET"]
        else:
            os.environ["NOTIFY_SOCKET"] = saved
        sock.close()


def test_watchdog_pid_of_another_process_disables_the_watchdog(listener: NotifyListener) -> None:
    notifier = Notifier(environ={"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid() + 1)})
    assert notifier.enabled
    assert notifier.watchdog_interval is None
    assert notifier.next_deadline() is None
    notifier.tick()
    assert listener.drain() == []


def test_watchdog_pid_of_this_process_keeps_the_watchdog(listener: NotifyListener) -> None:
    notifier = Notifier(environ={"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())})
    assert notifier.watchdog_interval == 1.0
    notifier.tick()
    assert only(listener) == {"WATCHDOG": "1"}


@pytest.mark.parametrize(
    "environ",
    [
        {"WATCHDOG_USEC": "soon"},
        {"WATCHDOG_USEC": "0"},
        {"WATCHDOG_USEC": "-5"},
        {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "me"},
    ],
)
def test_malformed_watchdog_variables_disable_the_watchdog(
    listener: NotifyListener, environ: dict[str, str]
) -> None:
    notifier = Notifier(environ=environ)
    assert notifier.watchdog_interval is None
    notifier.tick()
    assert listener.drain() == []


def test_watchdog_variables_default_to_the_process_environment(
    listener: NotifyListener, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "3000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert Notifier().watchdog_interval == 1.5


def test_no_socket_means_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    # A socket is bound but not advertised: nothing may reach it.
    sock = NotifyListener.bind()
    try:
        monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
        clock = FakeClock()
        notifier = Notifier(environ={"WATCHDOG_USEC": "2000000"}, clock=clock)
        assert not notifier.enabled
        assert notifier.watchdog_interval is None
        assert notifier.next_deadline() is None
        notifier.ready("x")
        notifier.status("y")
        notifier.maybe_status(lambda: "z")
        notifier.tick()
        clock.now += 100
        notifier.tick()
        notifier.reloading()
        notifier.extend_timeout(5)
        notifier.stopping()
        assert sock.drain() == []
    finally:
        sock.close()


def test_environ_argument_does_not_enable_sending(monkeypatch: pytest.MonkeyPatch) -> None:
    # systemd.daemon.notify only reads the process environment, so that is what decides.
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier(environ={"NOTIFY_SOCKET": "/tmp/nowhere", "WATCHDOG_USEC": "2000000"})
    assert not notifier.enabled


def test_unreachable_socket_never_raises(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "absent"))
    clock = FakeClock()
    notifier = Notifier(environ={"WATCHDOG_USEC": "2000000"}, clock=clock)
    assert notifier.enabled
    notifier.ready("x")
    notifier.status("y")
    for _ in range(3):
        notifier.tick()
        clock.now += 1.0
    notifier.reloading()
    notifier.extend_timeout(5)
    notifier.stopping()
    # The failed ping still counts, so a dead socket costs one attempt per interval, not per tick.
    assert clock.now == 1003.0
    assert notifier.next_deadline() == 1003.0


def test_sending_resumes_when_the_socket_comes_back(monkeypatch: pytest.MonkeyPatch) -> None:
    sock = NotifyListener.bind()
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", str(sock.path) + ".gone")
        notifier = Notifier(environ={})
        notifier.status("lost")
        monkeypatch.setenv("NOTIFY_SOCKET", str(sock.path))
        notifier.status("found")
        assert [m.fields for m in sock.drain()] == [{"STATUS": "found"}]
    finally:
        sock.close()


def test_maybe_status_is_throttled(listener: NotifyListener) -> None:
    clock = FakeClock(0.0)
    notifier = Notifier(environ={}, clock=clock, status_every=5.0)
    calls: list[float] = []

    def text() -> str:
        calls.append(clock.now)
        return f"t={clock.now}"

    for now in (0.0, 1.0, 4.9, 5.0, 6.0, 10.0):
        clock.now = now
        notifier.maybe_status(text)
    assert calls == [0.0, 5.0, 10.0]
    assert [m.fields for m in listener.drain()] == [
        {"STATUS": "t=0.0"},
        {"STATUS": "t=5.0"},
        {"STATUS": "t=10.0"},
    ]


def test_maybe_status_counts_an_explicit_status(listener: NotifyListener) -> None:
    clock = FakeClock(0.0)
    notifier = Notifier(environ={}, clock=clock, status_every=5.0)
    notifier.ready("started")
    clock.now = 3.0
    notifier.maybe_status(lambda: "too soon")
    assert [m.fields for m in listener.drain()] == [{"READY": "1", "STATUS": "started"}]


def test_maybe_status_survives_a_failing_summary(listener: NotifyListener) -> None:
    notifier = Notifier(environ={})

    def broken() -> str:
        raise RuntimeError("metrics not ready")

    notifier.maybe_status(broken)
    assert listener.drain() == []


def test_format_status() -> None:
    assert format_status(3, 1234.4, 120) == "3 files, 1234 events/s, checkpoint lag 120 events"
    assert format_status(1, 0.0, 0, 4096) == "1 files, 0 events/s, checkpoint lag 0 events / 4096 bytes"


def test_a_send_interrupted_by_a_signal_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    # A unix datagram queue that is full makes sd_notify block; a signal then interrupts it (EINTR).
    # The manager's end here is read only by that signal's handler, after the interruption.
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    directory = Path(tempfile.mkdtemp(prefix="tdn-", dir="/tmp"))
    path = directory / "notify"
    receiver.bind(str(path))
    receiver.setblocking(False)
    filler = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    filler.setblocking(False)
    received: list[bytes] = []

    def drain(signum: int, frame: object) -> None:
        with contextlib.suppress(BlockingIOError):
            while True:
                received.append(receiver.recv(4096))

    previous = signal.signal(signal.SIGALRM, drain)
    try:
        with contextlib.suppress(BlockingIOError):
            while True:
                filler.sendto(b"FILLER=1", str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        Notifier(environ={}).status("after the interruption")
        with contextlib.suppress(BlockingIOError):
            while True:
                received.append(receiver.recv(4096))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        filler.close()
        receiver.close()
        shutil.rmtree(directory, ignore_errors=True)
    assert received[-1] == b"STATUS=after the interruption"
    assert set(received[:-1]) == {b"FILLER=1"}


def test_abstract_socket_address(monkeypatch: pytest.MonkeyPatch, backend: str) -> None:
    # "@name" is a socket in the abstract namespace (systemd uses it for user managers in containers).
    name = f"telemetryd-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind("\0" + name)
        receiver.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        Notifier(environ={}).ready("abstract")
        assert receiver.recv(4096) == b"READY=1\nSTATUS=abstract"
