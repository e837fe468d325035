"""The real daemon process talking to a stand-in service manager over $NOTIFY_SOCKET.

No systemd runs here: the test binds the unix datagram socket systemd would, starts
`telemetryd run` with NOTIFY_SOCKET and WATCHDOG_USEC in its environment, as systemd does for
Type=notify + WatchdogSec=, and checks what arrives and when (kernel arrival timestamps).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from notify_listener import Message, NotifyListener

pytestmark = pytest.mark.slow

TELEMETRYD = Path(sys.executable).parent / "telemetryd"
START_TIMEOUT = 30.0
# WATCHDOG_USEC given to the daemon: it must ping every second, and systemd would kill it after 2 s.
WATCHDOG_USEC = 2_000_000
PING_INTERVAL = WATCHDOG_USEC / 2e6
# The daemon refreshes STATUS= every few seconds.
STATUS_WITHIN = 15.0

# Loaded by the daemon's interpreter through PYTHONPATH: a real-time signal makes the *main thread*
# sleep inside a Python signal handler, i.e. the main loop hangs while every other thread (watcher,
# checkpoint writer, metrics) keeps running. Watchdog pings sent from a side thread would go on.
HANG_HOOK = textwrap.dedent(
    """
    import os, signal, time

    _marker = os.environ.get("TELEMETRYD_TEST_HANG_MARKER")
    if _marker:
        def _hang(signum, frame):
            with open(_marker, "a") as f:
                f.write("start\\n")
            time.sleep(float(os.environ["TELEMETRYD_TEST_HANG_SECONDS"]))
            with open(_marker, "a") as f:
                f.write("end\\n")

        signal.signal(signal.SIGRTMIN + 4, _hang)
    """
)
HANG_SIGNAL = signal.SIGRTMIN + 4


def events(n: int, start: int = 0, kind: str = "login") -> str:
    return "".join(
        json.dumps({"event_type": kind, "message": f"user {i} logged in"}) + "\n"
        for i in range(start, start + n)
    )


class Daemon:
    def __init__(self, tmp: Path, listener: NotifyListener) -> None:
        self.tmp = tmp
        self.listener = listener
        self.src = tmp / "src"
        self.src.mkdir()
        self.state = tmp / "state"
        self.stderr_path = tmp / "daemon.stderr"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        environ = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "WATCHDOG_PID")}
        environ.update(NOTIFY_SOCKET=str(self.listener.path), WATCHDOG_USEC=str(WATCHDOG_USEC))
        environ.update(env or {})
        with open(self.stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen(
                [str(TELEMETRYD), "run", "--state-dir", str(self.state), "--metrics-listen", "", *args],
                env=environ,
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
            )
        return self.proc

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def logs(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-4000:]

    def wait_ready(self, start: int = 0) -> tuple[int, Message]:
        return self.wait_for("READY", start, START_TIMEOUT)

    def wait_for(self, key: str, start: int = 0, timeout: float = 10.0) -> tuple[int, Message]:
        try:
            index, message = self.listener.wait_key(key, timeout, start)
        except AssertionError as e:
            code = self.proc.poll() if self.proc else None
            raise AssertionError(f"{e}\nexit code: {code}\ndaemon log:\n{self.logs()}") from None
        # NotifyAccess=main: systemd drops messages from any other pid.
        assert message.pid == self.pid, (message.pid, self.pid)
        return index, message

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def status(self) -> dict[str, object]:
        result = subprocess.run(
            [str(TELEMETRYD), "status", "--json", "--state-dir", str(self.state)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        doc: dict[str, object] = json.loads(result.stdout)
        return doc

    def wait_counted(self, events_total: int, timeout: float = 30.0) -> dict[str, object]:
        """Until the last durable checkpoint holds exactly this many events."""
        deadline = time.monotonic() + timeout
        doc: dict[str, object] = {}
        while time.monotonic() < deadline:
            if self.state.exists():
                doc = self.status()
                if doc["events_total"] == events_total:
                    return doc
            assert self.alive(), self.logs()
            time.sleep(0.2)
        raise AssertionError(f"checkpoint never held {events_total} events: {doc}\n{self.logs()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGCONT)
        self.proc.kill()
        self.proc.wait(timeout=30)


@pytest.fixture
def listener() -> Iterator[NotifyListener]:
    sock = NotifyListener.bind()
    try:
        yield sock
    finally:
        sock.close()


@pytest.fixture
def daemon(tmp_path: Path, listener: NotifyListener) -> Iterator[Daemon]:
    d = Daemon(tmp_path, listener)
    try:
        yield d
    finally:
        d.stop()


def watchdog_pings(messages: list[Message]) -> list[float]:
    return [m.at for m in messages if m.get("WATCHDOG") == "1"]


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


def test_ready_comes_after_recovery_with_the_sources_open(daemon: Daemon) -> None:
    source = daemon.src / "app.jsonl"
    source.write_text(events(10))
    # A checkpoint that recovery must quarantine: its moving aside is visible in the state dir.
    daemon.state.mkdir()
    (daemon.state / "journal.00000000").write_bytes(b"this is not a telemetryd journal" * 4)
    daemon.start("--path", str(daemon.src / "*.jsonl"))
    index, ready = daemon.wait_ready()
    assert ready.get("READY") == "1"
    assert [m.fields for m in daemon.listener.messages[:index] if "READY" in m] == []

    quarantined = list(daemon.state.glob("*.corrupt"))
    assert quarantined, sorted(p.name for p in daemon.state.iterdir())
    # The rename happened before READY=1 was sent (inode ctime is coarse, so it can only be earlier).
    assert min(p.stat().st_ctime for p in quarantined) <= ready.at
    fd_dir = f"/proc/{daemon.pid}/fd"
    open_files = {os.path.realpath(f"{fd_dir}/{fd}") for fd in os.listdir(fd_dir)}
    assert str(source.resolve()) in open_files
    status = ready.get("STATUS")
    assert status and "\n" not in status


def test_status_is_refreshed_with_files_rate_and_lag(daemon: Daemon) -> None:
    (daemon.src / "app.jsonl").write_text(events(10))
    daemon.start("--path", str(daemon.src / "*.jsonl"))
    index, _ = daemon.wait_ready()
    with open(daemon.src / "app.jsonl", "a") as f:
        f.write(events(50, start=10))
    first, update = daemon.wait_for("STATUS", index + 1, STATUS_WITHIN)
    _, again = daemon.wait_for("STATUS", first + 1, STATUS_WITHIN)
    for message in (update, again):
        text = message.get("STATUS") or ""
        assert "READY" not in message.fields
        assert "files" in text, text
        assert "events/s" in text, text
        assert "lag" in text, text
    assert again.at > update.at


def test_watchdog_pings_every_half_interval(daemon: Daemon) -> None:
    (daemon.src / "app.jsonl").write_text(events(10))
    daemon.start("--path", str(daemon.src / "*.jsonl"))
    daemon.wait_ready()
    received = daemon.listener.collect(6 * PING_INTERVAL)
    assert all(m.pid == daemon.pid for m in received)
    pings = watchdog_pings(received)
    assert 4 <= len(pings) <= 8, pings
    between = gaps(pings)
    # Never early (the notifier waits a full half-interval) and never late enough for systemd to act.
    assert min(between) >= 0.9 * PING_INTERVAL, between
    assert max(between) < 2 * PING_INTERVAL, between


def test_watchdog_keeps_pinging_through_a_large_backlog(daemon: Daemon) -> None:
    # The loop must come back to its watchdog check while it works through a backlog, however many
    # files hold it (a turn bounded per file is not bounded), not only when it runs out of input.
    # About 35 MB in 4 files: seconds of work at any plausible speed.
    names = [f"app{i}.jsonl" for i in range(4)]
    for name in names:
        (daemon.src / name).write_text(events(5))
    daemon.start("--path", str(daemon.src / "*.jsonl"))
    daemon.wait_ready()
    daemon.wait_counted(20)
    # Start right after a ping, so the gaps measured cover the whole backlog.
    last_ping, _ = daemon.wait_for("WATCHDOG", len(daemon.listener.messages))
    for name in names:
        with open(daemon.src / name, "a") as f:
            f.write(events(150_000, start=5))
    daemon.wait_counted(20 + 4 * 150_000, timeout=120)
    daemon.wait_for("WATCHDOG", len(daemon.listener.messages))
    pings = watchdog_pings(daemon.listener.messages[last_ping:])
    assert len(pings) >= 2
    assert max(gaps(pings)) < 2 * PING_INTERVAL, gaps(pings)


def test_watchdog_stops_while_stopped_and_resumes(daemon: Daemon) -> None:
    (daemon.src / "app.jsonl").write_text(events(10))
    proc = daemon.start("--path", str(daemon.src / "*.jsonl"))
    index, _ = daemon.wait_ready()
    daemon.wait_for("WATCHDOG", index + 1, 3 * PING_INTERVAL)
    proc.send_signal(signal.SIGSTOP)
    try:
        daemon.listener.drain()
        assert daemon.listener.collect(3 * PING_INTERVAL) == []
    finally:
        proc.send_signal(signal.SIGCONT)
    continued = time.time()
    resumed = daemon.listener.collect(2 * PING_INTERVAL)
    pings = watchdog_pings(resumed)
    assert pings, [m.fields for m in resumed]
    # Overdue on waking up: the first ping comes at once, not a full interval later.
    assert pings[0] - continued < PING_INTERVAL, pings[0] - continued


def test_watchdog_stops_while_the_main_loop_hangs(daemon: Daemon, tmp_path: Path) -> None:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HANG_HOOK)
    marker = tmp_path / "hang.marker"
    hang_seconds = 4 * PING_INTERVAL
    (daemon.src / "app.jsonl").write_text(events(10))
    proc = daemon.start(
        "--path",
        str(daemon.src / "*.jsonl"),
        env={
            "PYTHONPATH": str(hook),
            "TELEMETRYD_TEST_HANG_MARKER": str(marker),
            "TELEMETRYD_TEST_HANG_SECONDS": str(hang_seconds),
        },
    )
    index, _ = daemon.wait_ready()
    daemon.wait_for("WATCHDOG", index + 1, 3 * PING_INTERVAL)
    daemon.listener.drain()
    proc.send_signal(HANG_SIGNAL)
    during = daemon.listener.collect(hang_seconds - 0.5)
    assert marker.read_text().startswith("start"), "the hang hook did not run"
    assert daemon.alive(), daemon.logs()
    # One ping may slip out before the handler gets the main thread; a healthy loop would send ~3.
    assert len(watchdog_pings(during)) <= 1, [m.fields for m in during]
    after = daemon.listener.collect(0.5 + 2 * PING_INTERVAL)
    assert marker.read_text() == "start\nend\n"
    assert watchdog_pings(after), [m.fields for m in after]


def test_stopping_on_sigterm_then_exit_0_with_a_final_checkpoint(daemon: Daemon, tmp_path: Path) -> None:
    # Periodic checkpoints are pushed out of reach, so only the final one can hold the counts.
    config = tmp_path / "telemetryd.toml"
    write_config(config, [str(daemon.src / "*.jsonl")], daemon.state, every_seconds=3600.0)
    (daemon.src / "app.jsonl").write_text(events(40))
    proc = daemon.start("--config", str(config))
    index, _ = daemon.wait_ready()
    # Each loop turn pings first and reads after: a second ping means the first turn's reading is done.
    first_ping, _ = daemon.wait_for("WATCHDOG", index + 1)
    daemon.wait_for("WATCHDOG", first_ping + 1)
    proc.send_signal(signal.SIGTERM)
    stopping, _ = daemon.wait_for("STOPPING", index + 1)
    assert proc.wait(timeout=60) == 0, daemon.logs()
    after_stop = daemon.listener.messages[stopping + 1 :]
    assert not [m.fields for m in after_stop if "READY" in m or "WATCHDOG" in m]
    doc = daemon.status()
    assert doc["events_total"] == 40, doc
    files = doc["files"]
    assert isinstance(files, list)
    assert files[0]["offset"] == (daemon.src / "app.jsonl").stat().st_size


def test_a_signal_storm_does_not_wedge_the_main_loop(daemon: Daemon) -> None:
    # A signal handler runs wherever the main thread happens to be, including inside lock-holding
    # code (threading.Event.wait/clear); a handler that takes such a lock (Event.set) deadlocks the
    # loop for good. Lines keep arriving meanwhile, as in production, so the watcher thread keeps
    # waking the loop and contending for that lock, which is what widens the window.
    source = daemon.src / "app.jsonl"
    source.write_text(events(10))
    proc = daemon.start("--path", str(daemon.src / "*.jsonl"))
    daemon.wait_ready()
    written = [10]
    done = threading.Event()

    def append() -> None:
        with open(source, "a") as f:
            while not done.is_set():
                f.write(events(1, start=written[0]))
                f.flush()
                written[0] += 1
                time.sleep(0.001)

    writer = threading.Thread(target=append)
    writer.start()
    try:
        for i in range(900):
            proc.send_signal(signal.SIGHUP)
            # 2..20 ms apart: some land inside a reload (about 15 ms), most between reloads.
            time.sleep(0.002 * (1 + i % 10))
            if i % 25 == 24:
                daemon.listener.drain()
                pings = watchdog_pings(daemon.listener.messages)
                if time.time() - pings[-1] > 2 * PING_INTERVAL:
                    break  # wedged (systemd would kill it now); no need to go on
    finally:
        done.set()
        writer.join()
    daemon.listener.drain()
    after = daemon.listener.collect(3 * PING_INTERVAL)
    assert watchdog_pings(after), f"main loop wedged: {[m.fields for m in after]}\n{daemon.logs()}"
    daemon.wait_counted(written[0])
    before_stop = len(daemon.listener.messages)
    proc.send_signal(signal.SIGTERM)
    daemon.wait_for("STOPPING", before_stop)
    assert proc.wait(timeout=60) == 0, daemon.logs()


def write_config(path: Path, paths: list[str], state: Path, every_seconds: float = 0.2) -> None:
    path.write_text(
        textwrap.dedent(
            f"""\
            [sources]
            paths = {json.dumps(paths)}
            rescan_seconds = 0.5

            [checkpoint]
            state_dir = {json.dumps(str(state))}
            every_events = 1000000
            every_seconds = {every_seconds}

            [metrics]
            listen = ""
            """
        )
    )


def test_sighup_reloads_the_config_keeping_offsets_and_counts(daemon: Daemon, tmp_path: Path) -> None:
    config = tmp_path / "telemetryd.toml"
    write_config(config, [str(daemon.src / "a*.jsonl")], daemon.state)
    (daemon.src / "a.jsonl").write_text(events(20))
    (daemon.src / "b.jsonl").write_text(events(5, kind="logout"))
    proc = daemon.start("--config", str(config))
    index, _ = daemon.wait_ready()
    daemon.wait_counted(20)

    write_config(config, [str(daemon.src / "a*.jsonl"), str(daemon.src / "b*.jsonl")], daemon.state)
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    proc.send_signal(signal.SIGHUP)
    reloading_index, reloading = daemon.wait_for("RELOADING", index + 1)
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert reloading.get("RELOADING") == "1"
    monotonic_usec = reloading.get("MONOTONIC_USEC")
    assert monotonic_usec is not None, reloading.fields
    assert before <= int(monotonic_usec) <= after
    daemon.wait_for("READY", reloading_index + 1)

    # b.jsonl is counted under the new config; a.jsonl is not read again (20 + 5, not 20 + 20 + 5).
    doc = daemon.wait_counted(25)
    files = {Path(str(f["path"])).name: f for f in doc["files"]}  # type: ignore[attr-defined]
    assert set(files) == {"a.jsonl", "b.jsonl"}
    assert files["a.jsonl"]["offset"] == (daemon.src / "a.jsonl").stat().st_size
    assert daemon.alive()


@pytest.mark.parametrize(
    "bad_config",
    [
        "[sources\npaths = [",  # not TOML
        '[sources]\npaths = ["/nowhere/*.jsonl"]\n[checkpoint]\nevery_seconds = "soon"\n',  # wrong type
    ],
    ids=["invalid-toml", "wrong-type"],
)
def test_bad_reload_keeps_the_running_config(daemon: Daemon, tmp_path: Path, bad_config: str) -> None:
    config = tmp_path / "telemetryd.toml"
    write_config(config, [str(daemon.src / "*.jsonl")], daemon.state)
    (daemon.src / "a.jsonl").write_text(events(20))
    proc = daemon.start("--config", str(config))
    index, _ = daemon.wait_ready()
    daemon.wait_counted(20)

    config.write_text(bad_config)
    proc.send_signal(signal.SIGHUP)
    reloading_index, _ = daemon.wait_for("RELOADING", index + 1)
    daemon.wait_for("READY", reloading_index + 1)
    assert daemon.alive(), daemon.logs()

    # Still tailing a.jsonl with the old settings, and nothing counted twice.
    with open(daemon.src / "a.jsonl", "a") as f:
        f.write(events(7, start=20))
    daemon.wait_counted(27)
    pings_after = daemon.listener.collect(2 * PING_INTERVAL)
    assert watchdog_pings(pings_after)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, daemon.logs()
