"""A stand-in for the service manager's end of $NOTIFY_SOCKET: a real unix datagram socket.

Each datagram is kept with the sender's pid (SCM_CREDENTIALS, what systemd checks for
NotifyAccess=main) and the kernel's arrival time (SO_TIMESTAMPNS), so that intervals between
watchdog pings are measured when they were sent, not when a busy test got round to reading them.

A thread receives continuously, as systemd does: a unix datagram queue holds only
net.unix.max_dgram_qlen messages (10 unless systemd's sysctl.d raised it), and a sender that finds
it full blocks in sd_notify, which would make the daemon look hung when only the test was slow.
"""

from __future__ import annotations

import os
import select
import shutil
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# Linux asm-generic values (x86-64, arm64, ...); Python's socket module does not export them.
_SO_TIMESTAMPNS = 35
_SCM_TIMESTAMPNS = _SO_TIMESTAMPNS
_UCRED = struct.Struct("iII")
_TIMESPEC = struct.Struct("@ll")


@dataclass(frozen=True)
class Message:
    fields: dict[str, str]
    pid: int | None
    at: float  # kernel arrival time, CLOCK_REALTIME seconds

    def __contains__(self, key: object) -> bool:
        return key in self.fields

    def get(self, key: str) -> str | None:
        return self.fields.get(key)


def parse(datagram: bytes) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in datagram.decode().split("\n"):
        if not line:
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not an assignment: {line!r}"
        fields[key] = value
    return fields


class NotifyListener:
    def __init__(self) -> None:
        # sun_path holds 108 bytes; pytest's tmp_path can be longer, so use a short private dir.
        self._dir = Path(tempfile.mkdtemp(prefix="tdn-", dir="/tmp"))
        self.path = self._dir / "notify"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        self.sock.bind(str(self.path))
        self.sock.setblocking(False)
        self._messages: list[Message] = []
        self._drained = 0
        # Receiving happens under this lock, so the thread and drain() never reorder datagrams.
        self._cond = threading.Condition()
        self._closed = False
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._receive_forever, daemon=True)
        self._thread.start()

    @classmethod
    def bind(cls) -> NotifyListener:
        return cls()

    def close(self) -> None:
        self._closed = True
        os.write(self._wake_w, b"x")
        self._thread.join()
        self.sock.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        shutil.rmtree(self._dir, ignore_errors=True)

    def _receive_forever(self) -> None:
        while not self._closed:
            readable, _, _ = select.select([self.sock.fileno(), self._wake_r], [], [])
            if self.sock.fileno() in readable:
                with self._cond:
                    self._receive_queued()

    def _receive_queued(self) -> None:
        received = False
        while True:
            try:
                data, ancillary, _flags, _addr = self.sock.recvmsg(
                    65536, socket.CMSG_SPACE(_UCRED.size) + socket.CMSG_SPACE(_TIMESPEC.size)
                )
            except (BlockingIOError, OSError):
                break
            pid: int | None = None
            at = time.time()
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = _UCRED.unpack(payload[: _UCRED.size])[0]
                elif level == socket.SOL_SOCKET and kind == _SCM_TIMESTAMPNS:
                    seconds, nanoseconds = _TIMESPEC.unpack(payload[: _TIMESPEC.size])
                    at = seconds + nanoseconds / 1e9
            self._messages.append(Message(parse(data), pid, at))
            received = True
        if received:
            self._cond.notify_all()

    @property
    def messages(self) -> list[Message]:
        """Everything received so far (a copy)."""
        with self._cond:
            self._receive_queued()
            return list(self._messages)

    def drain(self) -> list[Message]:
        """What arrived since the last drain(), including everything queued right now."""
        with self._cond:
            self._receive_queued()
            new = self._messages[self._drained :]
            self._drained = len(self._messages)
            return new

    def wait_for(
        self, match: Callable[[Message], bool], timeout: float, start: int = 0
    ) -> tuple[int, Message]:
        """The first message at index >= start that matches, waiting up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        index = start
        with self._cond:
            while True:
                self._receive_queued()
                while index < len(self._messages):
                    if match(self._messages[index]):
                        return index, self._messages[index]
                    index += 1
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [m.fields for m in self._messages[start:]]
                    raise AssertionError(f"no matching notification within {timeout}s; got {seen}")
                self._cond.wait(remaining)

    def wait_key(self, key: str, timeout: float, start: int = 0) -> tuple[int, Message]:
        return self.wait_for(lambda m: key in m, timeout, start)

    def collect(self, seconds: float) -> list[Message]:
        """Everything that arrives during the next ``seconds`` seconds."""
        with self._cond:
            self._receive_queued()
            start = len(self._messages)
        time.sleep(seconds)
        with self._cond:
            self._receive_queued()
            return self._messages[start:]
