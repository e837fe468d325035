"""Masking: a free-text message becomes a template with variable tokens replaced by <*>.

A pure function of the text, so a pattern id derived from it is equal on every host and run.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

PLACEHOLDER = "<*>"
# Part of the settings digest: bump whenever a built-in rule changes what template() returns.
RULESET_VERSION = "0"

_BUILTIN = re.compile(
    r"""
    [0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}   # UUID
  | (?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?(?![\w.])                        # IPv4[:port]
  | (?<![\w:])(?:[0-9a-fA-F]{0,4}:){2,7}[0-9a-fA-F]{0,4}(?![\w:])              # IPv6
  | \b0[xX][0-9a-fA-F]+\b                                                     # 0x hex
  | \b(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{8,}\b                                      # long hex ids
  | (?<![\w.])[-+]?\d+(?:\.\d+)?(?![\w.])                                      # numbers
    """,
    re.VERBOSE,
)


class Masker:
    def __init__(self, extra: Sequence[tuple[str, str]] = ()) -> None:
        self._extra: list[tuple[re.Pattern[str], str]] = []
        for regex, replacement in extra:
            try:
                self._extra.append((re.compile(regex), replacement))
            except re.error as e:
                raise ValueError(f"invalid mask regex {regex!r}: {e}") from None

    def template(self, text: str) -> str:
        for rx, repl in self._extra:
            text = rx.sub(repl, text)
        return _BUILTIN.sub(PLACEHOLDER, text)
