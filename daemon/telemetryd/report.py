"""The JSON documents users' scripts read: `patterns --json`, `status --json`, `checkpoint show`."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from typing import Any

from .checkpoint import State


def iso(ts: float) -> str | None:
    if not ts:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def patterns_document(state: State, key_fields: Sequence[str], top: int | None = None) -> dict[str, Any]:
    # Patterns folded into a more general one are listed under it ("absorbed"), not on their own: the
    # general pattern's count already includes theirs (docs/patterns.md).
    absorbed: dict[str, list[str]] = {}
    for p in state.patterns.values():
        final = p
        while final.absorbed_into is not None and final.absorbed_into in state.patterns:
            final = state.patterns[final.absorbed_into]
        if final is not p:
            absorbed.setdefault(final.id, []).append(p.id)
    live = (p for p in state.patterns.values() if p.absorbed_into is None)
    ps = sorted(live, key=lambda p: (-p.count, p.id))
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
                "absorbed": sorted(absorbed.get(p.id, [])),
                "absorbed_count": p.absorbed,
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


def status_document(state: State) -> dict[str, Any]:
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
    return {
        "checkpoint_time": iso(state.time),
        "events_total": state.totals.events,
        "lines_skipped_total": sum(state.totals.skipped.values()),
        "lines_skipped": dict(sorted(state.totals.skipped.items())),
        "overflow_count": state.totals.overflow,
        "patterns": sum(1 for p in state.patterns.values() if p.absorbed_into is None),
        "generation": state.generation,
        "seq": state.seq,
        "files": files,
    }
