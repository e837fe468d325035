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
from collections.abc import Iterable, Sequence

PLACEHOLDER = "<*>"
# Distinct values at a position before it counts as variable. 3 merges real message text on Loghub
# (`VM Started`/`Paused`/`Resumed`); 4 is the smallest that does not (docs/patterns.md).
VARIABLE_AT = 4

# Templates of this many pieces or more need one distinct value fewer (docs/patterns.md).
LONG_CONTEXT = 9

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


class _Counts:
    """Distinct values per position, each set kept only up to the threshold, and what they held."""

    __slots__ = ("capital", "partial", "values")

    def __init__(self, n: int) -> None:
        self.values: list[set[str]] = [set() for _ in range(n)]
        # Whether a value began with a capital letter: enum-like message text (`GET`, `Started`), which
        # never gets the lower threshold of a long context.
        self.capital = [False] * n
        # 2 once a value holding a masked part (`expire-<*>`) was seen, 1 once a whole `<*>` was: the
        # token rules found a value there, so fewer distinct values make the position variable.
        self.partial = [0] * n

    def add(self, pieces: Sequence[str], positions: Iterable[int], cap: int) -> list[int]:
        """Record the pieces at `positions`; returns the positions that got a new value."""
        new = []
        for i in positions:
            vals = self.values[i]
            p = pieces[i]
            if len(vals) < cap and p not in vals:
                vals.add(p)
                new.append(i)
                if p[:1].isupper():
                    self.capital[i] = True
                if PLACEHOLDER in p:
                    self.partial[i] = max(self.partial[i], 1 if p == PLACEHOLDER else 2)
        return new

    def varies(self, i: int, at: int, long: bool) -> bool:
        if long and not self.capital[i]:
            at -= 1
        # never fewer than two: one value does not vary
        return len(self.values[i]) >= max(2, at - self.partial[i])


class _Group:
    __slots__ = ("anchor", "candidates", "counts", "long", "masked", "members", "subs")

    def __init__(self, n: int, anchor: int, long: bool) -> None:
        self.anchor = anchor
        self.long = long
        # Every distinct template seen: what a change of the candidates re-sorts.
        self.members: dict[tuple[str, ...], None] = {}
        self.counts = _Counts(n)
        # Positions that vary across the whole group: the only ones that may be masked.
        self.candidates: tuple[int, ...] = ()
        # By the pieces at the other positions (a sub-group: templates that agree on everything but
        # the candidates): the counts at the candidates and the positions masked.
        self.subs: dict[tuple[str, ...], _Counts] = {}
        self.masked: dict[tuple[str, ...], frozenset[int]] = {}

    def project(self, pieces: Sequence[str]) -> tuple[str, ...]:
        cand = self.candidates
        return tuple(p for i, p in enumerate(pieces) if i not in cand)


