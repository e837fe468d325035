"""Model-based test of the file lifecycle (issue 14, item 5): hypothesis drives random sequences of
operations on real files, with a real `telemetryd run` process (killed with SIGKILL and restarted as part
of the sequence), and the counts are checked per line against a model of what was written.

Every line carries a unique `id`, which is the pattern key, so `patterns --json` says how often each line
was counted. The model is the ledger of every complete line written; where each line ended up is read
from the files themselves at the end (live files, renamed and copied generations in and outside the glob,
and the bytes of deleted files, which the model keeps aside before it unlinks them). The verdict is the
chaos round's (bench/chaos_logrotate.py): every line found in a file is counted exactly once; a line in
no file (written by a live writer between the copy and the truncate, or cut in two by a truncate) is
counted at most once; nothing counted that was never written.

Operations: create, append (1-3 write() calls per line), partial write (half a line, completed by a
later step: a copytruncate in between leaves its halves in two files), rename inside the glob, rename
out of it (the writer adds late lines to the renamed file, then reopens the name, as after logrotate's
`create` + postrotate), copytruncate without a writer and with a live writer process that keeps
appending throughout (copy inside the glob or outside), delete (late lines written to the deleted file
through the writer's open descriptor), recreate under the same name, and SIGKILL/SIGTERM of the daemon
with an operation done while it is down (delete + recreate then, so the inode can be reused).

Size: TELEMETRYD_MODEL_EXAMPLES (default 5) sequences of TELEMETRYD_MODEL_STEPS (default 15) steps in
`make test`; `make chaos-model` runs a longer setting. TELEMETRYD_MODEL_SEED (default 1, "random" for a
fresh one) makes a run reproducible; TELEMETRYD_MODEL_SHRINK=1 lets hypothesis shrink a failure (each
try starts a daemon: slow). A failing sequence is printed step by step, and its work dir is kept.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
from conftest import BIN, KEY_CONFIG, wait_for
from hypothesis import HealthCheck, Phase, event, seed, settings
from hypothesis.errors import InvalidArgument
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

sys.path.insert(0, str(Path(__file__).parent.parent / "bench"))
import chaos_logrotate as lr

SERVICE = str(Path(__file__).parent.parent / "bench" / "chaos_logrotate.py")
# rescan_seconds far above KNOWN_TIMEOUT: a file the daemon would find only by rescanning (a change
# notice ignored) fails the test, while one opened on its notice (milliseconds) passes even on a loaded
# machine.
RESCAN_SECONDS = 60.0
KNOWN_TIMEOUT = 10.0
CONFIG = (
    KEY_CONFIG.replace('key_fields = ["k"]', 'key_fields = ["id"]').replace(
        "rescan_seconds = 0.5", f"rescan_seconds = {RESCAN_SECONDS}"
    )
    + "rotate_wait_seconds = 1.0\n"
)
FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
EXAMPLES = int(os.environ.get("TELEMETRYD_MODEL_EXAMPLES", "5"))
STEPS = int(os.environ.get("TELEMETRYD_MODEL_STEPS", "15"))
SEED = os.environ.get("TELEMETRYD_MODEL_SEED", "1")
SHRINK = os.environ.get("TELEMETRYD_MODEL_SHRINK", "") == "1"
# "tolerate": lines lost only at the unread end of a copytruncate copy outside the glob are let pass (the
# weaker reading of issue 14 item 2); by default they are lost lines like any other (they are in a file).
COPY_TAIL = os.environ.get("TELEMETRYD_MODEL_COPY_TAIL", "strict")


def _event(what: str) -> None:
    """hypothesis statistics (`--hypothesis-show-statistics`); the fixed sequences below run without."""
    with contextlib.suppress(InvalidArgument):
        event(what)


def _line(i: str) -> bytes:
    return json.dumps({"id": i, "message": f"request {i} took 12 ms"}).encode() + b"\n"


@dataclass
class Live:
    """A file in the glob and its writer: one O_APPEND descriptor held open, as a service holds it."""

    fd: int
    pending: bytes = b""  # the rest of a half-written line
    pending_id: str = ""


class LifecycleModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="telemetryd-model-"))
        self.dir, self.grave, self.state = self.tmp / "logs", self.tmp / "grave", self.tmp / "state"
        self.dir.mkdir()
        self.grave.mkdir()
        self.cfg = self.tmp / "telemetryd.toml"
        self.cfg.write_text(CONFIG)
        self.args = (
            "--config",
            str(self.cfg),
            "--path",
            str(self.dir / "*.jsonl"),
            "--state-dir",
            str(self.state),
        )
        self.written: set[str] = set()
        self.files: dict[str, Live] = {}
        self.kinds: dict[str, str] = {}  # name -> "copytruncate" for the copies
        self.deleted_unsettled = False  # a file was deleted since the daemon last caught up
        self.moved_out: list[str] = []  # renamed out of the glob while the daemon ran, since its start
        self.n = 0  # next model line id
        self.gen = 0  # next name suffix
        self.services = 0
        self.runs = 0
        self.rnd = random.Random(0)
        self.daemon: subprocess.Popen[bytes] | None = None
        self.start()

    # --- the daemon ---------------------------------------------------------------------------------

    def start(self) -> None:
        self.runs += 1
        with open(self.tmp / f"daemon-{self.runs}.log", "wb") as log:
            self.daemon = subprocess.Popen([BIN, "run", *self.args], stdout=log, stderr=subprocess.STDOUT)

    def log_of(self, run: int | None = None) -> str:
        return (self.tmp / f"daemon-{run or self.runs}.log").read_text(errors="replace")

    def cli(self, *args: str) -> Any:
        r = subprocess.run(
            [BIN, *args, "--config", str(self.cfg), "--state-dir", str(self.state), "--json"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, f"telemetryd {args} -> {r.returncode}: {r.stderr}"
        return json.loads(r.stdout)

    def held(self, name: str) -> bool:
        """The running daemon has `name` open (by inode, whatever the name of its descriptor)."""
        d = self.daemon
        assert d is not None and d.poll() is None, self.log_of()
        st = os.stat(self.dir / name)
        try:
            fds = os.listdir(f"/proc/{d.pid}/fd")
        except FileNotFoundError:
            return False
        for fd in fds:
            try:
                o = os.stat(f"/proc/{d.pid}/fd/{fd}")
            except OSError:
                continue
            if (o.st_dev, o.st_ino) == (st.st_dev, st.st_ino):
                return True
        return False

    def known(self, name: str) -> None:
        """Before lines are moved where the glob does not reach (renamed out, deleted, copied out), the
        daemon must know the file: no tailer can read a file it never saw. It must open a new file on
        its change notice, not at the next rescan (issue 14: "latency after a rotation meets the latency
        target, not rescan_seconds"); a file not opened within KNOWN_TIMEOUT fails the test here."""
        wait_for(
            lambda: self.held(name),
            timeout=KNOWN_TIMEOUT,
            what=f"the daemon to open {name} (rescan_seconds = {RESCAN_SECONDS:.0f}; {self.tmp})",
        )

    def settled(self, name: str) -> bool:
        """A file renamed out of the glob while the daemon ran is safe from a stop once the checkpoint
        has it (by inode: the next run finds it in its directory), or once the daemon has let it go
        (read to its end, quiet for rotate_wait, released)."""
        return self.checkpointed(name, False) or not self.held(name)

    def checkpointed(self, name: str, to_end: bool) -> bool:
        """The checkpoint holds the file now at `name`, by (dev, ino): a file the daemon holds back (a
        new empty file may be a copy in the making) is not in it, and a stale entry under the same name
        is another file. With `to_end`, committed up to its current size (deleting it loses nothing)."""
        if not self.state.exists():
            return False
        try:
            entries = self.cli("checkpoint", "show")["files"]
        except (AssertionError, ValueError):
            return False
        st = os.stat(self.dir / name)
        for e in entries:
            # FileEntry is encoded as an array: dev, ino, path, offset, ...
            dev, ino, offset = (
                (e[0], e[1], e[3]) if isinstance(e, list) else (e["dev"], e["ino"], e["offset"])
            )
            if (dev, ino) == (st.st_dev, st.st_ino):
                return offset == st.st_size or not to_end
        return False

    def events_committed(self) -> int:
        if not self.state.exists():
            return 0
        try:
            return int(self.cli("status")["events_total"])
        except (AssertionError, ValueError):
            return -1

    def lines_in_files(self) -> int:
        return sum(len(lr.lines_in(p)[0]) for p in [*self.dir.iterdir(), *self.grave.iterdir()])

    # --- writing ------------------------------------------------------------------------------------

    def new_id(self) -> str:
        self.n += 1
        return f"m{self.n}"

    def finish(self, lv: Live) -> None:
        if lv.pending:
            os.write(lv.fd, lv.pending)
            self.written.add(lv.pending_id)
            lv.pending, lv.pending_id = b"", ""

    def write_lines(self, fd: int, n: int) -> bytes:
        out = b""
        for _ in range(n):
            i = self.new_id()
            data = _line(i)
            cut = self.rnd.randrange(1, len(data)) if self.rnd.random() < 0.5 else len(data)
            os.write(fd, data[:cut])
            if cut < len(data):
                os.write(fd, data[cut:])
            self.written.add(i)
            out += data
        return out

    def pick(self, i: int) -> str:
        names = sorted(self.files)
        return names[i % len(names)]

    def fresh(self, stem: str, suffix: str) -> str:
        self.gen += 1
        return f"{stem}{self.gen}{suffix}"

    # --- operations (also used while the daemon is down) ------------------------------------------

    def do_rename_out(self, name: str, late: int) -> None:
        lv = self.files.pop(name)
        rotated = f"{name}.{self.fresh('', '')}"
        os.rename(self.dir / name, self.dir / rotated)
        self.moved_out.append(rotated)
        # The service has not reopened yet: it finishes its line and writes on into the renamed file.
        self.finish(lv)
        self.write_lines(lv.fd, late)
        os.close(lv.fd)
        self.files[name] = Live(os.open(self.dir / name, FLAGS, 0o644))

    def do_copytruncate(self, name: str, inside: bool, live_writer: bool) -> None:
        lv = self.files[name]
        path = self.dir / name
        dest = self.dir / (
            self.fresh(name.removesuffix(".jsonl") + "-copy", ".jsonl")
            if inside
            else f"{name}.{self.fresh('', '')}"
        )
        self.kinds[dest.name] = "copytruncate"
        service = None
        _event(
            f"copytruncate {'inside' if inside else 'outside'}, {'a' if live_writer else 'no'} live writer"
        )
        if live_writer:
            self.finish(lv)  # one writer at a time per line: the service's lines must stay whole
            self.services += 1
            report = self.tmp / f"service-{self.services}.count"
            service = subprocess.Popen(
                [
                    *(sys.executable, SERVICE, "service", "--path", str(path), "--id", str(self.services)),
                    *("--rate", "3000", "--seed", str(self.services), "--report", str(report)),
                ]
            )
            size0 = os.stat(path).st_size
            wait_for(lambda: os.stat(path).st_size > size0 + 2000, timeout=30, what="the service writing")
        # cp reads to the end while the service may append; then the truncate, with no pause.
        with open(path, "rb") as src, open(dest, "xb") as dst:
            while chunk := src.read(1 << 16):
                dst.write(chunk)
        os.truncate(path, 0)
        if service is not None:
            size1 = os.stat(path).st_size
            wait_for(lambda: os.stat(path).st_size > size1 + 1000, timeout=30, what="the service after")
            service.send_signal(signal.SIGTERM)
            assert service.wait(30) == 0
            self.written |= lr.written_ids({self.services: int(report.read_text())})

    def do_delete(self, name: str, late: int) -> None:
        lv = self.files.pop(name)
        self.finish(lv)
        keep = self.grave / self.fresh(name + ".deleted", "")
        shutil.copyfile(self.dir / name, keep)
        os.unlink(self.dir / name)
        # The service still holds the deleted file: its late lines land there (and the daemon, holding
        # it too, must read them).
        late_bytes = self.write_lines(lv.fd, late)
        os.close(lv.fd)
        with open(keep, "ab") as f:
            f.write(late_bytes)
        self.deleted_unsettled = True

    # --- rules --------------------------------------------------------------------------------------

    @initialize(n=st.integers(0, 20))
    def first_file(self, n: int) -> None:
        # Most rules need a file: without one, hypothesis wastes draws on preconditions that fail.
        self.create()
        if n:
            self.append(0, n)

    @precondition(lambda self: len(self.files) < 4)
    @rule()
    def create(self) -> None:
        name = self.fresh("f", ".jsonl")
        self.files[name] = Live(os.open(self.dir / name, FLAGS | os.O_EXCL, 0o644))

    @precondition(lambda self: self.files)
    @rule(i=st.integers(0, 99), n=st.integers(1, 40))
    def append(self, i: int, n: int) -> None:
        lv = self.files[self.pick(i)]
        self.finish(lv)
        self.write_lines(lv.fd, n)

    @precondition(lambda self: any(not lv.pending for lv in self.files.values()))
    @rule(i=st.integers(0, 99), cut=st.floats(0.05, 0.95))
    def partial(self, i: int, cut: float) -> None:
        name = [n for n in sorted(self.files) if not self.files[n].pending][
            i % sum(1 for lv in self.files.values() if not lv.pending)
        ]
        lv = self.files[name]
        lv.pending_id = self.new_id()
        data = _line(lv.pending_id)
        k = max(1, min(len(data) - 1, int(len(data) * cut)))
        os.write(lv.fd, data[:k])
        lv.pending = data[k:]

    @precondition(lambda self: self.files)
    @rule(i=st.integers(0, 99))
    def rename_inside(self, i: int) -> None:
        name = self.pick(i)
        new = self.fresh("r", ".jsonl")
        os.rename(self.dir / name, self.dir / new)
        self.files[new] = self.files.pop(name)  # same inode, same writer

    @precondition(lambda self: self.files)
    @rule(i=st.integers(0, 99), late=st.integers(0, 5))
    def rename_out(self, i: int, late: int) -> None:
        self.known(self.pick(i))
        self.do_rename_out(self.pick(i), late)

    @precondition(lambda self: self.files)
    @rule(i=st.integers(0, 99), inside=st.booleans(), live_writer=st.booleans())
    def copytruncate(self, i: int, inside: bool, live_writer: bool) -> None:
        if not inside:
            self.known(self.pick(i))
        self.do_copytruncate(self.pick(i), inside, live_writer)

    @precondition(lambda self: self.files)
    @rule(i=st.integers(0, 99), late=st.integers(0, 5), recreate=st.booleans())
    def delete(self, i: int, late: int, recreate: bool) -> None:
        name = self.pick(i)
        self.known(name)
        self.do_delete(name, late)
        if recreate:
            self.files[name] = Live(os.open(self.dir / name, FLAGS | os.O_EXCL, 0o644))

    @rule(
        how=st.sampled_from(["kill", "term"]),
        op=st.sampled_from(
            ["none", "append", "rename_out", "copytruncate_out", "copytruncate_in", "delete_recreate"]
        ),
        i=st.integers(0, 99),
    )
    def restart(self, how: str, op: str, i: int) -> None:
        d = self.daemon
        assert d is not None
        if self.deleted_unsettled:
            # A deleted file lives only in the daemon's descriptor: stopping the daemon before it has
            # read and committed it loses its lines to any tailer. Let it catch up first (if it never
            # does, the final verdict says which lines are missing).
            want = self.lines_in_files()
            with contextlib.suppress(AssertionError):
                wait_for(lambda: self.events_committed() >= want, timeout=20, interval=0.2)
            self.deleted_unsettled = False
        # A file renamed out of the glob lives on outside it: the next run can find it only through
        # the checkpoint. Stopping the daemon before it committed that file (a run that opened it and
        # died at once) loses it to any tailer; let it commit first.
        for rotated in self.moved_out:
            with contextlib.suppress(AssertionError):
                wait_for(lambda r=rotated: self.settled(r), timeout=20, interval=0.2)
        self.moved_out = []
        if op == "delete_recreate" and self.files:
            # Deleting a file the daemon has not committed loses its lines to any tailer: wait for
            # the checkpoint first, so the only question left is the reused inode.
            name = self.pick(i)
            self.finish(self.files[name])
            wait_for(lambda: self.checkpointed(name, True), timeout=30, what=f"{name} committed ({self.tmp})")
        elif op in ("rename_out", "copytruncate_out") and self.files:
            # Moved out of the glob while no daemon runs: only the checkpoint can lead to it again.
            name = self.pick(i)
            wait_for(
                lambda: self.checkpointed(name, False),
                timeout=30,
                what=f"{name} in the checkpoint ({self.tmp})",
            )
        if how == "kill":
            d.kill()
            d.wait()
        else:
            d.send_signal(signal.SIGTERM)
            code = d.wait(30)
            # SIGTERM before the handler is installed (interpreter start) kills by default action.
            assert code == 0 or (code == -signal.SIGTERM and '"recovered"' not in self.log_of()), (
                self.log_of()
            )
        self.deleted_unsettled = False
        if self.files and op != "none":
            name = self.pick(i)
            if op == "append":
                self.append(i, 25)
            elif op == "rename_out":
                self.do_rename_out(name, 3)
            elif op.startswith("copytruncate"):
                self.do_copytruncate(name, op.endswith("_in"), live_writer=False)
            else:
                ino = os.stat(self.dir / name).st_ino
                self.do_delete(name, 0)
                # The inode was freed (no daemon holds it): the new file often gets it back, and the
                # checkpoint's entry for that inode must not be resumed on the new bytes.
                self.files[name] = Live(os.open(self.dir / name, FLAGS | os.O_EXCL, 0o644))
                self.write_lines(self.files[name].fd, 5)
                _event("inode reused" if os.stat(self.dir / name).st_ino == ino else "inode not reused")
        self.start()

    # --- the check ----------------------------------------------------------------------------------

    def teardown(self) -> None:
        ok = False
        try:
            self.check()
            ok = True
        finally:
            for lv in self.files.values():
                os.close(lv.fd)
            if self.daemon is not None and self.daemon.poll() is None:
                self.daemon.kill()
                self.daemon.wait()
            if ok:
                shutil.rmtree(self.tmp, ignore_errors=True)

    def check(self) -> None:
        for lv in self.files.values():
            self.finish(lv)
        files = sorted(self.dir.iterdir()) + sorted(self.grave.iterdir())
        in_files = sum(len(lr.lines_in(p)[0]) for p in files)
        # Caught up: every line that is in a file counted (more if window lines were read in time),
        # then quiet for longer than the copy decision and rotate_wait, so a late double count shows.
        last, since, deadline = -1, time.monotonic(), time.monotonic() + 40
        while time.monotonic() < deadline:
            assert self.daemon is not None and self.daemon.poll() is None, self.log_of()
            try:
                total = int(self.cli("status")["events_total"]) if self.state.exists() else 0
            except (AssertionError, ValueError):
                total = -1
            if total != last:
                last, since = total, time.monotonic()
            elif time.monotonic() - since > (2.5 if total >= in_files else 6.0):
                # Lines still missing after 6 s without progress are lost: the verdict says which.
                break
            time.sleep(0.2)
        assert self.daemon is not None
        self.daemon.send_signal(signal.SIGTERM)
        code = self.daemon.wait(30)
        assert code == 0 or (code == -signal.SIGTERM and '"recovered"' not in self.log_of()), self.log_of()
        counted: dict[str, int] = {}
        for p in self.cli("patterns")["patterns"]:
            counted[p["key"]["id"]] = counted.get(p["key"]["id"], 0) + p["count"]
        v = lr.verdict(self.written, files, counted, {}, [], self.kinds)
        if COPY_TAIL == "tolerate":
            v.lost -= v.lost_copy_tail
        assert v.ok(), (
            f"lost={v.lost} (copy_tail={v.lost_copy_tail}) duplicated={v.duplicated} phantom={v.phantom} "
            f"(written={v.written} "
            f"in_files={v.in_files} window={v.window}) examples={v.examples} problems={v.problems} "
            f"work dir kept: {self.tmp}"
        )


TestLifecycleModel = LifecycleModel.TestCase
TestLifecycleModel.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.reuse, Phase.generate, *([Phase.shrink] if SHRINK else [])],
    database=None,
    print_blob=True,
)
if SEED != "random":
    seed(int(SEED))(LifecycleModel)


@pytest.mark.parametrize("lines", [5, 12])
def test_copy_inside_the_glob_made_while_down_is_not_read_again(lines: int) -> None:
    """A sequence the model found (seed 3, 15 x 25): a file committed to its end, the daemon killed,
    the file copied to a name inside the glob and truncated, the daemon restarted. The copy must take
    over the committed offset. With 5 lines (245 bytes, below the 256-byte fingerprint) the daemon of
    before issue 14, and core's branch at ce83380, read the copy from 0: every line counted twice."""
    m = LifecycleModel()
    m.first_file(lines)
    name = m.pick(0)
    wait_for(lambda: m.checkpointed(name, True), timeout=30, what=f"{name} committed ({m.tmp})")
    m.restart("kill", "copytruncate_in", 0)
    m.teardown()
