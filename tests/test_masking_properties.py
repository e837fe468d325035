"""Masking properties the core relies on (the rule-by-rule cases live with the masking rules' tests)."""

from __future__ import annotations

import ipaddress
import uuid

from hypothesis import given
from hypothesis import strategies as st
from telemetryd.masking import PLACEHOLDER, Masker

M = Masker()
KINDS = [
    st.integers(min_value=0, max_value=10**12).map(str),
    st.floats(min_value=0, max_value=1e6, allow_nan=False).map(lambda f: f"{f:.3f}"),
    st.uuids().map(str),
    st.ip_addresses(v=4).map(str),
    st.tuples(st.ip_addresses(v=4), st.integers(1, 65535)).map(lambda t: f"{t[0]}:{t[1]}"),
    st.integers(min_value=16**8, max_value=16**16).map(lambda n: f"0x{n:x}"),
]
variables = st.one_of(*KINDS)
texts = st.sampled_from(
    [
        "connection to {} timed out",
        "request {} took 5 ms",
        "user={} logged in",
        "retrying {} now",
        "block {} size",
    ]
)


@given(texts, variables)
def test_template_never_contains_the_masked_value(fmt: str, value: str) -> None:
    tpl = M.template(fmt.format(value))
    assert value not in tpl
    assert PLACEHOLDER in tpl


@given(texts, st.sampled_from(KINDS).flatmap(lambda kind: st.tuples(kind, kind)))
def test_events_differing_only_in_variables_share_a_template(fmt: str, pair: tuple[str, str]) -> None:
    # Same kind of variable, same template (host:port is <*>:<*> while a bare number is <*>, by design).
    a, b = pair
    assert M.template(fmt.format(a)) == M.template(fmt.format(b))


def test_fixed_words_stay() -> None:
    tpl = M.template(f"connection to {ipaddress.IPv4Address('10.1.2.3')} id {uuid.UUID(int=7)} timed out")
    assert tpl.startswith("connection to ") and tpl.endswith(" timed out")
    assert M.template("service started") == "service started"


def test_user_masks_apply_before_builtins() -> None:
    m = Masker([(r"user [a-z]+", "user <*>")])
    assert m.template("user alice logged in") == "user <*> logged in"


@given(st.integers(min_value=0, max_value=10**40))
def test_digit_fast_path_agrees_with_the_token_rules(n: int) -> None:
    from telemetryd.masking import _mask_token

    assert _mask_token(str(n)) == PLACEHOLDER == M.template(str(n))
