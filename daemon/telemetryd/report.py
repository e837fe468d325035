"""The documents users and their scripts read: `patterns`, `status`, `checkpoint show` (docs/contract.md).

Everything here reads committed state and the file system; nothing here changes either.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Sequence
from typing import Any

import msgspec

from .checkpoint import Recovery, State


def iso(ts: float) -> str | None:
    if not ts:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def named(obj: Any) -> Any:
    """Builtins with every struct as an object of its named fields.

    The checkpoint's structs are array_like (compact on disk), and msgspec.to_builtins would turn them
    into positional arrays: a reader could not tell the fields apart and a script would depend on their
    order. Walking the declared fields keeps the on-disk format free to stay compact.
    """
    if isinstance(obj, msgspec.Struct):
        return {f: named(getattr(obj, f)) for f in obj.__struct_fields__}
    if isinstance(obj, dict):
        return {str(k): named(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [named(v) for v in obj]
    return obj


def patterns_document(state: State, key_fields: Sequence[str], top: int | None = None) -> dict[str, Any]:
    ps = sorted(state.patterns.values(), key=lambda p: (-p.count, p.id))
    if top is not None:
        ps = ps[:top]
    return {
        "checkpoint_time": iso(state.time),
        "events_total": state.totals.events,
        "overflow_count": state.totals.overflow,
        "patterns": [
            {
                "id": p.id,
                "key": dict(zip(key_fields, p.key, strict=False)),
                "template": p.template,
                "count": p.count,
                "first_seen": iso(p.first_seen),
                "last_seen": iso(p.last_seen),
                "example": p.example,
            }
            for p in ps
        ],
    }


def _current_size(path: str, dev: int, ino: int) -> int | None:
    """Size of the file if its path still leads to the same file, else None."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if (st.st_dev, st.st_ino) != (dev, ino):
        return None
    return st.st_size


def lock_holder(state_dir: str) -> tuple[bool | None, int | None]:
    """(whether a process holds the state dir's lock, the pid it wrote), without taking the lock.

    Taking it, even shared and for an instant, would make a daemon starting at that moment exit 3, so
    the kernel's table of flock locks (/proc/locks) is read instead. (None, pid) when it cannot tell.
    """
    path = os.path.join(state_dir, "lock")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False, None
    except OSError:
        return None, None
    pid: int | None = None
    # lock.py writes "<pid>\n"; O_NOFOLLOW: a symlink planted as `lock` is not followed, only reported.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            text = os.read(fd, 64).decode("ascii", "replace").strip()
        finally:
            os.close(fd)
        pid = int(text) if text.isdigit() else None
    except OSError:
        pass
    ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks") as f:
            table = f.read()
    except OSError:
        return None, pid
    for line in table.splitlines():
        # "1: FLOCK  ADVISORY  WRITE 7321 fe:00:2150471 0 EOF"; "->" lines are waiters, not holders.
        parts = line.split()
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == ident and parts[4].isdigit():
            return True, int(parts[4])
    return False, pid


def status_document(state: State, state_dir: str, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    files = []
    for f in sorted(state.files.values(), key=lambda f: f.path):
        size = _current_size(f.path, f.dev, f.ino)
        files.append(
            {
                "path": f.path,
                "offset": f.offset,
                "size": size,
                "lag_bytes": max(0, size - f.offset) if size is not None else 0,
            }
        )
    running, pid = lock_holder(state_dir)
    return {
        "checkpoint_time": iso(state.time),
        "checkpoint_age_seconds": round(max(0.0, now - state.time), 3) if state.time else None,
        "daemon": {"running": running, "pid": pid},
        "events_total": state.totals.events,
        "lines_skipped_total": sum(state.totals.skipped.values()),
        "lines_skipped": dict(sorted(state.totals.skipped.items())),
        "overflow_count": state.totals.overflow,
        "patterns": len(state.patterns),
        "generation": state.generation,
        "seq": state.seq,
        "files": files,
    }


def checkpoint_document(rec: Recovery, state_files: list[str]) -> dict[str, Any]:
    s = rec.state
    key_fields = s.settings.key_fields if s.settings else []
    patterns = named(sorted(s.patterns.values(), key=lambda p: (-p.count, p.id)))
    for p in patterns:
        # Committed as a tuple in key_fields order; shown as patterns --json shows it.
        p["key"] = dict(zip(key_fields, p["key"], strict=False))
    return {
        "outcome": rec.outcome,
        "notes": rec.notes,
        "generation": s.generation,
        "seq": s.seq,
        "checkpoint_time": iso(s.time),
        "settings": named(s.settings),
        "totals": named(s.totals),
        "files": named(sorted(s.files.values(), key=lambda f: f.path)),
        "truncated": named(s.truncated),
        "patterns": patterns,
        "state_files": state_files,
    }


def age(seconds: float) -> str:
    """12.3 s, 4 min 5 s, 3 h 2 min, 2 d 4 h: for people reading `status`."""
    s = int(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def shorten(text: str | None, width: int) -> str:
    """One line of at most `width` characters; '-' for nothing."""
    if text is None or text == "":
        return "-"
    one = " ".join(text.split())
    return one if len(one) <= width else one[: width - 1] + "…"


def table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> list[str]:
    """Columns padded to their widest cell (numbers in `right` aligned right); the last column is not
    padded, so a long last cell does not push trailing blanks."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    out = []
    for r in [list(header), *rows]:
        cells = [
            c.rjust(widths[i]) if i in right else (c if i == len(r) - 1 else c.ljust(widths[i]))
            for i, c in enumerate(r)
        ]
        out.append("  ".join(cells).rstrip())
    return out
