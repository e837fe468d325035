"""`telemetryd extract`: the pattern the daemon would give each line, for a whole input at once.

The structural stage decides from the set of messages, so extract reads all its input first, teaches
the structure every rule template, then gives each line its final template: the same template, and so
the same id, as the daemon's live pattern after counting the same lines in any order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from .events import DECODE_ERRORS, INVALID_UTF8, TOO_LONG, skip_reason
from .patterns import EXAMPLE_MAX_CHARS, Extractor, pattern_id
from .structure import Structure


def _first_pass(ex: Extractor, line: bytes, max_line_bytes: int) -> tuple[str, Any, Any]:
    if len(line) > max_line_bytes:
        return "skip", TOO_LONG, None
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return "skip", INVALID_UTF8, None
    try:
        ev = ex.schema.decoder.decode(line)
    except DECODE_ERRORS as e:
        return "skip", skip_reason(line, e), None
    key = ex.schema.key_values(ex.schema.raw_key(ev))
    tpl, text = ex.template(ex.schema.raw_template(ev))
    return "ok", key, (tpl, text)


def extract_rows(
    ex: Extractor, lines: Iterable[bytes], max_line_bytes: int, explain: bool = False
) -> Iterator[dict[str, Any]]:
    """One result per line, in input order: {"id", "key", "template"} or {"skipped": reason}; with
    `explain`, also "stage0" (the text after user masks and stage 0 of the token rules: the typed
    values it removed), "rule_template" (after all token rules) and "variables": the pieces the
    structural stage masked and why."""
    firsts = [_first_pass(ex, ln, max_line_bytes) for ln in lines]
    st = Structure()
    for kind, key, rest in firsts:
        if kind == "ok" and rest[0] is not None and len(rest[1]) < EXAMPLE_MAX_CHARS:
            st.observe(key, rest[0])
    for kind, key, rest in firsts:
        if kind == "skip":
            yield {"skipped": key}
            continue
        tpl, text = rest
        final = st.apply(key, tpl) if tpl is not None and len(text) < EXAMPLE_MAX_CHARS else tpl
        row: dict[str, Any] = {
            "id": pattern_id(ex.key_fields, key, final),
            "key": dict(zip(ex.key_fields, key, strict=True)),
            "template": final,
        }
        if explain:
            row["stage0"] = ex.masker.prepare(text) if tpl is not None else None
            row["rule_template"] = tpl
            why = st.why(key, tpl) if final != tpl and tpl is not None else []
            row["variables"] = [{"piece": p, "why": w} for p, w in why]
        yield row
