"""Stage 0 of the template rules: values whose shape alone says they are values, replaced in one pass.

A UUID, an email address, a path, a quoted string, an IPv6 address, a Kubernetes pod name or a random
id is a value wherever it stands. Replacing them with ``<*>`` before every other rule has two effects:
the rest of the rules see a text in which only words, numbers and punctuation remain, and that text,
with its digits collapsed (the *key*), is what the hot path caches templates by. On service telemetry
nearly every message carries a unique id, so the raw text is never seen twice; its key is.

The template is a function of the stage-0 text, so the key is a sound cache key by construction. The
pass is defined here in Python (`stage0`) and, for speed, mirrored in C (`_stage0.c`, built when a
compiler is there): `key()` uses the C pass for ASCII text and this module for everything else. Both
must give the same bytes for every text; tests/test_stage0.py checks them against each other.

The scan, for both: at each position the alternatives of `_STAGE0` are tried in order; the first that
matches consumes its text (even when its check keeps the text as it is) and scanning goes on after it.
Every class is ASCII (``re.ASCII``); any other character is punctuation to this stage.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from itertools import pairwise
from typing import Any, NamedTuple, TypeVar

PLACEHOLDER = "<*>"
_P = PLACEHOLDER

# Characters that continue a word, an id or a host name: a value never starts or ends next to them.
_STAGE0 = re.compile(
    "|".join(
        (
            # a double-quoted string is one value (a search phrase, a name with spaces); an HTTP request
            # line is not: it keeps its method (masking._HTTP_REQUEST masks the rest)
            r'(?P<quoted>"[^"]*")',
            r"(?<![A-Za-z0-9_])(?P<uuid>[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})"
            r"(?![A-Za-z0-9_])",
            # IPv6 and MAC addresses written in full: 4 to 16 hex groups joined by colons
            r"(?<![A-Za-z0-9_:])(?P<ipv6>(?:[0-9A-Fa-f]{1,4}:){3,15}+[0-9A-Fa-f]{1,4})(?![A-Za-z0-9_:])",
            # local@domain; `_email` checks the domain
            r"(?<![A-Za-z0-9_.+/:@-])(?P<email>[A-Za-z0-9_.+-]++@[A-Za-z0-9.-]++)(?![A-Za-z0-9_@+])",
            # an absolute path starts a token or follows punctuation, never a word ("PS/2", "hi/lo")
            r"(?<![A-Za-z0-9_./:-])(?P<path>(?:\.{1,2}(?=/))?(?:/++[^\s/:,;'\"()\[\]{}<>|=]++)++/?)",
            # a relative path of three or more parts with an id in it: bucket/dir/object-id
            # (`_relpath` checks: "seq/ack/win" is message text)
            r"(?<![A-Za-z0-9_.:/@-])(?P<relpath>[A-Za-z0-9_.-]++(?:/[A-Za-z0-9_.-]++){2,}+/?)"
            r"(?![A-Za-z0-9_.:/@-])",
            # a word of 10+ letters, digits and underscores; `_word` decides whether it is an id
            r"(?<![A-Za-z0-9_.:/@-])(?P<word>[A-Za-z0-9_]{10,}+)(?![A-Za-z0-9_.:/@-])",
            # lower-case words joined by hyphens; `_pod` picks out <workload>-<hash>-<5 chars>
            r"(?<![A-Za-z0-9_.-])(?P<dashed>[a-z0-9]++(?:-[a-z0-9]++){2,}+)(?![A-Za-z0-9_.-])",
            # labels joined by dots; `is_hostname` picks out host names (the token rules' own test, so a
            # name masked here is one they would mask); not the key of key=value
            r"(?<![A-Za-z0-9_.@/:-])(?P<host>[A-Za-z0-9][A-Za-z0-9-]*+(?:\.[A-Za-z0-9-]++)++)(?![A-Za-z0-9_@/=-])",
        )
    ),
    re.ASCII,
)
_HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE")
_HTTP_QUOTED = tuple(f'"{m} ' for m in _HTTP_METHODS)
_HEX = frozenset("0123456789abcdefABCDEF")
_DIGITS = frozenset("0123456789")
_LOWER = frozenset("abcdefghijklmnopqrstuvwxyz")
_UPPER = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _class(c: str) -> int:
    return 0 if c in _LOWER else 1 if c in _UPPER else 2


def random_id(w: str) -> bool:
    """A random base62 id (``VLd9HlQVBCPJ``, ``FbKIYKLONVUEQkufZpHtKbIi``): 12+ letters and digits, both
    cases, changing between lower case, upper case and digits far more often than a camelCase name
    (``MRClientProtocolPB``, ``getTodayTotalDetailSteps``) does: at every third character or more."""
    n = len(w)
    if n < 12 or not (w.isalnum() and w.isascii()) or w.islower() or w.isupper():
        return False
    changes = sum(1 for a, b in pairwise(map(_class, w)) if a != b)
    return changes * 3 >= n


def prefixed_id(w: str) -> bool:
    """``evt_FbKIYKLONVUEQkufZpHtKbIi``: after a prefix, 16+ letters of both cases."""
    head, _, tail = w.rpartition("_")
    return bool(head) and len(tail) >= 16 and tail.isalpha() and not (tail.islower() or tail.isupper())


def _word(w: str, after: str) -> bool:
    if sum(1 for c in w if c in _DIGITS) >= 2 and any(c in _LOWER or c in _UPPER for c in w):
        return True  # an id (hex digest, base62 key with its prefix, run id), not a name like "Slf4jLogger"
    if after == "=" or w.isalpha():
        # the key of key=value is message text; so is a word of letters alone, however it mixes cases
        # (``getTodayTotalDetailSteps``)
        return False
    return any(map(random_id, w.split("_"))) or prefixed_id(w)


def _email(m: re.Match[str]) -> str:
    text = m.group()
    domain = text.partition("@")[2]
    core = domain.rstrip(".-")
    labels = core.split(".")
    if len(labels) >= 2 and all(labels) and len(labels[-1]) >= 2 and labels[-1].isalpha():
        return _P + domain[len(core) :]
    return text


def _pod(text: str) -> bool:
    parts = text.split("-")
    hashpart = parts[-2]
    lower_hex = all(c in _HEX and not c.isupper() for c in hashpart)
    return 6 <= len(hashpart) <= 10 and lower_hex and len(parts[-1]) == 5


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


GTLDS = _words(
    "com net org edu gov mil int info biz name pro asia mobi tel travel aero coop jobs museum app dev "
    "cloud online site tech xyz top club shop live local lan localdomain internal arpa corp home"
)
# Two-letter endings that are more often words or file extensions than country codes.
NOT_TLDS = _words("id in is it to at no do go so me my py rs js ts sh rb cs md gz xz db cc hh pm ps")
FILE_EXTS = _words("pl mk am ac el ml hs vb fs")


def is_hostname(name: str) -> bool:
    labels = name.split(".")
    if len(labels) < 2 or not all(labels):
        return False
    tld = labels[-1].lower()
    if tld in GTLDS:
        return True
    if len(tld) != 2 or not tld.isalpha() or tld in NOT_TLDS:
        return False
    return len(labels) >= 3 or tld not in FILE_EXTS


def _relpath(text: str) -> bool:
    """A path of ids, not of words: a digit in it, or a part of 8+ hex digits (``ab/cd/deadbeefaa``)."""
    if any(c in _DIGITS for c in text):
        return True
    return any(len(part) >= 8 and _HEX.issuperset(part) for part in text.split("/"))


def _replace(m: re.Match[str]) -> str:
    kind = m.lastgroup
    text = m.group()
    if kind == "quoted":
        return text if text.startswith(_HTTP_QUOTED) else _P
    if kind == "email":
        return _email(m)
    if kind == "word":
        end = m.end()
        return _P if _word(text, m.string[end : end + 1]) else text
    if kind == "dashed":
        return _P if _pod(text) else text
    if kind == "relpath":
        return _P if _relpath(text) else text
    if kind == "host":
        return _P if is_hostname(text) else text
    return _P


def stage0_py(text: str) -> str:
    """The text the rest of the rules see: every typed value replaced with ``<*>``."""
    return _STAGE0.sub(_replace, text)


def stage0(text: str) -> str:
    """stage0_py, in C for ASCII text when the accelerator is built (the slow path runs it per miss)."""
    return _stage0_ascii(text) if _stage0_ascii is not None and text.isascii() else stage0_py(text)


DIGIT_SHAPE = bytes.maketrans(b"123456789", b"000000000")

# --- plans: what the structural stage and the rules mask, carried into the key --------------------------
# structure.py masks a word position once it varies; a user or queue name there, or a number of another
# length, then makes every message a new key. A *plan*, stored under a text's first token(s) and token
# count, names the positions whose word `key` replaces with BLANK, whose digits it keeps, and whose
# number it shortens, so that such messages share one key. Why that is sound, and which words may be
# blanked, is in docs/design.md ("Cache keys and plans"); in short: only what the template of the text
# that stores an entry masks, in a text of one line of ASCII whose tokens the rules keep apart.
BLANK = b"\x00"
PLAN_MAX_TOKENS = 64
PLAN_MAX_CHARS = 1024  # patterns.EXAMPLE_MAX_CHARS is this: a longer text gets no structural stage
_WORD_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyz_.-")
_LOWER_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyz")
# Lower-case words that a rule spanning tokens reads (masking.py stage 1 and 3): units after a number,
# the clause words that end "user NAME", and the words that start or stop it.
SENSITIVE = frozenset(
    b"ms s sec secs second seconds min mins minute minutes h hour hours us ns b byte bytes "
    b"from by on at to in with for via user unknown".split()
)
# What str.split() and bytes.split() both split on: with any of \x1c-\x1f in a text (str.split() splits
# on them, bytes.split() does not) no plan applies.
_WS = re.compile(rb"([ \t\n\r\x0b\x0c]+)")
_SPLIT_MISMATCH = re.compile("[\x1c-\x1f]")
HAS_DIGIT = re.compile("[0-9]")
# A number as one token: "1049ms", "(845.7ms),", "rows=244304", "62%". Every rule masks the number in it
# whole, whatever the length of its digit runs (docs/design.md); only the date rules ("Jun 17 07:07:00":
# a month name, behind the rules' ":\d\d" gate) read the length, and no plan collapses where they may.
NUMBER = re.compile(rb"[(\[]?(?:[a-z_]+=)?[0-9]+(?:\.[0-9]+)*[A-Za-z%]*[)\],;]*")
_DIGIT_RUN = re.compile(rb"[0-9]+")
_CLOCK_HINT = re.compile(":[0-9][0-9]")

# (positions blanked, positions whose digits are kept as they are, the digit shapes of the tokens kept:
# a plan applies only to texts with these tokens there, so that "key k12" (kept) does not make every
# "key k3456" (masked) a key of its own), and the positions of numbers whose digit runs are each made
# one 0 (the rules mask a number whole whatever its length: "12ms" and "3456.7ms" share a key)
Plan = tuple[tuple[int, ...], tuple[int, ...], tuple[bytes, ...], tuple[int, ...]]
# Plans by plan key, and under each first token that has any (a token holds no white space, so it is
# never a plan key) which kinds of plan key exist for it: 1 the first token and count, 2 the first two
# tokens and count. `select_plan` reads that first, so a text whose first token has no plans costs one
# lookup of a word that recurs, not two of keys that hold its second token. Written by `put_plan`.
Plans = dict[bytes, "Plan | int"]
Key = bytes


_LETTERS_ONE_DIGIT = re.compile(rb"[A-Za-z]+(?:[0-9][A-Za-z]*)?")
_HEX_BYTES = frozenset(b"0123456789abcdefABCDEF")
# Capitalised month and weekday names: the date rules (masking._CTIME) find them anywhere, even at the end
# of a longer word ("xyzJun 7 07:07:00"), and then read the tokens after them.
_CALENDAR = (
    *(b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"),
    *(b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"),
)


_CALENDAR_WORD = re.compile("|".join(w.decode() for w in _CALENDAR))


def _dated(text: str) -> bool:
    """Whether a date rule may match in `text`: both need a month name, behind the ":\\d\\d" gate
    (months and weekdays are both checked: the weekday form needs a month too, so this only errs on
    the side of collapsing less)."""
    return _CLOCK_HINT.search(text) is not None and _CALENDAR_WORD.search(text) is not None


def blankable(tok: bytes) -> bool:
    """A word a plan may blank: one that no rule reads, so that every such word is one structural piece
    to the rules whatever it says (docs/design.md, "Cache keys and plans"). Either a plain word
    (lower-case letter, then lower-case letters, ``_ . -``) or an id-like word: 8+ ASCII letters with at
    most one digit, not first, not all hex (``eQBLhIEpqBwusYHW``, ``wgnrgywe3Vgu``: the rules keep such a
    word, because stage 0 has masked it where it is a random id), minus what a rule spanning tokens reads:
    SENSITIVE, a word ending in "user" (the "user NAME" rule finds "user" at the end of a word and masks
    the next token) and a word holding a month or weekday name (the date rules find one at the end of a
    word and read the tokens after it). The time zone a date rule reads after the clock time (``EST``)
    need not be excluded: a text with a date has its tokens merged, and such a text never stores under a
    plan."""
    if not 0 < len(tok) <= 64 or tok[-4:].lower() == b"user":
        return False
    if tok[0] in _LOWER_BYTES and _WORD_BYTES.issuperset(tok):
        return tok not in SENSITIVE
    return (
        len(tok) >= 8
        and _LETTERS_ONE_DIGIT.fullmatch(tok) is not None
        and not _HEX_BYTES.issuperset(tok)
        and not any(w in tok for w in _CALENDAR)
    )


_HEAD = re.compile(rb"([a-z]+)-[0-9]")


def _read_across_tokens(name: bytes) -> bool:
    """A lower-case name that a rule spanning tokens reads (SENSITIVE, or a word ending in "user"):
    never blanked inside a token either."""
    return name in SENSITIVE or name.endswith(b"user")


def blank_head(tok: bytes) -> int:
    """The length of the name a plan may blank at the start of a token such as ``db-07``,
    ``zdev-18:6379`` or ``web-3.internal``: lower-case letters, then "-" and a digit; 0 for any other
    token. The rest of the token stays in the key. No rule reads such a name but to keep it or make it
    one value, and neither changes where the token's structural pieces begin and end (docs/design.md,
    "Cache keys and plans"), minus what a rule spanning tokens reads, as for `blankable`."""
    m = _HEAD.match(tok)
    if m is None or len(tok) > 64:
        return 0
    name = m.group(1)
    return 0 if _read_across_tokens(name) else len(name)


_SEGMENT = re.compile(rb"[^:=,()\[\]\"']*/([a-z]+):(?![\\])[^:]*")


def blank_segment(tok: bytes) -> tuple[int, int] | None:
    """Where the name is that a plan may blank in a token such as ``registry.example.com/api:1.4.2``
    (start and end), or None: lower-case letters after the last "/" of the token's first structural
    piece, which ends with them at a ":"; no other ":" after it, and no "\\" right after it. The rest
    of the token stays in the key. As for `blank_head`, no rule reads such a name but to keep it or
    make it one value; the colon and backslash conditions keep out the rules that read letters there
    (IPv6 and PCI hex groups, a Windows drive letter). docs/design.md, "Cache keys and plans"."""
    m = _SEGMENT.fullmatch(tok)
    if m is None or len(tok) > 64:
        return None
    name = m.group(1)
    if _read_across_tokens(name):
        return None
    return m.start(1), m.end(1)


def blanks(tok: bytes) -> bool:
    """Whether a plan's blank position does something to this token (a word, a name or a segment)."""
    return blankable(tok) or blank_head(tok) > 0 or blank_segment(tok) is not None


