"""The structural stage: which word positions of a template vary, decided from the set of templates seen.

The token rules (masking.py) look at one message; a user name or a queue name is a plain word there.
This stage looks across messages. A rule template is cut into *pieces* at white space and at the
punctuation that separates fields (``: = , ( ) [ ] " '``). Templates with the same key values, the same
number of pieces, the same separators and the same first piece form a *group*. Within a group, a
position is *variable* once

- VARIABLE_AT distinct values have been seen there, or
- two distinct values have, one of which already holds a masked part (``expire-<*>``): the token rules
  saw a value there, so one other value is enough.

The template of a message is its rule template with the variable positions of its group replaced by
``<*>``. The first piece is the group's anchor and is never variable.

Why it is exact and order-free: the state of a group is, per position, whether it is variable, which
depends only on the *set* of rule templates seen (a count of distinct values against a threshold), not
on their order; and it only grows (a position never stops being variable). So the final template of
every message is a function of the set of messages, whatever the order, file split or block size.

Why it survives a restart without a second source of truth: `Structure.from_templates` rebuilds the
state from the templates of every pattern entry, absorbed ones included. Before a position becomes
variable, every rule template seen has a pattern entry that keeps its value there (the counter creates
the entry of the message that makes the position variable before folding it), so the distinct values
recorded in the entries are exactly the distinct values seen, up to the threshold.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

PLACEHOLDER = "<*>"
# Distinct values at a position before it counts as variable. 3 merges real message text on Loghub
# (`VM Started`/`Paused`/`Resumed`); 4 is the smallest that does not (docs/patterns.md).
VARIABLE_AT = 4

_SEP = re.compile(r"(\s+|[:=,()\[\]\"'])")

GroupKey = tuple[tuple[str | None, ...], int, tuple[str, ...], str]


def split(template: str) -> tuple[list[str], list[str]]:
    """Pieces and the separators between them (len(seps) == len(pieces) - 1)."""
    parts = _SEP.split(template)
    return parts[0::2], parts[1::2]


def join(pieces: list[str], seps: list[str]) -> str:
    out = [pieces[0]]
    for s, p in zip(seps, pieces[1:], strict=True):
        out.append(s)
        out.append(p)
    return "".join(out)


def _anchor(pieces: list[str]) -> int:
    """Index of the first non-empty piece: the group's anchor, never variable."""
    for i, p in enumerate(pieces):
        if p:
            return i
    return len(pieces)


class _Group:
    __slots__ = ("partial", "values", "variable")

    def __init__(self, n: int) -> None:
        # Distinct values per position, kept only until the position is variable.
        self.values: list[set[str] | None] = [set() for _ in range(n)]
        # 2 once a value holding a masked part (`expire-<*>`) was seen, 1 once a whole `<*>` was: the
        # token rules found a value there, so fewer distinct values make the position variable.
        self.partial = [0] * n
        self.variable: frozenset[int] = frozenset()


class Structure:
    """Variable positions per group. Feed it rule templates with `observe`; `apply` gives the template."""

    def __init__(self, variable_at: int = VARIABLE_AT) -> None:
        self.variable_at = variable_at
        self._groups: dict[GroupKey, _Group] = {}

    @staticmethod
    def group_of(key: tuple[str | None, ...], template: str) -> tuple[GroupKey, list[str], list[str]]:
        pieces, seps = split(template)
        a = _anchor(pieces)
        return (key, len(pieces), tuple(seps), pieces[a] if a < len(pieces) else ""), pieces, seps

    def observe(self, key: tuple[str | None, ...], template: str) -> GroupKey | None:
        """Record a rule template; returns its group's key if a position of the group became variable."""
        gk, pieces, _ = self.group_of(key, template)
        g = self._groups.get(gk)
        if g is None:
            g = self._groups[gk] = _Group(len(pieces))
        anchor = _anchor(pieces)
        newly: list[int] = []
        for i, p in enumerate(pieces):
            vals = g.values[i]
            if vals is None or i == anchor or p in vals:
                continue
            vals.add(p)
            if PLACEHOLDER in p:
                g.partial[i] = max(g.partial[i], 1 if p == PLACEHOLDER else 2)
            if len(vals) >= self.variable_at - g.partial[i]:
                g.values[i] = None
                newly.append(i)
        if not newly:
            return None
        g.variable = g.variable.union(newly)
        return gk

    def apply(self, key: tuple[str | None, ...], template: str) -> str:
        """The template with the variable positions of its group masked."""
        gk, pieces, seps = self.group_of(key, template)
        g = self._groups.get(gk)
        if g is None or not g.variable:
            return template
        changed = False
        for i in g.variable:
            if pieces[i] != PLACEHOLDER:
                pieces[i] = PLACEHOLDER
                changed = True
        return join(pieces, seps) if changed else template

    def why(self, key: tuple[str | None, ...], template: str) -> list[tuple[str, str]]:
        """(piece, reason) for each piece this stage masks in `template`: for `extract --explain`."""
        gk, pieces, _ = self.group_of(key, template)
        g = self._groups.get(gk)
        if g is None:
            return []
        out = []
        for i in sorted(g.variable):
            if pieces[i] != PLACEHOLDER:
                why = (
                    f"position {i} of {gk[1]} pieces after {gk[3]!r} took a value holding {PLACEHOLDER}"
                    if g.partial[i]
                    else f"position {i} of {gk[1]} pieces after {gk[3]!r} took >= {self.variable_at} values"
                )
                out.append((pieces[i], why))
        return out

    @classmethod
    def from_templates(
        cls, entries: Iterable[tuple[tuple[str | None, ...], str]], variable_at: int = VARIABLE_AT
    ) -> Structure:
        """The state after seeing the templates of every pattern entry (absorbed ones included)."""
        s = cls(variable_at)
        for key, template in entries:
            s.observe(key, template)
        return s