class Structure:
    """Variable positions per group. Feed it rule templates with `observe`; `apply` gives the template.

    Two levels, so that two templates that share only a first word and a length do not mask each
    other's text: a position is a *candidate* once it varies across the group, and it is masked in a
    template once it varies across the templates that agree with it on every non-candidate position."""

    def __init__(self, variable_at: int = VARIABLE_AT) -> None:
        self.variable_at = variable_at
        # A group seen with one template only is that template (most groups, when key values are many):
        # nothing can vary in it, and a tuple costs far less than a _Group.
        self._groups: dict[GroupKey, _Group | tuple[str, ...]] = {}

    @staticmethod
    def group_of(key: tuple[str | None, ...], template: str) -> tuple[GroupKey, list[str], list[str]]:
        pieces, seps = split(template)
        a = _anchor(pieces)
        return (key, len(pieces), tuple(seps), pieces[a] if a < len(pieces) else ""), pieces, seps

    def _sub_masked(self, g: _Group, sub: _Counts) -> frozenset[int]:
        return frozenset(i for i in g.candidates if sub.varies(i, self.variable_at, g.long))

    def observe(self, key: tuple[str | None, ...], template: str) -> GroupKey | None:
        """Record a rule template; returns its group's key if what the group masks changed."""
        gk, changed = self.observe_in_group(key, template)
        return gk if changed else None

    def observe_in_group(self, key: tuple[str | None, ...], template: str) -> tuple[GroupKey, bool]:
        """Record a rule template: (its group's key, whether what the group masks changed)."""
        gk, pieces, _ = self.group_of(key, template)
        tp = tuple(pieces)
        found = self._groups.get(gk)
        if found is None or found == tp:
            self._groups[gk] = tp
            return gk, False
        at = self.variable_at
        if type(found) is tuple:
            # A long shared context is stronger evidence that the one word differing is a value.
            long = sum(1 for p in pieces if p) >= LONG_CONTEXT
            g = self._groups[gk] = _Group(len(pieces), _anchor(pieces), long)
            g.members[found] = None
            g.counts.add(found, [i for i in range(len(pieces)) if i != g.anchor], at)
        else:
            assert isinstance(found, _Group)
            g = found
        if tp in g.members:
            return gk, False
        g.members[tp] = None
        new = g.counts.add(pieces, [i for i in range(len(pieces)) if i != g.anchor], at)
        # Candidates only grow, and only where a new value arrived.
        grown = [i for i in new if i not in g.candidates and g.counts.varies(i, at, g.long)]
        if grown:
            # New candidates: sub-groups merge. Rebuilt from the members (rare: at most once per
            # position of the group).
            cand = g.candidates = tuple(sorted((*g.candidates, *grown)))
            subs: dict[tuple[str, ...], _Counts] = {}
            for m in g.members:
                proj = g.project(m)
                sub = subs.get(proj)
                if sub is None:
                    sub = subs[proj] = _Counts(len(pieces))
                sub.add(m, cand, at)
            g.subs = subs
            g.masked = {proj: self._sub_masked(g, sub) for proj, sub in subs.items()}
            return gk, True
        cand = g.candidates
        if not cand:
            return gk, False
        proj = g.project(pieces)
        sub = g.subs.get(proj)
        if sub is None:
            sub = g.subs[proj] = _Counts(len(pieces))
        sub.add(pieces, cand, at)
        masked = self._sub_masked(g, sub)
        if masked == g.masked.get(proj, frozenset()):
            return gk, False
        g.masked[proj] = masked
        return gk, True

    def apply(self, key: tuple[str | None, ...], template: str) -> str:
        """The template with the variable positions of its sub-group masked."""
        gk, pieces, seps = self.group_of(key, template)
        g = self._groups.get(gk)
        if not isinstance(g, _Group) or not g.candidates:
            return template
        masked = g.masked.get(g.project(pieces))
        if not masked:
            return template
        changed = False
        for i in masked:
            if pieces[i] != PLACEHOLDER:
                pieces[i] = PLACEHOLDER
                changed = True
        return join(pieces, seps) if changed else template

    def why(self, key: tuple[str | None, ...], template: str) -> list[tuple[str, str]]:
        """(piece, reason) for each piece this stage masks in `template`: for `extract --explain`."""
        gk, pieces, _ = self.group_of(key, template)
        g = self._groups.get(gk)
        if not isinstance(g, _Group) or not g.candidates:
            return []
        proj = g.project(pieces)
        sub = g.subs.get(proj)
        out = []
        for i in sorted(g.masked.get(proj, frozenset())):
            if pieces[i] != PLACEHOLDER and sub is not None:
                n = len(sub.values[i])
                held = " (one holds a masked part)" if sub.partial[i] else ""
                out.append(
                    (
                        pieces[i],
                        f"piece {i} of {gk[1]} after {gk[3]!r} took {n}{'+' if n >= self.variable_at else ''}"
                        f" values{held} across templates that agree on the other pieces",
                    )
                )
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