def blanked(tok: bytes) -> bytes:
    """The token as the key holds it at a blank position where `blanks` is true."""
    if blankable(tok):
        return BLANK
    h = blank_head(tok)
    if h:
        return BLANK + tok[h:]
    seg = blank_segment(tok)
    assert seg is not None
    return tok[: seg[0]] + BLANK + tok[seg[1] :]


def plan_keys(toks: list[bytes]) -> tuple[bytes, bytes]:
    """The two keys a plan may be stored under: the first two tokens and the count, then the first token
    and the count. Plans under the first are tried first (see `learn`)."""
    n = b" %d" % len(toks)
    return toks[0] + b" " + toks[1] + n, toks[0] + n


def put_plan(plans: Plans, pk: bytes, plan: Plan) -> None:
    """plans[pk] = plan, and the index entry of its first token."""
    first, _, rest = pk.partition(b" ")
    flags = plans.get(first)
    plans[intern(pk)] = plan
    plans[intern(first)] = (flags if type(flags) is int else 0) | (2 if b" " in rest else 1)


_K = TypeVar("_K")


def intern(key: _K) -> _K:
    """The object the C lookups make for a key of this content (bytes, or a tuple of str and bytes), so
    that a dict stores the object they will look it up with and finds it by identity; `key` itself
    without the C build. A pure speed-up: the object is equal to `key`."""
    return _intern(key) if _intern is not None else key


