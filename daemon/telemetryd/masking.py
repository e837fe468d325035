"""Turn a free-text message into a template: the variable parts become ``<*>``.

The rules are one general, built-in set (no per-source rules) and a pure function of the text: no
learning state, so a template, and the pattern id derived from it, never depends on the order in which
messages arrive, on history or on the host. docs/patterns.md explains each rule and its measured effect.

Stages:
1. rules whose values span white space (syslog/ISO timestamps, "<1 sec", "N bytes (N KB)", HTTP
   request lines, "user NAME"), each gated by a cheap substring test;
2. per white-space token (memoised, since tokens recur far more than messages): values recognised
   whole (URL, UUID, IPv6/MAC, PCI address, ISO date, clock time, path, address list, user=NAME), then
   the token is cut at punctuation and each run of letters/digits/``_``/``.``/``-`` is kept or masked
   (numbers, hex, identifiers with digits, host names, versions); adjacent placeholders are folded;
3. a scaled size unit after a placeholder joins it ("<*> KB" -> "<*>").
User masks (regex, literal replacement) run first, on the raw text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from . import typed_values
from .typed_values import DIGIT_SHAPE as DIGIT_SHAPE
from .typed_values import HAS_DIGIT, Key, Plans, is_hostname, prefixed_id, random_id

RULESET_VERSION = "3"
PLACEHOLDER = "<*>"

_P = PLACEHOLDER

# --- stage 1: rules that span tokens (each gated by a cheap substring test) ---------------------

_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]*\.?"
_WEEKDAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)[a-z]*\.?,?"
_CLOCK = r"\d{1,2}:\d{2}(?::\d{2})?(?:[.,]\d+)?"
_ZONE = r"(?:\s?(?:Z|[+-]\d{2}:?\d{2}|UTC|GMT|[A-Z]{2,4}T)(?![\w:]))"
_CLOCK_HINT = re.compile(r":\d\d")
# ctime / syslog: [Fri] Jun 17 07:07:00 [EDT] [2005]; the weekday form is a separate pattern so that
# both start with literal words, which the regex engine scans for quickly.
_CTIME_TAIL = rf"\s+\d{{1,2}},?\s+{_CLOCK}(?:\s+[A-Z]{{3,4}})?(?:\s+\d{{4}}\b)?"
_CTIME_WEEKDAY = re.compile(rf"{_WEEKDAY}\s+{_MONTH}{_CTIME_TAIL}")
_CTIME = re.compile(rf"{_MONTH}{_CTIME_TAIL}")
# ISO 8601 / RFC 3339 with a space between date and time: 2017-05-16 05:00:00.123
_ISO_SPACED = re.compile(rf"(?<![\w.:-])\d{{4}}-\d{{2}}-\d{{2}} {_CLOCK}{_ZONE}?(?![\w:-])")
_UNITS = r"(?:ms|s|sec|secs|seconds?|mins?|minutes?|h|hours?|us|µs|ns|[KMGTP]i?B|B|bytes?)"
# A bound such as "<1 sec" stands for a measured value that is otherwise printed in full.
_BOUND = re.compile(rf"(?<![\w<>])[<>]=?\s?\d+(?:\.\d+)?\s?{_UNITS}\b")
# "1024 bytes (1.0 KB)": the parenthesised restatement belongs to the value.
_SIZE_RESTATED = re.compile(r"\b(\d+ ?(?:bytes|B)) \(\d+(?:\.\d+)? ?[KMGTP]i?B\)")
_HTTP_REQUEST = re.compile(r"\b(GET|HEAD|POST|PUT|DELETE|PATCH|OPTIONS|CONNECT|TRACE) \S+ HTTP/\d(?:\.\d)?\b")
# An empty "()" after a space is an absent value, the same slot as "(value)".
_EMPTY_PARENS = re.compile(r"(?<!\S)\(\)")
# User names are words, so token rules cannot see them: take them from "user NAME" followed by a
# clause boundary, and from user-ish keys of key=value pairs.
_USER_WORD = re.compile(
    r"([Uu]ser|USER)\s+(?!unknown\b)[A-Za-z_](?:[\w@-]|\.(?=\w))*"
    r"(?=\s+(?:from|by|on|at|to|in|with|for|via)\b|\s*[\[(,;]|\s*$)"
)
# Service telemetry: values whose shape alone says what they are, wherever they stand.
_EMAIL = re.compile(r"(?<![\w.+/:-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
# A Kubernetes pod name: <workload>-<replica-set hash>-<5 characters>.
_POD = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*-[0-9a-f]{6,10}-[a-z0-9]{5}")
_USER_KEY = re.compile(r"(?i:(?<![\w.])((?:user|username|uname|login|account)=))[^\s,;)\]]+")

# --- stage 2, first: values recognised whole within one token ----------------------------------

_URL = re.compile(r"\b([A-Za-z][A-Za-z0-9+.\-]*://)[^\s\"'<>()\[\]{}]+")
_UUID = re.compile(r"\b[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\b")
_HEXGROUPS = r"[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,6}+"
_COLON_VALUES = re.compile(
    "|".join(
        (
            # IPv6 and MAC addresses: 4 to 16 hex groups joined by colons, or "::" abbreviated (bounded
            # and possessive, so that a long run of colons costs linear time)
            r"(?<![\w:])(?:[0-9A-Fa-f]{1,4}:){3,15}+[0-9A-Fa-f]{1,4}(?![\w:])",
            rf"(?<![\w:])(?:{_HEXGROUPS}::(?:{_HEXGROUPS})?|::{_HEXGROUPS})(?![\w:])",
            # PCI address (domain:bus:device.function), as the Linux kernel prints it
            r"\b[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]\b",
            # ISO 8601 date-time in one token: 2017-05-16T05:00:00Z
            rf"(?<![\w.:-])\d{{4}}-\d{{2}}-\d{{2}}T{_CLOCK}{_ZONE}?(?![\w:-])",
            # a clock time or a duration written as one: 07:07:00, 00:01, 10:46:47.425
            rf"(?<![\w:.]){_CLOCK}(?![\w:])",
        )
    )
)
_ISO_DATE = re.compile(r"(?<![\w.:-])\d{4}-\d{2}-\d{2}(?![\w:-])")
# An absolute path starts a token or follows punctuation, never a word ("PS/2", "hi/lo").
_PATH = re.compile(
    r"(?<![\w.\-/:])(?:\.{1,2}(?=/))?(?:/+[^\s/:,;'\"()\[\]{}<>|=]+)+/?"
    r"|(?<!\w)[A-Za-z]:\\[^\s'\"]+"
)
_IPV4 = r"\d{1,3}(?:\.\d{1,3}){3}"
_IP_LIST = re.compile(rf"(?<![\w.]){_IPV4}(?:,{_IPV4})+(?![\w.])")

# --- stage 2, then: the pieces of a token --------------------------------------------------------

_TOKEN = re.compile(r"<\*>|[\w.\-]+|[^\w.\-]")
_SUB = re.compile(r"(?<=[A-Za-z0-9])-|\.")
_VERSION = re.compile(r"v?\d+(?:\.\d+)+[a-z]?|v\d+")
_HEXWORD = re.compile(r"[0-9A-Fa-f]{6,}")
_DIGITRUN3 = re.compile(r"\d{3,}")
_DIGITGROUPS2 = re.compile(r"\d\D+\d")


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Well-known names that look like values to the digit rules.
_NAMES = _words(
    "sha224 sha256 sha384 sha512 sha3-256 sha3-512 x86_64 i386 i486 i586 i686 utf-8 utf-16 utf-32 "
    "ucs-2 iso-8859-1 iso-8859-15 windows-1252 bf16"
)
# Per the Loghub guidelines these are values wherever they appear (booleans, null, default users).
_VALUE_WORDS = frozenset(["true", "false", "null", "root", "admin"])

# --- stage 3: folding ---------------------------------------------------------------------------

# A scaled size unit is part of the value: the unit changes with the magnitude ("512 B", "5.2 KB").
_SIZE_UNIT = re.compile(r"<\*> (?:[KMGTPE]i?B|B)\b")
# A word glued to a value is one value: "Switch<0>" gives "Switch<<*>>", folded to "Switch<*>", then "<*>".
_WORD_VAR = re.compile(r"[A-Za-z_]+<\*>")
_TOKEN_CACHE_SIZE = 32768  # entries of at most _TOKEN_CACHE_LEN chars: at most ~15 MiB
_TOKEN_CACHE_LEN = 128
_MAX_TEXT = 16384
_MERGES = (("<*><*>", _P), ("<*>.<*>", _P), ("<<*>>", _P), ("<*>>", _P))

# --- the digit shape: a cache key that many messages share ---------------------------------------
# Every rule (stage 0 too) treats the ASCII digits as one class, except the three spots matched below:
# the named values with digits ("sha256" stays, "sha111" is a value), "0x" (a hex prefix; "1x" is not) and the
# PCI function digit ([0-7]). So two texts that differ only in which ASCII digit stands where get
# templates of the same structure; when a template keeps no digit, it is the template of every text of
# that shape. Texts whose shape could touch one of those three spots are never shared.
_SHAPE_UNSAFE = re.compile(
    r"sha0|x00_00|i000|utf-0|ucs-0|iso-0|windows-0|bf00|0x|[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.0"
)


def _is_var_word(w: str) -> bool:
    """A word (letters, digits, underscore) that carries a value rather than message text."""
    if w.lower() in _VALUE_WORDS:
        return True
    if not any(c.isdigit() for c in w):
        # "evt_FbKIYKLONVUEQkufZpHtKbIi": a prefixed random id; after a prefix, 16+ letters of both
        # cases are enough
        return (len(w) >= 12 and any(map(random_id, w.split("_")))) or prefixed_id(w)
    if random_id(w):
        return True
    if w[0].isdigit() or "_" in w:
        return True
    # "eth0", "ssh2", "IPv6", "jk2" are names; "storage234", "c6b3", "ffff3000" are values
    return bool(_DIGITRUN3.search(w) or _DIGITGROUPS2.search(w) or _HEXWORD.fullmatch(w))


def _mask_piece(piece: str, following: str) -> str:
    """Mask one run of word characters, dots and hyphens; `following` is the next part of the token."""
    if following == "=" and piece[0].isalpha():
        return piece  # the key of key=value is message text
    core = piece.strip(".-")
    if not core or core.lower() in _NAMES:
        return piece
    lead = piece[: len(piece) - len(piece.lstrip(".-"))]
    trail = piece[len(piece.rstrip(".-")) :]
    if lead == "-" and core[0].isdigit():
        lead, core = "", "-" + core
    if is_hostname(core) or ("-" in core and _POD.fullmatch(core)):
        return lead + _P + trail
    if core[0] == "-" or core[0].isdigit():
        body = core[1:] if core[0] == "-" else core
        if "-" not in body or body.startswith("0x"):
            return lead + _P + trail  # number, number with unit, IPv4, version, hex
        parts = body.split("-")
        if len(parts) >= 4:
            return lead + _P + trail  # a dashed address or id, not a date or a range
        out = "-".join(_P if (p and p[0].isdigit()) or _is_var_word(p) else p for p in parts)
        return lead + out + trail
    if _VERSION.fullmatch(core):
        return lead + _P + trail
    if "-" in core:
        labels = core.split("-")
        if len(labels) >= 3 and labels[-1].isdigit() and all(x.isalnum() for x in labels):
            return lead + _P + trail  # a host name such as "db-replica-07"
    if following == "(" and "." not in core:
        return piece  # a function name
    if "." not in core and "-" not in core:
        return lead + (_P if _is_var_word(core) else core) + trail
    parts = _SUB.split(core)
    seps = _SUB.findall(core)
    pieces = [lead, _P if _is_var_word(parts[0]) else parts[0]]
    for sep, p in zip(seps, parts[1:], strict=True):
        pieces += (sep, _P if p and _is_var_word(p) else p)
    pieces.append(trail)
    return "".join(pieces)


def _mask_token(tok: str) -> str:
    if tok.isalpha():
        return _P if tok.lower() in _VALUE_WORDS else tok
    if "://" in tok:
        tok = _URL.sub(r"\1<*>", tok)
    if "-" in tok:
        tok = _UUID.sub(_P, tok)
        if ":" not in tok:
            tok = _ISO_DATE.sub(_P, tok)
    if ":" in tok:
        tok = _COLON_VALUES.sub(_P, tok)
    if "/" in tok or "\\" in tok:
        tok = _PATH.sub(_P, tok)
    if "," in tok:
        tok = _IP_LIST.sub(_P, tok)
    if "=" in tok:
        tok = _USER_KEY.sub(r"\1<*>", tok)
    if "@" in tok:
        tok = _EMAIL.sub(_P, tok)
    parts = _TOKEN.findall(tok)
    n = len(parts)
    out = []
    for i, p in enumerate(parts):
        c = p[0]
        if c.isalnum() or c in "_.-":
            nxt = parts[i + 1] if i + 1 < n else ""
            if nxt == "=" and i + 2 < n and parts[i + 2] == "=":
                nxt = ""  # "==" ends base64 padding or is a comparison, not a key=value
            out.append(_mask_piece(p, nxt))
        elif (
            c == "+"
            and i + 1 < n
            and parts[i + 1][0].isdigit()
            and (i == 0 or not parts[i - 1][-1].isalnum())
        ):
            continue  # an explicit sign belongs to the number: "+0.27" is the same slot as "0.27"
        else:
            out.append(p)
    res = "".join(out)
    if "<*>" not in res:
        return res
    for a, b in _MERGES:
        while a in res:
            res = res.replace(a, b)
    return _WORD_VAR.sub(_P, res)


class Masker:
    """Masks the variable parts of messages with ``<*>``; user masks run before the built-in rules."""

    def __init__(self, extra: Sequence[tuple[str, str]] = ()) -> None:
        compiled: list[tuple[re.Pattern[str], str]] = []
        for regex, replacement in extra:
            try:
                # the replacement is literal: escaping backslashes disables group references
                compiled.append((re.compile(regex), replacement.replace("\\", "\\\\")))
            except re.error as exc:
                raise ValueError(f"invalid mask regex {regex!r}: {exc}") from exc
        self._extra = tuple(compiled)
        # The hot path's cache key of a text (typed_values.key after the user masks): C code per text
        # when the accelerator is built and there are no user masks.
        self.key_fn: Callable[[str, Plans], Key] = self._user_key if compiled else typed_values.key
        # Plans (typed_values.py) are learnt from the stage-0 text of the raw text: not with user masks.
        self.plans_apply = not compiled
        # Masked form of each token seen: tokens recur far more than whole messages do. Bounded and
        # exact (a token's masked form depends on the token alone), so the output stays a pure function.
        self._tokens: dict[str, str] = {}
        self._one_class: tuple[str | None, bool] = (None, False)

    def shared_by_shape(self, text: str, template: str) -> bool:
        """True if `template` (of `text`) is the template of every text with the digit shape of `text`.

        The shape is ``text.encode().translate(DIGIT_SHAPE)``; callers may then cache the template by
        shape. User masks are arbitrary regexes, so with any configured nothing is shared.
        """
        return not HAS_DIGIT.search(template) and self.digits_are_one_class(text)

    def digits_are_one_class(self, text: str) -> bool:
        """True if every rule treats the digits of `text` alike (none stands where a rule reads which
        digit it is: ``sha256``, ``0x``, a PCI function)."""
        if self._extra:
            return False
        # The slow path asks this of one text two or three times in a row.
        last, ok = self._one_class
        if text is last:
            return ok
        # (str.translate with a dict is ten times slower than bytes.translate, and the same here)
        shape = text.encode("utf-8", "surrogatepass").translate(DIGIT_SHAPE).decode("utf-8", "surrogatepass")
        ok = _SHAPE_UNSAFE.search(shape.lower()) is None
        self._one_class = (text, ok)
        return ok

    def prepare(self, text: str) -> str:
        """User masks, then stage 0: the text the rest of the rules see (a cache key for the template)."""
        for rx, repl in self._extra:
            text = rx.sub(repl, text)
        return typed_values.stage0(text)

    def _user_key(self, text: str, plans: Plans) -> Key:
        # Plans are learnt from the stage-0 text of the raw text, so with user masks none apply.
        for rx, repl in self._extra:
            text = rx.sub(repl, text)
        return typed_values.key(text, {})

    def template(self, text: str) -> str:
        return self.template_prepared(self.prepare(text))

    def template_prepared(self, text: str) -> str:
        """The template of a text `prepare` returned."""
        if len(text) > _MAX_TEXT:
            # a bound on the cost of one message; beyond it the rest is one value
            text = text[:_MAX_TEXT] + " " + _P
        if "B)" in text:
            text = _SIZE_RESTATED.sub(r"\1", text)
        if ":" in text and _CLOCK_HINT.search(text):
            text = _CTIME_WEEKDAY.sub(_P, text)
            text = _CTIME.sub(_P, text)
            if "-" in text:
                text = _ISO_SPACED.sub(_P, text)
        if "<" in text or ">" in text:
            text = _BOUND.sub(_P, text)
        if "HTTP/" in text:
            text = _HTTP_REQUEST.sub(r"\1 <*>", text)
        if "()" in text:
            text = _EMPTY_PARENS.sub("(<*>)", text)
        if "ser " in text or "SER " in text:
            text = _USER_WORD.sub(r"\1 <*>", text)
        cache = self._tokens
        get = cache.get
        out = []
        for tok in text.split():
            if tok.isdigit() and tok.isascii():
                # Most unique tokens are plain numbers; they always mask whole and would only churn the memo.
                out.append(_P)
                continue
            masked = get(tok)
            if masked is None:
                masked = _mask_token(tok)
                if len(tok) <= _TOKEN_CACHE_LEN:
                    if len(cache) >= _TOKEN_CACHE_SIZE:
                        cache.clear()
                    cache[tok] = masked
            out.append(masked)
        res = " ".join(out)
        if "<*> " in res:
            res = _SIZE_UNIT.sub(_P, res)
        if "<*>%" in res:
            res = res.replace("<*>%", _P)  # a percentage is one value
        return res
