"""The basic-auth checker with real bcrypt: cached successes skip bcrypt, uncached checks run one at a
time and are refused (None -> 503) rather than queued when one is already running too long."""

from __future__ import annotations

import threading

from conftest import wait_for
from telemetryd.webconfig import Authenticator
from tlsutil import bcrypt_hash


def test_cached_success_skips_bcrypt_and_a_busy_checker_refuses_instead_of_queueing() -> None:
    users = {"prometheus": bcrypt_hash("s3cret", cost=4).encode(), "slow": bcrypt_hash("x", cost=14).encode()}
    auth = Authenticator(wait=0.05)
    assert auth.check(users, "prometheus", "s3cret") is True  # pays bcrypt once, cached
    assert auth.check(users, "prometheus", "wrong") is False
    assert auth.check(users, "nobody", "s3cret") is False

    # A slow uncached check (cost 14: about a second) holds the one bcrypt slot...
    t = threading.Thread(target=auth.check, args=(users, "slow", "not-the-password"))
    t.start()
    wait_for(auth._bcrypt_lock.locked, what="the slow check holding the bcrypt slot")
    try:
        # ...meanwhile the cached scraper still gets in, without waiting for bcrypt,
        assert auth.check(users, "prometheus", "s3cret") is True
        # and an uncached guess is refused at once instead of queueing behind it.
        assert auth.check(users, "prometheus", "another-guess") is None
    finally:
        t.join()
    # Failures are not cached: the same wrong password is checked (and refused) again.
    assert auth.check(users, "prometheus", "another-guess") is False