def plannable(text: str) -> bool:
    return len(text) < PLAN_MAX_CHARS and text.isascii() and not _SPLIT_MISMATCH.search(text)


class Applied(NamedTuple):
    """What a plan does to one text: the plan's key, the plan, and the positions it blanks, keeps and
    collapses in this text (a blank position whose word is not blankable here is left alone, and so is
    a number position that holds no number)."""

    key: bytes
    plan: Plan
    blank: tuple[int, ...]
    keep: tuple[int, ...]
    numbers: tuple[int, ...]


def select_plan(toks: list[bytes], plans: Plans) -> Applied | None:
    """The plan that applies to these tokens (digit shapes), the first of `plan_keys` that the index
    entry of the first token names; or None.

    A plan applies if every kept position holds its kept shape; then each position gets one effect, the
    last that applies of: kept, blanked (`blanks`: a blankable word, or the name `blank_head` or
    `blank_segment` finds), collapsed (a number). Positions out of range are skipped (a kept one makes
    the plan not apply). `learn` never makes two effects meet at one position, but the C mirror must
    agree on every input, so the order is part of the definition."""
    n = len(toks)
    flags = plans.get(toks[0])
    if type(flags) is not int:
        return None
    for kind, pk in zip((2, 1), plan_keys(toks), strict=True):
        plan = plans.get(pk) if flags & kind else None
        if type(plan) is not tuple or not all(
            0 <= j < n and toks[j] == t for j, t in zip(plan[1], plan[2], strict=True)
        ):
            continue
        effect = dict.fromkeys(plan[1], 2)
        effect.update((j, 1) for j in plan[0] if 0 <= j < n and blanks(toks[j]))
        effect.update((j, 3) for j in plan[3] if 0 <= j < n and NUMBER.fullmatch(toks[j]))
        if effect:
            return Applied(
                pk,
                plan,
                tuple(sorted(j for j, e in effect.items() if e == 1)),
                tuple(sorted(j for j, e in effect.items() if e == 2)),
                tuple(sorted(j for j, e in effect.items() if e == 3)),
            )
    return None


