"""Pure logic of the API: the login limiter and the token codec (no server needed)."""
from __future__ import annotations

import time
import uuid

import jwt
import pytest

from ingest_api.core import login_limiter
from ingest_api.core.login_limiter import LoginLimiter
from ingest_api.core.security import InvalidToken, TokenCodec, hash_password, verify_password


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(login_limiter.time, "monotonic", clock)
    return clock


def test_the_limiter_locks_after_the_limit_for_the_rest_of_the_window(clock):
    limiter = LoginLimiter(max_failures=5, window_seconds=900)
    for _ in range(4):
        limiter.record_failure("ada")
        clock.now += 10
    assert limiter.retry_after("ada") is None
    limiter.record_failure("ada")
    assert limiter.retry_after("bob") is None
    wait = limiter.retry_after("ada")
    assert wait == 900 - 40 + 1  # until the first of the five leaves the window
    clock.now += wait
    assert limiter.retry_after("ada") is None


def test_old_failures_fall_out_of_the_window(clock):
    limiter = LoginLimiter(max_failures=5, window_seconds=900)
    for _ in range(4):
        limiter.record_failure("ada")
    clock.now += 901
    limiter.record_failure("ada")
    assert limiter.retry_after("ada") is None
    limiter.reset("ada")
    assert limiter.retry_after("ada") is None


def test_the_limiter_stays_bounded_in_memory(clock):
    limiter = LoginLimiter(max_failures=5, window_seconds=900, max_tracked_usernames=100)
    for i in range(1000):
        limiter.record_failure(f"user{i}")
    assert len(limiter._failures) <= 100


def test_tokens_name_their_customer_and_expire():
    codec = TokenCodec("s" * 32, ttl_seconds=3600)
    customer = uuid.uuid4()
    token = codec.issue(customer)
    assert codec.customer_of(token) == customer
    assert codec.customer_of(token) == customer  # remembered, still checked
    with pytest.raises(InvalidToken):
        TokenCodec("t" * 32, ttl_seconds=3600).customer_of(token)
    expired = jwt.encode({"sub": str(customer), "iat": 0, "exp": int(time.time()) - 1}, "s" * 32, algorithm="HS256")
    with pytest.raises(InvalidToken, match="expired"):
        codec.customer_of(expired)
    with pytest.raises(InvalidToken):
        codec.customer_of(jwt.encode({"sub": "not-a-uuid", "iat": 0, "exp": int(time.time()) + 60}, "s" * 32))


def test_a_remembered_token_still_expires(monkeypatch):
    codec = TokenCodec("s" * 32, ttl_seconds=60)
    token = codec.issue(uuid.uuid4())
    codec.customer_of(token)
    later = time.time() + 61
    monkeypatch.setattr("ingest_api.core.security.time.time", lambda: later)
    with pytest.raises(InvalidToken, match="expired"):
        codec.customer_of(token)


def test_an_empty_secret_is_refused():
    with pytest.raises(RuntimeError, match="JWT_SECRET"):
        TokenCodec("", ttl_seconds=60)


def test_passwords_are_argon2id_hashes():
    stored = hash_password("correct horse")
    assert stored.startswith("$argon2id$")
    assert verify_password(stored, "correct horse")
    assert not verify_password(stored, "wrong horse")
    assert not verify_password(None, "not-a-real-password")  # unknown user: still one (dummy) verification
    assert not verify_password("garbage", "x")
