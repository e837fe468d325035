"""The digit-shape cache is exact: a template shared by shape is the template of every text of that shape.

The daemon's hot path counts an event by (key, digit shape of its message) without masking the message
(patterns.PatternCounter._count_events); this holds only if masking treats the ASCII digits as one
class wherever masking.Masker.shared_by_shape says so. Checked here against the masker itself, on
generated texts built from the rules' own vocabulary and on a corpus shipped with the tests.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from service_writer import messages
from telemetryd.masking import DIGIT_SHAPE, Masker
from test_masking import ALL_KEPT, ALL_RULES

# Words that reach the rules that look at digits (names with digits, hex prefixes, PCI addresses,
# versions, clocks, dates, IPs, sizes) and words that reach the other rules.
VOCAB = [
    "sha256",
    "SHA512",
    "sha3-256",
    "x86_64",
    "i386",
    "utf-8",
    "UTF-16",
    "iso-8859-1",
    "windows-1252",
    "bf16",
    "ucs-2",
    "0x1f",
    "0x1f-2",
    "1x1f-2",
    "0000:00:1f.7",
    "0000:00:1f.8",
    "v1.2.3",
    "HTTP/1.1",
    "12:30:45",
    "2017-05-16",
    "2017-05-16T05:00:00Z",
    "10.0.0.1",
    "10.0.0.1,10.0.0.2",
    "eth0",
    "k12",
    "k123",
    "ab12cd",
    "ffff3000",
    "db-replica-07",
    "user",
    "alice",
    "from",
    "GET",
    "/items/12",
    "Jan",
    "17",
    "<1",
    "sec",
    "1024",
    "bytes",
    "(1.0",
    "KB)",
    "id=12",
    "user=bob",
    "()",
    "-5",
    "+0.27",
    "a_1",
    "3.14",
    "12ms",
    "5KB",
    "node-1-2",
    "r2d2",
    "x1",
    "1e5",
    "::1",
    "fe80::1",
    "a.b.c.com",
    "f(1)",
]
token = st.one_of(
    st.sampled_from(VOCAB),
    st.text(alphabet="0123456789abcfx.-:_/=,()<>KBT ", min_size=1, max_size=12),
    st.integers(0, 10**9).map(str),
)
texts = st.lists(token, min_size=1, max_size=8).flatmap(
    lambda toks: st.lists(
        st.sampled_from([" ", "", ":", "=", "/", ", "]), min_size=len(toks), max_size=len(toks)
    ).map(lambda seps: "".join(t + s for t, s in zip(toks, seps, strict=True)))
)


def same_shape(text: str, rnd: random.Random) -> str:
    """Another text of the same digit shape: every ASCII digit replaced by a random one."""
    return "".join(rnd.choice("0123456789") if "0" <= c <= "9" else c for c in text)


def check(m: Masker, text: str, other: str) -> None:
    assert text.encode().translate(DIGIT_SHAPE) == other.encode().translate(DIGIT_SHAPE)
    # stage 0 keeps the digit shape: texts of one shape have stage-0 texts of one shape
    p, q = m.prepare(text), m.prepare(other)
    assert p.encode().translate(DIGIT_SHAPE) == q.encode().translate(DIGIT_SHAPE), (text, other)
    tpl = m.template(text)
    # as the extractor decides it: on the stage-0 text
    if m.shared_by_shape(p, tpl):
        assert m.template(other) == tpl, (text, other)


@settings(max_examples=3000, deadline=None)
@given(texts, st.randoms(use_true_random=False))
def test_generated_texts_of_one_shape_share_a_shared_template(text: str, rnd: random.Random) -> None:
    check(Masker(), text, same_shape(text, rnd))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        # each of these pairs has one shape and two templates: shared_by_shape must say no
        ("hash sha111 ok", "hash sha256 ok"),
        ("addr 1x1f-2 ok", "addr 0x1f-2 ok"),
        ("dev 0000:00:1f.8 ok", "dev 0000:00:1f.7 ok"),
        ("enc utf-9 x", "enc utf-8 x"),
    ],
)
def test_value_dependent_rules_are_never_shared(a: str, b: str) -> None:
    m = Masker()
    assert m.template(a) != m.template(b)
    assert not m.shared_by_shape(a, m.template(a)) and not m.shared_by_shape(b, m.template(b))


def test_user_masks_turn_sharing_off() -> None:
    m = Masker([(r"code 7", "code <*>")])
    assert not m.shared_by_shape("code 8 x", m.template("code 8 x"))


def test_every_corpus_message_of_one_shape_shares_a_shared_template() -> None:
    # The rule examples of test_masking (drawn from Loghub-2k and service telemetry) and generated
    # service messages; bench/patterns.py runs the same check over all of Loghub-2k.
    corpus = [m for m, _ in ALL_RULES] + ALL_KEPT + [e["message"] for e in messages(3000, seed=2)]
    m = Masker()
    rnd = random.Random(7)
    shared = 0
    for text in corpus:
        for _ in range(3):
            check(m, text, same_shape(text, rnd))
        shared += m.shared_by_shape(m.prepare(text), m.template(text))
    # most messages are shareable, or the cache would be of little use
    assert shared > len(corpus) // 2
