"""Passwords (argon2id) and access tokens (HS256 JWTs whose `sub` is the customer id)."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

ALGORITHM = "HS256"
MIN_SECRET_BYTES = 32

# argon2-cffi's defaults are the RFC 9106 "low memory" profile of argon2id.
_hasher = PasswordHasher()
# Verified against when the username does not exist, so that a login takes as long either way.
_DUMMY_HASH = _hasher.hash("not-a-real-password")


def hash_password(password: str) -> str:
    """Blocking (tens of ms of CPU, GIL released): call it in a worker thread."""
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Blocking, like hash_password. A missing hash still costs one verification."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


class PasswordsBusy(Exception):
    """As many password hashes are running and waiting as allowed: answered 503 at once, before any database
    work, so that a flood of logins costs the others nothing but the refusals."""


# Niceness of the hashing threads. One argon2id verification here costs ~190 ms of CPU over ~120 ms (its 4
# lanes run in threads it starts, which inherit this), so a few at once take both cores, and at the same
# priority the event loops that answer reads and buys got only a share of them. Linux's nice is per thread:
# these threads, and only these, give way to the rest of the process. Measured with 400 connections of
# wrong-password logins on 2 workers (tests/api/test_api_login_under_attack.py): a customer's reads took
# p95 767 ms at niceness 0 and 127 ms at 10, while as many passwords were checked either way.
HASH_THREAD_NICENESS = 10


def _lower_this_threads_priority() -> None:
    if sys.platform.startswith("linux"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASH_THREAD_NICENESS)
        except OSError:  # not allowed here: hashing runs at the process's priority
            pass


class Passwords:
    """hash_password and verify_password for the event loop, bounded: `at_once` in threads of their own (each
    takes tens of ms of CPU and 64 MiB), at most `queue` more waiting. Whoever hashes takes a place first
    (`admitted`), which refuses at once (PasswordsBusy) when all are taken."""

    def __init__(self, at_once: int = 2, queue: int = 16):
        self.at_once, self.capacity = at_once, at_once + queue
        self._admitted = 0
        self._executor = ThreadPoolExecutor(
            max_workers=at_once, thread_name_prefix="password-hash", initializer=_lower_this_threads_priority
        )

    @property
    def admitted_now(self) -> int:
        return self._admitted

    @contextmanager
    def admitted(self) -> Iterator[Passwords]:
        """A place among the `at_once + queue` for one request's hashing (and its few queries in between);
        raises PasswordsBusy if none is free. No await: checking and taking a place cannot interleave."""
        if self._admitted >= self.capacity:
            raise PasswordsBusy()
        self._admitted += 1
        try:
            yield self
        finally:
            self._admitted -= 1

    async def hash(self, password: str) -> str:
        return await asyncio.get_running_loop().run_in_executor(self._executor, hash_password, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, verify_password, password_hash, password
        )

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class InvalidToken(Exception):
    pass


class TokenCodec:
    """Issues and checks access tokens offline: no database read per request.

    Checking a JWT with PyJWT costs ~70 µs of pure Python per call, the biggest item on the purchase hot
    path, and clients send the same token many times. So a token that verified once is remembered
    (bounded) until it expires: the same bytes were signed by us, and expiry is checked on every use.

    A password change revokes the tokens issued before it: `revoke_issued_before` (the worker that changed
    it at once, the others from accounts/sessions.py every few seconds) notes when, per customer, and every
    use of a token, remembered or not, compares its `iat` with that: a dict lookup (bench/bench_ingest.py
    measures it). `iat` keeps sub-second precision, so a token issued just after the change stays valid.
    """

    def __init__(self, secret: str, ttl_seconds: int, cache_size: int = 10_000):
        # HS256 with a key shorter than its 256-bit hash can be brute-forced offline from any one token.
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise RuntimeError(
                f"JWT_SECRET is {len(secret.encode())} bytes; at least {MIN_SECRET_BYTES} are needed "
                "(`make up` generates one into .secrets/jwt_secret; or: python3 -c 'import secrets; "
                "print(secrets.token_urlsafe(32))')"
            )
        self._secret = secret
        self.ttl_seconds = ttl_seconds
        self._verified: dict[str, tuple[uuid.UUID, float, float]] = {}  # token -> customer, exp, iat
        self._cache_size = cache_size
        self._revoked_before: dict[uuid.UUID, float] = {}  # customer -> tokens issued before this are void

    def issue(self, customer_id: uuid.UUID, issued_at: float | None = None) -> str:
        """`issued_at` (default: now) is the token's `iat`, a float (RFC 7519's NumericDate may be
        non-integer) so that it orders exactly against password changes."""
        now = time.time() if issued_at is None else issued_at
        claims = {"sub": str(customer_id), "iat": now, "exp": int(now) + self.ttl_seconds}
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def customer_of(self, token: str) -> uuid.UUID:
        """The customer a token was issued to; raises InvalidToken if forged, tampered, expired or revoked."""
        known = self._verified.get(token) or self._verify(token)
        customer_id, expires_at, issued_at = known
        if time.time() >= expires_at:
            self._verified.pop(token, None)
            raise InvalidToken("the token has expired")
        revoked_before = self._revoked_before.get(customer_id)
        if revoked_before is not None and issued_at < revoked_before:
            raise InvalidToken("the password was changed after this token was issued: log in again")
        return customer_id

    def _verify(self, token: str) -> tuple[uuid.UUID, float, float]:
        try:
            claims = jwt.decode(token, self._secret, algorithms=[ALGORITHM], options={"require": ["exp", "sub", "iat"]})
            known = uuid.UUID(claims["sub"]), float(claims["exp"]), float(claims["iat"])
        except jwt.ExpiredSignatureError:
            raise InvalidToken("the token has expired") from None
        except (jwt.InvalidTokenError, ValueError, TypeError, AttributeError):
            raise InvalidToken("the token is not valid") from None
        if len(self._verified) >= self._cache_size:
            self._verified.pop(next(iter(self._verified)))  # the oldest
        self._verified[token] = known
        return known

    def revoke_issued_before(self, customer_id: uuid.UUID, when: float) -> None:
        """Tokens of `customer_id` issued before `when` (seconds since the epoch) are refused from now on."""
        if when > self._revoked_before.get(customer_id, 0.0):
            self._revoked_before[customer_id] = when

    def forget_revocations_before(self, when: float) -> None:
        """Revocations older than `when`: every token they void has expired (pass now - ttl)."""
        for customer_id in [c for c, revoked in self._revoked_before.items() if revoked < when]:
            del self._revoked_before[customer_id]

    @property
    def revocations(self) -> int:
        return len(self._revoked_before)
