"""A stand-in for the service manager's end of $NOTIFY_SOCKET: a real unix datagram socket.

Each datagram is kept with the sender's pid (SCM_CREDENTIALS, what systemd checks for
NotifyAccess=main) and the kernel's arrival time (SO_TIMESTAMPNS), so that intervals between
watchdog pings are measured when they were sent, not when a busy test got round to reading them.
"""

from __future__ import annotations

import select
import shutil
import socket
import struct
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
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


@dataclass
class NotifyListener:
    sock: socket.socket
    path: Path
    messages: list[Message] = field(default_factory=list)

    @classmethod
    def bind(cls) -> NotifyListener:
        # sun_path holds 108 bytes; pytest's tmp_path can be longer, so use a short private dir.
        directory = Path(tempfile.mkdtemp(prefix="tdn-", dir="/tmp"))
        path = directory / "notify"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        sock.bind(str(path))
        sock.setblocking(False)
        return cls(sock, path)

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.path.parent, ignore_errors=True)

    def _receive_one(self) -> Message | None:
        try:
            data, ancillary, _flags, _addr = self.sock.recvmsg(
                65536, socket.CMSG_SPACE(_UCRED.size) + socket.CMSG_SPACE(_TIMESPEC.size)
            )
        except BlockingIOError:
            return None
        pid: int | None = None
        at = time.time()
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = _UCRED.unpack(payload[: _UCRED.size])[0]
            elif level == socket.SOL_SOCKET and kind == _SCM_TIMESTAMPNS:
                seconds, nanoseconds = _TIMESPEC.unpack(payload[: _TIMESPEC.size])
                at = seconds + nanoseconds / 1e9
        message = Message(parse(data), pid, at)
        self.messages.append(message)
        return message

    def drain(self) -> list[Message]:
        """Everything queued now, without waiting."""
        received = []
        while (message := self._receive_one()) is not None:
            received.append(message)
        return received

    def wait_for(
        self, match: Callable[[Message], bool], timeout: float, start: int = 0
    ) -> tuple[int, Message]:
        """The first message at index >= start that matches, waiting up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        index = start
        while True:
            while index < len(self.messages):
                if match(self.messages[index]):
                    return index, self.messages[index]
                index += 1
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = [m.fields for m in self.messages[start:]]
                raise AssertionError(f"no matching notification within {timeout}s; got {seen}")
            readable, _, _ = select.select([self.sock], [], [], remaining)
            if readable:
                self.drain()

    def wait_key(self, key: str, timeout: float, start: int = 0) -> tuple[int, Message]:
        return self.wait_for(lambda m: key in m, timeout, start)

    def collect(self, seconds: float) -> list[Message]:
        """Everything that arrives during the next ``seconds`` seconds."""
        start = len(self.messages)
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([self.sock], [], [], remaining)
            if readable:
                self.drain()
        self.drain()
        return self.messages[start:]