def _mask(positions: tuple[int, ...]) -> bytes:
    return sum(1 << j for j in positions).to_bytes(8, "little")


def apply_plan(raw: bytes, shape: bytes, plans: Plans) -> bytes:
    """`shape` (`raw` with its digits made 0) under its plan, or `shape`. Under a plan: the byte 0xff
    (never in UTF-8, so never in a key without a plan), the blanked, kept and collapsed positions as
    three 64-bit masks, then `shape` with the blanked words (or names) replaced by BLANK, the kept
    tokens as in `raw` and the digit runs of the collapsed numbers each made one 0."""
    parts = _WS.split(shape)
    first = 2 if parts[0] == b"" else 0  # a leading separator: b"", separator, first token
    toks = parts[first::2]
    if toks and toks[-1] == b"":
        toks.pop()
    if not 2 <= len(toks) <= PLAN_MAX_TOKENS:
        return shape
    a = select_plan(toks, plans)
    if a is None:
        return shape
    if a.keep:
        kept = _WS.split(raw)
        for j in a.keep:
            parts[first + 2 * j] = kept[first + 2 * j]
    for j in a.blank:
        parts[first + 2 * j] = blanked(toks[j])
    for j in a.numbers:
        parts[first + 2 * j] = _DIGIT_RUN.sub(b"0", toks[j])
    return b"\xff" + _mask(a.blank) + _mask(a.keep) + _mask(a.numbers) + b"".join(parts)


def key_py(text: str, plans: Plans) -> Key:
    """The cache key of a text: its stage-0 text, UTF-8, every ASCII digit made ``0``, under its plan."""
    raw = stage0_py(text).encode()
    shape = raw.translate(DIGIT_SHAPE)
    if plans and plannable(text):
        return apply_plan(raw, shape, plans)
    return shape


_PIECE_END = re.compile("[:=,()\\[\\]\"']")  # structure.py's separators within a token


def _structure_masked_head(rule_token: str, token: str) -> bool:
    """Whether the structural stage masked the first piece of a token (the rules left something else
    there) and the token keeps no digit (which a plan would have to keep as well)."""
    head = _PIECE_END.split(token, 1)[0]
    return head == PLACEHOLDER != _PIECE_END.split(rule_token, 1)[0] and HAS_DIGIT.search(token) is None


def _blanks_a_name(tok: bytes) -> bool:
    """Whether a blank position blanks a name in this token (`blanks`), not the whole token."""
    return not blankable(tok) and blanks(tok)


def learn(prepared: str, rule_template: str, template: str) -> tuple[list[bytes], Plan, bytes] | None:
    """(tokens, plan, plan key) a message teaches: the plain words of its stage-0 text that the
    structural stage masked in its `template` (and the names of tokens such as ``db-07:5432`` whose
    first piece it masked), the tokens of `template` that keep a digit, and the
    numbers the rules masked; None if plans cannot say anything about it."""
    toks = prepared.split()
    n = len(toks)
    if not 2 <= n <= PLAN_MAX_TOKENS:
        return None
    rt = rule_template.split()
    ft = template.split()
    if len(rt) != n or len(ft) != n:
        return None
    blank = tuple(
        j
        for j in range(1, n)
        if (ft[j] == PLACEHOLDER and rt[j] == toks[j] and blankable(toks[j].encode()))
        or (_structure_masked_head(rt[j], ft[j]) and _blanks_a_name(toks[j].encode()))
    )
    keep = tuple(j for j in range(n) if HAS_DIGIT.search(ft[j]))
    shapes = [t.encode().translate(DIGIT_SHAPE) for t in toks]
    collapse: tuple[int, ...] = ()
    if not _dated(prepared):
        collapse = tuple(
            j for j in range(1, n) if j not in keep and PLACEHOLDER in rt[j] and NUMBER.fullmatch(shapes[j])
        )
    # Under the first two tokens unless the second is a value (masked by a rule or the structural stage,
    # or holding a digit): then the first token and the count.
    one = 1 in blank or PLACEHOLDER in rt[1] or HAS_DIGIT.search(toks[1]) is not None
    return shapes, (blank, keep, tuple(shapes[j] for j in keep), collapse), plan_keys(shapes)[1 if one else 0]


def lookup_events_py(
    events: list[Any],
    key_attrs: tuple[str, ...],
    template_attr: str,
    second: dict[tuple[Any, ...], tuple[Plans, dict[Key, Any]]],
    miss: Any,
) -> list[Any]:
    """The hot path's second level in one call (one C loop when built): for each event, its raw key
    values (the attributes `key_attrs`) name a (plans, entries) pair in `second`, and the result is
    ``entries.get(key(text, plans), miss)``, the text being attribute `template_attr`; `miss` where
    `second` has nothing for the raw key values (no key is computed then)."""
    out = []
    for ev in events:
        sec = second.get(tuple(getattr(ev, a) for a in key_attrs))
        out.append(miss if sec is None else sec[1].get(key(getattr(ev, template_attr), sec[0]), miss))
    return out


def first_level_py(
    events: list[Any],
    key_attrs: tuple[str, ...],
    template_attr: str,
    fast: dict[tuple[Any, ...], Any],
    miss: Any,
) -> list[Any]:
    """The hot path's first level in one call (one C loop when built): for each event,
    ``fast.get((*raw key values, digit shape of the text), miss)``, the digit shape being
    ``text.encode().translate(DIGIT_SHAPE)`` (TypeError for a text that is not a str)."""
    out = []
    for ev in events:
        text = getattr(ev, template_attr)
        if type(text) is not str:
            raise TypeError("first_level() texts must be str")
        k = (*(getattr(ev, a) for a in key_attrs), text.encode().translate(DIGIT_SHAPE))
        out.append(fast.get(k, miss))
    return out


key: Callable[[str, Plans], Key] = key_py
lookup_events: Callable[..., list[Any]] = lookup_events_py
first_level: Callable[..., list[Any]] = first_level_py
ACCELERATED = False
_stage0_ascii: Callable[[str], str] | None = None
_intern: Callable[[Any], Any] | None = None
try:
    from . import _stage0  # type: ignore[attr-defined]
except ImportError:  # no compiler where it was installed: the pure pass is the same, only slower
    pass
else:
    _stage0.configure(
        key_py,
        PLAN_MAX_CHARS,
        PLAN_MAX_TOKENS,
        sorted(GTLDS),
        sorted(NOT_TLDS),
        sorted(FILE_EXTS),
        sorted(w.decode() for w in SENSITIVE),
        _HTTP_METHODS,
        [w.decode() for w in _CALENDAR],
    )
    key = _stage0.key
    lookup_events = _stage0.lookup_events
    first_level = _stage0.first_level
    _stage0_ascii = _stage0.stage0
    _intern = _stage0.intern
    ACCELERATED = True
